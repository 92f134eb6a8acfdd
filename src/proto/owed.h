/* What a PostgreSQL server still owes for the frontend messages sent to it: a model of the
 * backend's command loop (postgres.c and COPY FROM STDIN) exact enough to say, at every
 * ReadyForQuery, whether it answered the last request sent. A pooler may hand a server to
 * another client only at such a ReadyForQuery; releasing it one message early crosses
 * results between clients.
 *
 * The model is a queue of the messages forwarded and not yet answered, in order (runs of the
 * same message merge), plus the mode the server is in:
 *
 *   NORMAL ──error in Parse/Bind/Describe/Execute/Close──► SKIP (ignores all up to Sync)
 *     ▲  ▲                                                  │
 *     │  └──────────── ReadyForQuery of that Sync ◄─────────┘
 *     │
 *     └── CommandComplete / error ◄── COPY_IN (CopyInResponse: the Query or Execute at the
 *                                      head consumes CopyData, Flush and Sync up to the
 *                                      first CopyDone or CopyFail)
 *   any ──answer that fits nowhere──► violation (the caller closes the server)
 *   COPY_IN ──error while another message sat inside the copy data──► LOST
 *
 * COPY reads its input in chunks, so when it fails nobody outside PostgreSQL knows how far
 * it had read: Syncs inside the copy data (libpq sends one right after the COPY's Execute)
 * were either swallowed by COPY or each answer with a ReadyForQuery of their own. The model
 * keeps one hypothesis per possible count until the server's answers rule all but one out.
 * Any other message inside the copy data makes the outcome unknowable: LOST, and the server
 * is never reused.
 * Pure code: no I/O, no knowledge of clients; unit tested and fuzzed on its own. */
#ifndef PGWARDEN_PROTO_OWED_H
#define PGWARDEN_PROTO_OWED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Frontend messages as the model sees them. */
enum owed_msg {
    OWED_QUERY,    /* answered by ReadyForQuery */
    OWED_FUNCTION, /* answered by ReadyForQuery */
    OWED_SYNC,     /* answered by ReadyForQuery */
    OWED_PARSE,    /* one answer each, no ReadyForQuery */
    OWED_BIND,
    OWED_DESCRIBE,
    OWED_EXECUTE,
    OWED_CLOSE,
    OWED_FLUSH, /* no answer of their own */
    OWED_COPY_DATA,
    OWED_COPY_DONE,
    OWED_COPY_FAIL,
    OWED_MSG_COUNT,
    OWED_NOT_ALLOWED = 0xff, /* not a message a logged-in client may send */
};

/* The pooler injected this message itself (a statement's Parse or Close): its answer is
 * swallowed, not forwarded to the client. */
#define OWED_SWALLOW 0x01
/* A Parse of a statement the server holds already, sent right after a Close of its name (to
 * re-create it): when the server skips both, the statement is still there. */
#define OWED_KEPT 0x02

enum owed_mode {
    OWED_MODE_NORMAL,
    OWED_MODE_SKIP,
    OWED_MODE_COPY_IN,
    OWED_MODE_LOST,
};

struct owed_entry {
    uint64_t id;    /* Parse or Close: the statement id the pooler marked on (or removed from) the
                       server, else 0 */
    uint32_t count; /* run length: only entries with no id and the same flags merge */
    uint8_t msg;    /* enum owed_msg */
    uint8_t flags;  /* OWED_SWALLOW */
};

/* Most messages the model holds for one server. A client that pipelines more waits until
 * answers drain the queue (backpressure), so its memory stays bounded. Large enough that
 * the server's own 8 KB send buffer fills and flushes long before the queue does (every
 * queued message owes at least 5 bytes), so waiting can never deadlock. */
#define OWED_MAX_ENTRIES 4096
/* Room one client message may need once rewritten: a Close of an unnamed statement another
 * client left, Closes of up to 16 least recently used statements (PLAN_MAX_EVICT in
 * pool/client.c), a Close and Parse that re-create the statement, and the message itself.
 * A message is only taken while this much is free, so a rewrite never meets a full queue. */
