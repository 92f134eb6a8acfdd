/* Admin console commands: parsing the one-line SQL, and result sets built as RowDescription
 * + DataRow + CommandComplete with PgBouncer's column names. Values are computed from the
 * live pool objects; no secret (password, auth_file entry) is ever printed. */
#include "admin/console.h"

#include <ctype.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>

#include "common/log.h"
#include "config/pooler_config.h"
#include "live/live_manager.h"
#include "pool/handout.h"
#include "pool/objects.h"
#include "pool/pool.h"
#include "pool/serve.h"
#include "pool/server.h"
#include "proto/wire.h"

#define OID_INT8 20
#define OID_TEXT 25

/* Grows the output like a vector (1 kB, then doubling); the bytes belong to the console_out. */
static bool out_grow(struct wire_buf *b, size_t need)
{
    size_t cap = b->cap ? b->cap : 1024;
    while (cap - b->len < need)
        cap *= 2;
    uint8_t *d = realloc(b->data, cap);
    if (!d)
        return false;
    b->data = d;
    b->cap = cap;
    return true;
}

void console_out_init(struct console_out *o)
{
    wire_buf_init_growable(&o->buf, out_grow);
    o->sent = 0;
}

void console_out_free(struct console_out *o)
{
    free(o->buf.data);
    console_out_init(o);
}

void console_welcome(struct console_out *o, const char *application_name)
{
    struct wire_buf *b = &o->buf;
    wire_build_parameter_status(b, "server_version", "15.0 (pgwarden " PGWARDEN_VERSION ")");
    wire_build_parameter_status(b, "server_encoding", "UTF8");
    wire_build_parameter_status(b, "client_encoding", "UTF8");
    wire_build_parameter_status(b, "DateStyle", "ISO, MDY");
    wire_build_parameter_status(b, "TimeZone", "UTC");
    wire_build_parameter_status(b, "standard_conforming_strings", "on");
    wire_build_parameter_status(b, "integer_datetimes", "on");
    wire_build_parameter_status(b, "is_superuser", "off");
    wire_build_parameter_status(b, "application_name", application_name ? application_name : "");
}

static void command_complete(struct console_out *o, const char *tag)
{
    size_t m = wire_msg_begin(&o->buf, WIRE_BE_COMMAND_COMPLETE);
    wire_put_cstr(&o->buf, tag);
    wire_msg_end(&o->buf, m);
}

static void error(struct console_out *o, const char *sqlstate, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void error(struct console_out *o, const char *sqlstate, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    wire_build_error(&o->buf, "ERROR", sqlstate, msg);
}

/* ---- result sets: columns are "name:i" (int8) or "name" (text) ---- */

struct rowset {
    struct console_out *o;
    int ncols;
    bool numeric[64];
    size_t row_at; /* current DataRow start */
    int row_cols;
    size_t rows;
};

static void rs_begin(struct rowset *rs, struct console_out *o, const char *const *cols, int n)
{
    rs->o = o;
    rs->ncols = n;
    rs->rows = 0;
    struct wire_buf *b = &o->buf;
    size_t m = wire_msg_begin(b, WIRE_BE_ROW_DESCRIPTION);
    wire_put_u16(b, (uint16_t)n);
    for (int i = 0; i < n; i++) {
        const char *c = cols[i];
        size_t len = strlen(c);
        bool num = len > 2 && !strcmp(c + len - 2, ":i");
        rs->numeric[i] = num;
        char name[64];
        snprintf(name, sizeof(name), "%.*s", (int)(num ? len - 2 : len), c);
        wire_put_cstr(b, name);
        wire_put_u32(b, 0);
        wire_put_u16(b, 0);
        wire_put_u32(b, num ? OID_INT8 : OID_TEXT);
        wire_put_u16(b, num ? 8 : 0xFFFF);
        wire_put_u32(b, 0xFFFFFFFF);
        wire_put_u16(b, 0);
    }
    wire_msg_end(b, m);
}

static void rs_row(struct rowset *rs)
{
    rs->row_at = wire_msg_begin(&rs->o->buf, WIRE_BE_DATA_ROW);
    wire_put_u16(&rs->o->buf, (uint16_t)rs->ncols);
    rs->row_cols = 0;
}

static void rs_text(struct rowset *rs, const char *v)
{
    struct wire_buf *b = &rs->o->buf;
    if (!v) {
        wire_put_u32(b, 0xFFFFFFFF);
    } else {
        wire_put_u32(b, (uint32_t)strlen(v));
        wire_put_bytes(b, v, strlen(v));
    }
    if (++rs->row_cols == rs->ncols) {
        wire_msg_end(b, rs->row_at);
        rs->rows++;
    }
}

static void rs_int(struct rowset *rs, int64_t v)
{
    char b[32];
    snprintf(b, sizeof(b), "%" PRId64, v);
    rs_text(rs, b);
}

static void rs_end(struct rowset *rs, const char *tag)
{
    command_complete(rs->o, tag);
}

/* ---- access ---- */

bool console_is_admin_db(const char *db)
{
    return !strcmp(db, "pgbouncer") || !strcmp(db, "pgwarden");
}

static bool listed(const char *list, const char *name)
{
    size_t n = strlen(name);
    const char *p = list ? list : "";
    while (*p) {
        while (*p == ' ' || *p == ',')
            p++;
        size_t k = strcspn(p, ", ");
        if (k == n && !strncmp(p, name, n))
            return true;
        p += k;
    }
    return false;
}

enum console_access console_access_for(const struct pooler_config *cfg, const char *user)
{
    if (listed(cfg->admin_users, user))
        return CONSOLE_ADMIN;
    if (listed(cfg->stats_users, user))
        return CONSOLE_STATS;
    return CONSOLE_DENIED;
}

/* ---- SHOW commands ---- */

static int64_t count(const struct plist *l)
{
    return (int64_t)plist_count(l);
}

static int64_t max_wait_us(const struct pool *pool, int64_t now)
{
    const struct plist *first = plist_first(&pool->waiting_clients);
    if (!first)
        return 0;
    const struct client *c = plist_entry(first, struct client, node);
    return now - c->state_us;
}

static void show_pools(struct pooler *p, struct console_out *o)
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
                                       "pool_mode"};
    struct rowset rs;
    rs_begin(&rs, o, cols, 16);
    int64_t now = pooler_now(p);
    for (struct plist *n = p->pools.next; n != &p->pools; n = n->next) {
        const struct pool *pool = plist_entry(n, struct pool, node);
        int64_t mw = max_wait_us(pool, now);
        rs_row(&rs);
        rs_text(&rs, pool->db_name);
        rs_text(&rs, pool->user_name);
        rs_int(&rs, count(&pool->active_clients));
        rs_int(&rs, count(&pool->waiting_clients) + count(&pool->waiting_login_clients));
        rs_int(&rs, 0);
        rs_int(&rs, 0);
        rs_int(&rs, count(&pool->active_servers));
        rs_int(&rs, 0);
        rs_int(&rs, count(&pool->canceling_servers));
        rs_int(&rs, count(&pool->idle_servers));
        rs_int(&rs, 0);
        rs_int(&rs, count(&pool->tested_servers));
        rs_int(&rs, count(&pool->login_servers));
        rs_int(&rs, mw / 1000000);
        rs_int(&rs, mw % 1000000);
        rs_text(&rs, pool_mode_name(pool->mode));
    }
    rs_end(&rs, "SHOW");
}

