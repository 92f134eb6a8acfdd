/* Graduated leak reclaim: what to do next to a client the leak detector suspects, up to the
 * level the operator allowed (`leak_reclaim`). Each step is gentler than the next: a notice
 * to the client, cancelling its running query, rolling its transaction back and returning
 * the server to the pool (the client gets an error on its next statement), disconnecting
 * it. Steps that cannot help in the client's state are skipped; steps are spaced in time so
 * a client that reacts is left alone. Pure; the live manager executes the steps. */
#ifndef PGWARDEN_MANAGER_RECLAIM_H
#define PGWARDEN_MANAGER_RECLAIM_H

#include <stdbool.h>
#include <stdint.h>

#include "manager/snapshot.h"

enum reclaim_level {
    RECLAIM_OFF,
    RECLAIM_NOTICE,
    RECLAIM_CANCEL,
    RECLAIM_ROLLBACK,
    RECLAIM_DISCONNECT,
    RECLAIM_LEVEL_COUNT,
};

/* Most reclaim steps one manager run takes over all clients. */
#define RECLAIM_MAX_PER_RUN 10

/* What was done to one suspect so far. */
struct reclaim_track {
    enum reclaim_level done; /* RECLAIM_OFF: nothing yet */
    int64_t last_ms;         /* when the last step was taken */
};

const char *reclaim_level_name(enum reclaim_level level);
/* "off", "notice", "cancel", "rollback", "disconnect" (case-insensitive). */
bool reclaim_level_from_text(const char *text, enum reclaim_level *out);

/* Whether a step can do anything for a client in this state: cancel needs a running query,
 * rollback an open transaction; notice and disconnect always apply. */
bool reclaim_step_applies(enum reclaim_level step, enum conn_state state);

struct manager_options;

/* The furthest step that may be taken on this suspect: opts->leak_reclaim, but at most a
 * notice for a connection of an excluded user, application or address (reaper_exclusion).
 * Those settings say "never kill", and a cancel, a rollback or a disconnect would. (The fixed
 * protections of kill-idle do not apply: a client may name itself "pgwarden…", and
 * replication clients are never suspects.) */
enum reclaim_level reclaim_allowed(const struct manager_options *opts,
                                   const struct conn_record *rec);

/* Time between two steps on the same client: half of leak_hold_threshold, within 1 s and
 * 60 s, so a client gets about as long to react as it took to become a suspect. */
int64_t reclaim_step_gap_ms(int64_t leak_hold_threshold_ms);

/* The next step for a suspect in state `state`: the gentlest applicable level above what was
 * done and at most `allowed`, once gap_ms passed since the last step. RECLAIM_OFF = nothing
 * to do now. */
enum reclaim_level reclaim_next_step(enum reclaim_level allowed, const struct reclaim_track *t,
                                     enum conn_state state, int64_t now_ms, int64_t gap_ms);

#endif
