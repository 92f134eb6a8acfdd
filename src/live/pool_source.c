/* Live pools → snapshot records and totals (the serve-mode counterpart of inspect/collector.c). */
#include "live/pool_source.h"

#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "manager/autoscale.h"
#include "manager/histogram.h"
#include "pool/server.h"

enum conn_state pool_source_conn_state(const struct client *c)
{
    if (c->state == CL_WAITING || c->state == CL_WAITING_LOGIN)
        return CONN_STATE_WAITING;
    const struct server *s = c->server;
    if (!s)
        return CONN_STATE_IDLE;
    if (server_owes_answers(s))
        return CONN_STATE_ACTIVE;
    if (s->xact == WIRE_XACT_IN_BLOCK)
        return CONN_STATE_IDLE_IN_XACT;
    if (s->xact == WIRE_XACT_FAILED)
        return CONN_STATE_IDLE_IN_XACT_ABORTED;
    return CONN_STATE_IDLE; /* session mode: holds a server between transactions */
}

/* The client's address without its port ("" for unix sockets) into buf. */
static void client_ip(const struct client *c, char *buf, size_t len)
{
    buf[0] = '\0';
    if (c->addr.family != AF_INET && c->addr.family != AF_INET6)
        return;
    char a[64];
    net_addr_format(&c->addr, a, sizeof(a));
    char *colon = strrchr(a, ':'); /* drop the port */
    if (colon)
        *colon = '\0';
    const char *ip = a[0] == '[' ? a + 1 : a;
    size_t n = strlen(ip);
    if (n && ip[n - 1] == ']')
        n--;
    if (n >= len)
        n = len - 1;
    memcpy(buf, ip, n);
    buf[n] = '\0';
}

/* When the client entered its state (the manager's state_change_ms). */
static int64_t state_change_ms(const struct client *c, enum conn_state state)
{
    int64_t changed = c->state_us > c->active_us ? c->state_us : c->active_us;
    /* An idle client became idle when its last request was answered: counting from the
     * request's bytes made a query that ran past the thresholds look like as much idleness
     * (a leak suspect, a kill-idle target) the moment it finished. */
    if (state != CONN_STATE_ACTIVE && state != CONN_STATE_WAITING && c->answered_us > changed)
        changed = c->answered_us;
    return changed / 1000;
}

bool pool_source_client_unchanged(const struct client *c, int64_t state_change_ms_seen,
                                  int64_t requests_seen)
{
    return state_change_ms(c, pool_source_conn_state(c)) == state_change_ms_seen &&
           (int64_t)c->xacts == requests_seen;
}

/* user and database are the pool's names, already interned in snap. */
static bool add_client(const struct pool *pool, const struct client *c, const char *user,
                       const char *database, struct snapshot *snap)
{
    struct conn_record *r = snapshot_add_conn(snap);
    if (!r)
        return false;
    r->id = (int64_t)c->id;
    r->pid = c->server ? (int32_t)c->server->be_pid : 0;
    r->user = user;
    r->database = database;
    const struct pstr *app = c->params[PARAM_APPLICATION_NAME];
    char ip[SNAPSHOT_ADDR_LEN];
    client_ip(c, ip, sizeof(ip));
    if (!(r->application = snapshot_name(snap, app ? app->str : "", SNAPSHOT_NAME_LEN)) ||
        !(r->client_addr = snapshot_name(snap, ip, sizeof(ip))))
        return false;
    r->state = pool_source_conn_state(c);
    r->connected_ms = c->connect_us / 1000;
    r->state_change_ms = state_change_ms(c, r->state);
    bool in_xact = snapshot_conn_state_in_xact(r->state) || r->state == CONN_STATE_ACTIVE;
    r->xact_start_ms = in_xact && c->request_us ? c->request_us / 1000 : 0;
    r->query_start_ms = c->request_us ? c->request_us / 1000 : c->active_us / 1000;
    r->visible = true;
    /* Its walsender holds a server for as long as it streams: never a leak suspect nor a
     * kill target (the engine protects replication connections). */
    r->is_replication = c->replication != STARTUP_REPLICATION_NONE;
    /* A platform role (Supabase's, PgBouncer's) through the pooler: never a suspect nor a
     * kill-idle target, as in inspect mode; its application name exempts nobody here. */
    r->is_infrastructure = snapshot_is_infrastructure(SNAPSHOT_MODE_SERVE, user, r->application);
    r->requests = c->xacts;
    r->hold_total_ms = c->hold_us / 1000;
    if (c->output_blocked_us && c->server)
        r->output_blocked_ms = (pooler_now(pool->pooler) - c->output_blocked_us) / 1000;
    return true;
}