static void show_stats(struct pooler *p, struct console_out *o)
{
    static const char *const cols[] = {"database",
                                       "total_xact_count:i",
                                       "total_query_count:i",
                                       "total_received:i",
                                       "total_sent:i",
                                       "total_xact_time:i",
                                       "total_query_time:i",
                                       "total_wait_time:i",
                                       "avg_xact_count:i",
                                       "avg_query_count:i",
                                       "avg_recv:i",
                                       "avg_sent:i",
                                       "avg_xact_time:i",
                                       "avg_query_time:i",
                                       "avg_wait_time:i",
                                       "total_server_created:i",
                                       "total_server_closed:i",
                                       "total_login_failures:i"};
    struct rowset rs;
    rs_begin(&rs, o, cols, 18);
    /* One row per database, summing its pools (PgBouncer groups by database). */
    for (struct plist *n = p->pools.next; n != &p->pools; n = n->next) {
        const struct pool *pool = plist_entry(n, struct pool, node);
        bool seen = false;
        for (struct plist *m = p->pools.next; m != n; m = m->next)
            seen |= !strcmp(plist_entry(m, struct pool, node)->db_name, pool->db_name);
        if (seen)
            continue;
        struct pool_stats t = {0}, a = {0};
        int npools = 0;
        for (struct plist *m = n; m != &p->pools; m = m->next) {
            const struct pool *q = plist_entry(m, struct pool, node);
            if (strcmp(q->db_name, pool->db_name))
                continue;
            npools++;
            a.xact_count += q->stats_avg.xact_count;
            a.query_count += q->stats_avg.query_count;
            a.bytes_received += q->stats_avg.bytes_received;
            a.bytes_sent += q->stats_avg.bytes_sent;
            a.xact_time_us += q->stats_avg.xact_time_us;
            a.query_time_us += q->stats_avg.query_time_us;
            a.wait_time_us += q->stats_avg.wait_time_us;
            t.xact_count += q->stats.xact_count;
            t.query_count += q->stats.query_count;
            t.bytes_received += q->stats.bytes_received;
            t.bytes_sent += q->stats.bytes_sent;
            t.xact_time_us += q->stats.xact_time_us;
            t.query_time_us += q->stats.query_time_us;
            t.wait_time_us += q->stats.wait_time_us;
            t.servers_created += q->stats.servers_created;
            t.servers_closed += q->stats.servers_closed;
            t.login_failures += q->stats.login_failures;
        }
        rs_row(&rs);
        rs_text(&rs, pool->db_name);
        rs_int(&rs, t.xact_count);
        rs_int(&rs, t.query_count);
        rs_int(&rs, t.bytes_received);
        rs_int(&rs, t.bytes_sent);
        rs_int(&rs, t.xact_time_us);
        rs_int(&rs, t.query_time_us);
        rs_int(&rs, t.wait_time_us);
        rs_int(&rs, a.xact_count);
        rs_int(&rs, a.query_count);
        rs_int(&rs, a.bytes_received);
        rs_int(&rs, a.bytes_sent);
        /* per-pool mean times, averaged over the database's pools */
        rs_int(&rs, npools ? a.xact_time_us / npools : 0);
        rs_int(&rs, npools ? a.query_time_us / npools : 0);
        rs_int(&rs, npools ? a.wait_time_us / npools : 0);
        rs_int(&rs, t.servers_created);
        rs_int(&rs, t.servers_closed);
        rs_int(&rs, t.login_failures);
    }
    rs_end(&rs, "SHOW");
}

static void show_databases(struct pooler *p, struct console_out *o)
{
    static const char *const cols[] = {"name",
                                       "host",
                                       "port:i",
                                       "database",
                                       "force_user",
                                       "pool_size:i",
                                       "min_pool_size:i",
                                       "reserve_pool:i",
                                       "pool_mode",
                                       "max_connections:i",
                                       "current_connections:i"};
    struct rowset rs;
    rs_begin(&rs, o, cols, 11);
    const struct pooler_config *cfg = p->cfg;
    for (size_t i = 0; i < cfg->n_dbs; i++) {
        const struct pooler_db_config *db = &cfg->dbs[i];
        rs_row(&rs);
        rs_text(&rs, db->name);
        rs_text(&rs, db->host ? db->host : "");
        rs_int(&rs, db->port);
        rs_text(&rs, db->dbname ? db->dbname : db->name);
        rs_text(&rs, db->user); /* never the password */
        rs_int(&rs, db->pool_size >= 0 ? db->pool_size : cfg->default_pool_size);
        rs_int(&rs, db->min_pool_size >= 0 ? db->min_pool_size : cfg->min_pool_size);
        rs_int(&rs, db->reserve_pool >= 0 ? db->reserve_pool : cfg->reserve_pool_size);
        rs_text(&rs, db->pool_mode >= 0 ? pool_mode_name((enum pool_mode)db->pool_mode) : NULL);
        rs_int(&rs, db->max_db_connections >= 0 ? db->max_db_connections : cfg->max_db_connections);
        rs_int(&rs, pool_db_server_count(p, db->name));
    }
    rs_end(&rs, "SHOW");
}

