/* The serve-mode executor: applies the manager's decisions to the live pools through the
 * pool's own functions (the counterpart of inspect/terminator.c, which acts through SQL).
 * Every action re-finds its target by client id at the moment of acting. */
#ifndef PGWARDEN_LIVE_POOL_EXECUTOR_H
#define PGWARDEN_LIVE_POOL_EXECUTOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "manager/reclaim.h"
#include "pool/pool.h"

/* Takes one reclaim step on a client. why is shown to the client (notice, disconnect) and
 * logged. Returns false, with the reason in outcome, when the step could not be taken now
 * (the client was busy or gone). */
bool pool_executor_reclaim(struct pooler *p, int64_t client_id, enum reclaim_level step,
                           const char *why, char *outcome, size_t outcome_len);

/* Sets the number of servers a pool may open. Growing launches servers for waiting clients
 * at once; shrinking closes idle servers above the new size now (busy ones later, see
 * pool_executor_trim). */
void pool_executor_resize(struct pool *pool, int size);
/* Closes idle servers while the pool holds more than its size and nobody waits. */
void pool_executor_trim(struct pool *pool);

/* Sends a health probe to every idle server of the pool unused for at least quiet_us.
 * Returns how many were sent. */
int pool_executor_probe_idle(struct pool *pool, int64_t quiet_us);

#endif
