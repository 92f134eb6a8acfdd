/* The owed-answer model of one server connection (see owed.h for the state diagram). The
 * rules follow PostgreSQL's PostgresMain loop: Query, FunctionCall and Sync end with
 * ReadyForQuery; an error inside Parse/Bind/Describe/Execute/Close makes the backend ignore
 * every message up to the next Sync; Flush, CopyData, CopyDone and CopyFail are ignored
 * outside COPY; COPY FROM STDIN reads CopyData, Flush and Sync up to CopyDone or CopyFail. */
#include <stdlib.h>
#include <string.h>

#include "proto/owed.h"
#include "proto/wire.h"

void owed_init(struct owed_queue *q, owed_forget_fn forget, void *ctx)
{
    memset(q, 0, sizeof(*q));
    q->mode = OWED_MODE_NORMAL;
    q->forget = forget;
    q->forget_ctx = ctx;
}

static void drop_alts(struct owed_queue *q)
{
    q->probing = false;
    for (uint8_t i = 0; i < q->n_alts; i++)
        free(q->alts[i].e);
    free(q->alts);
    q->alts = NULL;
    q->n_alts = 0;
}

void owed_reset(struct owed_queue *q)
{
    drop_alts(q);
    free(q->e);
    q->e = NULL;
    q->head = q->n = q->cap = 0;
    q->mode = OWED_MODE_NORMAL;
    q->copy_span_other = false;
    q->copy_span_syncs = 0;
    q->copy_end = 0;
    q->busy = false;
}

enum owed_msg owed_msg_of(uint8_t type)
{
    switch (type) {
    case WIRE_FE_QUERY:
        return OWED_QUERY;
    case WIRE_FE_FUNCTION_CALL:
        return OWED_FUNCTION;
    case WIRE_FE_SYNC:
        return OWED_SYNC;
    case WIRE_FE_PARSE:
        return OWED_PARSE;
    case WIRE_FE_BIND:
        return OWED_BIND;
    case WIRE_FE_DESCRIBE:
        return OWED_DESCRIBE;
    case WIRE_FE_EXECUTE:
        return OWED_EXECUTE;
    case WIRE_FE_CLOSE:
        return OWED_CLOSE;
    case WIRE_FE_FLUSH:
        return OWED_FLUSH;
    case WIRE_FE_COPY_DATA:
        return OWED_COPY_DATA;
    case WIRE_FE_COPY_DONE:
        return OWED_COPY_DONE;
    case WIRE_FE_COPY_FAIL:
        return OWED_COPY_FAIL;
    default:
        return OWED_NOT_ALLOWED;
    }
}

const char *owed_mode_name(enum owed_mode m)
{
    static const char *const names[] = {
        [OWED_MODE_NORMAL] = "normal",
        [OWED_MODE_SKIP] = "skip-till-sync",
        [OWED_MODE_COPY_IN] = "copy-in",
        [OWED_MODE_LOST] = "lost",
    };
    return (unsigned)m < sizeof(names) / sizeof(names[0]) ? names[m] : "?";
}

static enum owed_verdict step(struct owed_queue *q, uint8_t type, uint32_t *fork);

/* Outside COPY these messages are ignored by the backend: nothing answers them. */
static bool silent(uint8_t msg)
{
    return msg == OWED_FLUSH || msg == OWED_COPY_DATA || msg == OWED_COPY_DONE ||
           msg == OWED_COPY_FAIL;
}

static bool ends_with_ready(uint8_t msg)
{
    return msg == OWED_QUERY || msg == OWED_FUNCTION || msg == OWED_SYNC;
}

static struct owed_entry *head_entry(const struct owed_queue *q)
{
    return q->n ? &q->e[q->head] : NULL;
}

bool owed_has_room(const struct owed_queue *q)
{
    return q->n + OWED_RESERVE <= OWED_MAX_ENTRIES;
}

