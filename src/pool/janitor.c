/* Periodic housekeeping: every timeout of the PgBouncer family, min_pool_size, retries after
 * failed logins, and the end of a graceful shutdown. Runs off the hot path. */
#include "pool/janitor.h"

#include "common/log.h"
#include "pool/cancel.h"
#include "pool/client.h"
#include "pool/handout.h"
#include "pool/objects.h"
#include "pool/server.h"

static void check_pool(struct pool *pool, int64_t now)
{
    const struct pooler_config *cfg = pool->pooler->cfg;
    struct plist *n, *tmp;

    if (cfg->query_wait_timeout_ms > 0) {
        int64_t limit = cfg->query_wait_timeout_ms * 1000;
        plist_for_each_safe(n, tmp, &pool->waiting_clients)
        {
            struct client *c = plist_entry(n, struct client, node);
            if (now - c->state_us > limit)
                client_fail(c, "08P01", "query_wait_timeout");
        }
        plist_for_each_safe(n, tmp, &pool->waiting_login_clients)
        {
            struct client *c = plist_entry(n, struct client, node);
            if (now - c->state_us > limit)
                client_fail(c, "08P01", "query_wait_timeout");
        }
    }

    plist_for_each_safe(n, tmp, &pool->active_clients)
    {
        struct client *c = plist_entry(n, struct client, node);
        struct server *s = c->server;
        if (!s) {
            if (cfg->client_idle_timeout_ms > 0 &&
                now - c->active_us > cfg->client_idle_timeout_ms * 1000)
                client_fail(c, "08P01", "client_idle_timeout");
            continue;
        }
        bool busy = server_owes_answers(s);
        if (busy && cfg->query_timeout_ms > 0 && c->request_us &&
            now - c->request_us > cfg->query_timeout_ms * 1000) {
            client_fail(c, "57014", "query_timeout");
            continue;
        }
        if (!busy && s->xact != WIRE_XACT_IDLE && cfg->idle_transaction_timeout_ms > 0 &&
            now - c->active_us > cfg->idle_transaction_timeout_ms * 1000)
            client_fail(c, "25P03", "idle_transaction_timeout");
    }

    plist_for_each_safe(n, tmp, &pool->login_servers)
    {
        struct server *s = plist_entry(n, struct server, node);
        if (now - s->connect_us > cfg->server_connect_timeout_ms * 1000) {
            log_warning("pool", "%s/%s: server_connect_timeout", pool->db_name, pool->user_name);
            server_close(s, "server_connect_timeout");
            pool->retry_after_us = now + cfg->server_login_retry_ms * 1000;
        }
    }

    /* A paused pool gives its idle servers back to PostgreSQL (PgBouncer's PAUSE: the
     * database can be restarted once the active ones are released too). */
    bool paused = pool->db_paused || pool->pooler->run_state == POOLER_PAUSED;
    plist_for_each_safe(n, tmp, &pool->idle_servers)
    {
        struct server *s = plist_entry(n, struct server, node);
        if (paused)
            server_close(s, "pause mode");
        else if (s->close_needed || (s->expire_us && now >= s->expire_us))
            server_close(s, s->close_needed ? "configuration changed" : "server_lifetime reached");
        else if (cfg->server_idle_timeout_ms > 0 && pool->n_servers > pool->min_pool_size &&
                 now - s->last_used_us > cfg->server_idle_timeout_ms * 1000)
            server_close(s, "server_idle_timeout");
    }

    /* min_pool_size is kept only for pools that have clients, as PgBouncer does. */
    if (pool->n_clients > 0 && pool->pooler->run_state == POOLER_RUNNING && !pool->db_paused) {
        while (pool->n_servers < pool->min_pool_size && now >= pool->retry_after_us &&
               server_launch(pool)) {
        }
    }
    pool_activate(pool);
}

static bool any_active_servers(struct pooler *p)
{
    for (struct plist *n = p->pools.next; n != &p->pools; n = n->next) {
        struct pool *pool = plist_entry(n, struct pool, node);
        if (!plist_empty(&pool->active_servers))
            return true;
    }
    return false;
}

/* Closes a stats period: averages per second (times: per transaction/query, as PgBouncer). */
static void roll_stats(struct pooler *p, int64_t now)
{
    int64_t period_us = now - p->stats_period_start_us;
    if (p->stats_period_start_us == 0) {
        p->stats_period_start_us = now;
        return;
    }
    if (period_us < p->cfg->stats_period_ms * 1000 || period_us <= 0)
        return;
    double secs = (double)period_us / 1e6;
    for (struct plist *n = p->pools.next; n != &p->pools; n = n->next) {
        struct pool *pool = plist_entry(n, struct pool, node);
        struct pool_stats *t = &pool->stats, *m = &pool->stats_mark, *a = &pool->stats_avg;
        int64_t xacts = t->xact_count - m->xact_count;
        int64_t queries = t->query_count - m->query_count;
        int64_t waits = t->wait_count - m->wait_count;
        a->xact_count = (int64_t)((double)xacts / secs);
        a->query_count = (int64_t)((double)queries / secs);
        a->bytes_received = (int64_t)((double)(t->bytes_received - m->bytes_received) / secs);
        a->bytes_sent = (int64_t)((double)(t->bytes_sent - m->bytes_sent) / secs);
        a->xact_time_us = xacts ? (t->xact_time_us - m->xact_time_us) / xacts : 0;
        a->query_time_us = queries ? (t->query_time_us - m->query_time_us) / queries : 0;
        a->wait_time_us = waits ? (t->wait_time_us - m->wait_time_us) / waits : 0;
        a->servers_created = (int64_t)((double)(t->servers_created - m->servers_created) / secs);
        a->servers_closed = (int64_t)((double)(t->servers_closed - m->servers_closed) / secs);
        pool->stats_prev_mark = *m;
        pool->period_us = period_us;
        *m = *t;
        pool->prev_wait_max_us = pool->wait_max_us;
        pool->wait_max_us = 0;
    }
    p->stats_period_start_us = now;
}

void janitor_run(void *arg)
{
    struct pooler *p = arg;
    int64_t now = pooler_now(p);
    roll_stats(p, now);
    const struct pooler_config *cfg = p->cfg;
    struct plist *n, *tmp;
    plist_for_each_safe(n, tmp, &p->login_clients)
    {
        struct client *c = plist_entry(n, struct client, node);
        if (cfg->client_login_timeout_ms > 0 &&
            now - c->connect_us > cfg->client_login_timeout_ms * 1000)
            client_fail(c, "08P01", "client_login_timeout");
    }
    for (n = p->pools.next; n != &p->pools; n = n->next)
        check_pool(plist_entry(n, struct pool, node), now);
    cancel_reqs_expire(p, now);
    client_console_finish_waits(p);

    bool stopping =
        p->run_state == POOLER_SHUTDOWN_SERVERS || p->run_state == POOLER_SHUTDOWN_CLIENTS;
    if (stopping && p->shutdown_deadline_us && now >= p->shutdown_deadline_us) {
        log_info("pool", "shutdown_timeout reached; shutting down now");
        net_loop_stop(p->loop);
    } else if (p->run_state == POOLER_SHUTDOWN_SERVERS && !any_active_servers(p)) {
        log_info("pool", "all servers released; shutting down");
        net_loop_stop(p->loop);
    } else if (p->run_state == POOLER_SHUTDOWN_CLIENTS && p->n_clients == 0) {
        log_info("pool", "all clients gone; shutting down");
        net_loop_stop(p->loop);
    }
}
