/* Server side: connecting and logging in to PostgreSQL, and the server→client data path
 * through the owed-answer model. */
#ifndef PGWARDEN_POOL_SERVER_H
#define PGWARDEN_POOL_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pool/pool.h"

/* Launches a server login for pool; false when it could not even start (the failure is
 * recorded as a failed login). */
bool server_launch(struct pool *pool);
/* The same for a replication client's own server (repl_client not NULL): linked to it from
 * the start, its startup packet asks for the client's kind of walsender with the client's
 * parameters; it is never idle and never serves anyone else. */
bool server_launch_for(struct pool *pool, struct client *repl_client);
void server_close(struct server *s, const char *reason);
/* Gives s the end of life its pool's server_lifetime sets now, counted from its connect
 * (a reload or SET changed it); a replication server keeps living as long as its client. */
void server_apply_lifetime(struct server *s);
/* Part of a message from s may have reached its client, the rest is still due: nothing else
 * may be written to the client now. */
bool server_mid_message(const struct server *s);
/* The entry of its pool's host list that s connects (or connected) to. */
struct pool_host *server_host(const struct server *s);
/* Ends a login that broke off (server_connect_timeout): recorded as a failed login, retried
 * after server_login_retry while clients stay queued. */
void server_login_failed(struct server *s, const char *sqlstate, const char *msg);
/* Before an idle server is handed out: false when PostgreSQL closed it or sent something
 * while it sat idle (pg_terminate_backend, a restart) and the event has not been handled yet;
 * the server is closed then. One non-blocking peek. */
bool server_idle_alive(struct server *s);
void server_io_cb(int fd, unsigned what, void *arg);
void server_pump(struct server *s);
/* Sends bytes the pooler wrote itself straight to the server (small, on a socket that takes
 * them at once); false when it could not, and the server must then be closed. */
__attribute__((warn_unused_result)) bool server_send_raw(struct server *s, const void *data,
                                                         size_t len);
void server_login_free(struct server *s);
/* Sends a pooler-generated query whose results are swallowed. */
__attribute__((warn_unused_result)) bool server_send_internal_query(struct server *s,
                                                                    const char *sql);
/* Client→server accounting of one forwarded frontend message (flags and id: see
 * owed_note_frontend). A message that cannot be counted leaves the server unusable for
 * anyone else: it stays with its client and is closed afterwards. */
void server_note_frontend(struct server *s, uint8_t type, uint8_t flags, uint64_t id);
bool server_is_clean(const struct server *s);
/* A request (the client's or the pooler's) is still running on s. */
bool server_owes_answers(const struct server *s);
/* The linked client is going away: a finished result still waiting to be sent to it is
 * dropped, so the server counts as idle again. */
void server_drop_undelivered_result(struct server *s);

#endif