/* Makes room for one more entry at the tail. */
static bool make_room(struct owed_queue *q)
{
    if (q->head + q->n == q->cap) {
        if (q->head > 0) {
            memmove(q->e, q->e + q->head, q->n * sizeof(*q->e));
            q->head = 0;
        } else {
            if (q->cap >= OWED_MAX_ENTRIES)
                return false;
            uint32_t cap = q->cap ? q->cap * 2 : 16;
            if (cap > OWED_MAX_ENTRIES)
                cap = OWED_MAX_ENTRIES;
            struct owed_entry *e = realloc(q->e, cap * sizeof(*e));
            if (!e)
                return false;
            q->e = e;
            q->cap = cap;
        }
    }
    return true;
}

static bool push(struct owed_queue *q, uint8_t msg, uint8_t flags, uint64_t id)
{
    if (q->n) {
        struct owed_entry *t = &q->e[q->head + q->n - 1];
        if (t->msg == msg && t->flags == flags && t->id == 0 && id == 0 && t->count < UINT32_MAX) {
            t->count++;
            return true;
        }
    }
    if (!make_room(q))
        return false;
    q->e[q->head + q->n] = (struct owed_entry){.id = id, .count = 1, .msg = msg, .flags = flags};
    q->n++;
    return true;
}

/* The head message was answered (or skipped). */
static void pop_unit(struct owed_queue *q)
{
    struct owed_entry *h = &q->e[q->head];
    q->head_answered = false;
    if (--h->count > 0)
        return;
    q->head++;
    q->n--;
    if (q->n == 0)
        q->head = 0;
}

/* The head message will never run, skipped (an earlier error) or failed itself: a Parse did
 * not create its statement, a Close did not remove it. A skipped Parse that was to replace a
 * statement the server holds (OWED_KEPT; its Close went first and was skipped too) leaves
 * that statement in place, as a skipped Close does. */
static void drop_unit(struct owed_queue *q, bool skipped)
{
    struct owed_entry *h = &q->e[q->head];
    if (h->id && q->forget) {
        enum owed_msg msg = (enum owed_msg)h->msg;
        if (skipped && msg == OWED_PARSE && (h->flags & OWED_KEPT))
            msg = OWED_CLOSE;
        q->forget(q->forget_ctx, msg, h->id);
    }
    pop_unit(q);
}

/* Removes the head messages the backend passes over without a word: silent ones in NORMAL
 * mode, everything before the Sync in SKIP mode. */
static void settle(struct owed_queue *q)
{
    struct owed_entry *h;
    while ((h = head_entry(q)) != NULL) {
        if (q->mode == OWED_MODE_NORMAL && silent(h->msg))
            pop_unit(q);
        else if (q->mode == OWED_MODE_SKIP && h->msg != OWED_SYNC)
            drop_unit(q, true);
        else
            break;
    }
}

static bool note_one(struct owed_queue *q, uint8_t type, uint8_t flags, uint64_t id)
{
    enum owed_msg msg = owed_msg_of(type);
    if (msg == OWED_NOT_ALLOWED)
        return false;
    if (q->mode == OWED_MODE_LOST)
        return true; /* nothing is counted any more: the server is closed when released */
    if (q->mode == OWED_MODE_COPY_IN && q->copy_end == 0) {
        /* Inside the copy data: consumed by COPY, never answered on their own. */
        if (msg == OWED_COPY_DONE || msg == OWED_COPY_FAIL)
            q->copy_end = (uint8_t)msg;
        else if (msg == OWED_SYNC)
            q->copy_span_syncs++;
        else if (msg != OWED_COPY_DATA && msg != OWED_FLUSH)
            q->copy_span_other = true;
        return true;
    }
    if (!silent(msg))
        q->busy = true;
    if (push(q, (uint8_t)msg, flags, id))
        return true;
    q->mode = OWED_MODE_LOST; /* uncounted from here on: the server is never reused */
    return false;
}

/* CopyInResponse: the head Query or Execute now reads the client's stream up to the first
 * CopyDone or CopyFail. Messages already queued behind it up to that point belong to the
 * copy data; they are folded into the span summary. */
