/* detect-leaks: per-connection evidence scores plus two report-wide signals (groups that only
 * grow, utilisation pressure). Every weight below is documented in docs/LEAKS.md; change both
 * together.
 *
 *   record --exclusions--> own evidence (leaks_score_connection)
 *          --> + growth bump (idle members of an only-growing app/user)
 *          --> + pressure bump (utilisation above leak_detection_threshold)
 *          --> cap 100 --> suspect when >= LEAK_SUSPECT_MIN_SCORE */
#include "manager/leaks.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/units.h"
#include "manager/stats.h"

/* Idle in transaction, relative to leak_hold_threshold (r = idle / hold):
 * below the threshold 25*r (never a suspect on its own), at it 45, rising by up to 15 more
 * until 10x the threshold. */
#define W_IIT_BELOW     25.0
#define W_IIT_AT_HOLD   45.0
#define W_IIT_BEYOND    15.0
#define IIT_BEYOND_SPAN 9.0
#define W_ABORTED       10
#define W_XACT_OLD      5  /* transaction open >= hold */
#define W_XACT_VERY_OLD 10 /* transaction open >= 10x hold (replaces W_XACT_OLD) */
#define W_BLOCKING      20
/* Serve mode, in a transaction on a server for far longer than the application usually holds
 * one (app_usual_hold_ms, r = hold / usual): from r >= 10 (and at least 1 s), 20 rising by
 * up to 10 more until 100x. Catches a leak long before leak_hold_threshold when the
 * application's transactions are short. */
#define UNUSUAL_HOLD_RATIO    10.0
#define UNUSUAL_HOLD_FLOOR_MS 1000
#define W_UNUSUAL_HOLD        20.0
#define W_UNUSUAL_HOLD_BEYOND 10.0
/* Serve mode, plain idle while holding a server (session pooling), relative to
 * leak_hold_threshold (r = idle / hold): below it 20*r, at it 35 rising by up to 15 more
 * until 10x. The server is held for nothing: other clients may be waiting for it. */
#define W_HOLD_BELOW   20.0
#define W_HOLD_AT_HOLD 35.0
#define W_HOLD_BEYOND  15.0
/* Serve mode: results left unread at least leak_hold_threshold while holding a server. */
#define W_NOT_READING 50
/* Plain idle, relative to idle_timeout (r = idle / idle_timeout): from r >= 1, 10 rising by
 * up to 10 more until 6x; so plain idle alone tops out at 20, below any suspect. */
#define W_IDLE_AT_TIMEOUT 10.0
#define W_IDLE_BEYOND     10.0
#define IDLE_BEYOND_SPAN  5.0
#define W_OLD_CONNECTION  10
#define W_GROWTH          10
#define W_PRESSURE        10
#define W_PRESSURE_FULL   15 /* utilisation at or above 100% (replaces W_PRESSURE) */
/* Confidence = strongest score + 3 per other suspect (at most +15) + 5 under pressure. */
#define CONF_PER_CORROBORATION 3
#define CONF_CORROBORATION_CAP 15
#define CONF_PRESSURE          5

static void add_reason(struct leak_suspect *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void add_reason(struct leak_suspect *s, const char *fmt, ...)
{
    if (s == NULL || s->n_reasons >= LEAK_MAX_REASONS)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->reasons[s->n_reasons++], LEAK_REASON_LEN, fmt, ap);
    va_end(ap);
}

/* Records that can never be a leak suspect, whatever their evidence. */
static bool never_suspect(const struct conn_record *rec)
{
    return rec->is_self || !rec->visible || rec->is_infrastructure || rec->is_replication;
}

static bool is_idle_state(enum conn_state state)
{
    return state == CONN_STATE_IDLE || snapshot_conn_state_in_xact(state);
}

static const char *app_label(const char *application)
{
    return application[0] != '\0' ? application : "(no application_name)";
}