static void addr_parts(const struct net_addr *a, char *ip, size_t ip_len, int64_t *port)
{
    char buf[80];
    net_addr_format(a, buf, sizeof(buf));
    char *colon = strrchr(buf, ':');
    if (colon && (a->family == AF_INET || a->family == AF_INET6)) {
        *colon = '\0';
        size_t n = strlen(buf);
        if (n >= ip_len)
            n = ip_len - 1;
        memcpy(ip, buf, n);
        ip[n] = '\0';
        *port = a->port;
    } else {
        snprintf(ip, ip_len, "unix");
        *port = 0;
    }
}

static void format_time(int64_t us, char *out, size_t len)
{
    time_t t = (time_t)(us / 1000000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, len, "%Y-%m-%d %H:%M:%S UTC", &tm);
}

static const char *client_state_label(const struct client *c)
{
    return c->state == CL_WAITING || c->state == CL_WAITING_LOGIN ? "waiting" : "active";
}

static void show_clients(struct pooler *p, struct console_out *o)
{
    static const char *const cols[] = {
        "type",   "user",         "database",         "state",
        "addr",   "port:i",       "connect_time",     "request_time",
        "wait:i", "wait_us:i",    "close_needed:i",   "ptr",
        "link",   "remote_pid:i", "application_name", "xact_count:i"};
    struct rowset rs;
    rs_begin(&rs, o, cols, 16);
    int64_t now = pooler_now(p);
    for (struct plist *n = p->pools.next; n != &p->pools; n = n->next) {
        const struct pool *pool = plist_entry(n, struct pool, node);
        const struct plist *lists[] = {&pool->active_clients, &pool->waiting_clients,
                                       &pool->waiting_login_clients};
        for (size_t i = 0; i < 3; i++) {
            for (const struct plist *m = lists[i]->next; m != lists[i]; m = m->next) {
                const struct client *c = plist_entry(m, struct client, node);
                char ip[64], ct[40], rt[40], ptr[24], link[24] = "";
                int64_t port;
                addr_parts(&c->addr, ip, sizeof(ip), &port);
                format_time(c->connect_us, ct, sizeof(ct));
                format_time(c->request_us ? c->request_us : c->active_us, rt, sizeof(rt));
                snprintf(ptr, sizeof(ptr), "c%" PRIu64, c->id);
                if (c->server)
                    snprintf(link, sizeof(link), "s%" PRIu64, c->server->id);
                int64_t wait = c->state == CL_WAITING ? now - c->state_us : 0;
                rs_row(&rs);
                rs_text(&rs, "C");
                rs_text(&rs, pool->user_name);
                rs_text(&rs, pool->db_name);
                rs_text(&rs, client_state_label(c));
                rs_text(&rs, ip);
                rs_int(&rs, port);
                rs_text(&rs, ct);
                rs_text(&rs, rt);
                rs_int(&rs, wait / 1000000);
                rs_int(&rs, wait % 1000000);
                rs_int(&rs, 0);
                rs_text(&rs, ptr);
                rs_text(&rs, link);
                rs_int(&rs, 0);
                rs_text(&rs, c->params[PARAM_APPLICATION_NAME]
                                 ? c->params[PARAM_APPLICATION_NAME]->str
                                 : "");
                rs_int(&rs, c->xacts);
            }
        }
    }
    rs_end(&rs, "SHOW");
}

static void show_servers(struct pooler *p, struct console_out *o)
{
    static const char *const cols[] = {
        "type",   "user",         "database",        "state",          "addr",
        "port:i", "connect_time", "request_time",    "close_needed:i", "ptr",
        "link",   "remote_pid:i", "application_name"};
    struct rowset rs;
    rs_begin(&rs, o, cols, 13);
    for (struct plist *n = p->pools.next; n != &p->pools; n = n->next) {
        const struct pool *pool = plist_entry(n, struct pool, node);
        const struct plist *lists[] = {&pool->active_servers, &pool->idle_servers,
                                       &pool->tested_servers, &pool->login_servers,
                                       &pool->canceling_servers};
        static const char *const labels[] = {"active", "idle", "tested", "login", "being_canceled"};
        for (size_t i = 0; i < 5; i++) {
            for (const struct plist *m = lists[i]->next; m != lists[i]; m = m->next) {
                const struct server *s = plist_entry(m, struct server, node);
                char ct[40], rt[40], ptr[24], link[24] = "";
                format_time(s->connect_us, ct, sizeof(ct));
                format_time(s->last_used_us ? s->last_used_us : s->connect_us, rt, sizeof(rt));
                snprintf(ptr, sizeof(ptr), "s%" PRIu64, s->id);
                if (s->client)
                    snprintf(link, sizeof(link), "c%" PRIu64, s->client->id);
                rs_row(&rs);
                rs_text(&rs, "S");
                rs_text(&rs, pool->server_user);
                rs_text(&rs, pool->db_name);
                rs_text(&rs, labels[i]);
                rs_text(&rs, pool->host);
                rs_int(&rs, pool->port);
                rs_text(&rs, ct);
                rs_text(&rs, rt);
                rs_int(&rs, s->close_needed);
                rs_text(&rs, ptr);
                rs_text(&rs, link);
                rs_int(&rs, s->be_pid);
                rs_text(&rs, s->params[PARAM_APPLICATION_NAME]
                                 ? s->params[PARAM_APPLICATION_NAME]->str
                                 : "");
            }
        }
    }
    rs_end(&rs, "SHOW");
}

static void config_row(void *ctx, const char *key, const char *value, const char *default_text,
                       bool reloadable)
{
    struct rowset *rs = ctx;
    rs_row(rs);
    rs_text(rs, key);
    rs_text(rs, value);
    rs_text(rs, default_text);
    rs_text(rs, reloadable ? "yes" : "no");
}