static const enum snapshot_pool_mode pool_modes[] = {
    [POOL_MODE_SESSION] = SNAPSHOT_POOL_SESSION,
    [POOL_MODE_TRANSACTION] = SNAPSHOT_POOL_TRANSACTION,
    [POOL_MODE_STATEMENT] = SNAPSHOT_POOL_STATEMENT,
};

/* A quantile in ms of the observations since the period before the last stats roll. */
static double window_quantile_ms(const struct histogram *now, const struct histogram *mark,
                                 double q)
{
    struct histogram window;
    histogram_diff(now, mark, &window);
    double us = histogram_quantile(&window, q);
    return us < 0 ? -1 : us / 1000.0;
}

static int count_idle_clients(const struct pool *pool)
{
    int idle = 0;
    for (const struct plist *m = pool->active_clients.next; m != &pool->active_clients; m = m->next)
        idle += plist_entry(m, struct client, node)->server == NULL;
    return idle;
}

static bool add_pool(const struct pool *pool, struct snapshot *snap)
{
    struct pool_record *r = snapshot_add_pool(snap);
    if (!r)
        return false;
    const struct pooler_config *cfg = pool->pooler->cfg;
    const struct pool_stats *t = &pool->stats, *a = &pool->stats_avg, *m = &pool->stats_prev_mark;
    snprintf(r->database, sizeof(r->database), "%s", pool->db_name);
    snprintf(r->user, sizeof(r->user), "%s", pool->user_name);
    snprintf(r->server, sizeof(r->server), "%s:%d", pool->host ? pool->host : "", pool->port);
    r->mode = pool_modes[pool->mode];
    r->size = pool->pool_size;
    r->reserve = pool->reserve_pool;
    int lo;
    autoscale_bounds(pool->configured_size, pool->min_pool_size, &cfg->manager, &lo, &r->max_size);
    r->server_usable = pool->server_usable_slots;
    r->cl_idle = count_idle_clients(pool);
    r->cl_active = (int)plist_count(&pool->active_clients) - r->cl_idle;
    r->cl_waiting =
        (int)(plist_count(&pool->waiting_clients) + plist_count(&pool->waiting_login_clients));
    r->sv_active =
        (int)(plist_count(&pool->active_servers) + plist_count(&pool->canceling_servers));
    r->sv_idle = (int)plist_count(&pool->idle_servers);
    r->sv_tested = (int)plist_count(&pool->tested_servers);
    r->sv_login = (int)plist_count(&pool->login_servers);
    r->xacts_per_sec = (double)a->xact_count;
    r->queries_per_sec = (double)a->query_count;
    r->servers_opened_per_sec = (double)a->servers_created;
    r->servers_closed_per_sec = (double)a->servers_closed;
    r->bytes_in_per_sec = (double)a->bytes_received;
    r->bytes_out_per_sec = (double)a->bytes_sent;
    r->avg_xact_ms = (double)a->xact_time_us / 1000.0;
    r->avg_query_ms = (double)a->query_time_us / 1000.0;
    r->avg_wait_ms = (double)a->wait_time_us / 1000.0;
    r->wait_p95_ms = window_quantile_ms(&t->wait_hist, &m->wait_hist, 0.95);
    r->wait_p99_ms = window_quantile_ms(&t->wait_hist, &m->wait_hist, 0.99);
    int64_t wait_max =
        pool->wait_max_us > pool->prev_wait_max_us ? pool->wait_max_us : pool->prev_wait_max_us;
    r->wait_max_ms = r->wait_p99_ms < 0 ? -1 : (double)wait_max / 1000.0;
    r->xact_p95_ms = window_quantile_ms(&t->xact_hist, &m->xact_hist, 0.95);
    r->xact_p99_ms = window_quantile_ms(&t->xact_hist, &m->xact_hist, 0.99);
    r->query_wait_timeout_ms = cfg->query_wait_timeout_ms;
    r->idle_transaction_timeout_ms = cfg->idle_transaction_timeout_ms;
    return true;
}

