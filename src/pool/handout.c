/* Handing servers to clients and taking them back: link a waiting client to an idle server
 * (after a check query when the server sat unused too long), launch servers within the pool's
 * limits, release a server at the end of a transaction (reset query, cancel in flight,
 * lifetime), and the background health probes. */
#include "pool/handout.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "manager/snapshot.h"
#include "pool/client.h"
#include "pool/objects.h"
#include "pool/server.h"
#include "pool/states.h"

int pool_db_server_count(struct pooler *p, const char *db_name)
{
    int n = 0;
    for (struct plist *it = p->pools.next; it != &p->pools; it = it->next) {
        struct pool *pool = plist_entry(it, struct pool, node);
        if (!strcmp(pool->db_name, db_name))
            n += pool->n_servers;
    }
    return n;
}

int pool_user_server_count(struct pooler *p, const char *user)
{
    int n = 0;
    for (struct plist *it = p->pools.next; it != &p->pools; it = it->next) {
        struct pool *pool = plist_entry(it, struct pool, node);
        if (!strcmp(pool->user_name, user))
            n += pool->n_servers;
    }
    return n;
}

static bool server_needs_check(struct server *s, int64_t now)
{
    const struct pooler_config *cfg = s->pool->pooler->cfg;
    return cfg->server_check_delay_ms > 0 &&
           now - s->last_used_us > cfg->server_check_delay_ms * 1000;
}

static void link_client(struct client *c, struct server *s)
{
    int64_t now = pooler_now(c->pooler);
    server_change_state(s, SV_ACTIVE);
    if (c->state == CL_WAITING) {
        c->pool->stats.wait_time_us += now - c->state_us;
        c->pool->stats.wait_count++;
        histogram_observe(&c->pool->stats.wait_hist, now - c->state_us);
        if (now - c->state_us > c->pool->wait_max_us)
            c->pool->wait_max_us = now - c->state_us;
        client_change_state(c, CL_ACTIVE);
    }
    c->server = s;
    s->client = c;
    c->pool->stats.server_assignments++;
    c->request_us = now;
    s->last_used_us = now;
    /* Bring the server's session parameters in line with the client's. */
    size_t need = params_set_len((const struct pstr *const *)c->params,
                                 (const struct pstr *const *)s->params);
    if (need > 1) {
        char *sql = malloc(need);
        if (sql && params_build_set((const struct pstr *const *)c->params,
                                    (const struct pstr *const *)s->params, sql, need) > 0) {
            if (!server_send_internal_query(s, sql)) {
                free(sql);
                c->server = NULL;
                s->client = NULL;
                server_close(s, "could not send SET");
                client_fail(c, "08006", "server connection failed");
                return;
            }
        }
        free(sql);
    }
}

void pool_request_server(struct client *c)
{
    struct pool *pool = c->pool;
    struct pooler *p = c->pooler;
    int64_t now = pooler_now(p);
    if (p->run_state == POOLER_RUNNING || p->run_state == POOLER_SHUTDOWN_CLIENTS) {
        struct plist *n;
        while ((n = plist_first(&pool->idle_servers)) != NULL) {
            struct server *s = plist_entry(n, struct server, node);
            if (server_needs_check(s, now)) {
                const char *q = p->cfg->server_check_query;
                server_change_state(s, SV_TESTED);
                if (!server_send_internal_query(s, q))
                    server_close(s, "check query could not be sent");
                continue;
            }
            if (plist_empty(&pool->waiting_clients) || c->state == CL_WAITING) {
                link_client(c, s);
                return;
            }
            break;
        }
    }
    if (c->state != CL_WAITING)
        client_change_state(c, CL_WAITING);
    if (pool->retry_after_us > now && pool->last_error && plist_empty(&pool->login_servers) &&
        pool->n_servers == 0) {
        client_fail(c, pool->last_sqlstate, "%s", pool->last_error);
        return;
    }
    pool_activate(pool);
}

static int pool_limit(struct pool *pool, int64_t now)
{
    int limit = pool->pool_size;
    struct plist *first = plist_first(&pool->waiting_clients);
    if (first && pool->reserve_pool > 0) {
        struct client *c = plist_entry(first, struct client, node);
        if (now - c->state_us >= pool->pooler->cfg->reserve_pool_timeout_ms * 1000)
            limit += pool->reserve_pool;
    }
    return limit;
}

static bool pool_may_launch(struct pool *pool, int64_t now)
{
    struct pooler *p = pool->pooler;
    if (p->run_state == POOLER_SHUTDOWN_SERVERS)
        return false;
    if (now < pool->retry_after_us)
        return false;
    if (pool->n_servers >= pool_limit(pool, now))
        return false;
    if (pool->max_db_connections > 0 &&
        pool_db_server_count(p, pool->db_name) >= pool->max_db_connections)
        return false;
    if (pool->max_user_connections > 0 &&
        pool_user_server_count(p, pool->user_name) >= pool->max_user_connections)
        return false;
    return true;
}

