/* Client side: startup, authentication, the welcome, the client→server data path, the admin
 * console's connections, and the manager's actions on one client. */
#ifndef PGWARDEN_POOL_CLIENT_H
#define PGWARDEN_POOL_CLIENT_H

#include <stdbool.h>
#include <stddef.h>

#include "pool/auth_lookup.h"
#include "pool/pool.h"

void client_io_cb(int fd, unsigned what, void *arg);
/* A send to the client was partial: wake up on its writable edge from now on. */
void client_want_writable(struct client *c);
/* Sends bytes the pooler generated (welcome, errors); false when the socket failed. */
__attribute__((warn_unused_result)) bool client_send_raw(struct client *c, const void *data,
                                                         size_t len);
/* Runs the client's data path (after it got a server, or its server drained). */
void client_pump(struct client *c);
/* Nothing is in flight between the client and its server either way (or it has none), so
 * the pooler may speak to the client or take the server away without cutting a message. */
bool client_is_quiet(const struct client *c);
enum client_notice_result {
    CLIENT_NOTICE_SENT,
    CLIENT_NOTICE_BUSY,    /* not quiet: bytes in flight between the client and its server */
    CLIENT_NOTICE_NO_ROOM, /* its socket takes no more (it is not reading): nothing was sent */
    CLIENT_NOTICE_CLOSED,  /* the send failed: the client was closed */
};
/* Sends the client a NoticeResponse (WARNING) when it is quiet and its socket has room for
 * the whole message (a notice cut short would corrupt the stream and cost the client its
 * connection). */
enum client_notice_result client_send_notice(struct client *c, const char *message);
/* Rolls back the open transaction of a quiet client and returns its server to the pool (after
 * the reset query where one applies). The client stays connected; its next request is answered
 * with an error saying why, and the one after that runs normally. False when the client is not
 * quiet, holds no transaction, or a cancel for its server is still in flight. */
bool client_reclaim_server(struct client *c, const char *why);
/* Cancels the query the client's server is running (as a client cancel request would).
 * False when nothing was sent: no query runs, or cancel_req_start opened no connection. */
bool client_cancel_query(struct client *c);
/* Pool's first server logged in: finish the logins of waiting clients. */
void client_finish_login(struct client *c);
/* A replication client's own server logged in (and is linked to it): greet the client with
 * that server's ParameterStatus messages (params_len bytes), its cancel key and
 * ReadyForQuery. */
void client_finish_replication_login(struct client *c, const uint8_t *params, size_t params_len);
/* auth_query's answer for a client waiting in login (auth_lookup.c): error set when no
 * answer could be had (the client is failed with it); else the verdict and, for
 * AUTH_LOOKUP_SECRET, the secret (borrowed, copied). */
void client_auth_lookup_done(struct client *c, enum auth_lookup_verdict verdict, const char *secret,
                             const char *error);
/* Frees what the client module keeps for c (its login state, its session): when c closes. */
void client_login_free(struct client *c);
/* Marks in in_use the parameter slots c holds a value for or waits to confirm one of
 * (objects_params_in_use). */
void client_params_in_use(const struct client *c, bool in_use[PARAM_COUNT]);
/* The user the client logged in as (console clients included), or asked for while it is
 * still logging in; "" before its startup packet. */
const char *client_user_name(const struct client *c);
/* The database of the client's pool, or the one it asked for while logging in; "" before
 * its startup packet. */
const char *client_database_name(const struct client *c);

/* Sends s, as one pooler query answered before the client's next request, the SET and RESET
 * statements that give it c's session parameters; records them as s's. False when it could
 * not be sent. Called when c is given s. */
__attribute__((warn_unused_result)) bool client_sync_server_params(struct client *c,
                                                                   struct server *s);
/* The client's transaction ended (ReadyForQuery outside a transaction block, or its server
 * released): counted in its pool's statistics once. */
void client_end_transaction(struct client *c);
/* A message from s as server_scan reads it, for its client's session: ParameterStatus,
 * CommandComplete, ErrorResponse, ReadyForQuery and ParseComplete, after the owed model took
 * it. ours: it answers the client's own messages (not the pooler's queries, nor messages the
 * pooler injected). body is NULL when the message is not whole in the buffer. s may have no
 * client (a reset or check query). */
void client_note_server_message(struct server *s, bool ours, uint8_t type, const uint8_t *body,
                                uint32_t len);

/* Answers the console commands whose condition now holds (PAUSE, WAIT_CLOSE); the janitor
 * calls it. */
void client_console_finish_waits(struct pooler *p);

#endif