#define OWED_RESERVE 20

/* Called for every Parse or Close with an id that the server did not carry out (an error or
 * a skip dropped it): after a Parse the statement is not there after all, after a Close it
 * still is. A skipped Parse marked OWED_KEPT is reported as a Close: the statement it was to
 * replace stays. */
typedef void (*owed_forget_fn)(void *ctx, enum owed_msg msg, uint64_t id);

struct owed_queue {
    struct owed_entry *e; /* owned: entries [head, head + n) are queued */
    uint32_t head;
    uint32_t n;
    uint32_t cap;
    uint8_t mode;             /* enum owed_mode */
    bool copy_span_other;     /* COPY_IN: a message other than copy data, Flush or Sync is in the
                                 copy data */
    uint32_t copy_span_syncs; /* COPY_IN: Syncs in the copy data */
    uint8_t copy_end;         /* COPY_IN: OWED_COPY_DONE / OWED_COPY_FAIL once forwarded, else 0 */
    bool busy; /* a message that is answered was sent since the last ReadyForQuery that left
                  nothing owed (an Execute without Sync keeps a transaction open) */
    owed_forget_fn forget; /* borrowed, may be NULL */
    void *forget_ctx;      /* borrowed */
    /* Other hypotheses of what the server does next (see owed.c, "Syncs inside failed COPY"):
     * each is a whole model without hypotheses of its own; answers that contradict one drop
     * it, and the server is idle only when every surviving hypothesis says so. */
    struct owed_queue *alts; /* owned array, NULL when the model is certain */
    uint8_t n_alts;
    bool probing;       /* a probe (owed_note_probe) is on its way for the current hypotheses */
    bool head_answered; /* the head Query or FunctionCall got its completion or error: only
                           then may its ReadyForQuery come */
};
/* Most Syncs inside a failed COPY's data the model follows (one hypothesis each). */
#define OWED_MAX_ALTS 3

enum owed_verdict {
    OWED_OK,        /* the answer fits; nothing to decide */
    OWED_IDLE,      /* ReadyForQuery that answered the last request: nothing is owed now */
    OWED_VIOLATION, /* an answer the model cannot place: the server must be closed */
};

void owed_init(struct owed_queue *q, owed_forget_fn forget, void *ctx);
/* Empties the queue and frees its memory; the mode goes back to NORMAL. */
void owed_reset(struct owed_queue *q);

/* The model's name for a frontend message type byte, OWED_NOT_ALLOWED for others. */
enum owed_msg owed_msg_of(uint8_t type);
/* True when another message (with its possible rewrite) may be forwarded now. */
bool owed_has_room(const struct owed_queue *q);
/* A frontend message was forwarded. False when it could not be recorded: not a message a
 * client may send (nothing changes), or no memory (the model is LOST from then on). */
bool owed_note_frontend(struct owed_queue *q, uint8_t type, uint8_t flags, uint64_t id);
/* True when the server's next message of this type answers a message the pooler injected
 * (hypotheses that disagree on it make the model LOST). */
bool owed_answer_swallowed(struct owed_queue *q, uint8_t type);
/* A backend message arrived (internal pooler queries excluded). */
enum owed_verdict owed_on_backend(struct owed_queue *q, uint8_t type);

/* While hypotheses disagree and the client may be waiting for nothing, the pooler sends an
 * empty Query of its own (answers: EmptyQueryResponse, ReadyForQuery, both swallowed): an
 * extra ReadyForQuery before its EmptyQueryResponse tells the hypotheses apart. True when
 * such a probe is due and harmless now (no hypothesis has an open extended batch or COPY). */
bool owed_probe_due(const struct owed_queue *q);
/* The probe was sent (the caller builds it: an empty simple Query). */
bool owed_note_probe(struct owed_queue *q);

/* Nothing owed and the server reads messages normally. */
bool owed_is_idle(const struct owed_queue *q);
/* The model gave up: the server must not be reused. */
bool owed_is_lost(const struct owed_queue *q);
const char *owed_mode_name(enum owed_mode m);

#endif
