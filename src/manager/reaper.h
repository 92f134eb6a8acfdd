/* kill-idle planning: which idle connections may go, within the safety limits. The plan is
 * pure; an executor (inspect/terminator.c, the pool in serve mode) acts on it and records the
 * outcome of each action. */
#ifndef PGWARDEN_MANAGER_REAPER_H
#define PGWARDEN_MANAGER_REAPER_H

#include <stdbool.h>
#include <stddef.h>

#include "manager/options.h"
#include "manager/snapshot.h"

enum kill_result {
    KILL_PLANNED,           /* would be killed (dry run) / about to be */
    KILL_TERMINATED,        /* executor: done */
    KILL_SKIPPED_LIMIT,     /* over max_kill_percentage */
    KILL_SKIPPED_PROTECTED, /* self, superuser, walsender, pgwarden, infrastructure, excluded */
    KILL_GONE,              /* executor: no longer the same idle session (woke up, pid reused) */
    KILL_DENIED,            /* executor: permission denied */
    KILL_FAILED,            /* executor: other error */
};

struct kill_action {
    const struct conn_record *conn; /* borrowed from the snapshot */
    int64_t idle_ms;
    enum kill_result result;
    char reason[200];
};

struct kill_plan {
    bool dry_run;
    size_t candidates;           /* idle long enough and not protected */
    size_t killed;               /* executor: terminated */
    size_t skipped;              /* protected or over the limit */
    int limit;                   /* most connections this run may remove */
    int client_connections;      /* the base of the percentage */
    size_t hidden;               /* passed the filters but hidden from the role: never examined */
    struct kill_action *actions; /* owned: planned first (oldest idle first), then skipped */
    size_t n_actions;
};

/* Plans one kill-idle run over the records that pass the filters. Idle long enough means:
 * state idle longer than idle_timeout, or idle in transaction (aborted too) longer than
 * leak_hold_threshold; other states are never listed. Rows hidden from the role (invisible)
 * are counted in hidden whatever their state. Protected (listed as
 * KILL_SKIPPED_PROTECTED, never planned): is_self, invisible rows, superusers, replication
 * connections (walsenders), pgwarden's own connections (snapshot_is_pgwarden_conn),
 * infrastructure, excluded users, applications and client addresses. limit =
 * floor(max_kill_percentage / 100 x client_connections), where client_connections counts EVERY
 * record in the snapshot (filtered out and invisible ones too: they all hold slots). Candidates are
 * ordered idle in transaction first (they hold locks and xmin), then longest idle first; those
 * beyond the limit are KILL_SKIPPED_LIMIT. dry_run = !opts->execute. Returns false only when memory
 * runs out. */
bool reaper_plan(const struct snapshot *snap, const struct manager_options *opts,
                 struct kill_plan *out) __attribute__((warn_unused_result));
/* Which of the configured exclusions (exclude_user, exclude_app, exclude_addr) protects the
 * record, or NULL: the part of the protections above an operator chose. */
const char *reaper_exclusion(const struct manager_options *opts, const struct conn_record *rec);
void reaper_kill_plan_free(struct kill_plan *plan);
const char *reaper_kill_result_name(enum kill_result result);

#endif
