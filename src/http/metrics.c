/* The metrics registry and its renderer. Every metric is one row of METRICS; the renderer
 * writes each family's HELP and TYPE once, then one sample per pool (or one for the process),
 * so a new metric is one row and one getter, and the output stays well-formed by
 * construction (a real Prometheus parser checks it in tests/integration/test_serve_http.py).
 *
 * Speed: with 1,000 pools the exposition has about 100,000 lines. Pool counts are taken once
 * per scrape into a view array (one walk over each pool's lists), label text is escaped once
 * per pool, and lines are assembled with memcpy and a hand-rolled integer formatter into a
 * 64 kB staging buffer that is appended to the evbuffer in large pieces: no printf per line. */
#include "http/metrics.h"

#include <event2/buffer.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "live/readiness.h"
#include "common/utf8.h"
#include "manager/histogram.h"
#include "net/tls.h"
#include "pool/handout.h"
#include "pool/pool.h"
#include "proto/scram.h"

/* ---- output staging ---- */

#define STAGE_SIZE     65536
#define STAGE_FLUSH_AT (STAGE_SIZE - 1024) /* a line never exceeds 1 kB (labels are bounded) */

struct out {
    struct evbuffer *ev; /* borrowed */
    size_t len;
    bool failed;
    char buf[STAGE_SIZE];
};

static void out_flush(struct out *o)
{
    if (o->len && evbuffer_add(o->ev, o->buf, o->len) != 0)
        o->failed = true;
    o->len = 0;
}

static void out_put(struct out *o, const char *s, size_t n)
{
    if (o->len + n > STAGE_SIZE)
        out_flush(o);
    if (n > STAGE_SIZE) {
        if (evbuffer_add(o->ev, s, n) != 0)
            o->failed = true;
        return;
    }
    memcpy(o->buf + o->len, s, n);
    o->len += n;
}

static void out_str(struct out *o, const char *s)
{
    out_put(o, s, strlen(s));
}

static void out_u64(struct out *o, uint64_t v)
{
    char tmp[24];
    size_t i = sizeof(tmp);
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    out_put(o, tmp + i, sizeof(tmp) - i);
}

static void out_i64(struct out *o, int64_t v)
{
    if (v < 0) {
        out_put(o, "-", 1);
        out_u64(o, (uint64_t)0 - (uint64_t)v);
    } else {
        out_u64(o, (uint64_t)v);
    }
}

/* Microseconds as seconds with six decimals: exact, and no floating point formatting. */
static void out_us_as_seconds(struct out *o, int64_t us)
{
    uint64_t a = us < 0 ? (uint64_t)0 - (uint64_t)us : (uint64_t)us;
    if (us < 0)
        out_put(o, "-", 1);
    out_u64(o, a / 1000000);
    char frac[7];
    uint64_t f = a % 1000000;
    for (int i = 5; i >= 0; i--) {
        frac[1 + i] = (char)('0' + f % 10);
        f /= 10;
    }
    frac[0] = '.';
    out_put(o, frac, sizeof(frac));
}

/* ---- per-pool view, computed once per scrape ---- */

/* Database and user names are at most 63 bytes; escaped, each byte takes at most three
 * (U+FFFD for a byte that is not UTF-8). */
#define LABEL_VALUE_ROOM (63 * UTF8_REPLACEMENT_LEN + 2)
#define LABELS_LEN       (2 * LABEL_VALUE_ROOM + 32)

struct pool_view {
    /* Copies, not the pool: an auto-database's pool may be freed (autodb_idle_timeout)
     * between two slices of the exposition. */
    int n_servers, min_pool_size, pool_size, reserve_pool;
    bool login_failing;
    struct pool_stats stats;
    int cl_active, cl_idle, cl_waiting;
    int sv_active, sv_idle, sv_used, sv_tested, sv_login, sv_canceling;
    int64_t max_wait_us;
    char labels[LABELS_LEN]; /* database="…",user="…" */
    size_t labels_len;
};

/* Label values escape backslash, double quote and newline (text format 0.0.4) and must be
 * UTF-8: a byte that starts no valid sequence becomes U+FFFD. A database name is the client's
 * choice (the "*" entry), and Prometheus rejects a whole scrape for one invalid label. */
