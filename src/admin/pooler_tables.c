/* PgBouncer's SHOW tables (see pooler_tables.h). Column specs carry PgBouncer's types:
 * ":i" int4, ":q" int8, ":n" numeric, text otherwise (admin/reply.h). */
#include "admin/pooler_tables.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "admin/reply.h"
#include "config/pooler_config.h"
#include "net/tls.h"
#include "pool/cancel.h"
#include "pool/control.h"
#include "pool/handout.h"
#include "pool/client.h"
#include "pool/objects.h"
#include "pool/pool.h"
#include "pool/server.h"

static int64_t count(const struct plist *l)
{
    return (int64_t)plist_count(l);
}

/* How long the first client in line has waited. */
static int64_t max_wait_us(const struct pool *pool, int64_t now)
{
    const struct plist *first = plist_first(&pool->waiting_clients);
    if (!first)
        return 0;
    return now - plist_entry(first, struct client, node)->state_us;
}

/* load_balance_hosts as PgBouncer shows it: only for a host list. */
static const char *load_balance_name(const char *host, bool disable)
{
    if (!host || !strchr(host, ','))
        return NULL;
    return disable ? "disable" : "round-robin";
}

void pooler_tables_pools(struct pooler *p, struct console_out *o)
{
    static const char *const cols[] = {"database",
                                       "user",
                                       "cl_active:i",
                                       "cl_waiting:i",
                                       "cl_active_cancel_req:i",
                                       "cl_waiting_cancel_req:i",
                                       "sv_active:i",
                                       "sv_active_cancel:i",
                                       "sv_being_canceled:i",
                                       "sv_idle:i",
                                       "sv_used:i",
                                       "sv_tested:i",
                                       "sv_login:i",
                                       "maxwait:i",
                                       "maxwait_us:i",
                                       "pool_mode",
                                       "load_balance_hosts"};
    struct reply r;
    reply_begin(&r, o, cols, REPLY_COLS(cols));
    int64_t now = pooler_now(p);
    for (struct plist *n = p->pools.next; n != &p->pools; n = n->next) {
        const struct pool *pool = plist_entry(n, struct pool, node);
        int64_t mw = max_wait_us(pool, now);
        reply_row(&r);
        reply_text(&r, pool->db_name);
        reply_text(&r, pool->user_name);
        const int64_t counts[] = {
            count(&pool->active_clients),
            count(&pool->waiting_clients) + count(&pool->waiting_login_clients),
            0, /* cancel requests are forwarded at once, never queued in a pool */
            0,
            count(&pool->active_servers),
            0,
            count(&pool->canceling_servers),
            count(&pool->idle_servers),
            0, /* "used" servers are reset or checked before reuse: they are in sv_tested */
            count(&pool->tested_servers),
            count(&pool->login_servers),
            mw / 1000000,
            mw % 1000000};
        for (size_t i = 0; i < sizeof(counts) / sizeof(counts[0]); i++)
            reply_int(&r, counts[i]);
        reply_text(&r, pooler_config_pool_mode_name(pool->mode));
        reply_text(&r, load_balance_name(pool->host, !pool->host_round_robin));
    }
    reply_end(&r, "SHOW");
}

/* A cancel request passed on to a peer is one connection opened and closed: it is counted as
 * an active cancel (PgBouncer's cl_active_cancel_req and sv_active_cancel); nothing waits. */
void pooler_tables_peer_pools(struct pooler *p, struct console_out *o)
{
    static const char *const cols[] = {"peer_id:i", "cl_active_cancel_req:i",
                                       "cl_waiting_cancel_req:i", "sv_active_cancel:i",
                                       "sv_login:i"};
    struct reply r;
    reply_begin(&r, o, cols, REPLY_COLS(cols));
    for (size_t i = 0; i < p->cfg->n_peers; i++) {
        const struct pooler_peer_config *peer = &p->cfg->peers[i];
        if (peer->id == p->cfg->peer_id)
            continue; /* its own entry is allowed and ignored */
        int active = cancel_reqs_to_peer(p, peer->id);
        reply_row(&r);
        reply_int(&r, peer->id);
        reply_int(&r, active);
        reply_int(&r, 0);
        reply_int(&r, active);
        reply_int(&r, 0);
    }
    reply_end(&r, "SHOW");
}

/* ---- statistics ---- */

/* One database's counters: totals since start and the last complete stats period. */
struct db_stats {
    const char *database;
    struct pool_stats total, period;
    int64_t period_us;
};

static void add_stats(struct pool_stats *sum, const struct pool_stats *a,
                      const struct pool_stats *minus)
{
#define ADD(f) sum->f += a->f - (minus ? minus->f : 0)
    ADD(server_assignments);
    ADD(xact_count);
    ADD(query_count);
    ADD(bytes_received);
    ADD(bytes_sent);
    ADD(xact_time_us);
    ADD(query_time_us);
    ADD(wait_time_us);
    ADD(client_parse_count);
    ADD(server_parse_count);
    ADD(bind_count);
#undef ADD
}

static void add_pool_stats(struct db_stats *d, const struct pool *pool)
{
    add_stats(&d->total, &pool->stats, NULL);
    add_stats(&d->period, &pool->stats_mark, &pool->stats_prev_mark);
    if (pool->period_us > d->period_us)
        d->period_us = pool->period_us;
}

/* Calls fn once per database (in the order its first pool was made) with its counters, the
 * console's "pgbouncer" last (its commands, as PgBouncer counts them); with all, once for all
 * of them together. */
