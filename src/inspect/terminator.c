/* Guarded pg_terminate_backend: one statement per target, so a permission error or a
 * vanished session affects only that target's result. */
#include "inspect/terminator.h"

#include <stdio.h>
#include <string.h>

#include "inspect/session.h"

/* The WHERE clause repeats the planner's rules on live data: same pid and backend_start
 * (a reused pid is a new backend), same state and same state_change (the session has not
 * run anything since it was planned), still a non-superuser client backend (never a
 * walsender) that is not us nor a pgwarden connection, and not excluded by user,
 * application or client address. PostgreSQL 14+ waits up to TERMINATE_WAIT_MS for the
 * backend to exit: less than the session's statement_timeout, or a slow exit would read as a
 * canceled statement. */
#define TERMINATE_WAIT_MS   3000
#define TERMINATE_WAIT_TEXT "3 s"
#define STR_(x)             #x
#define STR(x)              STR_(x)

static const char terminate_sql_fmt[] =
    "SELECT %s FROM pg_stat_activity a LEFT JOIN pg_roles r ON r.oid = a.usesysid"
    " WHERE a.pid = $1::int AND a.backend_start = $2::timestamptz"
    " AND a.state = $3 AND (extract(epoch FROM a.state_change) * 1000)::bigint = $4::bigint"
    " AND a.backend_type = 'client backend' AND a.pid <> pg_backend_pid()"
    " AND NOT COALESCE(r.rolsuper, true)"
    " AND NOT starts_with(COALESCE(a.application_name, ''), $7)"
    " AND NOT (a.usename::text = ANY($5::text[]))"
    " AND NOT (COALESCE(a.application_name, '') = ANY($6::text[]))"
    " AND NOT COALESCE(a.client_addr <<= ANY($8::inet[]), false)";

/* Builds a PostgreSQL array literal {"a","b"} with quotes and backslashes escaped. */
static void array_literal(char *out, size_t len, char *const *items, size_t n)
{
    size_t o = 0;
    o += (size_t)snprintf(out + o, len - o, "{");
    for (size_t i = 0; i < n && o < len; i++) {
        o += (size_t)snprintf(out + o, len - o, "%s\"", i ? "," : "");
        for (const char *c = items[i]; *c && o + 3 < len; c++) {
            if (*c == '"' || *c == '\\')
                out[o++] = '\\';
            out[o++] = *c;
        }
        if (o < len)
            o += (size_t)snprintf(out + o, len - o, "\"");
    }
    if (o < len)
        snprintf(out + o, len - o, "}");
}

/* The exclusion lists as array literals, built once per run. */
struct exclusions {
    char users[4096];
    char apps[4096];
    char addrs[OPTIONS_MAX_EXCLUDES * (CIDR_TEXT_LEN + 3) + 3];
};

static void gone(struct kill_action *action, const char *why)
{
    action->result = KILL_GONE;
    snprintf(action->reason, sizeof(action->reason), "%s", why);
}

/* Whether the backend of params (pid, backend_start) still exists; true when that cannot be
 * told (the failure then stands). */
static bool still_there(PGconn *conn, const char *const *params)
{
    PGresult *res = PQexecParams(conn,
                                 "SELECT 1 FROM pg_stat_activity WHERE pid = $1::int"
                                 " AND backend_start = $2::timestamptz",
                                 2, NULL, params, NULL, NULL, 0);
    bool there = PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) > 0;
    PQclear(res);
    return there;
}

static void execute_one(PGconn *conn, const char *sql, const struct exclusions *ex,
                        struct kill_action *action)
{
    const struct conn_record *rec = action->conn;
    char pid[16], state_change[32];
    snprintf(pid, sizeof(pid), "%d", rec->pid);
    snprintf(state_change, sizeof(state_change), "%lld", (long long)rec->state_change_ms);
    const char *params[8] = {pid,
                             snapshot_str(rec->backend_start_text),
                             snapshot_conn_state_name(rec->state),
                             state_change,
                             ex->users,
                             ex->apps,
                             SNAPSHOT_PGWARDEN_APP_PREFIX,
                             ex->addrs};
    PGresult *res = PQexecParams(conn, sql, 8, NULL, params, NULL, NULL, 0);
    ExecStatusType status = PQresultStatus(res);
    if (status == PGRES_TUPLES_OK && PQntuples(res) == 0) {
        gone(action, "spared: no longer the same idle session (it ran a query, changed state or "
                     "disconnected since the plan)");
    } else if (status == PGRES_TUPLES_OK) {
        bool terminated = PQgetvalue(res, 0, 0)[0] == 't';
        action->result = terminated ? KILL_TERMINATED : KILL_FAILED;
        snprintf(action->reason, sizeof(action->reason), "%s",
                 terminated ? "terminated with pg_terminate_backend"
                            : "signalled but the backend did not exit within " TERMINATE_WAIT_TEXT);
        /* false also when the backend left between the check and the signal ("not a
         * PostgreSQL backend process"): a session that is gone is not a failure. */
        if (!terminated && !still_there(conn, params))
            gone(action, "spared: the session ended just before the signal, or exited after "
                         "the wait");
    } else {
        const char *sqlstate = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        const char *message = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
        bool denied = sqlstate && strcmp(sqlstate, "42501") == 0;
        action->result = denied ? KILL_DENIED : KILL_FAILED;
        snprintf(action->reason, sizeof(action->reason), "%s: %s",
                 denied ? "permission denied" : "failed", message ? message : "unknown error");
    }
    PQclear(res);
}

void terminator_execute(PGconn *conn, const struct manager_options *opts, struct kill_plan *plan)
{
    char sql[1024];
    snprintf(sql, sizeof(sql), terminate_sql_fmt,
             PQserverVersion(conn) >= 140000
                 ? "pg_terminate_backend(a.pid, " STR(TERMINATE_WAIT_MS) ")"
                 : "pg_terminate_backend(a.pid)");
    struct exclusions ex;
    array_literal(ex.users, sizeof(ex.users), opts->exclude_users, opts->n_exclude_users);
    array_literal(ex.apps, sizeof(ex.apps), opts->exclude_apps, opts->n_exclude_apps);
    char *addrs[OPTIONS_MAX_EXCLUDES];
    for (size_t i = 0; i < opts->n_exclude_addrs; i++)
        addrs[i] = (char *)opts->exclude_addrs[i].text;
    array_literal(ex.addrs, sizeof(ex.addrs), addrs, opts->n_exclude_addrs);

    plan->killed = 0;
    for (size_t i = 0; i < plan->n_actions; i++) {
        struct kill_action *action = &plan->actions[i];
        if (action->result != KILL_PLANNED)
            continue;
        execute_one(conn, sql, &ex, action);
        if (action->result == KILL_TERMINATED)
            plan->killed++;
    }
}