static size_t escape_label(char *dst, size_t room, const char *v)
{
    size_t n = 0;
    size_t left = strlen(v);
    const unsigned char *u = (const unsigned char *)v;
    while (left > 0 && n + UTF8_REPLACEMENT_LEN < room) {
        size_t len = utf8_sequence_len(u, left);
        if (len == 0) {
            memcpy(dst + n, UTF8_REPLACEMENT, UTF8_REPLACEMENT_LEN);
            n += UTF8_REPLACEMENT_LEN;
            len = 1;
        } else if (*u == '\\' || *u == '"') {
            dst[n++] = '\\';
            dst[n++] = (char)*u;
        } else if (*u == '\n') {
            dst[n++] = '\\';
            dst[n++] = 'n';
        } else {
            if (n + len >= room)
                break;
            memcpy(dst + n, u, len);
            n += len;
        }
        u += len;
        left -= len;
    }
    return n;
}

static void view_fill(struct pool_view *v, const struct pool *pool, int64_t now_us)
{
    memset(v, 0, offsetof(struct pool_view, labels));
    v->n_servers = pool->n_servers;
    v->min_pool_size = pool->min_pool_size;
    v->pool_size = pool->pool_size;
    v->reserve_pool = pool->reserve_pool;
    v->login_failing = pool->last_error != NULL;
    v->stats = pool->stats;
    for (const struct plist *n = pool->active_clients.next; n != &pool->active_clients;
         n = n->next) {
        if (plist_entry(n, struct client, node)->server)
            v->cl_active++;
        else
            v->cl_idle++;
    }
    v->cl_waiting =
        (int)(plist_count(&pool->waiting_clients) + plist_count(&pool->waiting_login_clients));
    /* The queue is FIFO: its head waited longest. */
    const struct plist *first = plist_first(&pool->waiting_clients);
    if (first)
        v->max_wait_us = now_us - plist_entry(first, struct client, node)->state_us;
    v->sv_active = (int)plist_count(&pool->active_servers);
    for (const struct plist *n = pool->idle_servers.next; n != &pool->idle_servers; n = n->next) {
        const struct server *s = plist_entry(n, struct server, node);
        if (handout_server_due_check(s, now_us))
            v->sv_used++;
        else
            v->sv_idle++;
    }
    v->sv_tested = (int)plist_count(&pool->tested_servers);
    v->sv_login = (int)plist_count(&pool->login_servers);
    v->sv_canceling = (int)plist_count(&pool->canceling_servers);
    size_t n = 0;
    memcpy(v->labels, "database=\"", 10);
    n = 10;
    n += escape_label(v->labels + n, LABEL_VALUE_ROOM, pool->db_name ? pool->db_name : "");
    memcpy(v->labels + n, "\",user=\"", 8);
    n += 8;
    n += escape_label(v->labels + n, LABEL_VALUE_ROOM, pool->user_name ? pool->user_name : "");
    v->labels[n++] = '"';
    v->labels_len = n;
}

/* ---- the registry ---- */

enum metric_type {
    METRIC_GAUGE,
    METRIC_COUNTER,
    METRIC_HISTOGRAM,
};

enum metric_unit {
    UNIT_NUMBER,
    UNIT_US_AS_SECONDS, /* the getter returns microseconds; exposed in seconds */
};

/* One sample of a process-wide family that has several (one per label set). */
#define SERIES_MAX 16
struct series_sample {
    char labels[64]; /* side="client",reason="protocol" */
    int64_t value;
};

struct metric_def {
    const char *name;
    enum metric_type type;
    enum metric_unit unit;
    const char *help;
    /* Exactly one getter is set: process-wide, per pool, a per-pool histogram, or a
     * process-wide series (fills at most SERIES_MAX samples, returns how many). */
    int64_t (*process_get)(const struct pooler *p);
    int64_t (*objects_pool_get)(const struct pool_view *v);
    const struct histogram *(*hist_get)(const struct pool_view *v);
    const char *process_labels; /* fixed labels of a process-wide sample, or NULL */
    size_t (*series_get)(const struct pooler *p, struct series_sample *out);
};

static int64_t get_one(const struct pooler *p)
{
    (void)p;
    return 1;
}

