/* Handing servers to clients and taking them back: link a waiting client to an idle server
 * (after a check query when the server sat unused too long), launch servers within the pool's
 * limits (closing an idle server of another pool when max_db_connections or
 * max_user_connections is what stands in the way), launch a replication client's own server
 * and link it for good, release a server at the end of a transaction (reset query, cancel in
 * flight, lifetime), and the background health probes. */
#include "pool/handout.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "manager/snapshot.h"
#include "pool/auth_lookup.h"
#include "pool/client.h"
#include "pool/objects.h"
#include "pool/server.h"
#include "pool/states.h"

/* A server reused within this long of its release was read from moments ago; one idle longer
 * is asked whether PostgreSQL closed it meanwhile (one non-blocking peek) before a client
 * gets it. Under load servers come back far sooner, so the hot path pays nothing. */
#define IDLE_PEEK_AFTER_US 10000

int handout_db_server_count(const struct pooler *p, const char *db_name)
{
    int n = 0;
    for (const struct plist *it = p->pools.next; it != &p->pools; it = it->next) {
        const struct pool *pool = plist_entry(it, struct pool, node);
        if (!strcmp(pool->db_name, db_name))
            n += pool->n_servers;
    }
    return n;
}

int handout_user_server_count(const struct pooler *p, const char *user)
{
    int n = 0;
    for (const struct plist *it = p->pools.next; it != &p->pools; it = it->next) {
        const struct pool *pool = plist_entry(it, struct pool, node);
        if (!strcmp(pool->user_name, user))
            n += pool->n_servers;
    }
    return n;
}

const char *handout_over_limit(const struct pool *pool)
{
    const struct pooler *p = pool->pooler;
    /* More than the pool could launch even with its reserve: servers over the size are
     * only ever left from before it shrank. */
    if (pool->n_servers > pool->pool_size + pool->reserve_pool)
        return "more servers than the pool's size";
    if (pool->max_db_connections > 0 &&
        handout_db_server_count(p, pool->db_name) > pool->max_db_connections)
        return "more servers than max_db_connections";
    if (pool->max_user_connections > 0 &&
        handout_user_server_count(p, pool->user_name) > pool->max_user_connections)
        return "more servers than max_user_connections";
    return NULL;
}

/* Servers that can serve a client now or soon: logged in, not marked to be closed, and not
 * a replication client's own. */
static int usable_servers(const struct pool *pool)
{
    int n = 0;
    const struct plist *lists[] = {&pool->idle_servers, &pool->active_servers,
                                   &pool->tested_servers, &pool->canceling_servers};
    for (size_t i = 0; i < sizeof(lists) / sizeof(lists[0]); i++)
        for (const struct plist *m = lists[i]->next; m != lists[i]; m = m->next) {
            const struct server *s = plist_entry(m, struct server, node);
            n += !s->close_needed && s->replication == STARTUP_REPLICATION_NONE;
        }
    return n;
}

bool handout_login_failing(const struct pool *pool)
{
    return pool->last_error && pool->retry_after_us > pooler_now(pool->pooler) &&
           plist_empty(&pool->login_servers) && pool->n_servers == 0;
}

bool handout_server_due_check(const struct server *s, int64_t now)
{
    int64_t delay_ms = s->pool->pooler->cfg->server_check_delay_ms;
    if (delay_ms == 0)
        return s->used_since_ready;
    return now - s->last_used_us > delay_ms * 1000;
}

/* The first idle server that may be handed out now to client (an id), or NULL. On the way,
 * servers marked to be closed (RECONNECT, a changed database entry, an ErrorResponse while
 * idle) and servers that PostgreSQL closed are closed, servers due a check are sent their
 * check query, and servers that may hold another client's statements under that client's
 * names are sent DEALLOCATE ALL (they are back in the pool once it is answered). */
