/* Periodic housekeeping (every 500 ms): timeouts, min_pool_size, retries, the end of a
 * graceful shutdown. */
#ifndef PGWARDEN_POOL_JANITOR_H
#define PGWARDEN_POOL_JANITOR_H

/* The janitor timer's callback; arg is the struct pooler. */
void janitor_run(void *arg);

#endif