static void start_copy(struct owed_queue *q)
{
    struct owed_entry *origin = &q->e[q->head];
    q->mode = OWED_MODE_COPY_IN;
    q->copy_end = 0;
    q->copy_span_other = false;
    q->copy_span_syncs = 0;
    if (origin->count > 1) {
        /* A second Query (or Execute) right behind it is read as copy data. */
        q->copy_span_other = true;
        origin->count = 1;
    }
    uint32_t first = q->head + 1, end = q->head + q->n, i = first;
    while (i < end) {
        struct owed_entry *x = &q->e[i];
        if (x->msg == OWED_COPY_DONE || x->msg == OWED_COPY_FAIL) {
            q->copy_end = x->msg;
            if (--x->count == 0)
                i++;
            break;
        }
        if (x->msg == OWED_SYNC)
            q->copy_span_syncs += x->count;
        else if (x->msg != OWED_COPY_DATA && x->msg != OWED_FLUSH)
            q->copy_span_other = true;
        i++;
    }
    uint32_t removed = i - first;
    if (removed) {
        memmove(q->e + first, q->e + i, (end - i) * sizeof(*q->e));
        q->n -= removed;
    }
}

static void end_copy(struct owed_queue *q)
{
    q->mode = OWED_MODE_NORMAL;
    q->copy_end = 0;
    q->copy_span_other = false;
    q->copy_span_syncs = 0;
}

/* An error ended the head message: a simple Query, FunctionCall or Sync still ends with
 * ReadyForQuery; an extended-protocol message makes the backend skip to the next Sync. */
static void error_at_head(struct owed_queue *q)
{
    struct owed_entry *h = head_entry(q);
    if (ends_with_ready(h->msg)) {
        q->head_answered = true;
        return;
    }
    drop_unit(q, false);
    q->mode = OWED_MODE_SKIP;
    settle(q);
}

static enum owed_verdict after_ready(struct owed_queue *q)
{
    pop_unit(q);
    q->mode = OWED_MODE_NORMAL;
    settle(q);
    if (q->n)
        return OWED_OK;
    q->busy = false;
    return OWED_IDLE;
}

static enum owed_verdict on_copy_in(struct owed_queue *q, uint8_t type, uint32_t *fork)
{
    switch (type) {
    case WIRE_BE_COMMAND_COMPLETE:
        /* COPY ends only by reading CopyDone; a completion before one was sent is a lie. */
        if (q->copy_end != OWED_COPY_DONE)
            return OWED_VIOLATION;
        end_copy(q);
        if (q->e[q->head].msg == OWED_EXECUTE)
            pop_unit(q);
        else
            q->head_answered = true;
        return OWED_OK;
    case WIRE_BE_ERROR:
        if (q->copy_span_other) {
            /* How far COPY had read when it failed decides whether those messages run:
             * unknowable from here. */
            q->mode = OWED_MODE_LOST;
            return OWED_OK;
        }
        /* The rest of the copy data is ignored by the backend after the error -- except
         * Syncs, which it may or may not have read inside COPY: the caller forks. */
        *fork = q->copy_span_syncs;
        end_copy(q);
        if (*fork == 0)
            error_at_head(q);
        return OWED_OK;
    default:
        return OWED_VIOLATION;
    }
}

/* What an answer does to the head message that may send it: part of its output, its
 * completion before the ReadyForQuery that ends it (Query, FunctionCall), or its end. An
 * answer with no row for the head message's kind is a violation. ReadyForQuery, errors and
 * CopyInResponse change more than the head and are handled in on_normal. */
enum answer_effect {
    ANSWER_PART,
    ANSWER_COMPLETES,
    ANSWER_ENDS,
};