static struct server *take_idle_server(struct pool *pool, uint64_t client, int64_t now)
{
    const char *check = pool->pooler->cfg->server_check_query;
    struct plist *n;
    while ((n = plist_first(&pool->idle_servers)) != NULL) {
        struct server *s = plist_entry(n, struct server, node);
        if (s->close_needed) {
            server_close(s, "obsolete connection");
            continue;
        }
        /* A lowered max_db/max_user_connections: the janitor closes idle servers over it at
         * its next pass, but none of them may serve a client meanwhile. */
        const char *over = pool->limits_lowered ? handout_over_limit(pool) : NULL;
        if (over) {
            server_close(s, over);
            continue;
        }
        if (now - s->last_used_us >= IDLE_PEEK_AFTER_US && !server_idle_alive(s))
            continue;
        if (s->named_stmts_client && s->named_stmts_client != client) {
            s->named_stmts_client = 0;
            prepared_server_free_all(&s->stmts); /* the pooler's go too */
            states_server_change(s, SV_TESTED);
            if (!server_send_internal_query(s, "DEALLOCATE ALL"))
                server_close(s, "DEALLOCATE ALL could not be sent");
            continue;
        }
        if (handout_server_due_check(s, now)) {
            states_server_change(s, SV_TESTED);
            if (!server_send_internal_query(s, check))
                server_close(s, "check query could not be sent");
            continue;
        }
        return s;
    }
    return NULL;
}

static void link_client(struct client *c, struct server *s)
{
    int64_t now = pooler_now(c->pooler);
    states_server_change(s, SV_ACTIVE);
    if (c->state == CL_WAITING) {
        c->pool->stats.wait_time_us += now - c->state_us;
        c->pool->stats.wait_count++;
        histogram_observe(&c->pool->stats.wait_hist, now - c->state_us);
        if (now - c->state_us > c->pool->wait_max_us)
            c->pool->wait_max_us = now - c->state_us;
        states_client_change(c, CL_ACTIVE);
    }
    c->server = s;
    s->client = c;
    s->used_since_ready = true;
    /* server_lifetime = 0: the server serves this one client, then is closed. */
    if (!s->expire_us && s->pool->server_lifetime_ms == 0)
        s->expire_us = now;
    c->pool->stats.server_assignments++;
    c->request_us = now;
    s->last_used_us = now;
    /* Bring the server's session parameters in line with the client's. */
    if (!client_sync_server_params(c, s)) {
        c->server = NULL;
        s->client = NULL;
        server_close(s, "could not send SET");
        objects_client_fail(c, "08006", "server connection failed");
        return;
    }
}

/* A client that needs a server while the pooler shuts down: PgBouncer's messages. False when
 * the client was closed. */
static bool may_wait_during_shutdown(struct client *c)
{
    struct pooler *p = c->pooler;
    if (p->run_state == POOLER_SHUTDOWN_SERVERS) {
        objects_client_fail(c, "08P01", "server shutting down");
        return false;
    }
    if (p->shutdown_since_us && c->id > p->shutdown_last_id) {
        objects_client_fail(c, "08P01", "pooler is shutting down");
        return false;
    }
    return true;
}

void handout_request_server(struct client *c)
{
    struct pool *pool = c->pool;
    struct pooler *p = c->pooler;
    int64_t now = pooler_now(p);
    if (!may_wait_during_shutdown(c))
        return;
    if ((p->run_state == POOLER_RUNNING || p->run_state == POOLER_SHUTDOWN_CLIENTS) &&
        !pool->db_paused && (plist_empty(&pool->waiting_clients) || c->state == CL_WAITING)) {
        struct server *s = take_idle_server(pool, c->id, now);
        if (s) {
            link_client(c, s);
            return;
        }
    }
    if (c->state != CL_WAITING)
        states_client_change(c, CL_WAITING);
    /* PgBouncer's fast fail: while logins keep failing and no server is left, a client is
     * told at once instead of queueing behind a retry that is not due yet. */
    if (handout_login_failing(pool)) {
        objects_client_fail(c, pool->last_sqlstate,
                            "server login has been failing, cached error: %s (server_login_retry)",
                            pool->last_error);
        return;
    }
    handout_activate(pool);
}

