/* Serve-mode source of the command line: a running pgwarden's admin console
 * (`pgwarden://[USER[:PASSWORD]@]HOST[:PORT]`) read into a snapshot with SHOW SNAPSHOT and
 * SHOW SNAPSHOT_TOTALS, health probes timed with SHOW VERSION, and kill plans executed with
 * KILL_CLIENT. The console speaks the simple query protocol only, so everything is PQexec. */
#ifndef PGWARDEN_INSPECT_CONSOLE_SOURCE_H
#define PGWARDEN_INSPECT_CONSOLE_SOURCE_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "inspect/session.h"
#include "manager/health.h"
#include "manager/options.h"
#include "manager/reaper.h"
#include "manager/snapshot.h"

/* The target scheme that selects this source (src/cli/target_source.c dispatches on it). */
#define CONSOLE_SOURCE_SCHEME "pgwarden://"
/* PgBouncer's (and so pgwarden's) default listen port, used when the URI names none. */
#define CONSOLE_SOURCE_DEFAULT_PORT "6432"

/* A pgwarden:// target taken apart: user and password percent-decoded, host as written
 * (without the [ ] of an IPv6 address), the port in decimal, the console database. Every
 * field is NUL-terminated within its array, also after a refusal. */
struct console_uri {
    char user[SNAPSHOT_NAME_LEN];
    char password[256];
    bool has_user;     /* a non-empty user before the '@' */
    bool has_password; /* a ':' in the user part, even with nothing after it */
    char host[256];    /* never empty when accepted */
    char port[8];      /* 1..65535, CONSOLE_SOURCE_DEFAULT_PORT when the URI names none */
    char database[16]; /* "pgbouncer" (the default) or "pgwarden" */
};

/* Parses pgwarden://[USER[:PASSWORD]@]HOST[:PORT][/pgbouncer|/pgwarden] (an IPv6 HOST in
 * [ ]). Pure: no environment, no connection. On a refusal err says why (code bad_input)
 * without quoting the URI, which may hold a password; the caller wipes u->password either
 * way when it no longer needs it. */
bool console_source_parse_uri(const char *uri, struct console_uri *u, struct inspect_error *err)
    __attribute__((warn_unused_result));

/* Logs in to the admin console (database pgbouncer, or pgwarden when the URI says so). The
 * user comes from the URI, else PGUSER, else "postgres"; the password from the URI, else
 * libpq's PGPASSWORD/.pgpass. Checks with SHOW VERSION that the other end is a pgwarden and
 * puts its version in target->server_version. Returns NULL with err filled (bad_input for a
 * malformed URI, auth_failed, connection_failed, query_failed); never puts a password in
 * target or err. The caller owns the connection (PQfinish). */
PGconn *console_source_connect(const char *uri, struct inspect_target *target,
                               struct inspect_error *err);

/* Applies the pooler's [manager] settings (SHOW MANAGER) to every option the user did not
 * set on the command line, so a run judges the pool by the thresholds the pooler itself uses;
 * the pooler's exclusions are added to the user's, never replaced (options_adopt). A pooler
 * too old to answer leaves opts as they are. */
void console_source_adopt_settings(PGconn *conn, struct manager_options *opts);

/* Reads the pooler's newest manager snapshot. The live manager samples about once a second;
 * when newer_than_ms is not 0 this waits (a few seconds at most) for a snapshot taken after
 * it, so two samples never describe the same moment. On failure err says why and snap is
 * left empty. */
bool console_source_take_snapshot(PGconn *conn, const struct manager_options *opts,
                                  int64_t newer_than_ms, struct snapshot *snap,
                                  struct inspect_error *err) __attribute__((warn_unused_result));

/* health-check probes: n fresh console logins one after another, each timing the login
 * (connect_ms) and one SHOW VERSION round trip (query_ms); all of them share one deadline of
 * timeout_ms. Never fails as a whole: every outcome is a probe result. */
void console_source_probe(const char *uri, size_t n, int timeout_ms, struct health_probe *probes);

/* Whether this login may run KILL_CLIENT (admin_users), asked without touching any client:
 * KILL_CLIENT with an argument that is no client id is refused for stats users before the
 * argument is read. False with err "refused" when it may not; false with another code when
 * the question itself failed. */
bool console_source_may_kill(PGconn *conn, const struct inspect_target *target,
                             struct inspect_error *err) __attribute__((warn_unused_result));

/* Acts on every KILL_PLANNED action of plan (whose records come from snap): re-reads a
 * snapshot taken after snap and spares (KILL_GONE) a client that left, changed state or
 * ran anything since, then sends KILL_CLIENT <id> for the rest. Records each outcome and
 * updates plan->killed. Never fails as a whole. */
void console_source_kill(PGconn *conn, const struct manager_options *opts,
                         const struct snapshot *snap, struct kill_plan *plan);

#endif
