/* The one place that tells serve-mode targets from inspect-mode ones: a table of sources,
 * first matching scheme wins, the last entry (no scheme) catches every libpq target. */
#include "cli/target_source.h"

#include <string.h>

#include "inspect/collector.h"
#include "inspect/console_source.h"
#include "inspect/probe.h"
#include "inspect/terminator.h"

/* Inspect mode samples on demand: every read is a new moment. */
static bool inspect_take_snapshot(PGconn *conn, const struct manager_options *opts,
                                  int64_t newer_than_ms, struct snapshot *snap,
                                  struct inspect_error *err)
{
    (void)newer_than_ms;
    return collector_take_snapshot(conn, opts, snap, err);
}

/* A name given as the client set it must match the row pg_stat_activity shows. */
static void inspect_adopt_settings(PGconn *conn, struct manager_options *opts)
{
    collector_adopt_names(conn, opts);
}

static bool inspect_may_kill(PGconn *conn, const struct snapshot *snap,
                             const struct inspect_target *described, struct inspect_error *err)
{
    (void)conn;
    if (snap->server.can_signal)
        return true;
    inspect_session_error_set(err, "refused", "42501",
                              "role '%s' may not terminate other sessions: it needs superuser or "
                              "membership in pg_signal_backend; nothing was done",
                              described->user);
    return false;
}

static void inspect_kill(PGconn *conn, const struct manager_options *opts,
                         const struct snapshot *snap, struct kill_plan *plan)
{
    (void)snap; /* the terminator re-checks each target on pg_stat_activity itself */
    terminator_execute(conn, opts, plan);
}

static bool console_may_kill(PGconn *conn, const struct snapshot *snap,
                             const struct inspect_target *described, struct inspect_error *err)
{
    (void)snap;
    return console_source_may_kill(conn, described, err);
}

static const struct target_source sources[] = {
    {CONSOLE_SOURCE_SCHEME, "serve", SNAPSHOT_MODE_SERVE, console_source_connect,
     console_source_adopt_settings, console_source_take_snapshot, console_source_probe,
     console_may_kill, console_source_kill},
    {NULL, "inspect", SNAPSHOT_MODE_INSPECT, inspect_session_connect, inspect_adopt_settings,
     inspect_take_snapshot, probe_run, inspect_may_kill, inspect_kill},
};

const struct target_source *target_source_for(const char *target)
{
    size_t n = sizeof(sources) / sizeof(sources[0]);
    for (size_t i = 0; i + 1 < n; i++) {
        if (target != NULL && strncmp(target, sources[i].scheme, strlen(sources[i].scheme)) == 0)
            return &sources[i];
    }
    return &sources[n - 1];
}