static const struct {
    uint8_t type; /* enum wire_be_type */
    uint8_t msg;  /* enum owed_msg */
    uint8_t effect;
} answers[] = {
    {WIRE_BE_ROW_DESCRIPTION, OWED_QUERY, ANSWER_PART},
    {WIRE_BE_DATA_ROW, OWED_QUERY, ANSWER_PART},
    {WIRE_BE_COPY_OUT_RESPONSE, OWED_QUERY, ANSWER_PART},
    {WIRE_BE_COPY_DATA, OWED_QUERY, ANSWER_PART},
    {WIRE_BE_COPY_DONE, OWED_QUERY, ANSWER_PART},
    {WIRE_BE_COMMAND_COMPLETE, OWED_QUERY, ANSWER_COMPLETES},
    {WIRE_BE_EMPTY_QUERY, OWED_QUERY, ANSWER_COMPLETES},
    {WIRE_BE_FUNCTION_CALL_RESPONSE, OWED_FUNCTION, ANSWER_COMPLETES},
    {WIRE_BE_PARSE_COMPLETE, OWED_PARSE, ANSWER_ENDS},
    {WIRE_BE_BIND_COMPLETE, OWED_BIND, ANSWER_ENDS},
    {WIRE_BE_PARAMETER_DESCRIPTION, OWED_DESCRIBE, ANSWER_PART},
    {WIRE_BE_ROW_DESCRIPTION, OWED_DESCRIBE, ANSWER_ENDS},
    {WIRE_BE_NO_DATA, OWED_DESCRIBE, ANSWER_ENDS},
    {WIRE_BE_DATA_ROW, OWED_EXECUTE, ANSWER_PART},
    {WIRE_BE_COPY_OUT_RESPONSE, OWED_EXECUTE, ANSWER_PART},
    {WIRE_BE_COPY_DATA, OWED_EXECUTE, ANSWER_PART},
    {WIRE_BE_COPY_DONE, OWED_EXECUTE, ANSWER_PART},
    {WIRE_BE_COMMAND_COMPLETE, OWED_EXECUTE, ANSWER_ENDS},
    {WIRE_BE_EMPTY_QUERY, OWED_EXECUTE, ANSWER_ENDS},
    {WIRE_BE_PORTAL_SUSPENDED, OWED_EXECUTE, ANSWER_ENDS},
    {WIRE_BE_CLOSE_COMPLETE, OWED_CLOSE, ANSWER_ENDS},
};

static enum owed_verdict on_normal(struct owed_queue *q, uint8_t type)
{
    settle(q);
    struct owed_entry *h = head_entry(q);
    if (q->mode == OWED_MODE_SKIP) {
        if (type == WIRE_BE_READY_FOR_QUERY)
            return h ? after_ready(q) : OWED_VIOLATION;
        if (type == WIRE_BE_ERROR) {
            q->mode = OWED_MODE_LOST; /* e.g. a FATAL termination while skipping */
            return OWED_OK;
        }
        return OWED_VIOLATION;
    }
    if (!h) {
        if (type == WIRE_BE_ERROR) {
            /* Unasked: the backend is being terminated (FATAL) and closes next. */
            q->mode = OWED_MODE_LOST;
            return OWED_OK;
        }
        return OWED_VIOLATION;
    }
    switch (type) {
    case WIRE_BE_READY_FOR_QUERY:
        if (!ends_with_ready(h->msg))
            return OWED_VIOLATION;
        /* A Query always answers CommandComplete, EmptyQueryResponse or an error first, a
         * FunctionCall its result or an error: a bare ReadyForQuery belongs to a Sync. */
        if (h->msg != OWED_SYNC && !q->head_answered)
            return OWED_VIOLATION;
        return after_ready(q);
    case WIRE_BE_ERROR:
        error_at_head(q);
        return OWED_OK;
    case WIRE_BE_COPY_IN_RESPONSE:
        if (h->msg != OWED_QUERY && h->msg != OWED_EXECUTE)
            return OWED_VIOLATION;
        start_copy(q);
        return OWED_OK;
    default:
        break;
    }
    for (size_t i = 0; i < sizeof(answers) / sizeof(answers[0]); i++) {
        if (answers[i].type != type || answers[i].msg != h->msg)
            continue;
        if (answers[i].effect == ANSWER_COMPLETES)
            q->head_answered = true;
        else if (answers[i].effect == ANSWER_ENDS)
            pop_unit(q);
        return OWED_OK;
    }
    return OWED_VIOLATION; /* CopyBothResponse, login messages, unknown types */
}

