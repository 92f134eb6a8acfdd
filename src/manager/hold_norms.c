/* Per-application running estimate of the server hold per transaction (see hold_norms.h).
 *
 *   prev, cur snapshots --match by (id, connect time)--> per-record growth of requests and
 *   hold time --group by application--> hold = hold*DECAY + grown hold, xacts likewise
 *   --> usual = hold / xacts once xacts >= HOLD_NORMS_MIN_XACTS */
#include "manager/hold_norms.h"

#include <stdlib.h>
#include <string.h>

void hold_norms_init(struct hold_norms *hn)
{
    memset(hn, 0, sizeof(*hn));
}

void hold_norms_free(struct hold_norms *hn)
{
    free(hn->norms);
    hold_norms_init(hn);
}

static int compare_identity(const void *a, const void *b)
{
    const struct conn_record *x = *(const struct conn_record *const *)a;
    const struct conn_record *y = *(const struct conn_record *const *)b;
    if (x->id != y->id)
        return x->id < y->id ? -1 : 1;
    if (x->connected_ms != y->connected_ms)
        return x->connected_ms < y->connected_ms ? -1 : 1;
    return 0;
}

/* What one record finished since the previous snapshot. */
struct growth {
    const char *application;
    int64_t xacts;
    int64_t hold_ms;
};

static int compare_growth(const void *a, const void *b)
{
    return strcmp(((const struct growth *)a)->application, ((const struct growth *)b)->application);
}

/* Index of the first norm whose application is not below app (the insert position). */
static size_t lower_bound(const struct hold_norms *hn, const char *app)
{
    size_t lo = 0, hi = hn->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (strcmp(hn->norms[mid].application, app) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static const struct hold_norm *find(const struct hold_norms *hn, const char *app)
{
    size_t i = lower_bound(hn, app);
    return i < hn->n && strcmp(hn->norms[i].application, app) == 0 ? &hn->norms[i] : NULL;
}

/* The norm of app, created (zeroed) when missing; at HOLD_NORMS_MAX the least recently seen
 * application makes room. NULL when memory ran out. */
static struct hold_norm *find_or_add(struct hold_norms *hn, const char *app)
{
    size_t at = lower_bound(hn, app);
    if (at < hn->n && strcmp(hn->norms[at].application, app) == 0)
        return &hn->norms[at];
    if (hn->n == HOLD_NORMS_MAX) {
        size_t oldest = 0;
        for (size_t i = 1; i < hn->n; i++)
            if (hn->norms[i].seen_ms < hn->norms[oldest].seen_ms)
                oldest = i;
        memmove(&hn->norms[oldest], &hn->norms[oldest + 1],
                (hn->n - oldest - 1) * sizeof(*hn->norms));
        hn->n--;
        if (oldest < at)
            at--;
    } else if (hn->n == hn->cap) {
        size_t cap = hn->cap ? hn->cap * 2 : 16;
        if (cap > HOLD_NORMS_MAX)
            cap = HOLD_NORMS_MAX;
        struct hold_norm *grown = realloc(hn->norms, cap * sizeof(*grown));
        if (grown == NULL)
            return NULL;
        hn->norms = grown;
        hn->cap = cap;
    }
    memmove(&hn->norms[at + 1], &hn->norms[at], (hn->n - at) * sizeof(*hn->norms));
    hn->n++;
    struct hold_norm *norm = &hn->norms[at];
    memset(norm, 0, sizeof(*norm));
    /* Snapshot names are NUL-terminated within SNAPSHOT_NAME_LEN. */
    memcpy(norm->application, app, strnlen(app, sizeof(norm->application) - 1));
    return norm;
}

/* The record's growth since prev (its own totals when it is new). */
static void growth_of(const struct conn_record *rec, const struct conn_record *const *index,
                      size_t n_index, struct growth *out)
{
    out->application = rec->application;
    out->xacts = rec->requests;
    out->hold_ms = rec->hold_total_ms;
    const struct conn_record *const *before =
        n_index ? bsearch(&rec, index, n_index, sizeof(*index), compare_identity) : NULL;
    if (before != NULL) {
        out->xacts -= (*before)->requests;
        out->hold_ms -= (*before)->hold_total_ms;
    }
    if (out->hold_ms < 0)
        out->hold_ms = 0;
}

bool hold_norms_observe(struct hold_norms *hn, const struct snapshot *prev,
                        const struct snapshot *cur)
{
    if (cur->n_conns == 0)
        return true;
    size_t n_index = prev ? prev->n_conns : 0;
    const struct conn_record **index = NULL;
    struct growth *grown = malloc(cur->n_conns * sizeof(*grown));
    if (n_index > 0)
        index = malloc(n_index * sizeof(*index));
    bool ok = grown != NULL && (n_index == 0 || index != NULL);
    if (!ok)
        goto done;
    for (size_t i = 0; i < n_index; i++)
        index[i] = &prev->conns[i];
    if (n_index > 1)
        qsort(index, n_index, sizeof(*index), compare_identity);

    size_t n = 0;
    for (size_t i = 0; i < cur->n_conns; i++) {
        growth_of(&cur->conns[i], index, n_index, &grown[n]);
        if (grown[n].xacts > 0)
            n++;
    }
    if (n > 1)
        qsort(grown, n, sizeof(*grown), compare_growth);
    for (size_t i = 0; i < n;) {
        int64_t xacts = 0, hold_ms = 0;
        size_t end = i;
        while (end < n && compare_growth(&grown[i], &grown[end]) == 0) {
            xacts += grown[end].xacts;
            hold_ms += grown[end].hold_ms;
            end++;
        }
        struct hold_norm *norm = find_or_add(hn, grown[i].application);
        if (norm == NULL) {
            ok = false;
            goto done;
        }
        norm->hold_ms = norm->hold_ms * HOLD_NORMS_DECAY + (double)hold_ms;
        norm->xacts = norm->xacts * HOLD_NORMS_DECAY + (double)xacts;
        norm->seen_ms = cur->taken_ms;
        i = end;
    }
done:
    free(grown);
    free(index);
    return ok;
}

int64_t hold_norms_usual_ms(const struct hold_norms *hn, const char *application)
{
    const struct hold_norm *norm = find(hn, application);
    if (norm == NULL || norm->xacts < HOLD_NORMS_MIN_XACTS)
        return 0;
    int64_t usual = (int64_t)(norm->hold_ms / norm->xacts + 0.5);
    return usual > 0 ? usual : 1;
}

void hold_norms_annotate(const struct hold_norms *hn, struct snapshot *snap)
{
    for (size_t i = 0; i < snap->n_conns; i++)
        snap->conns[i].app_usual_hold_ms = hold_norms_usual_ms(hn, snap->conns[i].application);
}
