/* Periodic housekeeping: every timeout of the PgBouncer family, min_pool_size, retries after
 * failed logins, and the end of a graceful shutdown. Runs off the hot path. */
#include "pool/janitor.h"

#include <poll.h>
#include <stdlib.h>
#include <string.h>

#include "common/heap.h"
#include "common/log.h"
#include "live/live_manager.h"
#include "pool/auth_lookup.h"
#include "pool/cancel.h"
#include "pool/client.h"
#include "pool/control.h"
#include "pool/handout.h"
#include "pool/objects.h"
#include "pool/serve.h"
#include "pool/server.h"
#include "proto/wire.h"

/* A connection the sweep may look at, and what its io callback needs. */
struct swept {
    bool is_server;
    void *obj;
};

/* Why a client that waits for a server is given up on now, or NULL (PgBouncer's janitor). */
static const char *waiting_too_long(const struct pool *pool, const struct client *c, int64_t now)
{
    const struct pooler_config *cfg = pool->pooler->cfg;
    int64_t waited = now - c->state_us;
    /* Told at the janitor's first pass after the command, as PgBouncer's maintenance does
     * (a loop turn's time is cached: the pass the command runs itself has now == since). */
    if (pool->pooler->run_state == POOLER_SHUTDOWN_SERVERS && now > pool->pooler->shutdown_since_us)
        return "server shutting down";
    if (pool->query_timeout_ms > 0 && waited > pool->query_timeout_ms * 1000)
        return "query_timeout";
    if (cfg->query_wait_timeout_ms > 0 && waited > cfg->query_wait_timeout_ms * 1000)
        return "query_wait_timeout";
    /* A client that never got the pool's welcome waits for a server that does not come. */
    if (c->state == CL_WAITING_LOGIN && !pool->welcome_ready && cfg->client_login_timeout_ms > 0 &&
        now - c->connect_us > cfg->client_login_timeout_ms * 1000)
        return "client_login_timeout (server down)";
    return NULL;
}

static void fail_waiting(struct pool *pool, struct plist *list, int64_t now)
{
    /* One at a time, looking again from the start: failing a client may close its server
     * (a walsender in login), and what that sets off (a launch whose host no longer resolves
     * fails every waiter) can take the next entry off this list. The list is in order of
     * waiting, so the ones due are at its front and the rescans are short. */
    for (;;) {
        struct client *due = NULL;
        const char *why = NULL;
        for (struct plist *n = list->next; n != list && !due; n = n->next) {
            struct client *c = plist_entry(n, struct client, node);
            if ((why = waiting_too_long(pool, c, now)) != NULL)
                due = c;
        }
        if (!due)
            return;
        /* A wait that ends because logins keep failing says so. */
        if (pool->last_error)
            objects_client_fail(due, "08P01", "%s (server login has been failing: %s)", why,
                                pool->last_error);
        else
            objects_client_fail(due, "08P01", "%s", why);
        if (due->state != CL_JUSTFREE)
            return; /* still listed: never spin on it */
    }
}

/* PgBouncer's words, so that applications and tests that look for them find them. */
#define QUEUED_NOTICE "No server connection available in postgres backend, client being queued"

/* query_wait_notify: a client queued that long hears why its query has not started, once
 * per wait. */
static void notify_queued(struct pool *pool, int64_t now)
{
    int64_t after = pool->pooler->cfg->query_wait_notify_ms * 1000;
    if (after <= 0)
        return;
    struct plist *n, *tmp;
    plist_for_each_safe(n, tmp, &pool->waiting_clients)
    {
        struct client *c = plist_entry(n, struct client, node);
        if (c->wait_noticed_us == c->state_us || now - c->state_us <= after)
            continue;
        c->wait_noticed_us = c->state_us;
        uint8_t out[160];
        struct wire_buf b;
        wire_buf_init(&b, out, sizeof(out));
        wire_build_notice(&b, "NOTICE", "00000", QUEUED_NOTICE);
        if (!client_send_raw(c, out, b.len))
            objects_client_close(c, "could not send the queue notice");
    }
}

/* server_fast_close, session pooling: a server marked to be closed leaves between
 * transactions instead of at the session's end, and takes its client along so that the
 * client notices its session was cut (PgBouncer). */
static void fast_close(struct pool *pool)
{
    if (!pool->pooler->cfg->server_fast_close || pool->mode != POOL_MODE_SESSION)
        return;
    struct plist *n, *tmp;
    plist_for_each_safe(n, tmp, &pool->active_servers)
    {
        struct server *s = plist_entry(n, struct server, node);
        if (s->close_needed && s->client && s->xact == WIRE_XACT_IDLE && !server_owes_answers(s) &&
            client_is_quiet(s->client))
            objects_client_fail(s->client, "08P01", "database configuration changed");
    }
}