static void each_db_stats(struct pooler *p, bool all,
                          void (*fn)(struct reply *, const struct db_stats *), struct reply *r)
{
    struct db_stats everything = {.database = NULL};
    for (struct plist *n = p->pools.next; n != &p->pools; n = n->next) {
        const struct pool *pool = plist_entry(n, struct pool, node);
        if (all) {
            add_pool_stats(&everything, pool);
            continue;
        }
        bool seen = false;
        for (struct plist *m = p->pools.next; m != n && !seen; m = m->next)
            seen = !strcmp(plist_entry(m, struct pool, node)->db_name, pool->db_name);
        if (seen)
            continue;
        struct db_stats d = {.database = pool->db_name};
        for (struct plist *m = n; m != &p->pools; m = m->next) {
            const struct pool *q = plist_entry(m, struct pool, node);
            if (!strcmp(q->db_name, pool->db_name))
                add_pool_stats(&d, q);
        }
        fn(r, &d);
    }
    if (p->admin_pool) {
        if (all) {
            add_pool_stats(&everything, p->admin_pool);
        } else {
            struct db_stats d = {.database = p->admin_pool->db_name};
            add_pool_stats(&d, p->admin_pool);
            fn(r, &d);
        }
    }
    if (all)
        fn(r, &everything);
}

/* Per-second rates and per-event means of the last complete period, as PgBouncer computes
 * its averages. */
struct db_averages {
    int64_t server_assignments, xacts, queries, received, sent;
    int64_t xact_time, query_time, wait_time;
    int64_t client_parses, server_parses, binds;
};

static void averages_of(const struct db_stats *d, struct db_averages *a)
{
    memset(a, 0, sizeof(*a));
    if (d->period_us <= 0)
        return;
    const struct pool_stats *s = &d->period;
#define PER_SEC(v) ((int64_t)((double)(v)*1e6 / (double)d->period_us))
    a->server_assignments = PER_SEC(s->server_assignments);
    a->xacts = PER_SEC(s->xact_count);
    a->queries = PER_SEC(s->query_count);
    a->received = PER_SEC(s->bytes_received);
    a->sent = PER_SEC(s->bytes_sent);
    a->client_parses = PER_SEC(s->client_parse_count);
    a->server_parses = PER_SEC(s->server_parse_count);
    a->binds = PER_SEC(s->bind_count);
#undef PER_SEC
    a->xact_time = s->xact_count ? s->xact_time_us / s->xact_count : 0;
    a->query_time = s->query_count ? s->query_time_us / s->query_count : 0;
    a->wait_time = s->server_assignments ? s->wait_time_us / s->server_assignments : 0;
}

/* The eleven counters in PgBouncer's order (totals or averages). */
#define N_STATS_COUNTERS 11

static void totals_values(const struct pool_stats *t, int64_t v[N_STATS_COUNTERS])
{
    const int64_t values[N_STATS_COUNTERS] = {
        t->server_assignments, t->xact_count,         t->query_count,   t->bytes_received,
        t->bytes_sent,         t->xact_time_us,       t->query_time_us, t->wait_time_us,
        t->client_parse_count, t->server_parse_count, t->bind_count};
    memcpy(v, values, sizeof(values));
}

static void averages_values(const struct db_stats *d, int64_t v[N_STATS_COUNTERS])
{
    struct db_averages a;
    averages_of(d, &a);
    const int64_t values[N_STATS_COUNTERS] = {
        a.server_assignments, a.xacts,     a.queries,       a.received,      a.sent, a.xact_time,
        a.query_time,         a.wait_time, a.client_parses, a.server_parses, a.binds};
    memcpy(v, values, sizeof(values));
}

static void put_values(struct reply *r, const int64_t v[N_STATS_COUNTERS])
{
    for (size_t i = 0; i < N_STATS_COUNTERS; i++)
        reply_int(r, v[i]);
}

static void stats_row(struct reply *r, const struct db_stats *d)
{
    int64_t v[N_STATS_COUNTERS];
    reply_row(r);
    reply_text(r, d->database);
    totals_values(&d->total, v);
    put_values(r, v);
    averages_values(d, v);
    put_values(r, v);
}

static void stats_totals_row(struct reply *r, const struct db_stats *d)
{
    int64_t v[N_STATS_COUNTERS];
    reply_row(r);
    reply_text(r, d->database);
    totals_values(&d->total, v);
    put_values(r, v);
}

static void stats_averages_row(struct reply *r, const struct db_stats *d)
{
    int64_t v[N_STATS_COUNTERS];
    reply_row(r);
    reply_text(r, d->database);
    averages_values(d, v);
    put_values(r, v);
}

static void totals_rows(struct reply *r, const struct db_stats *d)
{
    static const char *const names[N_STATS_COUNTERS] = {"server_assignment_count",
                                                        "xact_count",
                                                        "query_count",
                                                        "received",
                                                        "sent",
                                                        "xact_time",
                                                        "query_time",
                                                        "wait_time",
                                                        "client_parse_count",
                                                        "server_parse_count",
                                                        "bind_count"};
    int64_t totals[N_STATS_COUNTERS], avgs[N_STATS_COUNTERS];
    totals_values(&d->total, totals);
    averages_values(d, avgs);
    const struct {
        const char *prefix;
        const int64_t *v;
    } halves[] = {{"total_", totals}, {"avg_", avgs}};
    char name[64];
    for (size_t h = 0; h < 2; h++)
        for (size_t i = 0; i < N_STATS_COUNTERS; i++) {
            snprintf(name, sizeof(name), "%s%s", halves[h].prefix, names[i]);
            reply_row(r);
            reply_text(r, name);
            reply_int(r, halves[h].v[i]);
        }
}

/* A statistics table: one row per database (or one for all), made by row. */
static void stats_table(struct pooler *p, struct console_out *o, const char *const *cols, int n,
                        bool all, void (*row)(struct reply *, const struct db_stats *))
{
    struct reply r;
    reply_begin(&r, o, cols, n);
    each_db_stats(p, all, row, &r);
    reply_end(&r, "SHOW");
}

