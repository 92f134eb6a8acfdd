/* Handing servers to clients and taking them back: linking, queueing, launching within the
 * pool's limits, releasing, health probes. */
#ifndef PGWARDEN_POOL_HANDOUT_H
#define PGWARDEN_POOL_HANDOUT_H

#include <stdbool.h>

#include "pool/pool.h"

/* Gives idle servers to waiting clients, launches servers within limits. */
void handout_activate(struct pool *pool);
/* A client needs a server: link now, or queue. */
void handout_request_server(struct client *c);
/* The linked client is done with s (transaction end or client gone). */
void handout_release_server(struct server *s);
/* The server refused a login for pool (an ErrorResponse other than 57P03, or credentials the
 * pooler cannot use): every waiting client would get the same answer, so each gets
 * pool->last_error now, unless a usable server is left (PgBouncer's kill_pool_logins). A
 * server that could not be reached leaves the clients queued for the retry instead. */
void handout_fail_waiters(struct pool *pool);
/* Logins for pool have been failing, the retry (server_login_retry) is not due yet, and the
 * pool has no server at all: a client that needs one is told pool->last_error at once. */
bool handout_login_failing(const struct pool *pool);
/* Opens servers up to min_pool_size (the janitor): for pools with clients, and for a
 * forced-user database's pool even without any. */
void handout_keep_min_size(struct pool *pool);
/* The server finished login or a reset/check query. */
void handout_server_ready(struct server *s);
/* A replication server (linked to its client since its launch) finished its login: it
 * becomes ACTIVE for good and its client gets the server's own ParameterStatus messages
 * (params, params_len bytes) as its welcome. */
void handout_replication_ready(struct server *s, const uint8_t *params, size_t params_len);
/* Sends a health probe (server_check_query, default the empty query) to an idle server; it
 * is back in the pool when answered. False when it could not be sent (the server is closed). */
bool handout_probe_server(struct server *s);
/* An idle server must answer server_check_query before its next use: unused for longer than
 * server_check_delay; with server_check_delay = 0, used at all since it last logged in or
 * answered its check or reset query (PgBouncer checks before every reuse). */
bool handout_server_due_check(const struct server *s, int64_t now);
/* Records the outcome of s's probe in flight, if any (latency up to now). */
void handout_note_probe(struct server *s, bool ok, const char *error);
/* Servers of every pool of a database / of a user (max_db_connections,
 * max_user_connections). */
int handout_db_server_count(const struct pooler *p, const char *db_name);
int handout_user_server_count(const struct pooler *p, const char *user);
/* Why pool has more servers than its size (with its reserve) allows, or its database or user
 * more than max_db_connections or max_user_connections (a RELOAD, SET or auto-scaling
 * lowered it), or NULL: a server released or idle then closes, until the count is back
 * within the limit. */
const char *handout_over_limit(const struct pool *pool);

#endif