/* Whether a server may be launched for pool now, and if not, what is in the way. */
enum launch_verdict {
    LAUNCH_OK,
    LAUNCH_NOT_NOW,   /* paused, shutting down, or server_login_retry after a failed login */
    LAUNCH_POOL_FULL, /* pool_size, plus reserve_pool_size once a client waited
                         reserve_pool_timeout */
    LAUNCH_DB_FULL,   /* max_db_connections over the database's pools */
    LAUNCH_USER_FULL, /* max_user_connections over the user's pools */
};

/* reserve: the reserve pool may be used (launches for waiting clients; min_pool_size never
 * takes it). */
static enum launch_verdict launch_verdict(struct pool *pool, int64_t now, bool reserve)
{
    struct pooler *p = pool->pooler;
    if (p->run_state != POOLER_RUNNING && p->run_state != POOLER_SHUTDOWN_CLIENTS)
        return LAUNCH_NOT_NOW;
    if (pool->db_paused || now < pool->retry_after_us)
        return LAUNCH_NOT_NOW;
    int limit = pool->pool_size;
    struct plist *first = plist_first(&pool->waiting_clients);
    if (reserve && first && pool->reserve_pool > 0 &&
        now - plist_entry(first, struct client, node)->state_us >=
            p->cfg->reserve_pool_timeout_ms * 1000)
        limit += pool->reserve_pool;
    if (pool->n_servers >= limit)
        return LAUNCH_POOL_FULL;
    if (pool->max_db_connections > 0 &&
        handout_db_server_count(p, pool->db_name) >= pool->max_db_connections)
        return LAUNCH_DB_FULL;
    if (pool->max_user_connections > 0 &&
        handout_user_server_count(p, pool->user_name) >= pool->max_user_connections)
        return LAUNCH_USER_FULL;
    return LAUNCH_OK;
}

/* Makes room under max_db_connections (why = LAUNCH_DB_FULL) or max_user_connections
 * (LAUNCH_USER_FULL) for a client that waits: closes the idle server that has been unused
 * longest among the pools of pool's database or user, as PgBouncer evicts. False when none
 * of them has an idle server. */
static bool evict_idle_server(struct pool *pool, enum launch_verdict why)
{
    struct server *oldest = NULL;
    struct pooler *p = pool->pooler;
    for (struct plist *it = p->pools.next; it != &p->pools; it = it->next) {
        struct pool *other = plist_entry(it, struct pool, node);
        bool shares = why == LAUNCH_DB_FULL ? !strcmp(other->db_name, pool->db_name)
                                            : !strcmp(other->user_name, pool->user_name);
        if (!shares || plist_empty(&other->idle_servers))
            continue;
        /* Idle servers are kept most recently used first: the last one waited longest. */
        struct server *s = plist_entry(other->idle_servers.prev, struct server, node);
        if (!oldest || s->last_used_us < oldest->last_used_us)
            oldest = s;
    }
    if (!oldest)
        return false;
    server_close(oldest, "evicted");
    return true;
}

/* Makes room under pool_size for a replication client: closes the pool's idle server that has
 * been unused longest (PgBouncer evicts so too; a replication client cannot share). False
 * when the pool has none idle. */
static bool evict_pool_idle_server(struct pool *pool)
{
    if (plist_empty(&pool->idle_servers))
        return false;
    server_close(plist_entry(pool->idle_servers.prev, struct server, node), "evicted");
    return true;
}

/* Opens a server of its own for each replication client that waits without one. Its server
 * counts like any other against pool_size, max_db_connections and max_user_connections
 * (PgBouncer counts it so); an idle server of the pool, or of the database's or user's other
 * pools, is closed to make room. When no room can be made the client waits for a server to
 * close (query_wait_timeout bounds it). The reserve pool is not used for them. */