/* Points for a transaction held far longer than its application usually holds a server. */
static int score_unusual_hold(const struct conn_record *rec, int64_t xact, struct leak_suspect *out)
{
    if (rec->app_usual_hold_ms <= 0 || rec->pid == 0 || xact < UNUSUAL_HOLD_FLOOR_MS)
        return 0;
    double r = (double)xact / (double)rec->app_usual_hold_ms;
    if (r < UNUSUAL_HOLD_RATIO)
        return 0;
    int p = (int)lround(W_UNUSUAL_HOLD + W_UNUSUAL_HOLD_BEYOND * fmin(log10(r) - 1.0, 1.0));
    char a[32], b[32];
    add_reason(out,
               "holds its server in a transaction for %s, %.0fx what application '%s' usually "
               "holds (%s) (+%d)",
               units_format_duration(xact, a, sizeof(a)), r, app_label(rec->application),
               units_format_duration(rec->app_usual_hold_ms, b, sizeof(b)), p);
    return p;
}

/* Clients of rec's pool waiting for a server, from the snapshot's pool records (serve mode;
 * 0 when the snapshot has none for it). */
static int pool_waiters(const struct snapshot *cur, const struct conn_record *rec)
{
    for (size_t i = 0; i < cur->n_pools; i++) {
        const struct pool_record *pl = &cur->pools[i];
        if (!strcmp(pl->database, rec->database) && !strcmp(pl->user, rec->user))
            return pl->cl_waiting;
    }
    return 0;
}