static int64_t get_ready(const struct pooler *p)
{
    char reason[8];
    return readiness_check(p, reason, sizeof(reason)) == READINESS_READY;
}

static int64_t get_pools(const struct pooler *p)
{
    return (int64_t)plist_count(&p->pools);
}

static int64_t get_clients(const struct pooler *p)
{
    return p->n_clients;
}

static int64_t get_clients_login(const struct pooler *p)
{
    return (int64_t)plist_count(&p->login_clients);
}

static int64_t get_cancel_reqs(const struct pooler *p)
{
    return p->n_cancel_reqs;
}

/* PBKDF2 runs on the loop thread and costs milliseconds: how often the caches missed. */
static int64_t get_pbkdf2_runs(const struct pooler *p)
{
    (void)p;
    struct scram_cache_stats st;
    scram_cache_get_stats(&st);
    return (int64_t)st.pbkdf2_runs;
}

/* TLS handshakes by side: clients (we accept) and servers (we connect). */
static const struct {
    const char *label;
    size_t offset;
} TLS_SIDES[] = {
    {"side=\"client\"", offsetof(struct pooler, tls_client_counts)},
    {"side=\"server\"", offsetof(struct pooler, tls_server_counts)},
};

static const struct tls_counters *tls_side(const struct pooler *p, size_t i)
{
    return (const struct tls_counters *)((const char *)p + TLS_SIDES[i].offset);
}

static size_t series_tls_handshakes(const struct pooler *p, struct series_sample *out)
{
    size_t n = 0;
    for (size_t i = 0; i < sizeof(TLS_SIDES) / sizeof(TLS_SIDES[0]); i++, n++) {
        snprintf(out[n].labels, sizeof(out[n].labels), "%s", TLS_SIDES[i].label);
        out[n].value = (int64_t)tls_side(p, i)->handshakes;
    }
    return n;
}

/* Every side and reason, zeros included: a series that appears only after the first failure
 * breaks rate() over the window it appeared in. */
static size_t series_tls_failures(const struct pooler *p, struct series_sample *out)
{
    size_t n = 0;
    for (size_t i = 0; i < sizeof(TLS_SIDES) / sizeof(TLS_SIDES[0]); i++) {
        for (int f = 0; f < TLS_FAILURE_COUNT && n < SERIES_MAX; f++, n++) {
            snprintf(out[n].labels, sizeof(out[n].labels), "%s,reason=\"%s\"", TLS_SIDES[i].label,
                     tls_failure_name((enum tls_failure)f));
            out[n].value = (int64_t)tls_side(p, i)->failures[f];
        }
    }
    return n;
}

/* Per-pool getters: one line each, named after what they read. */
#define POOL_GETTER(fn, expr)                                                                      \
    static int64_t fn(const struct pool_view *v)                                                   \
    {                                                                                              \
        return (int64_t)(expr);                                                                    \
    }
POOL_GETTER(get_cl_active, v->cl_active)
POOL_GETTER(get_cl_waiting, v->cl_waiting)
POOL_GETTER(get_cl_idle, v->cl_idle)
POOL_GETTER(get_sv_active, v->sv_active)
POOL_GETTER(get_sv_idle, v->sv_idle)
POOL_GETTER(get_sv_used, v->sv_used)
POOL_GETTER(get_sv_tested, v->sv_tested)
POOL_GETTER(get_sv_login, v->sv_login)
POOL_GETTER(get_sv_canceling, v->sv_canceling)
POOL_GETTER(get_size_current, v->n_servers)
POOL_GETTER(get_size_min, v->min_pool_size)
POOL_GETTER(get_size_max, v->pool_size)
POOL_GETTER(get_reserve, v->reserve_pool)
POOL_GETTER(get_max_wait, v->max_wait_us)
POOL_GETTER(get_login_failing, v->login_failing)
POOL_GETTER(get_xacts, v->stats.xact_count)
POOL_GETTER(get_queries, v->stats.query_count)
POOL_GETTER(get_waits, v->stats.wait_count)
POOL_GETTER(get_received, v->stats.bytes_received)
POOL_GETTER(get_sent, v->stats.bytes_sent)
POOL_GETTER(get_xact_time, v->stats.xact_time_us)
POOL_GETTER(get_query_time, v->stats.query_time_us)
POOL_GETTER(get_wait_time, v->stats.wait_time_us)
POOL_GETTER(get_sv_opened, v->stats.servers_created)
POOL_GETTER(get_sv_closed, v->stats.servers_closed)
POOL_GETTER(get_cl_opened, v->stats.clients_created)
POOL_GETTER(get_cl_closed, v->stats.clients_closed)
POOL_GETTER(get_login_failures, v->stats.login_failures)
POOL_GETTER(get_connect_time, v->stats.connect_time_us)