void pool_activate(struct pool *pool)
{
    struct pooler *p = pool->pooler;
    /* PAUSE and the SIGINT shutdown hand out no servers: clients queue until RESUME. */
    if (p->run_state == POOLER_PAUSED || p->run_state == POOLER_SHUTDOWN_SERVERS ||
        pool->db_paused)
        return;
    int64_t now = pooler_now(p);
    for (;;) {
        struct plist *cn = plist_first(&pool->waiting_clients);
        if (!cn)
            break;
        struct plist *sn = plist_first(&pool->idle_servers);
        if (!sn)
            break;
        struct server *s = plist_entry(sn, struct server, node);
        if (server_needs_check(s, now)) {
            server_change_state(s, SV_TESTED);
            if (!server_send_internal_query(s, p->cfg->server_check_query))
                server_close(s, "check query could not be sent");
            continue;
        }
        struct client *c = plist_entry(cn, struct client, node);
        link_client(c, s);
        if (c->server == s)
            client_pump(c);
    }
    /* Launch servers for clients that wait, counting logins already under way. A full pool
     * (the steady state under load) returns before counting anything. */
    if (plist_empty(&pool->waiting_clients) && plist_empty(&pool->waiting_login_clients))
        return;
    if (!pool_may_launch(pool, now))
        return;
    size_t want = plist_count(&pool->waiting_clients);
    if (!pool->welcome_ready && !plist_empty(&pool->waiting_login_clients))
        want++;
    size_t launching = plist_count(&pool->login_servers) + plist_count(&pool->tested_servers);
    while (want > launching && pool_may_launch(pool, now)) {
        if (!server_launch(pool)) {
            pool_fail_waiters(pool); /* e.g. the unix socket is not there */
            break;
        }
        launching++;
    }
}

void pool_fail_waiters(struct pool *pool)
{
    if (pool->n_servers > 0 || !pool->last_error)
        return;
    struct plist *n;
    while ((n = plist_first(&pool->waiting_login_clients)) != NULL)
        client_fail(plist_entry(n, struct client, node), pool->last_sqlstate, "%s",
                    pool->last_error);
    while ((n = plist_first(&pool->waiting_clients)) != NULL)
        client_fail(plist_entry(n, struct client, node), pool->last_sqlstate, "%s",
                    pool->last_error);
}

/* What a server idle in the pool calls itself in pg_stat_activity, so that pgwarden (and an
 * operator) can tell the pool's idle connections from clients' sessions: kill-idle never
 * plans a connection named so. The next client's own application_name is set again when it
 * gets the server (params sync), so clients never see it. */
#define POOL_IDLE_APPLICATION_NAME SNAPSHOT_PGWARDEN_APP_PREFIX

bool pool_probe_server(struct server *s)
{
    struct pooler *p = s->pool->pooler;
    server_change_state(s, SV_TESTED);
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
    pool_note_probe(s, false, "probe could not be sent");
    server_close(s, "health probe could not be sent");
    return false;
}

void pool_note_probe(struct server *s, bool ok, const char *error)
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

void pool_server_ready(struct server *s)
{
    struct pool *pool = s->pool;
    int64_t now = pooler_now(pool->pooler);
    if (s->close_needed || (s->expire_us && now >= s->expire_us)) {
        server_close(s, s->close_needed ? "configuration changed" : "server_lifetime reached");
        pool_activate(pool);
        return;
    }
    s->last_used_us = now;
    server_change_state(s, SV_IDLE);
    if (pool->welcome_ready) {
        struct plist *n;
        while ((n = plist_first(&pool->waiting_login_clients)) != NULL)
            client_finish_login(plist_entry(n, struct client, node));
    }
    pool_activate(pool);
}

void pool_release_server(struct server *s)
{
    struct client *c = s->client;
    struct pool *pool = s->pool;
    struct pooler *p = pool->pooler;
    int64_t now = pooler_now(p);
    if (c) {
        if (c->request_us) {
            c->xacts++;
            c->hold_us += now - c->request_us;
            pool->stats.xact_count++;
            pool->stats.xact_time_us += now - c->request_us;
            histogram_observe(&pool->stats.xact_hist, now - c->request_us);
            c->request_us = 0;
        }
        c->server = NULL;
        s->client = NULL;
    }
    s->last_used_us = now;
    bool reset = pool->mode == POOL_MODE_SESSION || p->cfg->server_reset_query_always;
    if (s->cancels_in_flight > 0) {
        /* A cancel aimed at this client's query may still land; nobody else may get the
         * server until it has. */
        server_change_state(s, SV_BEING_CANCELED);
        return;
    }
    if (s->close_needed || (s->expire_us && now >= s->expire_us)) {
        server_close(s, s->close_needed ? "configuration changed" : "server_lifetime reached");
        pool_activate(pool);
        return;
    }
    if (reset && p->cfg->server_reset_query[0]) {
        /* DISCARD ALL drops prepared statements too: forget what the server had. */
        server_stmts_free(&s->stmts);
        server_change_state(s, SV_TESTED);
        if (!server_send_internal_query(s, p->cfg->server_reset_query))
            server_close(s, "reset query could not be sent");
        return;
    }
    server_change_state(s, SV_IDLE);
    pool_activate(pool);
}