void pooler_tables_stats(struct pooler *p, struct console_out *o)
{
    static const char *const cols[] = {"database",
                                       "total_server_assignment_count:n",
                                       "total_xact_count:n",
                                       "total_query_count:n",
                                       "total_received:n",
                                       "total_sent:n",
                                       "total_xact_time:n",
                                       "total_query_time:n",
                                       "total_wait_time:n",
                                       "total_client_parse_count:n",
                                       "total_server_parse_count:n",
                                       "total_bind_count:n",
                                       "avg_server_assignment_count:n",
                                       "avg_xact_count:n",
                                       "avg_query_count:n",
                                       "avg_recv:n",
                                       "avg_sent:n",
                                       "avg_xact_time:n",
                                       "avg_query_time:n",
                                       "avg_wait_time:n",
                                       "avg_client_parse_count:n",
                                       "avg_server_parse_count:n",
                                       "avg_bind_count:n"};
    stats_table(p, o, cols, REPLY_COLS(cols), false, stats_row);
}

void pooler_tables_stats_totals(struct pooler *p, struct console_out *o)
{
    static const char *const cols[] = {"database",
                                       "server_assignment_count:n",
                                       "xact_count:n",
                                       "query_count:n",
                                       "bytes_received:n",
                                       "bytes_sent:n",
                                       "xact_time:n",
                                       "query_time:n",
                                       "wait_time:n",
                                       "client_parse_count:n",
                                       "server_parse_count:n",
                                       "bind_count:n"};
    stats_table(p, o, cols, REPLY_COLS(cols), false, stats_totals_row);
}

void pooler_tables_stats_averages(struct pooler *p, struct console_out *o)
{
    static const char *const cols[] = {"database",
                                       "server_assignment_count:n",
                                       "xact_count:n",
                                       "query_count:n",
                                       "bytes_received:n",
                                       "bytes_sent:n",
                                       "xact_time:n",
                                       "query_time:n",
                                       "wait_time:n",
                                       "avg_client_parse_count:n",
                                       "avg_server_parse_count:n",
                                       "avg_bind_count:n"};
    stats_table(p, o, cols, REPLY_COLS(cols), false, stats_averages_row);
}

void pooler_tables_totals(struct pooler *p, struct console_out *o)
{
    static const char *const cols[] = {"name", "value:n"};
    stats_table(p, o, cols, REPLY_COLS(cols), true, totals_rows);
}

/* pgwarden's own per-pool counters that PgBouncer's tables have no column for. */
void pooler_tables_pool_counters(struct pooler *p, struct console_out *o)
{
    static const char *const cols[] = {"database",          "user",
                                       "servers_created:q", "servers_closed:q",
                                       "clients_created:q", "clients_closed:q",
                                       "login_failures:q",  "connect_time:q"};
    struct reply r;
    reply_begin(&r, o, cols, REPLY_COLS(cols));
    for (struct plist *n = p->pools.next; n != &p->pools; n = n->next) {
        const struct pool *pool = plist_entry(n, struct pool, node);
        const struct pool_stats *t = &pool->stats;
        reply_row(&r);
        reply_text(&r, pool->db_name);
        reply_text(&r, pool->user_name);
        const int64_t v[] = {t->servers_created, t->servers_closed, t->clients_created,
                             t->clients_closed,  t->login_failures, t->connect_time_us};
        for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++)
            reply_int(&r, v[i]);
    }
    reply_end(&r, "SHOW");
}

/* ---- databases and users ---- */

/* Calls fn for every client of a pool: active, waiting, and waiting for its first server. */
static void each_client(const struct pool *pool, void (*fn)(void *ctx, const struct client *c),
                        void *ctx)
{
    const struct plist *lists[] = {&pool->active_clients, &pool->waiting_clients,
                                   &pool->waiting_login_clients};
    for (size_t i = 0; i < sizeof(lists) / sizeof(lists[0]); i++)
        for (const struct plist *m = lists[i]->next; m != lists[i]; m = m->next)
            fn(ctx, plist_entry(m, struct client, node));
}

struct user_count {
    const char *user;
    int64_t n;
};

static void count_user_client(void *ctx, const struct client *c)
{
    struct user_count *u = ctx;
    u->n += !strcmp(client_user_name(c), u->user);
}

/* Clients of a pool that logged in as user. */
static int64_t pool_user_clients(const struct pool *pool, const char *user)
{
    struct user_count u = {user, 0};
    each_client(pool, count_user_client, &u);
    return u.n;
}

/* Clients of the pools of a database. */
static int64_t database_client_count(struct pooler *p, const char *db)
{
    int64_t n = 0;
    for (struct plist *it = p->pools.next; it != &p->pools; it = it->next) {
        const struct pool *pool = plist_entry(it, struct pool, node);
        if (!strcmp(pool->db_name, db))
            n += pool->n_clients;
    }
    return n;
}

/* Clients (console ones too) that logged in as a user. */
static int64_t user_client_count(struct pooler *p, const char *user)
{
    int64_t n = 0;
    for (struct plist *it = p->pools.next; it != &p->pools; it = it->next)
        n += pool_user_clients(plist_entry(it, struct pool, node), user);
    if (p->admin_pool)
        n += pool_user_clients(p->admin_pool, user);
    return n;
}

