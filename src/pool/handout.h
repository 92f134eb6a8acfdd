/* Handing servers to clients and taking them back: linking, queueing, launching within the
 * pool's limits, releasing, health probes. */
#ifndef PGWARDEN_POOL_HANDOUT_H
#define PGWARDEN_POOL_HANDOUT_H

#include <stdbool.h>

#include "pool/pool.h"

/* Gives idle servers to waiting clients, launches servers within limits. */
void pool_activate(struct pool *pool);
/* A client needs a server: link now, or queue. */
void pool_request_server(struct client *c);
/* The linked client is done with s (transaction end or client gone). */
void pool_release_server(struct server *s);
/* Server logins for pool are failing and none is left: tell every waiting client now
 * instead of letting it sit until query_wait_timeout (PgBouncer does the same). */
void pool_fail_waiters(struct pool *pool);
/* The server finished login or a reset/check query. */
void pool_server_ready(struct server *s);
/* Sends a health probe (server_check_query, default the empty query) to an idle server; it
 * is back in the pool when answered. False when it could not be sent (the server is closed). */
bool pool_probe_server(struct server *s);
/* Records the outcome of s's probe in flight, if any (latency up to now). */
void pool_note_probe(struct server *s, bool ok, const char *error);
/* Servers of every pool of a database / of a user (max_db_connections,
 * max_user_connections). */
int pool_db_server_count(struct pooler *p, const char *db_name);
int pool_user_server_count(struct pooler *p, const char *user);

#endif