static void show_config(struct pooler *p, struct console_out *o)
{
    /* PgBouncer's columns; [databases] connection strings (which may hold passwords) are not
     * part of this table. */
    static const char *const cols[] = {"key", "value", "default", "changeable"};
    struct rowset rs;
    rs_begin(&rs, o, cols, 4);
    pooler_config_values(p->cfg, config_row, &rs);
    rs_end(&rs, "SHOW");
}

static void show_lists(struct pooler *p, struct console_out *o)
{
    static const char *const cols[] = {"list", "items:i"};
    struct rowset rs;
    rs_begin(&rs, o, cols, 2);
    int64_t pools = 0, used = 0, idle = 0, login_sv = 0, active_cl = 0, waiting_cl = 0;
    for (struct plist *n = p->pools.next; n != &p->pools; n = n->next) {
        const struct pool *pool = plist_entry(n, struct pool, node);
        pools++;
        used += count(&pool->active_servers);
        idle += count(&pool->idle_servers);
        login_sv += count(&pool->login_servers);
        active_cl += count(&pool->active_clients);
        waiting_cl += count(&pool->waiting_clients);
    }
    const char *names[] = {"pools",          "used_servers",       "idle_servers",  "login_servers",
                           "active_clients", "waiting_clients",    "login_clients", "free_buffers",
                           "used_buffers",   "prepared_statements"};
    int64_t vals[] = {pools,
                      used,
                      idle,
                      login_sv,
                      active_cl,
                      waiting_cl,
                      count(&p->login_clients),
                      (int64_t)p->bufs.n_free,
                      (int64_t)p->bufs.n_used,
                      (int64_t)p->stmts.count};
    for (size_t i = 0; i < sizeof(vals) / sizeof(vals[0]); i++) {
        rs_row(&rs);
        rs_text(&rs, names[i]);
        rs_int(&rs, vals[i]);
    }
    rs_end(&rs, "SHOW");
}

/* ---- the live manager's results ---- */

static void show_leaks(struct pooler *p, struct console_out *o)
{
    static const char *const cols[] = {
        "client",      "pid:i",    "user",     "database",     "application", "addr",
        "state",       "score:i",  "held_s:i", "idle_s:i",     "xact_s:i",    "reclaim",
        "reason",      "last_query"};
    struct rowset rs;
    rs_begin(&rs, o, cols, (int)(sizeof(cols) / sizeof(cols[0])));
    const struct leak_report *r = p->manager ? live_manager_leaks(p->manager) : NULL;
    for (size_t i = 0; r && i < r->total_suspected; i++) {
        const struct leak_suspect *s = &r->suspects[i];
        const struct conn_record *c = s->conn;
        char id[32];
        snprintf(id, sizeof(id), "c%lld", (long long)c->id);
        rs_row(&rs);
        rs_text(&rs, id);
        rs_int(&rs, c->pid);
        rs_text(&rs, c->user);
        rs_text(&rs, c->database);
        rs_text(&rs, c->application);
        rs_text(&rs, c->client_addr[0] ? c->client_addr : "unix");
        rs_text(&rs, conn_state_name(c->state));
        rs_int(&rs, s->score);
        rs_int(&rs, s->held_ms / 1000);
        rs_int(&rs, s->idle_ms / 1000);
        rs_int(&rs, s->xact_age_ms / 1000);
        rs_text(&rs, reclaim_level_name(live_manager_reclaim_done(p->manager, c->id)));
        char reasons[LEAK_MAX_REASONS * (LEAK_REASON_LEN + 2)];
        size_t len = 0;
        reasons[0] = '\0';
        for (size_t k = 0; k < s->n_reasons; k++)
            len += (size_t)snprintf(reasons + len, sizeof(reasons) - len, "%s%s",
                                    k ? "; " : "", s->reasons[k]);
        rs_text(&rs, reasons);
        rs_text(&rs, c->last_query);
    }
    rs_end(&rs, "SHOW");
}

static void show_events(struct pooler *p, struct console_out *o)
{
    static const char *const cols[] = {"seq:i",  "time",  "event",    "database", "user",
                                       "client", "pid:i", "before:i", "after:i",  "reason"};
    struct rowset rs;
    rs_begin(&rs, o, cols, (int)(sizeof(cols) / sizeof(cols[0])));
    const struct event_ring *ev = p->manager ? live_manager_events(p->manager) : NULL;
    for (size_t i = 0; ev && i < ev->n; i++) {
        const struct event *e = event_ring_at(ev, i);
        char when[40], client[32];
        format_time(e->at_ms * 1000, when, sizeof(when));
        snprintf(client, sizeof(client), "c%lld", (long long)e->client_id);
        rs_row(&rs);
        rs_int(&rs, (int64_t)e->seq);
        rs_text(&rs, when);
        rs_text(&rs, event_kind_name(e->kind));
        rs_text(&rs, e->database);
        rs_text(&rs, e->user);
        rs_text(&rs, e->client_id ? client : "");
        rs_int(&rs, e->pid);
        rs_int(&rs, e->before);
        rs_int(&rs, e->after);
        rs_text(&rs, e->reason);
    }
    rs_end(&rs, "SHOW");
}

static void show_scaling(struct pooler *p, struct console_out *o)
{
    static const char *const cols[] = {
        "database", "user",      "configured:i", "min:i",    "max:i",   "size:i", "servers:i",
        "waiting:i", "target:i", "decision",     "applied", "status",  "reason", "server_slots:i"};
    struct rowset rs;
    rs_begin(&rs, o, cols, (int)(sizeof(cols) / sizeof(cols[0])));
    struct live_pool_view v;
    for (size_t i = 0; p->manager && live_manager_pool_at(p->manager, i, &v); i++) {
        const struct pool *pool = v.pool;
        rs_row(&rs);
        rs_text(&rs, pool->db_name);
        rs_text(&rs, pool->user_name);
        rs_int(&rs, pool->configured_size);
        rs_int(&rs, v.lo);
        rs_int(&rs, v.hi);
        rs_int(&rs, pool->pool_size);
        rs_int(&rs, pool->n_servers);
        rs_int(&rs, (int64_t)plist_count(&pool->waiting_clients));
        rs_int(&rs, v.decision->target_size);
        rs_text(&rs, scaling_verdict_name(v.decision->decision));
        rs_text(&rs, v.decision->applied ? "yes" : "no");
        rs_text(&rs, v.hold);
        rs_text(&rs, v.decision->reason);
        rs_int(&rs, pool->server_usable_slots);
    }
    rs_end(&rs, "SHOW");
}

