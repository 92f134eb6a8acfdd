/* The state machine of clients and servers: state is the list an object sits on, and the two
 * change_state functions are the only writers of the state field (legal moves: states.c). */
#ifndef PGWARDEN_POOL_STATES_H
#define PGWARDEN_POOL_STATES_H

#include "pool/pool.h"

const char *states_client_name(enum client_state st);
const char *states_server_name(enum server_state st);
/* Moves the object to the list of next, stamps state_us, traces the move and logs an error
 * for a move the table does not allow. */
void states_client_change(struct client *c, enum client_state next);
void states_server_change(struct server *s, enum server_state next);

/* Makes every client and server list of a new pool empty (real pools and the admin
 * console's pseudo-pool alike). */
void states_init_pool_lists(struct pool *pool);

#endif