static void launch_replication_servers(struct pool *pool, int64_t now)
{
    struct plist *n, *tmp;
    plist_for_each_safe(n, tmp, &pool->waiting_login_clients)
    {
        struct client *c = plist_entry(n, struct client, node);
        if (c->replication == STARTUP_REPLICATION_NONE || c->server)
            continue;
        enum launch_verdict v;
        for (;;) {
            v = launch_verdict(pool, now, false);
            if (v == LAUNCH_POOL_FULL && evict_pool_idle_server(pool))
                continue;
            if ((v == LAUNCH_DB_FULL || v == LAUNCH_USER_FULL) && evict_idle_server(pool, v))
                continue;
            break;
        }
        /* A launch that fails at once is a failed login (recorded; waiters may have been
         * failed): the list may have changed, so stop here. */
        if (v != LAUNCH_OK || !server_launch_for(pool, c))
            return;
    }
}

/* Clients waiting for the pool's welcome (a replication client waits for its own server
 * instead, and never counts here). */
static bool plain_login_waiter(const struct pool *pool)
{
    for (const struct plist *m = pool->waiting_login_clients.next;
         m != &pool->waiting_login_clients; m = m->next)
        if (plist_entry(m, struct client, node)->replication == STARTUP_REPLICATION_NONE)
            return true;
    return false;
}

/* Logins under way for the pool's shared servers (a replication server is its client's). */
static size_t plain_logins(const struct pool *pool)
{
    size_t n = 0;
    for (const struct plist *m = pool->login_servers.next; m != &pool->login_servers; m = m->next)
        n += plist_entry(m, struct server, node)->replication == STARTUP_REPLICATION_NONE;
    return n;
}

/* Greets the clients that wait for the pool's welcome once it is there. Whichever server
 * brought it may be closed before it joins the pool (RECONNECT or a RELOAD marked it during
 * its login): its clients are greeted all the same, and get a server like any other client.
 * Replication clients wait for their own server, not for the welcome. */
static void greet_login_waiters(struct pool *pool)
{
    /* Each finished login may change the list (its client pumps): look again from the start
     * each time. */
    for (bool again = pool->welcome_ready; again;) {
        again = false;
        for (struct plist *m = pool->waiting_login_clients.next; m != &pool->waiting_login_clients;
             m = m->next) {
            struct client *c = plist_entry(m, struct client, node);
            if (c->replication == STARTUP_REPLICATION_NONE) {
                client_finish_login(c);
                again = pool->welcome_ready;
                break;
            }
        }
    }
}

/* One pass of handout_activate. */
static void activate_once(struct pool *pool)
{
    struct pooler *p = pool->pooler;
    /* A login needs no server, only the welcome: PAUSE does not hold it (as for a client
     * that arrives once the welcome is there). */
    greet_login_waiters(pool);
    /* PAUSE and the SIGINT shutdown hand out no servers: clients queue until RESUME. */
    if (p->run_state == POOLER_PAUSED || p->run_state == POOLER_SUSPENDED ||
        p->run_state == POOLER_SHUTDOWN_SERVERS || pool->db_paused)
        return;
    int64_t now = pooler_now(p);
    for (;;) {
        struct plist *cn = plist_first(&pool->waiting_clients);
        if (!cn)
            break;
        struct client *c = plist_entry(cn, struct client, node);
        struct server *s = take_idle_server(pool, c->id, now);
        if (!s)
            break;
        link_client(c, s);
        if (c->server == s)
            client_pump(c);
    }
    /* Launch servers for clients that wait, counting logins already under way. A full pool
     * (the steady state under load) returns before counting anything. */
    if (plist_empty(&pool->waiting_clients) && plist_empty(&pool->waiting_login_clients))
        return;
    launch_replication_servers(pool, now);
    enum launch_verdict v = launch_verdict(pool, now, true);
    if (v == LAUNCH_NOT_NOW || v == LAUNCH_POOL_FULL)
        return;
    size_t want = plist_count(&pool->waiting_clients);
    if (!pool->welcome_ready && plain_login_waiter(pool))
        want++;
    size_t launching = plain_logins(pool) + plist_count(&pool->tested_servers);
    while (want > launching) {
        v = launch_verdict(pool, now, true);
        if ((v == LAUNCH_DB_FULL || v == LAUNCH_USER_FULL) && evict_idle_server(pool, v))
            continue;
        if (v != LAUNCH_OK)
            break;
        if (pool->n_servers >= pool->pool_size)
            log_warning("pool", "%s/%s: taking connection from reserve_pool", pool->db_name,
                        pool->user_name);
        /* A launch that fails at once (the unix socket is not there) is a failed login:
         * clients stay queued for the retry, as after any other connect failure. */
        if (!server_launch(pool))
            break;
        launching++;
    }
}