bool pool_source_fill_pool(const struct pool *pool, bool with_clients, struct snapshot *snap)
{
    if (!add_pool(pool, snap))
        return false;
    size_t rec = snap->n_pools - 1; /* by index: adding records may move the pool array */
    snap->pools[rec].first_conn = snap->n_conns;
    struct snapshot_counters *k = &snap->counters;
    struct snapshot_capacity *cap = &snap->capacity;
    k->has_pool_totals = true;
    const char *user = snapshot_name(snap, pool->user_name, SNAPSHOT_NAME_LEN);
    const char *database = snapshot_name(snap, pool->db_name, SNAPSHOT_NAME_LEN);
    if (!user || !database)
        return false;
    const struct plist *lists[] = {&pool->active_clients, &pool->waiting_clients,
                                   &pool->waiting_login_clients};
    for (size_t i = 0; with_clients && i < sizeof(lists) / sizeof(lists[0]); i++)
        for (const struct plist *m = lists[i]->next; m != lists[i]; m = m->next)
            if (!add_client(pool, plist_entry(m, struct client, node), user, database, snap))
                return false;
    snap->pools[rec].n_conns = snap->n_conns - snap->pools[rec].first_conn;
    k->requests_total += pool->stats.xact_count;
    k->query_time_total_ms += (double)pool->stats.query_time_us / 1000.0;
    k->created_total += pool->stats.servers_created;
    k->closed_total += pool->stats.servers_closed;
    k->connect_time_total_ms += (double)pool->stats.connect_time_us / 1000.0;
    k->waiting_clients +=
        (int)(plist_count(&pool->waiting_clients) + plist_count(&pool->waiting_login_clients));
    k->wait_time_total_ms += (double)pool->stats.wait_time_us / 1000.0;
    k->waits_total += pool->stats.wait_count;
    cap->pool_min += pool->min_pool_size;
    cap->pool_max += pool->pool_size;
    cap->pool_current += pool->n_servers;
    return true;
}

bool pool_source_fill(const struct pooler *p, const char *db, struct snapshot *snap)
{
    snap->counters.has_pool_totals = true;
    size_t clients = 0;
    for (const struct plist *n = p->pools.next; n != &p->pools; n = n->next) {
        const struct pool *pool = plist_entry(n, struct pool, node);
        if (!db || !strcmp(db, pool->db_name))
            clients += (size_t)pool->n_clients;
    }
    if (!snapshot_reserve_conns(snap, snap->n_conns + clients))
        return false;
    for (const struct plist *n = p->pools.next; n != &p->pools; n = n->next) {
        const struct pool *pool = plist_entry(n, struct pool, node);
        if (db && strcmp(db, pool->db_name) != 0)
            continue;
        if (!pool_source_fill_pool(pool, true, snap))
            return false;
    }
    return true;
}

size_t pool_source_probes(const struct pool *pool, struct health_probe *out)
{
    const struct pool_probes *pr = &pool->probes;
    for (uint32_t i = 0; i < pr->n; i++) {
        memset(&out[i], 0, sizeof(out[i]));
        out[i].id = i + 1;
        out[i].healthy = pr->ok[i];
        out[i].latency_ms = pr->latency_ms[i];
        out[i].query_ms = pr->latency_ms[i];
        if (!pr->ok[i])
            snprintf(out[i].error, sizeof(out[i].error), "%s", pr->last_error);
    }
    return pr->n;
}
