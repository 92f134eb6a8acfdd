/* Cancel requests: pgwarden's own cancel keys for clients (a hash table), and the cancel
 * connections forwarded to servers with the server's key. */
#ifndef PGWARDEN_POOL_CANCEL_H
#define PGWARDEN_POOL_CANCEL_H

#include <stddef.h>
#include <stdint.h>

#include "pool/pool.h"

/* Gives c a random BackendKeyData of ours and enters it in the cancel-key table. */
void cancel_register_client(struct client *c);
void cancel_unregister_client(struct client *c);

/* Cancel request received on a fresh connection. */
void cancel_handle_request(struct pooler *p, uint32_t pid, const uint8_t *key, size_t key_len);

/* Opens a cancel connection for the query s is running. False when none was opened: too
 * many are in flight (two on s, or max_client_conn in all), or the connection could not be
 * made (logged). */
bool cancel_req_start(struct pooler *p, struct server *s);
/* s is going away: its cancels in flight no longer refer to it. */
void cancel_reqs_forget_server(struct pooler *p, struct server *s);
/* Frees finished cancel connections and finishes those older than cancel_wait_timeout
 * (now_us 0: finished ones only). */
void cancel_reqs_expire(struct pooler *p, int64_t now_us);
void cancel_reqs_free_all(struct pooler *p);
/* Cancel requests being passed on to a peer right now. */
int cancel_reqs_to_peer(const struct pooler *p, int peer_id);

#endif