int leaks_score_connection(const struct snapshot *cur, const struct conn_record *rec,
                           const struct manager_options *opts, struct leak_suspect *out)
{
    if (out != NULL) {
        memset(out, 0, sizeof(*out));
        out->conn = rec;
        out->held_ms = snapshot_age_ms(cur, rec->connected_ms);
        out->idle_ms = is_idle_state(rec->state) ? snapshot_age_ms(cur, rec->state_change_ms) : 0;
        out->xact_age_ms = rec->xact_start_ms ? snapshot_age_ms(cur, rec->xact_start_ms) : 0;
    }
    if (never_suspect(rec))
        return 0;

    int64_t held = snapshot_age_ms(cur, rec->connected_ms);
    int64_t idle = snapshot_age_ms(cur, rec->state_change_ms);
    int64_t xact = rec->xact_start_ms ? snapshot_age_ms(cur, rec->xact_start_ms) : 0;
    int64_t hold = opts->leak_hold_threshold_ms > 0 ? opts->leak_hold_threshold_ms : 1;
    int64_t idle_timeout = opts->idle_timeout_ms > 0 ? opts->idle_timeout_ms : 1;
    char a[32], b[32];
    int score = 0;
    int waiters = 0;

    if (cur->mode == SNAPSHOT_MODE_SERVE && rec->output_blocked_ms >= hold) {
        /* Not busy at all: the server's results wait on a client that stopped reading. */
        score += W_NOT_READING;
        add_reason(out, "has not read its results for %s while holding a server (+%d)",
                   units_format_duration(rec->output_blocked_ms, a, sizeof(a)), W_NOT_READING);
    } else if (!is_idle_state(rec->state)) {
        /* Busy connections are doing work; a long query is a performance problem, not a leak. */
        if (rec->state == CONN_STATE_ACTIVE && rec->query_start_ms != 0 &&
            snapshot_age_ms(cur, rec->query_start_ms) >= hold)
            add_reason(
                out, "active for %s: a long query, not a leak (+0)",
                units_format_duration(snapshot_age_ms(cur, rec->query_start_ms), a, sizeof(a)));
        return 0;
    }

    if (!is_idle_state(rec->state)) {
        /* only the unread results above count */
    } else if (snapshot_conn_state_in_xact(rec->state)) {
        double r = (double)idle / (double)hold;
        double points;
        if (r < 1.0)
            points = W_IIT_BELOW * r;
        else
            points = W_IIT_AT_HOLD + W_IIT_BEYOND * fmin((r - 1.0) / IIT_BEYOND_SPAN, 1.0);
        int p = (int)lround(points);
        score += p;
        add_reason(out, "idle in transaction for %s (leak_hold_threshold %s) (+%d)",
                   units_format_duration(idle, a, sizeof(a)),
                   units_format_duration(hold, b, sizeof(b)), p);
        if (rec->state == CONN_STATE_IDLE_IN_XACT_ABORTED) {
            score += W_ABORTED;
            add_reason(out,
                       "transaction failed and was never rolled back; it still holds a slot "
                       "(+%d)",
                       W_ABORTED);
        }
        score += score_unusual_hold(rec, xact, out);
        if (xact >= 10 * hold) {
            score += W_XACT_VERY_OLD;
            add_reason(out, "transaction open for %s, over 10x leak_hold_threshold (+%d)",
                       units_format_duration(xact, a, sizeof(a)), W_XACT_VERY_OLD);
        } else if (xact >= hold) {
            score += W_XACT_OLD;
            add_reason(out, "transaction open for %s (+%d)",
                       units_format_duration(xact, a, sizeof(a)), W_XACT_OLD);
        }
    } else if (cur->mode == SNAPSHOT_MODE_SERVE && rec->pid != 0 &&
               (waiters = pool_waiters(cur, rec)) > 0) {
        /* Only while others wait for a server is the held one denied to anybody: a session
         * client idle between transactions is otherwise how session pooling works (a LISTEN
         * client, an application's persistent connection), and is scored as plain idle. */
        double r = (double)idle / (double)hold;
        double points =
            r < 1.0 ? W_HOLD_BELOW * r
                    : W_HOLD_AT_HOLD + W_HOLD_BEYOND * fmin((r - 1.0) / IIT_BEYOND_SPAN, 1.0);
        int p = (int)lround(points);
        score += p;
        add_reason(out,
                   "holds a server connection without traffic for %s while %d client%s of its "
                   "pool wait%s (session pooling; leak_hold_threshold %s) (+%d)",
                   units_format_duration(idle, a, sizeof(a)), waiters, waiters == 1 ? "" : "s",
                   waiters == 1 ? "s" : "", units_format_duration(hold, b, sizeof(b)), p);
    } else {
        double r = (double)idle / (double)idle_timeout;
        if (r >= 1.0) {
            int p = (int)lround(W_IDLE_AT_TIMEOUT +
                                W_IDLE_BEYOND * fmin((r - 1.0) / IDLE_BEYOND_SPAN, 1.0));
            score += p;
            add_reason(out, "idle for %s, longer than idle_timeout %s (+%d)",
                       units_format_duration(idle, a, sizeof(a)),
                       units_format_duration(idle_timeout, b, sizeof(b)), p);
        }
    }
    if (rec->blocking_others) {
        score += W_BLOCKING;
        add_reason(out, "holds locks other sessions are waiting on (+%d)", W_BLOCKING);
    }
    if (opts->max_connection_age_ms > 0 && held > opts->max_connection_age_ms) {
        score += W_OLD_CONNECTION;
        add_reason(out, "connected for %s, longer than max_connection_age %s (+%d)",
                   units_format_duration(held, a, sizeof(a)),
                   units_format_duration(opts->max_connection_age_ms, b, sizeof(b)),
                   W_OLD_CONNECTION);
    }
    if (score > 100)
        score = 100;
    if (out != NULL)
        out->score = score;
    return score;
}

/* ---- growth: app+user groups that opened connections and closed none ---- */

struct group_key {
    const struct conn_record *rec;
};

static int compare_group(const void *a, const void *b)
{
    const struct conn_record *x = ((const struct group_key *)a)->rec;
    const struct conn_record *y = ((const struct group_key *)b)->rec;
    int c = strcmp(x->application, y->application);
    return c != 0 ? c : strcmp(x->user, y->user);
}