void pooler_tables_databases(struct pooler *p, struct console_out *o)
{
    static const char *const cols[] = {"name",
                                       "host",
                                       "port:i",
                                       "database",
                                       "force_user",
                                       "pool_size:i",
                                       "min_pool_size:i",
                                       "reserve_pool_size:i",
                                       "server_lifetime:i",
                                       "pool_mode",
                                       "load_balance_hosts",
                                       "max_connections:i",
                                       "current_connections:i",
                                       "max_client_connections:i",
                                       "current_client_connections:i",
                                       "paused:i",
                                       "disabled:i"};
    struct reply r;
    reply_begin(&r, o, cols, REPLY_COLS(cols));
    const struct pooler_config *cfg = p->cfg;
    for (size_t i = 0; i < cfg->n_dbs; i++) {
        const struct pooler_db_config *db = &cfg->dbs[i];
        reply_row(&r);
        reply_text(&r, db->name);
        reply_text(&r, db->host);
        reply_int(&r, db->port);
        reply_text(&r, db->dbname ? db->dbname : db->name);
        reply_text(&r, db->user); /* never the password */
        reply_int(&r, db->pool_size >= 0 ? db->pool_size : cfg->default_pool_size);
        reply_int(&r, db->min_pool_size >= 0 ? db->min_pool_size : cfg->min_pool_size);
        reply_int(&r, db->reserve_pool >= 0 ? db->reserve_pool : cfg->reserve_pool_size);
        reply_int(&r, cfg->server_lifetime_ms / 1000);
        reply_text(&r, db->pool_mode >= 0
                           ? pooler_config_pool_mode_name((enum pool_mode)db->pool_mode)
                           : NULL);
        reply_text(&r, load_balance_name(db->host, db->load_balance_disable));
        reply_int(&r,
                  db->max_db_connections >= 0 ? db->max_db_connections : cfg->max_db_connections);
        reply_int(&r, handout_db_server_count(p, db->name));
        reply_int(&r, db->max_db_client_connections > 0 ? db->max_db_client_connections
                                                        : cfg->max_db_client_connections);
        reply_int(&r, database_client_count(p, db->name));
        reply_int(&r, control_db_paused(p, db->name));
        reply_int(&r, control_db_disabled(p, db->name));
    }
    /* The console itself, as PgBouncer lists it. */
    reply_row(&r);
    reply_text(&r, "pgbouncer");
    reply_text(&r, NULL);
    reply_int(&r, cfg->listen_port);
    reply_text(&r, "pgbouncer");
    reply_text(&r, "pgbouncer");
    reply_int(&r, 2);
    reply_int(&r, 0);
    reply_int(&r, 0);
    reply_int(&r, 0);
    reply_text(&r, "statement");
    reply_text(&r, NULL);
    reply_int(&r, 0);
    reply_int(&r, 0);
    reply_int(&r, cfg->max_db_client_connections); /* stats users count; admins do not */
    reply_int(&r, p->admin_pool ? count(&p->admin_pool->active_clients) : 0);
    reply_int(&r, 0);
    reply_int(&r, 0);
    reply_end(&r, "SHOW");
}

static const struct pooler_user_config *user_config(const struct pooler_config *cfg,
                                                    const char *name)
{
    for (size_t i = 0; i < cfg->n_users; i++)
        if (!strcmp(cfg->users[i].name, name))
            return &cfg->users[i];
    return NULL;
}

static void user_row(struct pooler *p, struct reply *r, const char *name)
{
    const struct pooler_config *cfg = p->cfg;
    const struct pooler_user_config *u = user_config(cfg, name);
    char size[16] = "";
    if (u && u->pool_size >= 0)
        snprintf(size, sizeof(size), "%9d", u->pool_size);
    int max =
        u && u->max_user_connections >= 0 ? u->max_user_connections : cfg->max_user_connections;
    reply_row(r);
    reply_text(r, name);
    reply_text(r, size);
    reply_text(r, ""); /* no per-user reserve_pool_size */
    reply_text(r, u && u->pool_mode >= 0
                      ? pooler_config_pool_mode_name((enum pool_mode)u->pool_mode)
                      : NULL);
    reply_int(r, max);
    reply_int(r, handout_user_server_count(p, name));
    reply_int(r, u && u->max_user_client_connections > 0 ? u->max_user_client_connections
                                                         : cfg->max_user_client_connections);
    reply_int(r, user_client_count(p, name));
}

/* The names SHOW USERS lists, each once, in the order first met. */
struct user_names {
    const char **names; /* borrowed strings, owned array */
    size_t n, cap;
};

static void user_name_add(struct user_names *u, const char *name)
{
    if (!name || !name[0])
        return;
    for (size_t i = 0; i < u->n; i++)
        if (!strcmp(u->names[i], name))
            return;
    if (u->n == u->cap) {
        size_t cap = u->cap ? u->cap * 2 : 16;
        const char **grown = realloc(u->names, cap * sizeof(*grown));
        if (!grown)
            return; /* a row short rather than no table */
        u->names = grown;
        u->cap = cap;
    }
    u->names[u->n++] = name;
}

static void add_client_user(void *ctx, const struct client *c)
{
    user_name_add(ctx, client_user_name(c));
}

/* The console's users from admin_users or stats_users (a list to split into names). */
static void console_user_names(struct user_names *u, char *list_copy)
{
    for (char *save = NULL, *t = strtok_r(list_copy, ", ", &save); t;
         t = strtok_r(NULL, ", ", &save))
        user_name_add(u, t);
}

void pooler_tables_users(struct pooler *p, struct console_out *o)
{
    static const char *const cols[] = {"name",
                                       "pool_size",
                                       "reserve_pool_size",
                                       "pool_mode",
                                       "max_user_connections:i",
                                       "current_connections:i",
                                       "max_user_client_connections:i",
                                       "current_client_connections:i"};
    struct reply r;
    reply_begin(&r, o, cols, REPLY_COLS(cols));
    /* [users] entries, users with pools, the console's users (admin_users, stats_users, and
     * whoever is logged in to it). */
    struct user_names u = {0};
    for (size_t i = 0; i < p->cfg->n_users; i++)
        user_name_add(&u, p->cfg->users[i].name);
    for (struct plist *n = p->pools.next; n != &p->pools; n = n->next) {
        const struct pool *pool = plist_entry(n, struct pool, node);
        user_name_add(&u, pool->user_name);
        /* A forced-user database's pool is its forced user's; its clients are themselves. */
        each_client(pool, add_client_user, &u);
    }
    char *admins = strdup(p->cfg->admin_users ? p->cfg->admin_users : "");
    char *stats = strdup(p->cfg->stats_users ? p->cfg->stats_users : "");
    if (admins)
        console_user_names(&u, admins);
    if (stats)
        console_user_names(&u, stats);
    if (p->admin_pool)
        each_client(p->admin_pool, add_client_user, &u);
    for (size_t i = 0; i < u.n; i++)
        user_row(p, &r, u.names[i]);
    free(u.names);
    free(admins);
    free(stats);
    reply_end(&r, "SHOW");
}

