/* Guarded pg_terminate_backend: one statement per target, so a permission error or a
 * vanished session affects only that target's result. */
#include "inspect/terminator.h"

#include <stdio.h>
#include <string.h>

#include "inspect/session.h"

/* The WHERE clause repeats the planner's rules on live data: same pid and backend_start
 * (a reused pid is a new backend), same state and same state_change (the session has not
 * run anything since it was planned), still a non-superuser client backend that is not us,
 * and not excluded. PostgreSQL 14+ waits up to 5 s for the backend to exit. */
static const char terminate_sql_fmt[] =
    "SELECT %s FROM pg_stat_activity a LEFT JOIN pg_roles r ON r.oid = a.usesysid"
    " WHERE a.pid = $1::int AND a.backend_start = $2::timestamptz"
    " AND a.state = $3 AND (extract(epoch FROM a.state_change) * 1000)::bigint = $4::bigint"
    " AND a.backend_type = 'client backend' AND a.pid <> pg_backend_pid()"
    " AND NOT COALESCE(r.rolsuper, true) AND NOT COALESCE(r.rolreplication, true)"
    " AND NOT (a.usename::text = ANY($5::text[]))"
    " AND NOT (COALESCE(a.application_name, '') = ANY($6::text[]))";

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

static void execute_one(PGconn *conn, const char *sql, const char *users, const char *apps,
                        struct kill_action *action)
{
    const struct conn_record *rec = action->conn;
    char pid[16], state_change[32];
    snprintf(pid, sizeof(pid), "%d", rec->pid);
    snprintf(state_change, sizeof(state_change), "%lld", (long long)rec->state_change_ms);
    const char *params[6] = {pid,  rec->backend_start_text, conn_state_name(rec->state),
                             state_change, users, apps};
    PGresult *res = PQexecParams(conn, sql, 6, NULL, params, NULL, NULL, 0);
    ExecStatusType status = PQresultStatus(res);
    if (status == PGRES_TUPLES_OK && PQntuples(res) == 0) {
        action->result = KILL_GONE;
        snprintf(action->reason, sizeof(action->reason),
                 "spared: no longer the same idle session (it ran a query, changed state or "
                 "disconnected since the plan)");
    } else if (status == PGRES_TUPLES_OK) {
        bool terminated = PQgetvalue(res, 0, 0)[0] == 't';
        action->result = terminated ? KILL_TERMINATED : KILL_FAILED;
        snprintf(action->reason, sizeof(action->reason), "%s",
                 terminated ? "terminated with pg_terminate_backend"
                            : "signalled but the backend did not exit within 5 s");
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
             PQserverVersion(conn) >= 140000 ? "pg_terminate_backend(a.pid, 5000)"
                                             : "pg_terminate_backend(a.pid)");
    char users[4096], apps[4096];
    array_literal(users, sizeof(users), opts->exclude_users, opts->n_exclude_users);
    array_literal(apps, sizeof(apps), opts->exclude_apps, opts->n_exclude_apps);

    plan->killed = 0;
    for (size_t i = 0; i < plan->n_actions; i++) {
        struct kill_action *action = &plan->actions[i];
        if (action->result != KILL_PLANNED)
            continue;
        execute_one(conn, sql, users, apps, action);
        if (action->result == KILL_TERMINATED)
            plan->killed++;
    }
}
