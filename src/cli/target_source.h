/* Where an action reads from, chosen once from the target: a PostgreSQL through libpq
 * (inspect mode) or a running pgwarden's admin console, `pgwarden://...` (serve mode). The
 * action handlers only call through this table, so every action works the same on both. */
#ifndef PGWARDEN_CLI_TARGET_SOURCE_H
#define PGWARDEN_CLI_TARGET_SOURCE_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "inspect/session.h"
#include "manager/health.h"
#include "manager/options.h"
#include "manager/reaper.h"
#include "manager/snapshot.h"

struct target_source {
    const char *scheme;    /* target prefix that selects this source; NULL = the fallback */
    const char *mode_name; /* target.mode of the JSON envelope */
    enum snapshot_mode mode;
    /* Opens the one connection of a run; NULL with err filled. Caller PQfinish()es it. */
    PGconn *(*connect)(const char *target, struct inspect_target *described,
                       struct inspect_error *err);
    /* Takes the target's own manager settings for every option the user did not set (a
     * pooler's [manager] section); NULL when the target has none. */
    void (*adopt_settings)(PGconn *conn, struct manager_options *opts);
    /* One snapshot. newer_than_ms != 0 asks for one taken after that time (the second
     * sample of a rate); a source that samples on demand ignores it. */
    bool (*take_snapshot)(PGconn *conn, const struct manager_options *opts, int64_t newer_than_ms,
                          struct snapshot *snap, struct inspect_error *err);
    /* health-check probes over fresh connections; fills probes[0..n). */
    void (*probe)(const char *target, size_t n, int timeout_ms, struct health_probe *probes);
    /* kill-idle --execute: whether this login may terminate; false with err ("refused" when
     * it may not, nothing done). */
    bool (*may_kill)(PGconn *conn, const struct snapshot *snap,
                     const struct inspect_target *described, struct inspect_error *err);
    /* Acts on the KILL_PLANNED actions of plan (made from snap), recording each outcome. */
    void (*kill)(PGconn *conn, const struct manager_options *opts, const struct snapshot *snap,
                 struct kill_plan *plan);
};

/* The source of a resolved target (never NULL: inspect mode is the fallback). */
const struct target_source *target_source_for(const char *target);

#endif