static void check_pool(struct pool *pool, int64_t now)
{
    const struct pooler_config *cfg = pool->pooler->cfg;
    struct plist *n, *tmp;

    fail_waiting(pool, &pool->waiting_clients, now);
    fail_waiting(pool, &pool->waiting_login_clients, now);
    if (pool->auth_lookup)
        auth_lookup_expire(pool, now);
    notify_queued(pool, now);
    fast_close(pool);

    /* PgBouncer's wording: "query timeout", "idle transaction timeout", "transaction
     * timeout"; the setting's name follows in parentheses. */
    plist_for_each_safe(n, tmp, &pool->active_clients)
    {
        struct client *c = plist_entry(n, struct client, node);
        struct server *s = c->server;
        if (!s) {
            if (pool->client_idle_timeout_ms > 0 &&
                now - c->active_us > pool->client_idle_timeout_ms * 1000)
                objects_client_fail(c, "08P01", "client_idle_timeout");
            continue;
        }
        /* A walsender streams for as long as its client wants: no query, transaction or
         * idle-in-transaction timeout applies (its bytes are not followed, see server.c).
         * Never released, it would outlive a RECONNECT or a changed database entry: it is
         * closed now, with its client (PgBouncer does so too). */
        if (s->replication != STARTUP_REPLICATION_NONE) {
            if (s->close_needed)
                server_close(s, "database configuration changed");
            continue;
        }
        bool busy = server_owes_answers(s);
        /* From the query's start, not the transaction's (or the session's) */
        int64_t began = c->query_us > c->request_us ? c->query_us : c->request_us;
        if (busy && pool->query_timeout_ms > 0 && began &&
            now - began > pool->query_timeout_ms * 1000) {
            objects_client_fail(c, "57014", "query timeout (query_timeout)");
            continue;
        }
        /* Idle in a transaction since the server's last ReadyForQuery (PgBouncer counts
         * from the server's side: a long query is not idleness). */
        if (!busy && s->xact != WIRE_XACT_IDLE && pool->idle_transaction_timeout_ms > 0 &&
            now - s->ready_us > pool->idle_transaction_timeout_ms * 1000) {
            objects_client_fail(c, "25P03", "idle transaction timeout (idle_transaction_timeout)");
            continue;
        }
        /* From the transaction's first request (request_us: the first message after the
         * last transaction ended), busy or idle. */
        if (pool->transaction_timeout_ms > 0 && c->request_us &&
            now - c->request_us > pool->transaction_timeout_ms * 1000)
            objects_client_fail(c, "25P04", "transaction timeout (transaction_timeout)");
    }

    plist_for_each_safe(n, tmp, &pool->login_servers)
    {
        struct server *s = plist_entry(n, struct server, node);
        if (now - s->connect_us > cfg->server_connect_timeout_ms * 1000) {
            log_warning("pool", "%s/%s: server_connect_timeout", pool->db_name, pool->user_name);
            server_login_failed(s, "08006", "connect timeout");
        }
    }

    /* A paused pool gives its idle servers back to PostgreSQL (PgBouncer's PAUSE: the
     * database can be restarted once the active ones are released too). */
    bool paused = pool->db_paused || pool->pooler->run_state == POOLER_PAUSED;
    const char *over;
    /* A database a reload removed: no client may come back for its idle servers. */
    bool removed =
        pool->n_clients == 0 && !pool->is_admin && !pooler_config_find_db(cfg, pool->db_name);
    plist_for_each_safe(n, tmp, &pool->idle_servers)
    {
        struct server *s = plist_entry(n, struct server, node);
        if (paused)
            server_close(s, "pause mode");
        else if (removed)
            server_close(s, "database removed from the configuration");
        else if (s->close_needed)
            server_close(s, "database configuration changed");
        else if (s->expire_us && now >= s->expire_us)
            server_close(s, "server lifetime over");
        else if (pool->limits_lowered && (over = handout_over_limit(pool)) != NULL)
            server_close(s, over); /* the limit was lowered (RELOAD, SET) */
        else if (cfg->server_idle_timeout_ms > 0 && pool->n_servers > pool->min_pool_size &&
                 now - s->last_used_us > cfg->server_idle_timeout_ms * 1000)
            server_close(s, "server idle timeout");
    }

    if (pool->limits_lowered && !handout_over_limit(pool))
        pool->limits_lowered = false; /* within them again */
    handout_keep_min_size(pool);
    handout_activate(pool);
}

/* A forced-user database with a min_pool_size has its pool before any client comes, so that
 * the janitor keeps its servers open (PgBouncer; other pools exist once a client logs in). */