static int compare_identity(const void *a, const void *b)
{
    const struct conn_record *x = ((const struct group_key *)a)->rec;
    const struct conn_record *y = ((const struct group_key *)b)->rec;
    if (x->id != y->id)
        return x->id < y->id ? -1 : 1;
    if (x->connected_ms != y->connected_ms)
        return x->connected_ms < y->connected_ms ? -1 : 1;
    return 0;
}

bool leaks_may_suspect(const struct manager_options *opts, const struct conn_record *rec)
{
    return options_match_filters(opts, rec) && !never_suspect(rec);
}

/* Eligible records of snap sorted by cmp; *n receives the count. NULL on no memory (or
 * when there are none, with *n = 0). */
static struct group_key *sorted_keys(const struct snapshot *snap,
                                     const struct manager_options *opts,
                                     int (*cmp)(const void *, const void *), size_t *n, bool *oom)
{
    *n = 0;
    if (snap->n_conns == 0)
        return NULL;
    struct group_key *keys = malloc(snap->n_conns * sizeof(*keys));
    if (keys == NULL) {
        *oom = true;
        return NULL;
    }
    for (size_t i = 0; i < snap->n_conns; i++) {
        if (leaks_may_suspect(opts, &snap->conns[i]))
            keys[(*n)++].rec = &snap->conns[i];
    }
    if (*n > 1)
        qsort(keys, *n, sizeof(*keys), cmp);
    return keys;
}

/* Walks both snapshots grouped by (application, user). A group "only grew" when it has more
 * connections now than before, had at least one before, and every earlier connection (same
 * id and connect time) is still there: it opens connections and never closes them. */
static bool find_growth(const struct snapshot *prev, const struct snapshot *cur,
                        const struct manager_options *opts, struct leak_report *out)
{
    bool oom = false;
    size_t n_prev, n_cur, n_ids;
    struct group_key *pk = sorted_keys(prev, opts, compare_group, &n_prev, &oom);
    struct group_key *ck = sorted_keys(cur, opts, compare_group, &n_cur, &oom);
    struct group_key *ids = sorted_keys(cur, opts, compare_identity, &n_ids, &oom);
    if (oom)
        goto done;

    size_t i = 0, j = 0;
    while (j < n_cur) {
        size_t j_end = j;
        while (j_end < n_cur && compare_group(&ck[j], &ck[j_end]) == 0)
            j_end++;
        while (i < n_prev && compare_group(&pk[i], &ck[j]) < 0)
            i++;
        size_t i_end = i;
        while (i_end < n_prev && compare_group(&pk[i_end], &ck[j]) == 0)
            i_end++;
        int before = (int)(i_end - i), after = (int)(j_end - j);
        bool closed_any = false;
        for (size_t k = i; k < i_end && !closed_any; k++) {
            if (bsearch(&pk[k], ids, n_ids, sizeof(*ids), compare_identity) == NULL)
                closed_any = true;
        }
        if (before > 0 && after > before && !closed_any) {
            struct leak_growth *grown =
                realloc(out->growth, (out->n_growth + 1) * sizeof(*out->growth));
            if (grown == NULL) {
                oom = true;
                goto done;
            }
            out->growth = grown;
            struct leak_growth *g = &out->growth[out->n_growth++];
            memset(g, 0, sizeof(*g));
            snprintf(g->application, sizeof(g->application), "%s", ck[j].rec->application);
            snprintf(g->user, sizeof(g->user), "%s", ck[j].rec->user);
            g->before = before;
            g->after = after;
        }
        i = i_end;
        j = j_end;
    }
done:
    free(pk);
    free(ck);
    free(ids);
    return !oom;
}

static const struct leak_growth *growth_of(const struct leak_report *report,
                                           const struct conn_record *rec)
{
    for (size_t i = 0; i < report->n_growth; i++) {
        if (strcmp(report->growth[i].application, rec->application) == 0 &&
            strcmp(report->growth[i].user, rec->user) == 0)
            return &report->growth[i];
    }
    return NULL;
}