/* pool_size 0: pgwarden sets no limit per peer (cancel connections are bounded by
 * max_client_conn overall). */
void pooler_tables_peers(struct pooler *p, struct console_out *o)
{
    static const char *const cols[] = {"peer_id:i", "host", "port:i", "pool_size:i"};
    struct reply r;
    reply_begin(&r, o, cols, REPLY_COLS(cols));
    for (size_t i = 0; i < p->cfg->n_peers; i++) {
        const struct pooler_peer_config *peer = &p->cfg->peers[i];
        if (peer->id == p->cfg->peer_id)
            continue;
        reply_row(&r);
        reply_int(&r, peer->id);
        reply_text(&r, peer->host);
        reply_int(&r, peer->port);
        reply_int(&r, 0);
    }
    reply_end(&r, "SHOW");
}

/* ---- sockets: SHOW CLIENTS, SERVERS, SOCKETS, ACTIVE_SOCKETS ---- */

static void addr_text(const struct net_addr *a, char *ip, size_t ip_len, int *port)
{
    if (a->family != AF_INET && a->family != AF_INET6) {
        snprintf(ip, ip_len, "unix");
        *port = a->port;
        return;
    }
    char buf[80];
    net_addr_format(a, buf, sizeof(buf));
    char *colon = strrchr(buf, ':');
    if (colon)
        *colon = '\0';
    const char *start = buf[0] == '[' ? buf + 1 : buf;
    size_t n = strlen(start);
    if (n && start[n - 1] == ']')
        n--;
    snprintf(ip, ip_len, "%.*s", (int)n, start);
    *port = a->port;
}

static void local_addr_text(int fd, char *ip, size_t ip_len, int *port)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    struct net_addr a = {0};
    if (fd >= 0 && getsockname(fd, (struct sockaddr *)&ss, &len) == 0)
        net_addr_from_sockaddr(&a, (const struct sockaddr *)&ss, len);
    else
        a.family = AF_UNIX;
    addr_text(&a, ip, ip_len, port);
}

/* The peer's process id over a unix socket (0 when unknown or over TCP). */
static int peer_pid(int fd, const struct net_addr *a)
{
#ifdef SO_PEERCRED
    if (a->family == AF_UNIX && fd >= 0) {
        struct ucred cred;
        socklen_t len = sizeof(cred);
        if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0)
            return (int)cred.pid;
    }
#else
    (void)fd;
    (void)a;
#endif
    return 0;
}

/* Bytes a socket's buffer holds: [pos, scan) accounted and sendable, [scan, end) not yet. */
static void buffer_columns(struct reply *r, const struct pconn *c)
{
    const struct iobuf *b = c->buf;
    int64_t recv_pos = b ? b->end : 0, pkt_pos = c->scan, send_pos = b ? b->pos : 0;
    reply_int(r, recv_pos);
    reply_int(r, pkt_pos);
    reply_int(r, c->body_left);
    reply_int(r, send_pos);
    reply_int(r, 0);
    reply_int(r, b ? (int64_t)b->end - c->scan : 0);
    reply_int(r, b ? (int64_t)c->scan - b->pos : 0);
}

static const char *const SOCKET_COLS[] = {
    "type", "user", "database", "replication", "state", "addr", "port:i", "local_addr",
    "local_port:i", "connect_time", "request_time", "wait:i", "wait_us:i", "close_needed:i", "ptr",
    "link", "remote_pid:i", "tls", "application_name", "prepared_statements:i", "id:q",
    /* SHOW SOCKETS and ACTIVE_SOCKETS add the buffer's state */
    "recv_pos:i", "pkt_pos:i", "pkt_remain:i", "send_pos:i", "send_remain:i", "pkt_avail:i",
    "send_avail:i"};
#define SOCKET_STD_COLS 21

/* PgBouncer's tls column: "TLSv1.3/TLS_AES_256_GCM_SHA384/ECDH=X25519", empty when plain
 * (or while the handshake runs). */
static void reply_tls(struct reply *r, const struct pconn *c)
{
    char desc[160] = "";
    if (c->tls)
        tls_describe(c->tls, desc, sizeof(desc));
    reply_text(r, desc);
}

static const char *param_text(struct pstr *const params[PARAM_COUNT], enum param_id id)
{
    return params[id] ? params[id]->str : "";
}

static int64_t client_stmt_count(const struct client *c)
{
    int64_t n = 0;
    for (const struct client_stmt *s = c->stmts; s; s = s->next)
        n++;
    return n;
}

static void client_row(struct reply *r, struct pooler *p, const struct pool *pool,
                       const struct client *c, const char *state, bool debug)
{
    char ip[64], local[64], ct[40], rt[40], ptr[24], link[24] = "";
    int port, local_port;
    addr_text(&c->addr, ip, sizeof(ip), &port);
    local_addr_text(c->conn.fd, local, sizeof(local), &local_port);
    reply_format_time(c->connect_us, ct, sizeof(ct));
    reply_format_time(c->request_us ? c->request_us : c->active_us, rt, sizeof(rt));
    snprintf(ptr, sizeof(ptr), "c%" PRIu64, c->id);
    if (c->server)
        snprintf(link, sizeof(link), "s%" PRIu64, c->server->id);
    int64_t wait = c->state == CL_WAITING ? pooler_now(p) - c->state_us : 0;
    /* A client in the active list without a server is idle, as PgBouncer shows it. */
    if (!strcmp(state, "active") && !c->server)
        state = "idle";
    reply_row(r);
    reply_text(r, "C");
    const char *user = client_user_name(c);
    reply_text(r, user[0] ? user : "(nouser)");
    reply_text(r, pool->db_name);
    reply_text(r, "none");
    reply_text(r, state);
    reply_text(r, ip);
    reply_int(r, port);
    reply_text(r, local);
    reply_int(r, local_port);
    reply_text(r, ct);
    reply_text(r, rt);
    reply_int(r, wait / 1000000);
    reply_int(r, wait % 1000000);
    reply_int(r, 0);
    reply_text(r, ptr);
    reply_text(r, link);
    reply_int(r, peer_pid(c->conn.fd, &c->addr));
    reply_tls(r, &c->conn);
    reply_text(r, param_text(c->params, PARAM_APPLICATION_NAME));
    reply_int(r, client_stmt_count(c));
    reply_int(r, (int64_t)c->id);
    if (debug)
        buffer_columns(r, &c->conn);
}