static void create_forced_pools(struct pooler *p)
{
    const struct pooler_config *cfg = p->cfg;
    if (p->run_state != POOLER_RUNNING)
        return;
    for (size_t i = 0; i < cfg->n_dbs; i++) {
        const struct pooler_db_config *db = &cfg->dbs[i];
        int min = db->min_pool_size >= 0 ? db->min_pool_size : cfg->min_pool_size;
        if (db->user && min > 0 && strcmp(db->name, "*") != 0 &&
            !objects_pool_get(p, db, db->name, db->user))
            log_warning("pool", "%s/%s: out of memory for the pool", db->name, db->user);
    }
}

/* Whether a pool may be freed: one of a database that exists only through the "*" entry or
 * that a reload removed, with nothing in it and nothing that may come back to it (a paused
 * or disabled database keeps its pool: its state lives there). *autodb tells which. */
static bool pool_unused(const struct pooler *p, const struct pool *pool, bool *autodb)
{
    const struct pooler_db_config *db = pooler_config_find_db(p->cfg, pool->db_name);
    *autodb = db && !strcmp(db->name, "*");
    return (!db || *autodb) && pool->n_clients == 0 && pool->n_servers == 0 &&
           plist_empty(&pool->lookups) && plist_empty(&pool->waiting_login_clients) &&
           !pool->db_paused && !pool->db_disabled;
}

/* autodb_idle_timeout (PgBouncer's): pools made for databases of the "*" entry are freed,
 * statistics and all, once unused that long, so that a stream of database names does not
 * grow memory for ever. The pool of a database a reload removed goes as soon as it is
 * unused: no client can log in to it again. */