static const struct histogram *hist_wait(const struct pool_view *v)
{
    return &v->stats.wait_hist;
}

static const struct histogram *hist_xact(const struct pool_view *v)
{
    return &v->stats.xact_hist;
}

static const struct histogram *hist_query(const struct pool_view *v)
{
    return &v->stats.query_hist;
}

/* One row per metric; the macros fill the getter slot that fits. */
/* clang-format off */
#define PROCESS(name, type, help, fn) {name, type, UNIT_NUMBER, help, fn, NULL, NULL, NULL, NULL}
#define POOL(name, type, unit, help, fn) {name, type, unit, help, NULL, fn, NULL, NULL, NULL}
#define HIST(name, help, fn) {name, METRIC_HISTOGRAM, UNIT_US_AS_SECONDS, help, NULL, NULL, fn, NULL, NULL}
#define SERIES(name, type, help, fn) {name, type, UNIT_NUMBER, help, NULL, NULL, NULL, NULL, fn}
/* clang-format on */

static const struct metric_def METRICS[] = {
    {"pgwarden_info", METRIC_GAUGE, UNIT_NUMBER, "pgwarden build information (always 1)", get_one,
     NULL, NULL, "version=\"" PGWARDEN_VERSION "\"", NULL},
    PROCESS("pgwarden_ready", METRIC_GAUGE,
            "1 when a server connection could be handed out now (the /readyz rule), else 0",
            get_ready),
    PROCESS("pgwarden_pools", METRIC_GAUGE, "database+user pools that exist", get_pools),
    PROCESS("pgwarden_clients", METRIC_GAUGE, "client connections, all pools and states",
            get_clients),
    PROCESS("pgwarden_clients_login", METRIC_GAUGE,
            "client connections still in startup or authentication", get_clients_login),
    PROCESS("pgwarden_cancel_requests", METRIC_GAUGE, "cancel requests in flight to PostgreSQL",
            get_cancel_reqs),
    PROCESS("pgwarden_scram_pbkdf2_total", METRIC_COUNTER,
            "PBKDF2 derivations run on the event loop: SCRAM logins and cleartext passwords "
            "checked against SCRAM secrets that no cache could serve",
            get_pbkdf2_runs),
    SERIES("pgwarden_tls_handshakes_total", METRIC_COUNTER,
           "TLS handshakes completed and accepted, with clients (side client) and with "
           "PostgreSQL (side server)",
           series_tls_handshakes),
    SERIES("pgwarden_tls_handshake_failures_total", METRIC_COUNTER,
           "TLS handshakes that failed or were refused, by side and reason (protocol, "
           "certificate, cipher, closed, other)",
           series_tls_failures),

    POOL("pgwarden_pool_clients_active", METRIC_GAUGE, UNIT_NUMBER,
         "client connections linked to a server connection", get_cl_active),
    POOL("pgwarden_pool_clients_waiting", METRIC_GAUGE, UNIT_NUMBER,
         "client connections waiting for a server connection", get_cl_waiting),
    POOL("pgwarden_pool_clients_idle", METRIC_GAUGE, UNIT_NUMBER,
         "logged-in client connections that neither hold nor wait for a server connection",
         get_cl_idle),
    POOL("pgwarden_pool_max_wait_seconds", METRIC_GAUGE, UNIT_US_AS_SECONDS,
         "how long the longest-waiting client has waited (0 when none waits)", get_max_wait),
    POOL("pgwarden_pool_servers_active", METRIC_GAUGE, UNIT_NUMBER,
         "server connections linked to a client", get_sv_active),
    POOL("pgwarden_pool_servers_idle", METRIC_GAUGE, UNIT_NUMBER,
         "server connections ready to be handed out", get_sv_idle),
    POOL("pgwarden_pool_servers_used", METRIC_GAUGE, UNIT_NUMBER,
         "idle server connections due server_check_query before reuse (see server_check_delay)",
         get_sv_used),
    POOL("pgwarden_pool_servers_tested", METRIC_GAUGE, UNIT_NUMBER,
         "server connections running a reset, check or connect query", get_sv_tested),
    POOL("pgwarden_pool_servers_login", METRIC_GAUGE, UNIT_NUMBER,
         "server connections connecting or logging in", get_sv_login),
    POOL("pgwarden_pool_servers_being_canceled", METRIC_GAUGE, UNIT_NUMBER,
         "released server connections waiting for a cancel request to land", get_sv_canceling),
    POOL("pgwarden_pool_size_current", METRIC_GAUGE, UNIT_NUMBER,
         "server connections of the pool in any state", get_size_current),
    POOL("pgwarden_pool_size_min", METRIC_GAUGE, UNIT_NUMBER,
         "server connections kept open even when idle (min_pool_size)", get_size_min),
    POOL("pgwarden_pool_size_max", METRIC_GAUGE, UNIT_NUMBER,
         "most server connections the pool opens (pool_size, without the reserve)", get_size_max),
    POOL("pgwarden_pool_reserve_size", METRIC_GAUGE, UNIT_NUMBER,
         "extra server connections allowed once a client waited reserve_pool_timeout", get_reserve),
    POOL("pgwarden_pool_login_failing", METRIC_GAUGE, UNIT_NUMBER,
         "1 while the last server login of the pool failed, else 0", get_login_failing),

    POOL("pgwarden_pool_transactions_total", METRIC_COUNTER, UNIT_NUMBER,
         "transactions served (a server returned to the pool; in session mode, a session)",
         get_xacts),
    POOL("pgwarden_pool_queries_total", METRIC_COUNTER, UNIT_NUMBER,
         "queries served (ReadyForQuery messages passed to clients)", get_queries),
    POOL("pgwarden_pool_waits_total", METRIC_COUNTER, UNIT_NUMBER,
         "times a client had to wait for a server connection", get_waits),
    POOL("pgwarden_pool_received_bytes_total", METRIC_COUNTER, UNIT_NUMBER,
         "bytes received from clients and forwarded to servers", get_received),
    POOL("pgwarden_pool_sent_bytes_total", METRIC_COUNTER, UNIT_NUMBER,
         "bytes sent to clients from servers", get_sent),
    POOL("pgwarden_pool_transaction_seconds_total", METRIC_COUNTER, UNIT_US_AS_SECONDS,
         "time clients held a server connection, summed over transactions", get_xact_time),
    POOL("pgwarden_pool_query_seconds_total", METRIC_COUNTER, UNIT_US_AS_SECONDS,
         "query time summed over queries (each measured from the start of its transaction "
         "to its ReadyForQuery)",
         get_query_time),
    POOL("pgwarden_pool_wait_seconds_total", METRIC_COUNTER, UNIT_US_AS_SECONDS,
         "time clients waited for a server connection, summed", get_wait_time),
    POOL("pgwarden_pool_server_connections_opened_total", METRIC_COUNTER, UNIT_NUMBER,
         "server connections launched", get_sv_opened),
    POOL("pgwarden_pool_server_connections_closed_total", METRIC_COUNTER, UNIT_NUMBER,
         "server connections closed", get_sv_closed),
    POOL("pgwarden_pool_client_connections_opened_total", METRIC_COUNTER, UNIT_NUMBER,
         "client connections that logged in to the pool", get_cl_opened),
    POOL("pgwarden_pool_client_connections_closed_total", METRIC_COUNTER, UNIT_NUMBER,
         "client connections of the pool that closed", get_cl_closed),
    POOL("pgwarden_pool_server_login_failures_total", METRIC_COUNTER, UNIT_NUMBER,
         "server connections whose connect or login failed", get_login_failures),
    POOL("pgwarden_pool_server_connect_seconds_total", METRIC_COUNTER, UNIT_US_AS_SECONDS,
         "time from launch to a finished login, summed over server connections", get_connect_time),

    HIST("pgwarden_pool_wait_duration_seconds",
         "how long clients waited for a server connection (only waits that ended with one)",
         hist_wait),
    HIST("pgwarden_pool_transaction_duration_seconds",
         "how long clients held a server connection per transaction", hist_xact),
    HIST("pgwarden_pool_query_duration_seconds",
         "query time per query (from the start of its transaction to its ReadyForQuery)",
         hist_query),
};