static int compare_suspects(const void *a, const void *b)
{
    const struct leak_suspect *x = a;
    const struct leak_suspect *y = b;
    if (x->score != y->score)
        return x->score > y->score ? -1 : 1;
    if (x->idle_ms != y->idle_ms)
        return x->idle_ms > y->idle_ms ? -1 : 1;
    if (x->conn->id != y->conn->id)
        return x->conn->id < y->conn->id ? -1 : 1;
    return 0;
}

static const char *const risk_names[] = {
    [LEAK_RISK_NONE] = "none",
    [LEAK_RISK_LOW] = "low",
    [LEAK_RISK_MEDIUM] = "medium",
    [LEAK_RISK_HIGH] = "high",
};

const char *leaks_risk_name(enum leak_risk risk)
{
    if ((size_t)risk >= sizeof(risk_names) / sizeof(risk_names[0]))
        return "unknown";
    return risk_names[risk];
}

enum report_status leaks_status(const struct leak_report *report)
{
    if (!report->detected)
        return REPORT_OK;
    return report->risk_level == LEAK_RISK_HIGH ? REPORT_CRITICAL : REPORT_WARNING;
}

static void write_recommendation(const struct snapshot *cur, const struct manager_options *opts,
                                 bool pressure, struct leak_report *out)
{
    char a[32], b[32];
    size_t len = sizeof(out->recommendation);
    if (out->total_suspected == 0) {
        if (out->n_growth > 0) {
            const struct leak_growth *g = &out->growth[0];
            snprintf(out->recommendation, len,
                     "No leak suspects yet, but application '%s' (user '%s') grew from %d to %d "
                     "connections without closing any; check that it returns connections to "
                     "its pool.",
                     app_label(g->application), g->user, g->before, g->after);
        } else {
            snprintf(out->recommendation, len, "No leak suspects among %zu connections.",
                     cur->n_conns);
        }
        return;
    }
    const struct leak_suspect *top = &out->suspects[0];
    const struct conn_record *worst = top->conn;
    size_t same = 0;
    int64_t longest = 0;
    for (size_t i = 0; i < out->total_suspected; i++) {
        const struct conn_record *r = out->suspects[i].conn;
        if (strcmp(r->application, worst->application) == 0 && strcmp(r->user, worst->user) == 0) {
            same++;
            if (out->suspects[i].idle_ms > longest)
                longest = out->suspects[i].idle_ms;
        }
    }
    int n = 0;
    if (snapshot_conn_state_in_xact(worst->state)) {
        n = snprintf(out->recommendation, len,
                     "%zu suspected connection%s from application '%s' (user '%s') sit idle in "
                     "a transaction for up to %s: commit or roll back on every code path and "
                     "release connections in a finally block",
                     same, same == 1 ? "" : "s", app_label(worst->application), worst->user,
                     units_format_duration(longest, a, sizeof(a)));
        if (cur->server.idle_in_xact_session_timeout_ms > 0)
            n += snprintf(out->recommendation + n, len - (size_t)n,
                          "; the server's idle_in_transaction_session_timeout (%s) will end "
                          "them.",
                          units_format_pg_duration(cur->server.idle_in_xact_session_timeout_ms, b,
                                                   sizeof(b)));
        else
            n += snprintf(out->recommendation + n, len - (size_t)n,
                          "; set ALTER ROLE \"%s\" SET idle_in_transaction_session_timeout = "
                          "'%s' so the server ends them.",
                          worst->user,
                          units_format_pg_duration(opts->leak_hold_threshold_ms, b, sizeof(b)));
    } else {
        n = snprintf(out->recommendation, len,
                     "%zu suspected connection%s from application '%s' (user '%s') held idle "
                     "for up to %s: return connections to the pool when done and lower the "
                     "application pool's idle timeout or max lifetime; kill-idle can reclaim "
                     "them now.",
                     same, same == 1 ? "" : "s", app_label(worst->application), worst->user,
                     units_format_duration(longest, a, sizeof(a)));
    }
    if (pressure && n > 0 && (size_t)n < len)
        snprintf(out->recommendation + n, len - (size_t)n,
                 " Utilisation is %.0f%%, above leak_detection_threshold %.0f%%: act now.",
                 out->utilization_pct, opts->leak_detection_threshold_pct);
}