static void server_row(struct reply *r, const struct pool *pool, const struct server *s,
                       const char *state, bool debug)
{
    char local[64], ct[40], rt[40], ptr[24], link[24] = "";
    int local_port;
    local_addr_text(s->conn.fd, local, sizeof(local), &local_port);
    reply_format_time(s->connect_us, ct, sizeof(ct));
    reply_format_time(s->last_used_us ? s->last_used_us : s->connect_us, rt, sizeof(rt));
    snprintf(ptr, sizeof(ptr), "s%" PRIu64, s->id);
    if (s->client)
        snprintf(link, sizeof(link), "c%" PRIu64, s->client->id);
    bool unix_socket = pool->host && pool->host[0] == '/';
    reply_row(r);
    reply_text(r, "S");
    reply_text(r, pool->server_user);
    reply_text(r, pool->db_name);
    reply_text(r, "none");
    reply_text(r, state);
    reply_text(r, unix_socket ? "unix" : pool->host);
    reply_int(r, pool->port);
    reply_text(r, local);
    reply_int(r, local_port);
    reply_text(r, ct);
    reply_text(r, rt);
    reply_int(r, 0);
    reply_int(r, 0);
    reply_int(r, s->close_needed);
    reply_text(r, ptr);
    reply_text(r, link);
    reply_int(r, s->be_pid);
    reply_tls(r, &s->conn);
    reply_text(r, param_text(s->params, PARAM_APPLICATION_NAME));
    reply_int(r, s->stmts.n);
    reply_int(r, (int64_t)s->id);
    if (debug)
        buffer_columns(r, &s->conn);
}

struct client_list {
    const struct plist *list;
    const char *state;        /* SHOW CLIENTS */
    const char *socket_state; /* SHOW SOCKETS */
};

static void put_clients(struct reply *r, struct pooler *p, const struct pool *pool, bool debug,
                        bool only_busy)
{
    const struct client_list lists[] = {
        {&pool->active_clients, "active", "cl_active"},
        {&pool->waiting_clients, "waiting", "cl_waiting"},
        {&pool->waiting_login_clients, "waiting", "cl_waiting"},
    };
    for (size_t i = 0; i < sizeof(lists) / sizeof(lists[0]); i++)
        for (const struct plist *m = lists[i].list->next; m != lists[i].list; m = m->next) {
            const struct client *c = plist_entry(m, struct client, node);
            if (only_busy && (!c->conn.buf || c->conn.buf->pos == c->conn.buf->end))
                continue;
            client_row(r, p, pool, c, debug ? lists[i].socket_state : lists[i].state, debug);
        }
}

static void put_servers(struct reply *r, const struct pool *pool, bool debug, bool only_busy)
{
    const struct client_list lists[] = {
        {&pool->active_servers, "active", "sv_active"},
        {&pool->idle_servers, "idle", "sv_idle"},
        {&pool->tested_servers, "tested", "sv_tested"},
        {&pool->login_servers, "new", "sv_login"},
        {&pool->canceling_servers, "being_canceled", "sv_active"},
    };
    for (size_t i = 0; i < sizeof(lists) / sizeof(lists[0]); i++)
        for (const struct plist *m = lists[i].list->next; m != lists[i].list; m = m->next) {
            const struct server *s = plist_entry(m, struct server, node);
            if (only_busy && (!s->conn.buf || s->conn.buf->pos == s->conn.buf->end))
                continue;
            server_row(r, pool, s, debug ? lists[i].socket_state : lists[i].state, debug);
        }
}

void pooler_tables_clients(struct pooler *p, struct console_out *o)
{
    struct reply r;
    reply_begin(&r, o, SOCKET_COLS, SOCKET_STD_COLS);
    for (struct plist *n = p->pools.next; n != &p->pools; n = n->next)
        put_clients(&r, p, plist_entry(n, struct pool, node), false, false);
    /* Console clients too (this one included), as PgBouncer lists them. */
    if (p->admin_pool)
        put_clients(&r, p, p->admin_pool, false, false);
    reply_end(&r, "SHOW");
}

void pooler_tables_servers(struct pooler *p, struct console_out *o)
{
    struct reply r;
    reply_begin(&r, o, SOCKET_COLS, SOCKET_STD_COLS);
    for (struct plist *n = p->pools.next; n != &p->pools; n = n->next)
        put_servers(&r, plist_entry(n, struct pool, node), false, false);
    reply_end(&r, "SHOW");
}

static void sockets(struct pooler *p, struct console_out *o, bool only_busy)
{
    struct reply r;
    reply_begin(&r, o, SOCKET_COLS, REPLY_COLS(SOCKET_COLS));
    for (struct plist *n = p->pools.next; n != &p->pools; n = n->next) {
        const struct pool *pool = plist_entry(n, struct pool, node);
        put_clients(&r, p, pool, true, only_busy);
        put_servers(&r, pool, true, only_busy);
    }
    if (p->admin_pool)
        put_clients(&r, p, p->admin_pool, true, only_busy);
    reply_end(&r, "SHOW");
}

