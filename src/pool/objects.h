/* Lifetime of pools and clients: creation, config (re)application, closing, and freeing
 * after the loop turn. */
#ifndef PGWARDEN_POOL_OBJECTS_H
#define PGWARDEN_POOL_OBJECTS_H

#include "pool/pool.h"

struct pool *pool_get(struct pooler *p, const struct pooler_db_config *db, const char *db_name,
                      const char *user);
/* Applies (possibly new) config values to an existing pool; marks servers close_needed when
 * the connection target changed. */
void pool_apply_config(struct pool *pool);
void pool_free(struct pool *pool);

struct client *client_new(struct pooler *p, int fd, const struct net_addr *addr);
/* The logged-in client with this id (as SHOW CLIENTS prints it) in any pool, or NULL. */
struct client *client_find(struct pooler *p, uint64_t id);
/* Sends an ErrorResponse (best effort) and closes. */
void client_fail(struct client *c, const char *sqlstate, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Closes the connection; its server is released when clean, closed otherwise. */
void client_close(struct client *c, const char *reason);

/* Closed clients and servers (JUSTFREE) are freed by pooler_reap after the loop turn. */
void pooler_schedule_reap(struct pooler *p);
void pooler_reap(struct pooler *p);

#endif