/* The manager's snapshot of the pools, record by record, so `pgwarden ACTION --target
 * pgwarden://...` runs the engine on exactly what the live manager sees. Times are ms since
 * the epoch (0 = none). */
static void show_snapshot(struct pooler *p, struct console_out *o)
{
    static const char *const cols[] = {
        "id:i",        "pid:i",          "user",          "database",         "application",
        "client_addr", "state",          "connected_ms:i", "state_change_ms:i", "xact_start_ms:i",
        "query_start_ms:i", "requests:i", "taken_ms:i", "output_blocked_ms:i", "hold_total_ms:i",
        "app_usual_hold_ms:i"};
    struct rowset rs;
    rs_begin(&rs, o, cols, (int)(sizeof(cols) / sizeof(cols[0])));
    const struct snapshot *snap = p->manager ? live_manager_snapshot(p->manager) : NULL;
    for (size_t i = 0; snap && i < snap->n_conns; i++) {
        const struct conn_record *c = &snap->conns[i];
        rs_row(&rs);
        rs_int(&rs, c->id);
        rs_int(&rs, c->pid);
        rs_text(&rs, c->user);
        rs_text(&rs, c->database);
        rs_text(&rs, c->application);
        rs_text(&rs, c->client_addr);
        rs_text(&rs, conn_state_name(c->state));
        rs_int(&rs, c->connected_ms);
        rs_int(&rs, c->state_change_ms);
        rs_int(&rs, c->xact_start_ms);
        rs_int(&rs, c->query_start_ms);
        rs_int(&rs, c->requests);
        rs_int(&rs, snap->taken_ms);
        rs_int(&rs, c->output_blocked_ms);
        rs_int(&rs, c->hold_total_ms);
        rs_int(&rs, c->app_usual_hold_ms);
    }
    rs_end(&rs, "SHOW");
}

/* The snapshot's pool-wide counters and limits, one row. */
static void show_snapshot_totals(struct pooler *p, struct console_out *o)
{
    static const char *const cols[] = {
        "taken_ms:i",      "requests_total:i", "query_time_total_ms:i", "created_total:i",
        "closed_total:i",  "connect_time_total_ms:i", "waiting_clients:i",
        "wait_time_total_ms:i", "waits_total:i", "pool_min:i", "pool_max:i", "pool_current:i"};
    struct rowset rs;
    rs_begin(&rs, o, cols, (int)(sizeof(cols) / sizeof(cols[0])));
    const struct snapshot *snap = p->manager ? live_manager_snapshot(p->manager) : NULL;
    if (snap) {
        const struct snapshot_counters *k = &snap->counters;
        const struct snapshot_capacity *cap = &snap->capacity;
        rs_row(&rs);
        rs_int(&rs, snap->taken_ms);
        rs_int(&rs, k->requests_total);
        rs_int(&rs, (int64_t)k->query_time_total_ms);
        rs_int(&rs, k->created_total);
        rs_int(&rs, k->closed_total);
        rs_int(&rs, (int64_t)k->connect_time_total_ms);
        rs_int(&rs, k->waiting_clients);
        rs_int(&rs, (int64_t)k->wait_time_total_ms);
        rs_int(&rs, k->waits_total);
        rs_int(&rs, cap->pool_min);
        rs_int(&rs, cap->pool_max);
        rs_int(&rs, cap->pool_current);
    }
    rs_end(&rs, "SHOW");
}

static void rs_ms(struct rowset *rs, double ms)
{
    char text[32];
    snprintf(text, sizeof(text), "%.3f", ms);
    rs_text(rs, text);
}

/* The manager's per-pool records (limits, contents, rates, quantiles; -1 = no observation),
 * so `--target pgwarden://` analyses what the live manager analyses. */
static void show_snapshot_pools(struct pooler *p, struct console_out *o)
{
    static const char *const cols[] = {
        "database",          "user",          "server",           "pool_mode",
        "size:i",            "reserve:i",     "max_size:i",       "server_usable:i",
        "cl_active:i",       "cl_waiting:i",  "cl_idle:i",        "sv_active:i",
        "sv_idle:i",         "sv_tested:i",   "sv_login:i",       "xacts_per_sec",
        "queries_per_sec",   "servers_opened_per_sec", "servers_closed_per_sec",
        "bytes_in_per_sec",  "bytes_out_per_sec", "avg_xact_ms",  "avg_query_ms",
        "avg_wait_ms",       "wait_p95_ms",   "wait_p99_ms",      "wait_max_ms",
        "xact_p95_ms",       "xact_p99_ms",   "query_wait_timeout_ms:i",
        "idle_transaction_timeout_ms:i"};
    struct rowset rs;
    rs_begin(&rs, o, cols, (int)(sizeof(cols) / sizeof(cols[0])));
    const struct snapshot *snap = p->manager ? live_manager_snapshot(p->manager) : NULL;
    for (size_t i = 0; snap && i < snap->n_pools; i++) {
        const struct pool_record *pl = &snap->pools[i];
        rs_row(&rs);
        rs_text(&rs, pl->database);
        rs_text(&rs, pl->user);
        rs_text(&rs, pl->server);
        rs_text(&rs, snapshot_pool_mode_name(pl->mode));
        const int counts[] = {pl->size,      pl->reserve,    pl->max_size, pl->server_usable,
                              pl->cl_active, pl->cl_waiting, pl->cl_idle,  pl->sv_active,
                              pl->sv_idle,   pl->sv_tested,  pl->sv_login};
        for (size_t k = 0; k < sizeof(counts) / sizeof(counts[0]); k++)
            rs_int(&rs, counts[k]);
        const double values[] = {
            pl->xacts_per_sec,    pl->queries_per_sec,   pl->servers_opened_per_sec,
            pl->servers_closed_per_sec, pl->bytes_in_per_sec, pl->bytes_out_per_sec,
            pl->avg_xact_ms,      pl->avg_query_ms,      pl->avg_wait_ms,
            pl->wait_p95_ms,      pl->wait_p99_ms,       pl->wait_max_ms,
            pl->xact_p95_ms,      pl->xact_p99_ms};
        for (size_t k = 0; k < sizeof(values) / sizeof(values[0]); k++)
            rs_ms(&rs, values[k]);
        rs_int(&rs, pl->query_wait_timeout_ms);
        rs_int(&rs, pl->idle_transaction_timeout_ms);
    }
    rs_end(&rs, "SHOW");
}