bool leaks_detect(const struct snapshot *prev, const struct snapshot *cur,
                  const struct manager_options *opts, struct leak_report *out)
{
    memset(out, 0, sizeof(*out));
    out->risk_level = LEAK_RISK_NONE;
    out->utilization_pct = stats_utilization_pct(cur);
    bool pressure =
        stats_capacity_max(cur) > 0 && out->utilization_pct > opts->leak_detection_threshold_pct;
    int pressure_points = out->utilization_pct >= 100.0 ? W_PRESSURE_FULL : W_PRESSURE;

    if (prev != NULL && !find_growth(prev, cur, opts, out))
        goto oom;
    /* Each candidate is scored in a scratch record and only suspects are kept: a record is
     * over a kilobyte, and room for every connection would be megabytes with 10,000 idle
     * clients, allocated and freed every run. */
    size_t cap = 0;
    struct leak_suspect scratch;
    for (size_t i = 0; i < cur->n_conns; i++) {
        const struct conn_record *rec = &cur->conns[i];
        /* Busy connections are doing work, unless the work waits on a client that stopped
         * reading (serve mode). */
        bool stalled = cur->mode == SNAPSHOT_MODE_SERVE && rec->output_blocked_ms > 0;
        if (!leaks_may_suspect(opts, rec) || (!is_idle_state(rec->state) && !stalled))
            continue;
        struct leak_suspect *s = &scratch;
        int score = leaks_score_connection(cur, rec, opts, s);
        const struct leak_growth *g = growth_of(out, rec);
        if (g != NULL) {
            score += W_GROWTH;
            add_reason(s,
                       "application '%s' (user '%s') grew from %d to %d connections and "
                       "closed none (+%d)",
                       app_label(g->application), g->user, g->before, g->after, W_GROWTH);
        }
        if (pressure && score > 0) {
            score += pressure_points;
            add_reason(s, "utilisation %.0f%% is above leak_detection_threshold %.0f%% (+%d)",
                       out->utilization_pct, opts->leak_detection_threshold_pct, pressure_points);
        }
        s->score = score > 100 ? 100 : score;
        if (s->score < LEAK_SUSPECT_MIN_SCORE)
            continue;
        if (out->total_suspected == cap) {
            size_t grown = cap ? cap * 2 : 16;
            struct leak_suspect *more = realloc(out->suspects, grown * sizeof(*more));
            if (more == NULL)
                goto oom;
            out->suspects = more;
            cap = grown;
        }
        out->suspects[out->total_suspected++] = *s;
    }
    if (out->total_suspected > 1)
        qsort(out->suspects, out->total_suspected, sizeof(*out->suspects), compare_suspects);

    if (out->total_suspected > 0) {
        out->detected = true;
        int others = (int)out->total_suspected - 1;
        int corroboration = others * CONF_PER_CORROBORATION;
        if (corroboration > CONF_CORROBORATION_CAP)
            corroboration = CONF_CORROBORATION_CAP;
        int confidence = out->suspects[0].score + corroboration + (pressure ? CONF_PRESSURE : 0);
        out->confidence = confidence > 100 ? 100 : confidence;
        enum leak_risk level = out->confidence >= 75   ? LEAK_RISK_HIGH
                               : out->confidence >= 50 ? LEAK_RISK_MEDIUM
                                                       : LEAK_RISK_LOW;
        if (pressure && level < LEAK_RISK_HIGH)
            level++;
        out->risk_level = level;
    }
    write_recommendation(cur, opts, pressure, out);
    return true;
oom:
    leaks_report_free(out);
    return false;
}

void leaks_report_free(struct leak_report *report)
{
    free(report->suspects);
    free(report->growth);
    report->suspects = NULL;
    report->growth = NULL;
    report->total_suspected = 0;
    report->n_growth = 0;
}