void pooler_tables_sockets(struct pooler *p, struct console_out *o)
{
    sockets(p, o, false);
}

void pooler_tables_active_sockets(struct pooler *p, struct console_out *o)
{
    sockets(p, o, true);
}

/* SHOW FDS: PgBouncer hands these to a new process on an online restart (-R), which pgwarden
 * does not do; the table is kept for the tools that read it, without secrets: no password or
 * SCRAM key is ever printed, and the cancel key column is NULL. */
void pooler_tables_fds(struct pooler *p, struct console_out *o)
{
    static const char *const cols[] = {
        "fd:i",      "task",     "user",     "database",         "addr",
        "port:i",    "cancel:q", "link:i",   "client_encoding",  "std_strings",
        "datestyle", "timezone", "password", "scram_client_key", "scram_server_key"};
    struct reply r;
    reply_begin(&r, o, cols, REPLY_COLS(cols));
    for (int i = 0; i < p->n_listeners; i++) {
        reply_row(&r);
        reply_int(&r, p->listen_fds[i]);
        reply_text(&r, "pooler");
        for (int k = 0; k < 13; k++)
            reply_text(&r, NULL);
    }
    for (struct plist *n = p->pools.next; n != &p->pools; n = n->next) {
        const struct pool *pool = plist_entry(n, struct pool, node);
        const struct plist *cl[] = {&pool->active_clients, &pool->waiting_clients};
        for (size_t i = 0; i < 2; i++)
            for (const struct plist *m = cl[i]->next; m != cl[i]; m = m->next) {
                const struct client *c = plist_entry(m, struct client, node);
                char ip[64];
                int port;
                addr_text(&c->addr, ip, sizeof(ip), &port);
                reply_row(&r);
                reply_int(&r, c->conn.fd);
                reply_text(&r, "client");
                reply_text(&r, pool->user_name);
                reply_text(&r, pool->db_name);
                reply_text(&r, ip);
                reply_int(&r, port);
                reply_text(&r, NULL);
                if (c->server)
                    reply_int(&r, c->server->conn.fd);
                else
                    reply_int(&r, 0);
                reply_text(&r, param_text(c->params, PARAM_CLIENT_ENCODING));
                reply_text(&r, param_text(c->params, PARAM_STANDARD_CONFORMING_STRINGS));
                reply_text(&r, param_text(c->params, PARAM_DATESTYLE));
                reply_text(&r, param_text(c->params, PARAM_TIMEZONE));
                for (int k = 0; k < 3; k++)
                    reply_text(&r, NULL);
            }
    }
    reply_end(&r, "SHOW");
}

/* ---- lists, memory, DNS ---- */

static int64_t count_servers(struct pooler *p)
{
    int64_t n = 0;
    for (struct plist *it = p->pools.next; it != &p->pools; it = it->next)
        n += plist_entry(it, struct pool, node)->n_servers;
    return n;
}

static int64_t count_clients(struct pooler *p)
{
    int64_t n = p->admin_pool ? count(&p->admin_pool->active_clients) : 0;
    for (struct plist *it = p->pools.next; it != &p->pools; it = it->next)
        n += plist_entry(it, struct pool, node)->n_clients;
    return n;
}

static int64_t count_users(struct pooler *p)
{
    int64_t n = (int64_t)p->cfg->n_users;
    for (struct plist *it = p->pools.next; it != &p->pools; it = it->next) {
        const struct pool *pool = plist_entry(it, struct pool, node);
        bool seen = user_config(p->cfg, pool->user_name) != NULL;
        for (struct plist *m = p->pools.next; m != it && !seen; m = m->next)
            seen = !strcmp(plist_entry(m, struct pool, node)->user_name, pool->user_name);
        n += !seen;
    }
    return n;
}

static int64_t count_dns_names(struct pooler *p)
{
    int64_t n = 0;
    for (struct plist *it = p->pools.next; it != &p->pools; it = it->next) {
        const struct pool *pool = plist_entry(it, struct pool, node);
        for (int i = 0; i < pool->n_hosts; i++)
            n += pool->hosts[i].have_addr;
    }
    return n;
}

void pooler_tables_lists(struct pooler *p, struct console_out *o)
{
    static const char *const cols[] = {"list", "items:i"};
    struct reply r;
    reply_begin(&r, o, cols, REPLY_COLS(cols));
    int64_t pools = 0;
    for (struct plist *n = p->pools.next; n != &p->pools; n = n->next)
        pools++;
    /* Clients and servers are allocated one by one (no free lists): free_* are 0. */
    const struct {
        const char *name;
        int64_t items;
    } rows[] = {
        {"databases", (int64_t)p->cfg->n_dbs + 1},
        {"users", count_users(p)},
        {"peers", 0},
        {"pools", pools},
        {"peer_pools", 0},
        {"free_clients", 0},
        {"used_clients", count_clients(p) + count(&p->login_clients)},
        {"login_clients", count(&p->login_clients)},
        {"free_servers", 0},
        {"used_servers", count_servers(p)},
        {"dns_names", count_dns_names(p)},
        {"dns_zones", 0},
        {"dns_queries", 0},
        {"dns_pending", 0},
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        reply_row(&r);
        reply_text(&r, rows[i].name);
        reply_int(&r, rows[i].items);
    }
    reply_end(&r, "SHOW");
}