#define N_METRICS (sizeof(METRICS) / sizeof(METRICS[0]))

static const char *const TYPE_NAMES[] = {"gauge", "counter", "histogram"};

static void out_header(struct out *o, const struct metric_def *m)
{
    out_str(o, "# HELP ");
    out_str(o, m->name);
    out_put(o, " ", 1);
    out_str(o, m->help); /* help texts are ours: no backslash or newline to escape */
    out_str(o, "\n# TYPE ");
    out_str(o, m->name);
    out_put(o, " ", 1);
    out_str(o, TYPE_NAMES[m->type]);
    out_put(o, "\n", 1);
}

static void out_value(struct out *o, enum metric_unit unit, int64_t v)
{
    if (unit == UNIT_US_AS_SECONDS)
        out_us_as_seconds(o, v);
    else
        out_i64(o, v);
}

static void out_histogram(struct out *o, const struct metric_def *m, size_t name_len,
                          const struct pool_view *v)
{
    const struct histogram *h = m->hist_get(v);
    uint64_t cumulative = 0;
    for (size_t i = 0; i < HISTOGRAM_BUCKETS; i++) {
        cumulative += h->counts[i];
        if (o->len > STAGE_FLUSH_AT)
            out_flush(o);
        out_put(o, m->name, name_len);
        out_put(o, "_bucket{", 8);
        out_put(o, v->labels, v->labels_len);
        out_put(o, ",le=\"", 5);
        out_str(o, histogram_bound_seconds_text(i));
        out_put(o, "\"} ", 3);
        out_u64(o, cumulative);
        out_put(o, "\n", 1);
    }
    out_put(o, m->name, name_len);
    out_put(o, "_sum{", 5);
    out_put(o, v->labels, v->labels_len);
    out_put(o, "} ", 2);
    out_us_as_seconds(o, h->sum);
    out_put(o, "\n", 1);
    out_put(o, m->name, name_len);
    out_put(o, "_count{", 7);
    out_put(o, v->labels, v->labels_len);
    out_put(o, "} ", 2);
    out_u64(o, h->count);
    out_put(o, "\n", 1);
}