/* full-analysis on the live pools: the overall status, then each anomaly and recommendation. */
static void show_analysis(struct pooler *p, struct console_out *o)
{
    static const char *const cols[] = {"kind", "code", "severity", "message", "setting"};
    struct rowset rs;
    rs_begin(&rs, o, cols, (int)(sizeof(cols) / sizeof(cols[0])));
    struct live_analysis la;
    if (p->manager && live_manager_analyse(p->manager, &la)) {
        const struct analysis_report *a = &la.analysis;
        char summary[160];
        snprintf(summary, sizeof(summary), "%zu anomal%s, %zu recommendation%s, leak risk %s",
                 a->n_anomalies, a->n_anomalies == 1 ? "y" : "ies", a->n_recommendations,
                 a->n_recommendations == 1 ? "" : "s",
                 a->leaks ? leaks_risk_name(a->leaks->risk_level) : "none");
        rs_row(&rs);
        rs_text(&rs, "status");
        rs_text(&rs, "");
        rs_text(&rs, report_status_name(a->status));
        rs_text(&rs, summary);
        rs_text(&rs, "");
        for (size_t i = 0; i < a->n_anomalies; i++) {
            rs_row(&rs);
            rs_text(&rs, "anomaly");
            rs_text(&rs, a->anomalies[i].code);
            rs_text(&rs, report_status_name(a->anomalies[i].severity));
            rs_text(&rs, a->anomalies[i].message);
            rs_text(&rs, "");
        }
        for (size_t i = 0; i < a->n_recommendations; i++) {
            rs_row(&rs);
            rs_text(&rs, "recommendation");
            rs_text(&rs, "");
            rs_text(&rs, report_status_name(a->recommendations[i].severity));
            rs_text(&rs, a->recommendations[i].message);
            rs_text(&rs, a->recommendations[i].setting);
        }
        live_analysis_free(&la);
    }
    rs_end(&rs, "SHOW");
}

static void show_health(struct pooler *p, struct console_out *o)
{
    static const char *const cols[] = {
        "database", "user",       "servers:i",    "idle:i",         "probes:i",
        "failed:i", "recent:i",   "recent_failed:i", "avg_ms",      "p95_ms",
        "max_ms",   "status",     "reason",       "last_error"};
    struct rowset rs;
    rs_begin(&rs, o, cols, (int)(sizeof(cols) / sizeof(cols[0])));
    struct live_pool_view v;
    for (size_t i = 0; p->manager && live_manager_pool_at(p->manager, i, &v); i++) {
        const struct pool *pool = v.pool;
        const struct health_report *h = v.health;
        char avg[32] = "", p95[32] = "", max[32] = "";
        if (h && h->total_checked > 0) {
            snprintf(avg, sizeof(avg), "%.2f", h->avg_latency_ms);
            snprintf(p95, sizeof(p95), "%.2f", h->p95_latency_ms);
            snprintf(max, sizeof(max), "%.2f", h->max_latency_ms);
        }
        rs_row(&rs);
        rs_text(&rs, pool->db_name);
        rs_text(&rs, pool->user_name);
        rs_int(&rs, pool->n_servers);
        rs_int(&rs, (int64_t)plist_count(&pool->idle_servers));
        rs_int(&rs, pool->probes.total);
        rs_int(&rs, pool->probes.failed);
        rs_int(&rs, h ? h->total_checked : 0);
        rs_int(&rs, h ? h->unhealthy : 0);
        rs_text(&rs, avg);
        rs_text(&rs, p95);
        rs_text(&rs, max);
        rs_text(&rs, h ? report_status_name(h->status) : "unknown");
        rs_text(&rs, h ? h->reason : "not checked yet");
        rs_text(&rs, pool->probes.last_error);
    }
    rs_end(&rs, "SHOW");
}

static void manager_row(void *ctx, const char *key, const char *value)
{
    struct rowset *rs = ctx;
    rs_row(rs);
    rs_text(rs, key);
    rs_text(rs, value);
}

/* The [manager] settings in force, in a form the CLI can apply to its own runs. */
static void show_manager(struct pooler *p, struct console_out *o)
{
    static const char *const cols[] = {"key", "value"};
    struct rowset rs;
    rs_begin(&rs, o, cols, 2);
    options_each_value(&p->cfg->manager, manager_row, &rs);
    rs_row(&rs);
    rs_text(&rs, "leak_reclaim");
    rs_text(&rs, reclaim_level_name(p->cfg->manager.leak_reclaim));
    rs_end(&rs, "SHOW");
}

static void show_version(struct pooler *p, struct console_out *o)
{
    (void)p;
    static const char *const cols[] = {"version"};
    struct rowset rs;
    rs_begin(&rs, o, cols, 1);
    rs_row(&rs);
    rs_text(&rs, "pgwarden " PGWARDEN_VERSION);
    rs_end(&rs, "SHOW");
}

static void show_help(struct pooler *p, struct console_out *o)
{
    (void)p;
    static const char *const cols[] = {"command"};
    static const char *const cmds[] = {
        "SHOW HELP|VERSION|POOLS|STATS|DATABASES|CLIENTS|SERVERS|CONFIG|LISTS",
        "SHOW LEAKS|EVENTS|SCALING|HEALTH|ANALYSIS|MANAGER",
        "SHOW SNAPSHOT|SNAPSHOT_TOTALS|SNAPSHOT_POOLS",
        "PAUSE",
        "RESUME",
        "RELOAD",
        "SHUTDOWN",
        "KILL <db>",
        "KILL_CLIENT <id>",
        "RECONNECT [<db>]",
        "KILL_IDLE [DRY RUN]",
        "HEALTH_CHECK",
        "AUTO_SCALE [DRY RUN]"};
    struct rowset rs;
    rs_begin(&rs, o, cols, 1);
    for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
        rs_row(&rs);
        rs_text(&rs, cmds[i]);
    }
    rs_end(&rs, "SHOW");
}