void pooler_tables_mem(struct pooler *p, struct console_out *o)
{
    static const char *const cols[] = {"name", "size:i", "used:i", "free:i", "memtotal:i"};
    struct reply r;
    reply_begin(&r, o, cols, REPLY_COLS(cols));
    int64_t pools = 0;
    for (struct plist *n = p->pools.next; n != &p->pools; n = n->next)
        pools++;
    const struct {
        const char *name;
        int64_t size, used, free;
    } rows[] = {
        {"pool_cache", (int64_t)sizeof(struct pool), pools, 0},
        {"client_cache", (int64_t)sizeof(struct client),
         count_clients(p) + count(&p->login_clients), 0},
        {"server_cache", (int64_t)sizeof(struct server), count_servers(p), 0},
        {"iobuf_cache", (int64_t)p->bufs.size, (int64_t)p->bufs.n_used, (int64_t)p->bufs.n_free},
        {"prepared_statement_cache", (int64_t)sizeof(struct prepared_stmt), (int64_t)p->stmts.count,
         0},
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        reply_row(&r);
        reply_text(&r, rows[i].name);
        reply_int(&r, rows[i].size);
        reply_int(&r, rows[i].used);
        reply_int(&r, rows[i].free);
        reply_int(&r, rows[i].size * (rows[i].used + rows[i].free));
    }
    reply_end(&r, "SHOW");
}

void pooler_tables_dns_hosts(struct pooler *p, struct console_out *o)
{
    static const char *const cols[] = {"hostname", "ttl:q", "addrs"};
    struct reply r;
    reply_begin(&r, o, cols, REPLY_COLS(cols));
    int64_t now = pooler_now(p);
    for (struct plist *n = p->pools.next; n != &p->pools; n = n->next) {
        const struct pool *pool = plist_entry(n, struct pool, node);
        for (int i = 0; i < pool->n_hosts; i++) {
            const struct pool_host *h = &pool->hosts[i];
            if (!h->have_addr)
                continue;
            char addr[80];
            struct net_addr a = {0};
            net_addr_from_sockaddr(&a, (const struct sockaddr *)&h->addr.ss, h->addr.len);
            net_addr_format(&a, addr, sizeof(addr));
            int64_t ttl = h->addr_expires_us > now ? (h->addr_expires_us - now) / 1000000 : 0;
            reply_row(&r);
            reply_text(&r, h->name);
            reply_int(&r, ttl);
            reply_text(&r, addr);
        }
    }
    reply_end(&r, "SHOW");
}

void pooler_tables_dns_zones(struct pooler *p, struct console_out *o)
{
    (void)p;
    static const char *const cols[] = {"zonename", "serial:q", "count:i"};
    struct reply r;
    reply_begin(&r, o, cols, REPLY_COLS(cols));
    reply_end(&r, "SHOW"); /* no zone tracking (PgBouncer has it only with c-ares) */
}

/* ---- configuration, version, state, help ---- */

static void config_row(void *ctx, const char *key, const char *value, const char *default_text,
                       bool reloadable)
{
    struct reply *r = ctx;
    reply_row(r);
    reply_text(r, key);
    reply_text(r, value);
    reply_text(r, default_text);
    reply_text(r, reloadable ? "yes" : "no");
}

void pooler_tables_config(struct pooler *p, struct console_out *o)
{
    /* [databases] connection strings (which may hold passwords) are not part of this table. */
    static const char *const cols[] = {"key", "value", "default", "changeable"};
    struct reply r;
    reply_begin(&r, o, cols, REPLY_COLS(cols));
    pooler_config_values(p->cfg, config_row, &r);
    reply_end(&r, "SHOW");
}

void pooler_tables_version(struct pooler *p, struct console_out *o)
{
    (void)p;
    static const char *const cols[] = {"version"};
    struct reply r;
    reply_begin(&r, o, cols, REPLY_COLS(cols));
    reply_row(&r);
    reply_text(&r, "pgwarden " PGWARDEN_VERSION);
    reply_end(&r, "SHOW");
}

void pooler_tables_state(struct pooler *p, struct console_out *o)
{
    static const char *const cols[] = {"key", "value"};
    struct reply r;
    reply_begin(&r, o, cols, REPLY_COLS(cols));
    const struct {
        const char *key;
        bool on;
    } rows[] = {
        {"active", p->run_state != POOLER_PAUSED},
        {"paused", p->run_state == POOLER_PAUSED},
        {"suspended", false},
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        reply_row(&r);
        reply_text(&r, rows[i].key);
        reply_text(&r, rows[i].on ? "yes" : "no");
    }
    reply_end(&r, "SHOW");
}

void pooler_tables_help(struct pooler *p, struct console_out *o)
{
    (void)p;
    reply_notice_detail(o, "Console usage",
                        "\n\tSHOW HELP|CONFIG|DATABASES|POOLS|CLIENTS|SERVERS|USERS|VERSION\n"
                        "\tSHOW PEERS|PEER_POOLS\n"
                        "\tSHOW FDS|SOCKETS|ACTIVE_SOCKETS|LISTS|MEM|STATE\n"
                        "\tSHOW DNS_HOSTS|DNS_ZONES\n"
                        "\tSHOW STATS|STATS_TOTALS|STATS_AVERAGES|TOTALS\n"
                        "\tSHOW LEAKS|EVENTS|SCALING|HEALTH|ANALYSIS|MANAGER\n"
                        "\tSHOW SNAPSHOT|SNAPSHOT_TOTALS|SNAPSHOT_POOLS|POOL_COUNTERS\n"
                        "\tSET key = arg\n"
                        "\tRELOAD\n"
                        "\tPAUSE [<db>]\n"
                        "\tRESUME [<db>]\n"
                        "\tDISABLE <db>\n"
                        "\tENABLE <db>\n"
                        "\tRECONNECT [<db>]\n"
                        "\tKILL [<db>]\n"
                        "\tKILL_CLIENT <client_id>\n"
                        "\tSUSPEND\n"
                        "\tSHUTDOWN\n"
                        "\tSHUTDOWN WAIT_FOR_SERVERS|WAIT_FOR_CLIENTS\n"
                        "\tWAIT_CLOSE [<db>]\n"
                        "\tKILL_IDLE [DRY RUN]\n"
                        "\tHEALTH_CHECK\n"
                        "\tAUTO_SCALE [DRY RUN]");
    reply_complete(o, "SHOW");
}