/* One hypothesis takes one answer; *fork is set to the number of Syncs a failed COPY may
 * have left unread (the error is then not yet applied). */
static enum owed_verdict step(struct owed_queue *q, uint8_t type, uint32_t *fork)
{
    switch ((enum owed_mode)q->mode) {
    case OWED_MODE_LOST:
        return OWED_OK;
    case OWED_MODE_COPY_IN:
        return on_copy_in(q, type, fork);
    case OWED_MODE_NORMAL:
    case OWED_MODE_SKIP:
        break;
    }
    return on_normal(q, type);
}

static void set_lost(struct owed_queue *q)
{
    drop_alts(q);
    q->mode = OWED_MODE_LOST;
}

/* Syncs inside failed COPY: hypothesis j says the last j of them were not read by COPY, so
 * the backend answers each with ReadyForQuery right after the error (the first also ends a
 * skip-till-Sync). q itself becomes hypothesis 0. */
static void fork_on_copy_error(struct owed_queue *q, uint32_t syncs)
{
    if (q->n_alts || syncs > OWED_MAX_ALTS) {
        set_lost(q); /* too many possibilities to follow */
        return;
    }
    q->alts = calloc(syncs, sizeof(*q->alts));
    if (!q->alts) {
        set_lost(q);
        return;
    }
    for (uint32_t j = 1; j <= syncs; j++) {
        struct owed_queue *a = &q->alts[j - 1];
        *a = *q;
        a->alts = NULL;
        a->n_alts = 0;
        a->e = malloc(q->cap * sizeof(*q->e));
        if (a->e)
            memcpy(a->e, q->e, q->cap * sizeof(*q->e));
        bool ok = a->e && make_room(a);
        if (ok) {
            uint32_t at = a->head + 1; /* right behind the COPY's Query or Execute */
            memmove(a->e + at + 1, a->e + at, (a->head + a->n - at) * sizeof(*a->e));
            a->e[at] = (struct owed_entry){.count = j, .msg = OWED_SYNC};
            a->n++;
            error_at_head(a);
        }
        q->n_alts++;
        if (!ok) {
            set_lost(q);
            return;
        }
    }
    error_at_head(q);
}

enum owed_verdict owed_on_backend(struct owed_queue *q, uint8_t type)
{
    /* Asynchronous messages may arrive at any time. */
    if (type == WIRE_BE_NOTICE || type == WIRE_BE_PARAMETER_STATUS || type == WIRE_BE_NOTIFICATION)
        return OWED_OK;
    uint32_t fork = 0;
    enum owed_verdict v = step(q, type, &fork);
    if (fork) {
        fork_on_copy_error(q, fork);
        return OWED_OK;
    }
    if (!q->n_alts)
        return v;
    /* Every hypothesis takes the answer; those it contradicts are dropped. */
    bool all_idle = v == OWED_IDLE;
    int survivors = v != OWED_VIOLATION;
    for (uint8_t i = 0; i < q->n_alts;) {
        struct owed_queue *a = &q->alts[i];
        uint32_t f = 0;
        enum owed_verdict av = step(a, type, &f);
        if (f) {
            set_lost(q); /* a second failed COPY while still unsure of the first */
            return OWED_OK;
        }
        if (av == OWED_VIOLATION) {
            free(a->e);
            q->alts[i] = q->alts[--q->n_alts];
            continue;
        }
        if (v == OWED_VIOLATION && survivors == 0) {
            /* The main hypothesis was wrong: this one takes its place. */
            free(q->e);
            struct owed_queue *alts = q->alts;
            uint8_t n_alts = q->n_alts;
            *q = *a;
            q->alts = alts;
            q->n_alts = n_alts;
            q->alts[i] = q->alts[--q->n_alts];
            v = av;
            all_idle = av == OWED_IDLE;
            survivors = 1;
            continue;
        }
        survivors++;
        all_idle = all_idle && av == OWED_IDLE;
        i++;
    }
    if (survivors == 0)
        return OWED_VIOLATION;
    if (q->n_alts == 0 || all_idle) {
        drop_alts(q); /* one truth left, or all agree: nothing is owed */
        return v;
    }
    return OWED_OK; /* still unsure: not idle */
}