/* ---- KILL, KILL_CLIENT, RECONNECT ---- */

/* Normalises sql into upper-case words separated by one space, without a trailing ';'. */
static void normalise(const char *sql, char *out, size_t len)
{
    size_t j = 0;
    bool space = false;
    for (const char *s = sql; *s && j + 1 < len; s++) {
        char ch = *s;
        if (ch == ';')
            break;
        if (isspace((unsigned char)ch)) {
            space = j > 0;
            continue;
        }
        if (space && j + 1 < len)
            out[j++] = ' ';
        space = false;
        out[j++] = (char)toupper((unsigned char)ch);
    }
    out[j] = '\0';
}


/* The database argument as typed (case kept), after the command word. */
static void argument(const char *sql, char *out, size_t len)
{
    while (isspace((unsigned char)*sql))
        sql++;
    while (*sql && !isspace((unsigned char)*sql))
        sql++; /* the command word */
    while (isspace((unsigned char)*sql))
        sql++;
    size_t n = strcspn(sql, " \t\r\n;");
    if (n >= len)
        n = len - 1;
    memcpy(out, sql, n);
    out[n] = '\0';
}

static void kill_command(struct pooler *p, const char *sql, struct console_out *o)
{
    char cmd[128];
    normalise(sql, cmd, sizeof(cmd));
    char arg[128];
    argument(sql, arg, sizeof(arg));
    if (!strncmp(cmd, "KILL_CLIENT ", 12)) {
        /* ids as SHOW CLIENTS prints them: c<id> or just <id> */
        const char *digits = arg[0] == 'c' ? arg + 1 : arg;
        char *end;
        unsigned long long id = strtoull(digits, &end, 10);
        if (!*digits || *end) {
            error(o, "42601", "KILL_CLIENT needs a client id from SHOW CLIENTS");
            return;
        }
        struct client *c = client_find(p, id);
        if (!c) {
            error(o, "42704", "no such client: %s", arg);
            return;
        }
        /* Same loop turn as any hand-off: the client is closed in the state it is in now; a
         * busy server dies with it. */
        client_fail(c, "57P01", "terminated by the admin console (KILL_CLIENT)");
        command_complete(o, "KILL_CLIENT");
        return;
    }
    bool kill = !strncmp(cmd, "KILL ", 5);
    if (kill && !arg[0]) {
        error(o, "42601", "KILL needs a database name");
        return;
    }
    int matched = 0;
    for (struct plist *n = p->pools.next; n != &p->pools; n = n->next) {
        struct pool *pool = plist_entry(n, struct pool, node);
        if (arg[0] && strcmp(pool->db_name, arg))
            continue;
        matched++;
        struct plist *lists[] = {&pool->idle_servers, &pool->active_servers, &pool->tested_servers,
                                 &pool->login_servers, &pool->canceling_servers};
        if (kill) {
            struct plist *clists[] = {&pool->active_clients, &pool->waiting_clients,
                                      &pool->waiting_login_clients};
            for (size_t i = 0; i < 3; i++) {
                struct plist *m;
                while ((m = plist_first(clists[i])) != NULL)
                    client_fail(plist_entry(m, struct client, node), "57P01",
                                "terminated by the admin console (KILL)");
            }
            for (size_t i = 0; i < 5; i++) {
                struct plist *m;
                while ((m = plist_first(lists[i])) != NULL)
                    server_close(plist_entry(m, struct server, node), "KILL on the console");
            }
        } else {
            /* RECONNECT: every server is replaced when it is next released. */
            for (size_t i = 0; i < 5; i++)
                for (struct plist *m = lists[i]->next; m != lists[i]; m = m->next)
                    plist_entry(m, struct server, node)->close_needed = true;
        }
    }
    if (arg[0] && !matched && !pooler_config_find_db(p->cfg, arg)) {
        error(o, "3D000", "no such database: %s", arg);
        return;
    }
    command_complete(o, kill ? "KILL" : "RECONNECT");
}

/* ---- manager actions: KILL_IDLE, HEALTH_CHECK, AUTO_SCALE ---- */

static void kill_idle_rows(struct pooler *p, struct console_out *o, bool execute)
{
    static const char *const cols[] = {"client", "pid:i",  "user",   "database",
                                       "application", "idle_s:i", "result", "reason"};
    struct kill_plan plan;
    if (!p->manager || !live_manager_kill_idle(p->manager, execute, &plan)) {
        error(o, "53200", "out of memory planning kill-idle");
        return;
    }
    struct rowset rs;
    rs_begin(&rs, o, cols, (int)(sizeof(cols) / sizeof(cols[0])));
    for (size_t i = 0; i < plan.n_actions; i++) {
        const struct kill_action *a = &plan.actions[i];
        char id[32];
        snprintf(id, sizeof(id), "c%lld", (long long)a->conn->id);
        rs_row(&rs);
        rs_text(&rs, id);
        rs_int(&rs, a->conn->pid);
        rs_text(&rs, a->conn->user);
        rs_text(&rs, a->conn->database);
        rs_text(&rs, a->conn->application);
        rs_int(&rs, a->idle_ms / 1000);
        rs_text(&rs, kill_result_name(a->result));
        rs_text(&rs, a->reason);
    }
    kill_plan_free(&plan);
    rs_end(&rs, "KILL_IDLE");
}

static void kill_idle_command(struct pooler *p, const char *sql, struct console_out *o)
{
    (void)sql;
    kill_idle_rows(p, o, true);
}

static void kill_idle_dry_run(struct pooler *p, struct console_out *o)
{
    kill_idle_rows(p, o, false);
}

static void health_check_command(struct pooler *p, const char *sql, struct console_out *o)
{
    (void)sql;
    static const char *const cols[] = {"probes_sent:i"};
    struct rowset rs;
    rs_begin(&rs, o, cols, 1);
    rs_row(&rs);
    rs_int(&rs, p->manager ? live_manager_health_check(p->manager) : 0);
    rs_end(&rs, "HEALTH_CHECK");
}