/* Every pool's values at one moment, shared by the renders that began within
 * METRICS_SHARE_US of it while one of them was still streaming: each concurrent scrape used to
 * take its own copy (about 1 kB a pool; 64 scrapers of 1,000 pools held 70 MB). */
#define METRICS_SHARE_US 1000000
struct metrics_views {
    int refs;         /* renders using it, plus one while it sits in a slot */
    int64_t taken_us; /* when the values were read */
    size_t n;
    struct pool_view v[]; /* n of them */
};

static struct metrics_views *views_take(const struct pooler *p, int64_t now)
{
    size_t n = plist_count(&p->pools);
    struct metrics_views *vs = malloc(sizeof(*vs) + (n ? n : 1) * sizeof(vs->v[0]));
    if (!vs)
        return NULL;
    vs->refs = 1;
    vs->taken_us = now;
    vs->n = 0;
    for (const struct plist *it = p->pools.next; it != &p->pools && vs->n < n; it = it->next)
        view_fill(&vs->v[vs->n++], plist_entry(it, struct pool, node), now);
    return vs;
}

static void views_release(struct metrics_views *vs)
{
    if (vs && --vs->refs == 0)
        free(vs);
}

/* An exposition in progress: the pools' values were taken once, at the start (one consistent
 * moment), and are written out a slice at a time. */
struct metrics_render {
    const struct pooler *p;      /* borrowed */
    struct out *o;               /* owned */
    struct metrics_views *views; /* one reference */
    struct metrics_views **slot; /* borrowed: where concurrent renders find views, or NULL */
    size_t n_pools;
    size_t metric; /* next metric family */
    size_t pool;   /* next pool within it (0 = its header is due) */
};