static void free_unused_pools(struct pooler *p, int64_t now)
{
    int64_t limit = p->cfg->autodb_idle_timeout_ms * 1000;
    bool reaped = false;
    struct plist *n, *tmp;
    plist_for_each_safe(n, tmp, &p->pools)
    {
        struct pool *pool = plist_entry(n, struct pool, node);
        bool autodb;
        if (!pool_unused(p, pool, &autodb) || (autodb && limit <= 0)) {
            pool->unused_since_us = 0;
            continue;
        }
        if (!pool->unused_since_us)
            pool->unused_since_us = now;
        if (autodb && now - pool->unused_since_us <= limit)
            continue;
        if (!reaped) {
            objects_reap(p); /* closed clients and servers may still point at the pool */
            reaped = true;
        }
        if (autodb)
            log_info("pool",
                     "%s/%s: auto-database pool freed, unused for %llds "
                     "(autodb_idle_timeout)",
                     pool->db_name, pool->user_name,
                     (long long)((now - pool->unused_since_us) / 1000000));
        else
            log_info("pool", "%s/%s: pool freed: its database was removed from the configuration",
                     pool->db_name, pool->user_name);
        plist_remove(&pool->node);
        live_manager_forget_pool(p->manager, pool);
        objects_pool_free(pool);
    }
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

/* log_stats: PgBouncer's line ("stats: N xacts/s, ..."), every stats_period, so that log
 * readers find the same words and figures: rates per second, times averaged per transaction
 * and query, and the wait averaged over every server handed out (as SHOW STATS). */
static void log_stats_line(const struct pool_stats *d, double secs)
{
    log_info("stats",
             "%lld xacts/s, %lld queries/s, %lld client parses/s, %lld server parses/s, "
             "%lld binds/s, in %lld B/s, out %lld B/s, xact %lld us, query %lld us, wait %lld us",
             (long long)((double)d->xact_count / secs), (long long)((double)d->query_count / secs),
             (long long)((double)d->client_parse_count / secs),
             (long long)((double)d->server_parse_count / secs),
             (long long)((double)d->bind_count / secs),
             (long long)((double)d->bytes_received / secs),
             (long long)((double)d->bytes_sent / secs),
             (long long)(d->xact_count ? d->xact_time_us / d->xact_count : 0),
             (long long)(d->query_count ? d->query_time_us / d->query_count : 0),
             (long long)(d->server_assignments ? d->wait_time_us / d->server_assignments : 0));
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
    struct pool_stats all = {0}; /* this period's changes summed over the pools (log_stats) */
    for (struct plist *n = p->pools.next; n != &p->pools; n = n->next) {
        struct pool *pool = plist_entry(n, struct pool, node);
        struct pool_stats *t = &pool->stats, *m = &pool->stats_mark, *a = &pool->stats_avg;
        int64_t xacts = t->xact_count - m->xact_count;
        int64_t queries = t->query_count - m->query_count;
        int64_t waits = t->wait_count - m->wait_count;
        all.xact_count += xacts;
        all.query_count += queries;
        all.server_assignments += t->server_assignments - m->server_assignments;
        all.xact_time_us += t->xact_time_us - m->xact_time_us;
        all.query_time_us += t->query_time_us - m->query_time_us;
        all.wait_time_us += t->wait_time_us - m->wait_time_us;
        all.client_parse_count += t->client_parse_count - m->client_parse_count;
        all.server_parse_count += t->server_parse_count - m->server_parse_count;
        all.bind_count += t->bind_count - m->bind_count;
        all.bytes_received += t->bytes_received - m->bytes_received;
        all.bytes_sent += t->bytes_sent - m->bytes_sent;
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
    if (p->cfg->log_stats)
        log_stats_line(&all, secs);
}

static void sweep_add(struct pollfd *fds, struct swept *who, size_t *n, struct pconn *cn,
                      bool is_server, void *obj)
{
    /* A connection that may still read will find the end itself. */
    if (cn->fd < 0 || cn->may_read)
        return;
    fds[*n] = (struct pollfd){.fd = cn->fd, .events = 0}; /* HUP and ERR are always reported */
    who[*n] = (struct swept){is_server, obj};
    (*n)++;
}

/* Edges the loop lost. Sockets are edge-triggered and a short read is taken to mean
 * "drained"; when bytes and a reset arrive in one epoll report, libevent maps EPOLLERR to a
 * plain read+write event (no close), the short read returns the bytes, and no later edge
 * ever tells of the reset: a client would wait forever for the rest of its result. One
 * poll() per tick over the connections whose stall would hurt -- linked pairs, idle
 * servers, clients holding a partial message -- finds sockets with a reset or hangup the
 * loop never acted on and replays it through the connection's own callback. */
static void sweep_lost_hangups(struct pooler *p)
{
    size_t cap = 0, n = 0;
    for (struct plist *it = p->pools.next; it != &p->pools; it = it->next) {
        const struct pool *pool = plist_entry(it, struct pool, node);
        cap += (size_t)pool->n_servers * 2 + (size_t)pool->n_clients;
    }
    if (cap == 0)
        return;
    struct pollfd *fds = malloc(cap * sizeof(*fds));
    struct swept *who = malloc(cap * sizeof(*who));
    if (!fds || !who)
        goto out;
    for (struct plist *it = p->pools.next; it != &p->pools; it = it->next) {
        struct pool *pool = plist_entry(it, struct pool, node);
        struct plist *node;
        for (node = pool->active_servers.next; node != &pool->active_servers; node = node->next) {
            struct server *s = plist_entry(node, struct server, node);
            sweep_add(fds, who, &n, &s->conn, true, s);
            if (s->client)
                sweep_add(fds, who, &n, &s->client->conn, false, s->client);
        }
        for (node = pool->idle_servers.next; node != &pool->idle_servers; node = node->next) {
            struct server *s = plist_entry(node, struct server, node);
            sweep_add(fds, who, &n, &s->conn, true, s);
        }
        for (node = pool->active_clients.next; node != &pool->active_clients; node = node->next) {
            struct client *c = plist_entry(node, struct client, node);
            if (!c->server && c->conn.buf)
                sweep_add(fds, who, &n, &c->conn, false, c);
        }
    }
    if (n == 0 || poll(fds, n, 0) <= 0)
        goto out;
    for (size_t i = 0; i < n; i++) {
        /* Only a reset or a full hangup: a FIN alone reaches the loop as EV_CLOSED, and
         * bytes alone raise their own edge (perhaps queued behind this timer in the same
         * turn: replaying those would only reorder the turn). */
        if (!(fds[i].revents & (POLLHUP | POLLERR)))
            continue;
        unsigned what = NET_IO_READABLE | NET_IO_CLOSED;
        log_debug("pool", "%s %llu: the loop missed its socket's hangup; replaying it",
                  who[i].is_server ? "server" : "client",
                  (unsigned long long)(who[i].is_server ? ((struct server *)who[i].obj)->id
                                                        : ((struct client *)who[i].obj)->id));
        /* Both callbacks ignore an object closed earlier in this sweep; freeing waits for
         * the reaper, so the pointers stay valid. */
        if (who[i].is_server)
            server_io_cb(fds[i].fd, what, who[i].obj);
        else
            client_io_cb(fds[i].fd, what, who[i].obj);
    }
out:
    free(fds);
    free(who);
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
            objects_client_fail(c, "08P01", "client_login_timeout");
    }
    create_forced_pools(p);
    for (n = p->pools.next; n != &p->pools; n = n->next)
        check_pool(plist_entry(n, struct pool, node), now);
    free_unused_pools(p, now);
    sweep_lost_hangups(p);
    cancel_reqs_expire(p, now);
    control_suspend_expire(p, now);
    client_console_finish_waits(p);
    if (control_suspend_orphaned(p)) {
        log_info("pool", "admin disappeared when suspended, doing RESUME");
        serve_resume(p);
    }
    if (heap_trim_if_freed(&p->heap))
        log_debug("pool", "returned freed heap memory to the kernel (trim %zu)", p->heap.trims);

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
