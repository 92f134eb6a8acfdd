/* Live pools → snapshot records and totals (the serve-mode counterpart of inspect/collector.c). */
#include "live/pool_source.h"

#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

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

static bool add_client(const struct pool *pool, const struct client *c, struct snapshot *snap)
{
    struct conn_record *r = snapshot_add_conn(snap);
    if (!r)
        return false;
    r->id = (int64_t)c->id;
    r->pid = c->server ? (int32_t)c->server->be_pid : 0;
    snprintf(r->user, sizeof(r->user), "%s", pool->user_name);
    snprintf(r->database, sizeof(r->database), "%s", pool->db_name);
    const struct pstr *app = c->params[PARAM_APPLICATION_NAME];
    snprintf(r->application, sizeof(r->application), "%s", app ? app->str : "");
    if (c->addr.family == AF_INET || c->addr.family == AF_INET6) {
        char a[64];
        net_addr_format(&c->addr, a, sizeof(a));
        char *colon = strrchr(a, ':'); /* drop the port */
        if (colon)
            *colon = '\0';
        const char *ip = a[0] == '[' ? a + 1 : a;
        size_t n = strlen(ip);
        if (n && ip[n - 1] == ']')
            n--;
        if (n >= sizeof(r->client_addr))
            n = sizeof(r->client_addr) - 1;
        memcpy(r->client_addr, ip, n);
        r->client_addr[n] = '\0';
    }
    r->state = pool_source_conn_state(c);
    r->connected_ms = c->connect_us / 1000;
    int64_t changed = c->state_us > c->active_us ? c->state_us : c->active_us;
    r->state_change_ms = changed / 1000;
    bool in_xact = conn_state_in_xact(r->state) || r->state == CONN_STATE_ACTIVE;
    r->xact_start_ms = in_xact && c->request_us ? c->request_us / 1000 : 0;
    r->query_start_ms = c->request_us ? c->request_us / 1000 : c->active_us / 1000;
    r->visible = true;
    r->requests = c->xacts;
    r->hold_total_ms = c->hold_us / 1000;
    if (c->output_blocked_us && c->server)
        r->output_blocked_ms = (pooler_now(pool->pooler) - c->output_blocked_us) / 1000;
    return true;
}

bool pool_source_fill_pool(const struct pool *pool, struct snapshot *snap)
{
    struct snapshot_counters *k = &snap->counters;
    struct snapshot_capacity *cap = &snap->capacity;
    k->has_pool_totals = true;
    const struct plist *lists[] = {&pool->active_clients, &pool->waiting_clients,
                                   &pool->waiting_login_clients};
    for (size_t i = 0; i < sizeof(lists) / sizeof(lists[0]); i++)
        for (const struct plist *m = lists[i]->next; m != lists[i]; m = m->next)
            if (!add_client(pool, plist_entry(m, struct client, node), snap))
                return false;
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
    for (const struct plist *n = p->pools.next; n != &p->pools; n = n->next) {
        const struct pool *pool = plist_entry(n, struct pool, node);
        if (db && strcmp(db, pool->db_name) != 0)
            continue;
        if (!pool_source_fill_pool(pool, snap))
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