static void auto_scale_command(struct pooler *p, const char *sql, struct console_out *o)
{
    (void)sql;
    if (p->manager)
        live_manager_auto_scale(p->manager, true);
    show_scaling(p, o);
}

static void auto_scale_dry_run(struct pooler *p, struct console_out *o)
{
    if (p->manager)
        live_manager_auto_scale(p->manager, false);
    show_scaling(p, o);
}

/* ---- dispatch ---- */


/* ---- PAUSE, RESUME, RELOAD, SHUTDOWN ---- */

static void pause_command(struct pooler *p, const char *sql, struct console_out *o)
{
    (void)sql;
    pooler_pause(p);
    command_complete(o, "PAUSE");
}

static void resume_command(struct pooler *p, const char *sql, struct console_out *o)
{
    (void)sql;
    pooler_resume(p);
    command_complete(o, "RESUME");
}

static void reload_command(struct pooler *p, const char *sql, struct console_out *o)
{
    (void)sql;
    char err[512];
    if (pooler_reload(p, err, sizeof(err)))
        command_complete(o, "RELOAD");
    else
        error(o, "F0000", "reload failed, configuration unchanged: %s", err);
}

static void shutdown_command(struct pooler *p, const char *sql, struct console_out *o)
{
    (void)sql;
    pooler_shutdown(p);
    command_complete(o, "SHUTDOWN");
}

/* ---- dispatch ---- */

enum arg_rule {
    ARG_NONE,     /* the command alone */
    ARG_OPTIONAL, /* the command, or the command and one argument */
    ARG_REQUIRED, /* the command and one argument */
};

struct console_command {
    const char *words; /* upper case, as normalise() leaves them */
    enum arg_rule arg;
    bool admin_only; /* stats_users may not run it */
    void (*show)(struct pooler *p, struct console_out *o);                  /* or: */
    void (*act)(struct pooler *p, const char *sql, struct console_out *o); /* sql as typed */
};

static const struct console_command COMMANDS[] = {
    {"SHOW POOLS", ARG_NONE, false, show_pools, NULL},
    {"SHOW STATS", ARG_NONE, false, show_stats, NULL},
    {"SHOW STATS_TOTALS", ARG_NONE, false, show_stats, NULL},
    {"SHOW DATABASES", ARG_NONE, false, show_databases, NULL},
    {"SHOW CLIENTS", ARG_NONE, false, show_clients, NULL},
    {"SHOW SERVERS", ARG_NONE, false, show_servers, NULL},
    {"SHOW CONFIG", ARG_NONE, false, show_config, NULL},
    {"SHOW LISTS", ARG_NONE, false, show_lists, NULL},
    {"SHOW VERSION", ARG_NONE, false, show_version, NULL},
    {"SHOW LEAKS", ARG_NONE, false, show_leaks, NULL},
    {"SHOW EVENTS", ARG_NONE, false, show_events, NULL},
    {"SHOW SCALING", ARG_NONE, false, show_scaling, NULL},
    {"SHOW HEALTH", ARG_NONE, false, show_health, NULL},
    {"SHOW MANAGER", ARG_NONE, false, show_manager, NULL},
    {"SHOW SNAPSHOT", ARG_NONE, false, show_snapshot, NULL},
    {"KILL_IDLE DRY RUN", ARG_NONE, false, kill_idle_dry_run, NULL},
    {"KILL_IDLE", ARG_NONE, true, NULL, kill_idle_command},
    {"HEALTH_CHECK", ARG_NONE, true, NULL, health_check_command},
    {"AUTO_SCALE DRY RUN", ARG_NONE, false, auto_scale_dry_run, NULL},
    {"AUTO_SCALE", ARG_NONE, true, NULL, auto_scale_command},
    {"SHOW SNAPSHOT_TOTALS", ARG_NONE, false, show_snapshot_totals, NULL},
    {"SHOW SNAPSHOT_POOLS", ARG_NONE, false, show_snapshot_pools, NULL},
    {"SHOW ANALYSIS", ARG_NONE, false, show_analysis, NULL},
    {"SHOW HELP", ARG_NONE, false, show_help, NULL},
    {"SHOW", ARG_NONE, false, show_help, NULL},
    {"KILL", ARG_REQUIRED, true, NULL, kill_command},
    {"KILL_CLIENT", ARG_REQUIRED, true, NULL, kill_command},
    {"RECONNECT", ARG_OPTIONAL, true, NULL, kill_command},
    {"PAUSE", ARG_NONE, true, NULL, pause_command},
    {"RESUME", ARG_NONE, true, NULL, resume_command},
    {"RELOAD", ARG_NONE, true, NULL, reload_command},
    {"SHUTDOWN", ARG_NONE, true, NULL, shutdown_command},
};

/* The command cmd (normalised) names, or NULL. */
static const struct console_command *find_command(const char *cmd)
{
    for (size_t i = 0; i < sizeof(COMMANDS) / sizeof(COMMANDS[0]); i++) {
        const struct console_command *k = &COMMANDS[i];
        size_t n = strlen(k->words);
        if (strncmp(cmd, k->words, n))
            continue;
        if (cmd[n] == '\0' && k->arg != ARG_REQUIRED)
            return k;
        if (cmd[n] == ' ' && k->arg != ARG_NONE && !strchr(cmd + n + 1, ' '))
            return k;
    }
    return NULL;
}

void console_handle_query(struct pooler *p, enum console_access access, const char *sql,
                          struct console_out *o)
{
    char cmd[128];
    normalise(sql, cmd, sizeof(cmd));
    const struct console_command *k = cmd[0] ? find_command(cmd) : NULL;
    if (cmd[0] == '\0') {
        size_t m = wire_msg_begin(&o->buf, WIRE_BE_EMPTY_QUERY);
        wire_msg_end(&o->buf, m);
    } else if (!k) {
        error(o, "42601", "invalid command '%.64s', use SHOW HELP;", cmd);
    } else if (k->admin_only && access != CONSOLE_ADMIN) {
        error(o, "42501", "admin access needed for %s (user is in stats_users only)", cmd);
    } else if (k->show) {
        k->show(p, o);
    } else {
        k->act(p, sql, o);
    }
    wire_build_ready(&o->buf, WIRE_XACT_IDLE);
}
