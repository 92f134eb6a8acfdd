/* An inspect-mode connection to any PostgreSQL: connects through libpq (conninfo, URI,
 * DATABASE_URL or PG* variables), tags the session, and describes the target and errors
 * without ever exposing a password. */
#ifndef PGWARDEN_INSPECT_SESSION_H
#define PGWARDEN_INSPECT_SESSION_H

#include <libpq-fe.h>
#include <stdbool.h>

#define INSPECT_APPLICATION_NAME "pgwarden-inspect"
#define INSPECT_MIN_VERSION      120000

struct inspect_error {
    char code[48];     /* connection_failed, auth_failed, server_too_old, query_failed, ... */
    char message[512]; /* one sentence, no password */
    char sqlstate[6];
};

struct inspect_target {
    char host[256];
    char port[16];
    char database[64];
    char user[64];
    char server_version[32];
    int version_num;
};

/* Resolves what to connect to: the explicit target, else DATABASE_URL, else "" (libpq then
 * uses PG* variables and .pgpass). Returns a borrowed string (argument or environment). */
const char *inspect_session_resolve_conninfo(const char *target);

/* Connects with application_name, statement/lock timeouts and a connect timeout. Fills the
 * target description even on failure (as far as libpq knows it). Returns NULL on failure
 * with err filled. The caller owns the connection (PQfinish). */
PGconn *inspect_session_connect(const char *conninfo, struct inspect_target *target,
                                struct inspect_error *err);

/* Fills err from a failed result or connection: SQLSTATE, a code and the first line of the
 * server's message. */
void inspect_session_error_from_result(struct inspect_error *err, const char *code, PGconn *conn,
                                       const PGresult *res);
void inspect_session_error_set(struct inspect_error *err, const char *code, const char *sqlstate,
                               const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* Copies the first line of a libpq/server message without its "ERROR:  "/"FATAL:  " prefix:
 * messages end with a newline and may carry DETAIL/HINT lines; errors show one sentence. */
void inspect_session_first_line(char *out, size_t out_len, const char *text);

/* Runs a query expected to return tuples; NULL (with err filled) on failure. */
PGresult *inspect_session_query(PGconn *conn, const char *sql, int n_params,
                                const char *const *params, struct inspect_error *err);

/* Reads every result of the query sent on conn; true when one of them was exactly one row.
 * Otherwise sqlstate (6 bytes) and message get the error's SQLSTATE and first line, if any. */
bool inspect_session_read_one_row(PGconn *conn, char sqlstate[6], char *message,
                                  size_t message_len);

#endif
