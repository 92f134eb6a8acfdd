/* What the admin console steers per database (PgBouncer's PAUSE db, RESUME db, DISABLE,
 * ENABLE, WAIT_CLOSE): the state is kept per database name, so pools made later for the same
 * database (another user) start paused or disabled too. A paused pool hands out no server
 * and closes its idle ones (the janitor); its clients wait. A disabled database takes no new
 * client logins; connected clients go on. The pooler-wide PAUSE is pool/serve.h's. */
#ifndef PGWARDEN_POOL_CONTROL_H
#define PGWARDEN_POOL_CONTROL_H

#include <stdbool.h>

#include "pool/pool.h"

struct db_control {
    char *name; /* owned */
    bool paused;
    bool disabled;
};

/* False only when memory ran out. */
bool control_pause(struct pooler *p, const char *db);
void control_resume(struct pooler *p, const char *db);
bool control_disable(struct pooler *p, const char *db, bool disabled);
bool control_db_paused(const struct pooler *p, const char *db);
/* Whether any database is paused (PAUSE db, KILL db): SUSPEND is refused then, as in
 * PgBouncer, since its clients' requests could not be flushed. */
bool control_any_db_paused(const struct pooler *p);
bool control_db_disabled(const struct pooler *p, const char *db);
/* Copies the database's state onto a new pool. */
void control_apply(struct pool *pool);

/* PAUSE's answer is due once no server of the database (NULL: of any database) is linked to
 * a client; WAIT_CLOSE's once none is marked to be closed. */
bool control_paused_done(const struct pooler *p, const char *db);
bool control_closed_done(const struct pooler *p, const char *db);
/* SUSPEND is answered when this holds: nothing read from a pooled client or a linked server
 * is left unsent. */
bool control_suspend_flushed(const struct pooler *p);
/* suspend_timeout (PgBouncer's): once SUSPEND has waited that long, the clients and servers
 * still holding unsent bytes are closed, so that its answer cannot be held back for ever by a
 * client that reads nothing. */
void control_suspend_expire(struct pooler *p, int64_t now);
/* PgBouncer's safety net: a SUSPEND that has flushed while no console client is connected
 * is over (the operator who would RESUME it is gone, and pooled clients would wait for
 * ever). The caller resumes. */
bool control_suspend_orphaned(const struct pooler *p);

void control_free(struct pooler *p);

#endif