void handout_activate(struct pool *pool)
{
    /* Handing a server to a waiting client pumps that client, which may close at once (its
     * socket was reset while it waited) and release the server, which calls back in here:
     * once per queued client, thousands of frames deep (a queue of reset clients overflowed
     * the stack). A nested call asks the running one for another pass instead. */
    if (pool->activating) {
        pool->activate_again = true;
        return;
    }
    pool->activating = true;
    do {
        pool->activate_again = false;
        activate_once(pool);
    } while (pool->activate_again);
    pool->activating = false;
}

void handout_keep_min_size(struct pool *pool)
{
    struct pooler *p = pool->pooler;
    if (p->run_state != POOLER_RUNNING || pool->min_pool_size <= 0)
        return;
    /* min_pool_size is kept for pools that have clients, and for a forced-user database's
     * pool even before any (PgBouncer); never beyond pool_size, nor past
     * max_db_connections / max_user_connections (nothing is evicted for it). */
    if (pool->n_clients == 0 && !pool->forced_user)
        return;
    int64_t now = pooler_now(p);
    while (pool->n_servers < pool->min_pool_size && launch_verdict(pool, now, false) == LAUNCH_OK &&
           server_launch(pool)) {
    }
}

void handout_fail_waiters(struct pool *pool)
{
    /* A server still in use keeps the pool working: its clients go on, and the waiting ones
     * get it in turn. Servers marked to be closed do not count: they leave once released. */
    if (!pool->last_error || usable_servers(pool) > 0)
        return;
    struct plist *n;
    while ((n = plist_first(&pool->waiting_login_clients)) != NULL)
        objects_client_fail(plist_entry(n, struct client, node), pool->last_sqlstate, "%s",
                            pool->last_error);
    while ((n = plist_first(&pool->waiting_clients)) != NULL)
        objects_client_fail(plist_entry(n, struct client, node), pool->last_sqlstate, "%s",
                            pool->last_error);
}

/* What a server idle in the pool calls itself in pg_stat_activity, so that pgwarden (and an
 * operator) can tell the pool's idle connections from clients' sessions: kill-idle never
 * plans a connection named so. The next client's own application_name is set again when it
 * gets the server (params sync), so clients never see it. */
#define POOL_IDLE_APPLICATION_NAME SNAPSHOT_PGWARDEN_APP_PREFIX

bool handout_probe_server(struct server *s)
{
    struct pooler *p = s->pool->pooler;
    states_server_change(s, SV_TESTED);
    s->probe_start_us = pooler_now(p);
    const struct pstr *app = s->params[PARAM_APPLICATION_NAME];
    const char *check = p->cfg->server_check_query;
    char sql[512];
    /* The probe also renames the idle server (one round trip for both). */
    if ((!app || strcmp(app->str, POOL_IDLE_APPLICATION_NAME) != 0) &&
        (size_t)snprintf(sql, sizeof(sql), "SET application_name = '%s';%s",
                         POOL_IDLE_APPLICATION_NAME, check) < sizeof(sql))
        check = sql;
    if (server_send_internal_query(s, check))
        return true;
    handout_note_probe(s, false, "probe could not be sent");
    server_close(s, "health probe could not be sent");
    return false;
}