struct metrics_render *metrics_render_begin(const struct pooler *p, struct metrics_views **slot)
{
    struct metrics_render *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->p = p;
    r->o = malloc(sizeof(*r->o));
    if (!r->o) {
        metrics_render_free(r);
        return NULL;
    }
    r->o->len = 0;
    r->o->failed = false;
    int64_t now = net_loop_now_us(p->loop);
    /* A view in the slot is being streamed to another scraper (the last render to finish
     * empties the slot): recent enough, it is this render's too. */
    if (slot && *slot && now - (*slot)->taken_us < METRICS_SHARE_US) {
        r->views = *slot;
        r->views->refs++;
    } else {
        r->views = views_take(p, now);
        if (!r->views) {
            metrics_render_free(r);
            return NULL;
        }
        if (slot) {
            if (*slot)
                (*slot)->refs--; /* still held by the renders using it */
            *slot = r->views;
            r->views->refs++;
        }
    }
    r->slot = slot;
    r->n_pools = r->views->n;
    return r;
}

enum metrics_step metrics_render_step(struct metrics_render *r, struct evbuffer *out_ev,
                                      size_t budget)
{
    struct out *o = r->o;
    o->ev = out_ev;
    size_t start = evbuffer_get_length(out_ev);
    while (r->metric < N_METRICS && !o->failed) {
        if (evbuffer_get_length(out_ev) + o->len - start >= budget) {
            out_flush(o);
            return o->failed ? METRICS_FAILED : METRICS_MORE;
        }
        const struct metric_def *d = &METRICS[r->metric];
        if (!d->process_get && !d->series_get && r->n_pools == 0) {
            r->metric++; /* a family without samples is noise */
            continue;
        }
        size_t name_len = strlen(d->name);
        if (r->pool == 0)
            out_header(o, d);
        if (d->process_get) {
            out_put(o, d->name, name_len);
            if (d->process_labels) {
                out_put(o, "{", 1);
                out_str(o, d->process_labels);
                out_put(o, "}", 1);
            }
            out_put(o, " ", 1);
            out_value(o, d->unit, d->process_get(r->p));
            out_put(o, "\n", 1);
            r->metric++;
            continue;
        }
        if (d->series_get) {
            struct series_sample samples[SERIES_MAX];
            size_t n = d->series_get(r->p, samples);
            for (size_t i = 0; i < n; i++) {
                out_put(o, d->name, name_len);
                out_put(o, "{", 1);
                out_str(o, samples[i].labels);
                out_put(o, "} ", 2);
                out_value(o, d->unit, samples[i].value);
                out_put(o, "\n", 1);
            }
            r->metric++;
            continue;
        }
        /* One pool's lines per turn of this loop, so the budget is checked between pools. */
        size_t k = r->pool;
        if (o->len > STAGE_FLUSH_AT)
            out_flush(o);
        if (d->hist_get) {
            out_histogram(o, d, name_len, &r->views->v[k]);
        } else {
            out_put(o, d->name, name_len);
            out_put(o, "{", 1);
            out_put(o, r->views->v[k].labels, r->views->v[k].labels_len);
            out_put(o, "} ", 2);
            out_value(o, d->unit, d->objects_pool_get(&r->views->v[k]));
            out_put(o, "\n", 1);
        }
        if (++r->pool == r->n_pools) {
            r->pool = 0;
            r->metric++;
        }
    }
    out_flush(o);
    return o->failed ? METRICS_FAILED : METRICS_DONE;
}

void metrics_render_free(struct metrics_render *r)
{
    if (!r)
        return;
    struct metrics_views *vs = r->views;
    if (vs && r->slot && *r->slot == vs && vs->refs == 2) {
        /* The last render of the views in the slot: nobody is left to share them with. */
        *r->slot = NULL;
        vs->refs--;
    }
    views_release(vs);
    free(r->o);
    free(r);
}

bool metrics_render(const struct pooler *p, struct evbuffer *out_ev)
{
    struct metrics_render *r = metrics_render_begin(p, NULL);
    if (!r)
        return false;
    enum metrics_step st = metrics_render_step(r, out_ev, (size_t)-1);
    metrics_render_free(r);
    return st == METRICS_DONE;
}