static bool swallowed_one(const struct owed_queue *q, uint8_t type)
{
    if (q->mode != OWED_MODE_NORMAL)
        return false;
    for (uint32_t i = q->head; i < q->head + q->n; i++) {
        const struct owed_entry *x = &q->e[i];
        if (silent(x->msg))
            continue;
        if (!(x->flags & OWED_SWALLOW))
            return false;
        if (x->msg == OWED_QUERY)
            return true; /* the pooler's probe: all of its answers */
        return (type == WIRE_BE_PARSE_COMPLETE && x->msg == OWED_PARSE) ||
               (type == WIRE_BE_CLOSE_COMPLETE && x->msg == OWED_CLOSE);
    }
    return false;
}

/* Whether hypothesis h could take this answer, tried on a scratch copy. */
static bool could_take(const struct owed_queue *h, uint8_t type)
{
    struct owed_queue tmp = *h;
    tmp.forget = NULL;
    tmp.alts = NULL;
    tmp.n_alts = 0;
    tmp.e = malloc((h->cap ? h->cap : 1) * sizeof(*h->e));
    if (!tmp.e)
        return true; /* cannot tell: keep it in the running */
    if (h->cap)
        memcpy(tmp.e, h->e, h->cap * sizeof(*h->e));
    uint32_t fork = 0;
    bool ok = step(&tmp, type, &fork) != OWED_VIOLATION;
    free(tmp.e);
    return ok;
}

bool owed_answer_swallowed(struct owed_queue *q, uint8_t type)
{
    if (!q->n_alts)
        return swallowed_one(q, type);
    /* Only hypotheses this answer does not rule out have a say. */
    int say = -1;
    for (int i = -1; i < (int)q->n_alts; i++) {
        const struct owed_queue *h = i < 0 ? q : &q->alts[i];
        if (!could_take(h, type))
            continue;
        int sw = swallowed_one(h, type);
        if (say >= 0 && say != sw) {
            set_lost(q); /* they disagree on whose answer this is */
            return false;
        }
        say = sw;
    }
    return say == 1;
}

bool owed_is_idle(const struct owed_queue *q)
{
    /* Only silent messages (a Flush, stray copy data) may follow the last ReadyForQuery. */
    return q->mode == OWED_MODE_NORMAL && !q->busy && q->n_alts == 0;
}

bool owed_is_lost(const struct owed_queue *q)
{
    return q->mode == OWED_MODE_LOST;
}

bool owed_note_frontend(struct owed_queue *q, uint8_t type, uint8_t flags, uint64_t id)
{
    for (uint8_t i = 0; i < q->n_alts; i++)
        (void)note_one(&q->alts[i], type, flags, id); /* a failure leaves that one LOST */
    return note_one(q, type, flags, id);
}

/* A probe would not change what this hypothesis's server does for the client. */
static bool probe_harmless(const struct owed_queue *q)
{
    if (q->mode == OWED_MODE_COPY_IN || q->mode == OWED_MODE_LOST)
        return false;
    if (q->n == 0)
        return !q->busy;
    for (uint32_t i = q->head; i < q->head + q->n; i++)
        if (!ends_with_ready(q->e[i].msg) && !silent(q->e[i].msg))
            return false;
    return true;
}

bool owed_probe_due(const struct owed_queue *q)
{
    if (!q->n_alts || q->probing || !probe_harmless(q))
        return false;
    for (uint8_t i = 0; i < q->n_alts; i++)
        if (!probe_harmless(&q->alts[i]))
            return false;
    return true;
}

bool owed_note_probe(struct owed_queue *q)
{
    q->probing = true;
    return owed_note_frontend(q, 'Q', OWED_SWALLOW, 0);
}
