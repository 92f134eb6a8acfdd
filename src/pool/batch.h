/* Sends held back to the end of the loop turn and handed to the kernel in one system call
 * (design note in batch.c). */
#ifndef PGWARDEN_POOL_BATCH_H
#define PGWARDEN_POOL_BATCH_H

#include <stdbool.h>

#include "pool/pool.h"

/* Queues c's scanned request for sending at the end of the loop turn. False when the
 * flusher could not be created (send now instead). */
__attribute__((warn_unused_result)) bool batch_defer_send(struct client *c);
/* Queues s's finished result (whose ReadyForQuery releases s once sent) the same way. */
__attribute__((warn_unused_result)) bool batch_defer_result(struct server *s);

#endif
