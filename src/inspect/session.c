/* Inspect-mode connections: target resolution, session settings, error text. */
#include "inspect/session.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "manager/health.h"

const char *inspect_session_resolve_conninfo(const char *target)
{
    if (target != NULL && target[0] != '\0')
        return target;
    const char *url = getenv("DATABASE_URL");
    if (url != NULL && url[0] != '\0')
        return url;
    return "";
}

void inspect_session_error_set(struct inspect_error *err, const char *code, const char *sqlstate,
                               const char *fmt, ...)
{
    snprintf(err->code, sizeof(err->code), "%s", code);
    snprintf(err->sqlstate, sizeof(err->sqlstate), "%s", sqlstate ? sqlstate : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof(err->message), fmt, ap);
    va_end(ap);
}

void inspect_session_first_line(char *out, size_t out_len, const char *text)
{
    if (text == NULL)
        text = "";
    while (strncmp(text, "ERROR:  ", 8) == 0 || strncmp(text, "FATAL:  ", 8) == 0)
        text += 8;
    size_t n = strcspn(text, "\n");
    if (n >= out_len)
        n = out_len - 1;
    memcpy(out, text, n);
    out[n] = '\0';
}

void inspect_session_error_from_result(struct inspect_error *err, const char *code, PGconn *conn,
                                       const PGresult *res)
{
    const char *sqlstate = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    const char *primary = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    char line[400];
    inspect_session_first_line(line, sizeof(line), primary ? primary : PQerrorMessage(conn));
    inspect_session_error_set(err, code, sqlstate, "%s", line);
}

static void fill_target(PGconn *conn, struct inspect_target *target)
{
    const char *host = PQhost(conn);
    snprintf(target->host, sizeof(target->host), "%s", host ? host : "");
    const char *port = PQport(conn);
    snprintf(target->port, sizeof(target->port), "%s", port ? port : "");
    const char *db = PQdb(conn);
    snprintf(target->database, sizeof(target->database), "%s", db ? db : "");
    const char *user = PQuser(conn);
    snprintf(target->user, sizeof(target->user), "%s", user ? user : "");
}

PGconn *inspect_session_connect(const char *conninfo, struct inspect_target *target,
                                struct inspect_error *err)
{
    memset(target, 0, sizeof(*target));
    /* Expanding dbname lets a URI or key=value string carry everything while our own keys
     * (application name, connect timeout) are added on top. */
    const char *keys[] = {"dbname", "application_name", "connect_timeout", NULL};
    const char *connect_timeout = getenv("PGCONNECT_TIMEOUT") ? getenv("PGCONNECT_TIMEOUT") : "10";
    const char *values[] = {conninfo, INSPECT_APPLICATION_NAME, connect_timeout, NULL};
    PGconn *conn = PQconnectdbParams(keys, values, 1);
    if (conn == NULL) {
        inspect_session_error_set(err, "out_of_memory", NULL, "could not allocate a connection");
        return NULL;
    }
    fill_target(conn, target);
    if (PQstatus(conn) != CONNECTION_OK) {
        char line[400];
        inspect_session_first_line(line, sizeof(line), PQerrorMessage(conn));
        const char *cls = health_classify_error(NULL, line);
        const char *code = strcmp(cls, "auth") == 0 ? "auth_failed" : "connection_failed";
        inspect_session_error_set(err, code, NULL, "%s", line[0] ? line : "could not connect");
        PQfinish(conn);
        return NULL;
    }
    const char *version = PQparameterStatus(conn, "server_version");
    snprintf(target->server_version, sizeof(target->server_version), "%s", version ? version : "");
    target->version_num = PQserverVersion(conn);
    if (target->version_num < INSPECT_MIN_VERSION) {
        inspect_session_error_set(err, "server_too_old", NULL,
                                  "PostgreSQL %s is too old: pgwarden needs PostgreSQL 12 or newer",
                                  target->server_version);
        PQfinish(conn);
        return NULL;
    }
    /* Timeouts keep a stuck catalog query or a lock from hanging the tool. They are set with
     * SET rather than the startup "options" parameter because transaction poolers (PgBouncer,
     * Supavisor) refuse unknown startup parameters. */
    PGresult *res = PQexec(conn, "SET statement_timeout = '5s'; SET lock_timeout = '1s'");
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        inspect_session_error_from_result(err, "query_failed", conn, res);
        PQclear(res);
        PQfinish(conn);
        return NULL;
    }
    PQclear(res);
    return conn;
}

PGresult *inspect_session_query(PGconn *conn, const char *sql, int n_params,
                                const char *const *params, struct inspect_error *err)
{
    PGresult *res = PQexecParams(conn, sql, n_params, NULL, params, NULL, NULL, 0);
    if (res == NULL || PQresultStatus(res) != PGRES_TUPLES_OK) {
        const char *sqlstate = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
        const char *code =
            (sqlstate && strcmp(sqlstate, "42501") == 0) ? "permission_denied" : "query_failed";
        inspect_session_error_from_result(err, code, conn, res);
        PQclear(res);
        return NULL;
    }
    return res;
}

bool inspect_session_read_one_row(PGconn *conn, char sqlstate[6], char *message, size_t message_len)
{
    bool ok = false;
    sqlstate[0] = '\0';
    message[0] = '\0';
    PGresult *res;
    while ((res = PQgetResult(conn)) != NULL) {
        if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1) {
            ok = true;
        } else {
            const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
            snprintf(sqlstate, 6, "%s", state ? state : "");
            inspect_session_first_line(message, message_len, PQresultErrorMessage(res));
        }
        PQclear(res);
    }
    return ok;
}
