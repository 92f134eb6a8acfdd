/* The readiness rule. A pool records a failed server login in last_error (server.c clears it
 * at the next successful login) and then refuses new logins until server_login_retry has
 * passed: a client of that pool that needs a server gets an error, not a connection. The
 * pooler is ready when it is running and no pool is in that state without an idle server
 * to hand out. Pools nobody has connected to yet do not exist, so they count as ready: their
 * databases are unknown until a client tries them. */
#include "live/readiness.h"

#include <stdio.h>
#include <string.h>

#include "config/pooler_config.h"
#include "pool/pool.h"

/* A pool the "*" entry made for a name a client chose, refused because the server has no such
 * database (SQLSTATE class 3D): the client's mistake, not a database the pooler serves.
 * Counting it let any client that may log in make the pooler unready, and so leave its load
 * balancer, until autodb_idle_timeout freed the pool (an hour by default). */
static bool client_named_missing_db(const struct pooler *p, const struct pool *pool)
{
    const struct pooler_db_config *db = pooler_config_find_db(p->cfg, pool->db_name);
    return db && !strcmp(db->name, "*") && !strncmp(pool->last_sqlstate, "3D", 2);
}

enum readiness_result readiness_check(const struct pooler *p, char *reason, size_t reason_len)
{
    if (p->run_state == POOLER_SHUTDOWN_SERVERS || p->run_state == POOLER_SHUTDOWN_CLIENTS) {
        snprintf(reason, reason_len, "shutting down");
        return READINESS_SHUTTING_DOWN;
    }
    if (p->run_state == POOLER_PAUSED || p->run_state == POOLER_SUSPENDED) {
        snprintf(reason, reason_len, p->run_state == POOLER_PAUSED ? "paused" : "suspended");
        return READINESS_PAUSED;
    }
    for (const struct plist *n = p->pools.next; n != &p->pools; n = n->next) {
        const struct pool *pool = plist_entry(n, struct pool, node);
        if (pool->last_error && plist_empty(&pool->idle_servers) &&
            !client_named_missing_db(p, pool)) {
            snprintf(reason, reason_len,
                     "database \"%s\" (user \"%s\"): server logins are failing (SQLSTATE %s)",
                     pool->db_name, pool->user_name,
                     pool->last_sqlstate[0] ? pool->last_sqlstate : "?");
            return READINESS_LOGIN_FAILING;
        }
    }
    snprintf(reason, reason_len, "ready");
    return READINESS_READY;
}