void handout_note_probe(struct server *s, bool ok, const char *error)
{
    if (!s->probe_start_us)
        return;
    struct pool_probes *pr = &s->pool->probes;
    int64_t now = pooler_now(s->pool->pooler);
    pr->latency_ms[pr->next] = (float)(now - s->probe_start_us) / 1000.0f;
    pr->ok[pr->next] = ok;
    pr->next = (pr->next + 1) % POOL_PROBE_KEEP;
    if (pr->n < POOL_PROBE_KEEP)
        pr->n++;
    pr->total++;
    pr->last_us = now;
    if (!ok) {
        pr->failed++;
        snprintf(pr->last_error, sizeof(pr->last_error), "%s", error ? error : "failed");
    }
    s->probe_start_us = 0;
}

static bool server_expired(const struct server *s, int64_t now)
{
    return s->expire_us && now >= s->expire_us;
}

void handout_server_ready(struct server *s)
{
    struct pool *pool = s->pool;
    int64_t now = pooler_now(pool->pooler);
    /* A fresh login is never past its lifetime here: with server_lifetime = 0 it still has
     * its one client to serve. */
    if (s->close_needed || (s->used_since_ready && server_expired(s, now))) {
        server_close(s,
                     s->close_needed ? "database configuration changed" : "server lifetime over");
        handout_activate(pool);
        return;
    }
    s->last_used_us = now;
    s->used_since_ready = false;
    states_server_change(s, SV_IDLE);
    if (pool->auth_lookup) {
        auth_lookup_pump(pool); /* its only users */
        return;
    }
    handout_activate(pool); /* greets the clients that waited for the welcome */
}

void handout_replication_ready(struct server *s, const uint8_t *params, size_t params_len)
{
    struct pool *pool = s->pool;
    struct client *c = s->client;
    int64_t now = pooler_now(pool->pooler);
    if (!c) {
        server_close(s, "replication client was closed");
        handout_activate(pool);
        return;
    }
    states_server_change(s, SV_ACTIVE);
    s->last_used_us = now;
    s->used_since_ready = true;
    c->request_us = now;
    pool->stats.server_assignments++;
    client_finish_replication_login(c, params, params_len);
}

/* Why a server released by its client is closed instead of reused, or NULL. */
static const char *release_closes(const struct server *s, int64_t now)
{
    if (s->cancel_unsettled)
        return "a cancel whose fate is unknown may still reach it";
    if (s->close_needed)
        return "database configuration changed";
    /* Counting the database's and user's servers on every release would cost each
     * transaction a walk over the pools: only after a limit was lowered. */
    const char *over = s->pool->limits_lowered ? handout_over_limit(s->pool) : NULL;
    if (over)
        return over;
    if (server_expired(s, now))
        return "server lifetime over";
    return NULL;
}

void handout_release_server(struct server *s)
{
    struct client *c = s->client;
    struct pool *pool = s->pool;
    struct pooler *p = pool->pooler;
    int64_t now = pooler_now(p);
    if (c) {
        client_end_transaction(c);
        c->server = NULL;
        s->client = NULL;
    }
    s->last_used_us = now;
    bool reset = pool->mode == POOL_MODE_SESSION || p->cfg->server_reset_query_always;
    if (s->cancels_in_flight > 0) {
        /* A cancel aimed at this client's query may still land; nobody else may get the
         * server until it has. */
        states_server_change(s, SV_BEING_CANCELED);
        return;
    }
    const char *why = release_closes(s, now);
    if (why) {
        server_close(s, why);
        handout_activate(pool);
        return;
    }
    if (reset && p->cfg->server_reset_query[0]) {
        /* DISCARD ALL drops prepared statements too: forget what the server had. */
        prepared_server_free_all(&s->stmts);
        states_server_change(s, SV_TESTED);
        if (!server_send_internal_query(s, p->cfg->server_reset_query))
            server_close(s, "reset query could not be sent");
        return;
    }
    states_server_change(s, SV_IDLE);
    handout_activate(pool);
}
