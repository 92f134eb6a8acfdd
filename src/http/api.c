/* /api/v1/<action>: the engine's reports on the live pools, in the CLI's envelope. */
#include "http/api.h"

#include <cjson/cJSON.h>
#include <event2/buffer.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cli/actions.h"
#include "cli/render.h"
#include "cli/report_json.h"
#include "cli/target_source.h"
#include "common/utf8.h"
#include "common/timestamp.h"
#include "inspect/console_source.h"
#include "live/live_manager.h"
#include "live/pool_source.h"
#include "manager/analysis.h"
#include "manager/stats.h"
#include "net/tls.h"
#include "pool/pool.h"

#define API_PREFIX "/api/v1/"

/* One request: what the handlers read and fill. */
struct api_call {
    struct pooler *p;
    struct live_manager *m;
    const struct api_request *req; /* borrowed */
    bool acting_allowed;
    struct action_run run;
    int status;
};

static void fail(struct api_call *x, int status, const char *code, const char *message)
{
    x->status = status;
    x->run.failed = true;
    snprintf(x->run.error.code, sizeof(x->run.error.code), "%s", code);
    snprintf(x->run.error.message, sizeof(x->run.error.message), "%s", message);
}

/* The latest and previous snapshots, or a failure when the manager has not run yet. */
static bool snapshots(struct api_call *x, const struct snapshot **cur, const struct snapshot **prev)
{
    *cur = live_manager_snapshot(x->m);
    *prev = live_manager_prev_snapshot(x->m);
    if ((*cur)->taken_ms == 0) {
        fail(x, 503, "not_ready", "the manager has not looked at the pools yet; retry in a second");
        return false;
    }
    return true;
}

/* {"handshakes": N, "failures": {"protocol": N, ...}}: one side's TLS counters, the same
 * numbers as /metrics' pgwarden_tls_* families. */
static cJSON *tls_side_json(const struct tls_counters *k)
{
    cJSON *side = cJSON_CreateObject();
    cJSON *failures = side ? cJSON_AddObjectToObject(side, "failures") : NULL;
    if (!failures) {
        cJSON_Delete(side);
        return NULL;
    }
    cJSON_AddNumberToObject(side, "handshakes", (double)k->handshakes);
    for (int f = 0; f < TLS_FAILURE_COUNT; f++)
        cJSON_AddNumberToObject(failures, tls_failure_name((enum tls_failure)f),
                                (double)k->failures[f]);
    return side;
}

static void api_monitor(struct api_call *x)
{
    const struct snapshot *cur, *prev;
    if (!snapshots(x, &cur, &prev))
        return;
    struct stats_report stats;
    if (!stats_compute(prev, cur, x->run.opts, &stats)) {
        fail(x, 500, "out_of_memory", "out of memory");
        return;
    }
    x->run.data = report_json_stats(&stats, cur, x->run.opts);
    stats_report_free(&stats);
    /* Serve mode only (the pooler's own handshakes): data.tls.client and data.tls.server. */
    cJSON *tls = x->run.data ? cJSON_AddObjectToObject(x->run.data, "tls") : NULL;
    if (tls) {
        cJSON_AddItemToObject(tls, "client", tls_side_json(&x->p->tls_client_counts));
        cJSON_AddItemToObject(tls, "server", tls_side_json(&x->p->tls_server_counts));
    }
}

static void api_detect_leaks(struct api_call *x)
{
    const struct snapshot *cur, *prev;
    if (!snapshots(x, &cur, &prev))
        return;
    const struct leak_report *leaks = live_manager_leaks(x->m);
    if (!leaks) {
        fail(x, 503, "not_ready", "no leak report yet; retry in a second");
        return;
    }
    x->run.data = report_json_leaks(leaks, cur);
}

static void api_health_check(struct api_call *x)
{
    if (x->req->post) {
        if (!x->acting_allowed) {
            fail(x, 403, "refused", "acting over HTTP needs http_auth_token to be set");
            return;
        }
        (void)live_manager_health_check(x->m);
    }
    struct health_probe *probes;
    size_t n = live_manager_probes(x->m, &probes);
    struct health_report h;
    health_summarize(probes, n, NULL, x->run.opts, &h);
    x->run.data = report_json_health(&h, probes, n);
    free(probes);
}

static void api_auto_scale(struct api_call *x)
{
    if (x->req->post) {
        if (!x->acting_allowed) {
            fail(x, 403, "refused", "acting over HTTP needs http_auth_token to be set");
            return;
        }
        live_manager_auto_scale(x->m, !x->req->dry_run);
    }
    cJSON *data = cJSON_CreateObject();
    cJSON *pools = data ? cJSON_AddArrayToObject(data, "pools") : NULL;
    struct live_pool_view v;
    for (size_t i = 0; pools && live_manager_pool_at(x->m, i, &v); i++) {
        cJSON *one = report_json_scaling(v.decision);
        if (!one)
            continue;
        cJSON_AddStringToObject(one, "database", v.pool->db_name);
        cJSON_AddStringToObject(one, "user", v.pool->user_name);
        cJSON_AddNumberToObject(one, "configured_size", v.pool->configured_size);
        cJSON_AddNumberToObject(one, "size", v.pool->pool_size);
        cJSON_AddStringToObject(one, "status", v.hold);
        cJSON_AddItemToArray(pools, one);
    }
    x->run.data = data;
}

static void api_kill_idle(struct api_call *x)
{
    bool execute = x->req->post && x->req->execute;
    if (execute && !x->acting_allowed) {
        fail(x, 403, "refused", "acting over HTTP needs http_auth_token to be set");
        return;
    }
    struct kill_plan plan;
    if (!live_manager_kill_idle(x->m, execute, &plan)) {
        fail(x, 500, "out_of_memory", "out of memory");
        return;
    }
    x->run.data = report_json_kill_plan(&plan, live_manager_snapshot(x->m));
    reaper_kill_plan_free(&plan);
}

static void api_full_analysis(struct api_call *x)
{
    const struct snapshot *cur, *prev;
    if (!snapshots(x, &cur, &prev))
        return;
    struct live_analysis la;
    if (!live_manager_analyse(x->m, &la)) {
        fail(x, 500, "out_of_memory", "out of memory");
        return;
    }
    x->run.data = report_json_analysis(&la.analysis, la.cur, la.probes, la.n_probes, x->run.opts);
    live_manager_analysis_free(&la);
}

/* One event as the API shows it, or NULL when memory runs out. */
static cJSON *event_json(const struct event *e)
{
    cJSON *o = cJSON_CreateObject();
    if (o) {
        char when[40];
        timestamp_format_iso(e->at_ms, when, sizeof(when));
        cJSON_AddNumberToObject(o, "seq", (double)e->seq);
        cJSON_AddStringToObject(o, "time", when);
        cJSON_AddStringToObject(o, "event", events_kind_name(e->kind));
        cJSON_AddStringToObject(o, "database", e->database);
        cJSON_AddStringToObject(o, "user", e->user);
        cJSON_AddStringToObject(o, "application", e->application);
        cJSON_AddStringToObject(o, "client_addr", e->client_addr);
        if (e->client_id)
            cJSON_AddNumberToObject(o, "client_id", (double)e->client_id);
        else
            cJSON_AddNullToObject(o, "client_id");
        cJSON_AddNumberToObject(o, "pid", e->pid);
        cJSON_AddNumberToObject(o, "before", (double)e->before);
        cJSON_AddNumberToObject(o, "after", (double)e->after);
        cJSON_AddStringToObject(o, "reason", e->reason);
    }
    return o;
}

static void api_events(struct api_call *x)
{
    const struct event_ring *ev = live_manager_events(x->m);
    cJSON *data = cJSON_CreateObject();
    cJSON *list = data ? cJSON_AddArrayToObject(data, "events") : NULL;
    for (size_t i = 0; list && i < ev->n; i++) {
        const struct event *e = events_ring_at(ev, i);
        if (e->seq <= x->req->since)
            continue;
        cJSON *o = event_json(e);
        if (!o)
            break;
        cJSON_AddItemToArray(list, o);
    }
    x->run.data = data;
}

/* The value of the first key in a query ("k=v" pairs split at '&'; a key without '=' has the
 * value ""), with its length in *len; NULL when absent. Keys are matched whole, so "nofollow"
 * is not "follow". */
static const char *query_value(const char *query, const char *key, size_t *len)
{
    size_t key_len = strlen(key);
    for (const char *pair = query; pair != NULL; pair = strchr(pair, '&')) {
        if (*pair == '&')
            pair++;
        size_t pair_len = strcspn(pair, "&");
        if (pair_len >= key_len && !strncmp(pair, key, key_len) &&
            (pair_len == key_len || pair[key_len] == '=')) {
            const char *value = pair + key_len + (pair_len > key_len);
            *len = pair_len - (size_t)(value - pair);
            return value;
        }
    }
    return NULL;
}

/* An event seq written as digits only (no sign, no space): strtoull would take "-1" as
 * UINT64_MAX and so hide every event. Saturates at UINT64_MAX; 0 when not a number. */
uint64_t api_parse_seq(const char *s, size_t n)
{
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return 0;
        unsigned digit = (unsigned)(s[i] - '0');
        v = v > (UINT64_MAX - digit) / 10 ? UINT64_MAX : v * 10 + digit;
    }
    return v;
}

/* A JSON number as an event seq: "after 2.5" is after 2; below 1 (or not a number) is 0. */
static uint64_t seq_from_json(const cJSON *item)
{
    if (!cJSON_IsNumber(item) || !(item->valuedouble >= 1))
        return 0;
    if (item->valuedouble >= 18446744073709551616.0) /* 2^64 */
        return UINT64_MAX;
    return (uint64_t)floor(item->valuedouble);
}

bool api_is_event_stream(const char *path, const char *query)
{
    size_t len;
    return path && !strcmp(path, API_PREFIX "events") && query_value(query, "follow", &len);
}

uint64_t api_events_since(const char *query)
{
    size_t len = 0;
    const char *since = query_value(query, "since", &len);
    return since ? api_parse_seq(since, len) : 0;
}

uint64_t api_write_events_sse(struct pooler *p, uint64_t after, struct evbuffer *out)
{
    if (!p->manager)
        return after;
    const struct event_ring *ev = live_manager_events(p->manager);
    for (size_t i = 0; i < ev->n; i++) {
        const struct event *e = events_ring_at(ev, i);
        if (e->seq <= after)
            continue;
        cJSON *o = event_json(e);
        /* Names are the clients' bytes: an invalid one would make the stream unreadable. */
        char *text = utf8_make_valid(o ? cJSON_PrintUnformatted(o) : NULL);
        cJSON_Delete(o);
        if (!text)
            break;
        evbuffer_add_printf(out, "id: %llu\nevent: %s\ndata: %s\n\n", (unsigned long long)e->seq,
                            events_kind_name(e->kind), text);
        free(text);
        after = e->seq;
    }
    return after;
}

struct api_route {
    const char *name;
    bool may_post;
    bool shared; /* a GET's answer depends on the manager's look alone (struct api_cache) */
    void (*handle)(struct api_call *x);
};

static const struct api_route ROUTES[] = {
    {"monitor", false, true, api_monitor},
    {"detect-leaks", false, true, api_detect_leaks},
    {"health-check", true, false, api_health_check},
    {"auto-scale", true, false, api_auto_scale},
    {"kill-idle", true, false, api_kill_idle},
    {"full-analysis", false, true, api_full_analysis},
    {"events", false, false, api_events},
};
#define N_ROUTES (sizeof(ROUTES) / sizeof(ROUTES[0]))

/* One shared answer per route (the query string plays no part in these answers, so it is
 * not part of the key: a peer cannot fill the cache with variants). */
struct api_cache {
    struct api_shared {
        int64_t look_ms; /* the manager's look it was made from */
        char *text;      /* owned: the whole body of a 200 answer */
        size_t len;
    } by_route[N_ROUTES];
};

struct api_cache *api_cache_new(void)
{
    return calloc(1, sizeof(struct api_cache));
}

void api_cache_free(struct api_cache *cache)
{
    if (!cache)
        return;
    for (size_t i = 0; i < N_ROUTES; i++)
        free(cache->by_route[i].text);
    free(cache);
}

/* The entry req may share, or NULL. */
static struct api_shared *shared_entry(struct api_cache *cache, const struct api_request *req,
                                       const struct live_manager *m)
{
    if (!cache || !m || req->status != 200 || req->post || !req->route->shared)
        return NULL;
    return &cache->by_route[req->route - ROUTES];
}

/* Keeps text (taken over) as the answer to share until the next look. */
static void shared_keep(struct api_shared *e, int64_t look_ms, char *text, size_t len)
{
    free(e->text);
    *e = (struct api_shared){.look_ms = look_ms, .text = text, .len = len};
}

static const struct api_route *find_route(const char *path)
{
    if (!path || strncmp(path, API_PREFIX, strlen(API_PREFIX)))
        return NULL;
    const char *name = path + strlen(API_PREFIX);
    for (size_t i = 0; i < N_ROUTES; i++)
        if (!strcmp(name, ROUTES[i].name))
            return &ROUTES[i];
    return NULL;
}

bool api_is_route(const char *path)
{
    return path && !strncmp(path, API_PREFIX, strlen(API_PREFIX));
}

static void refuse(struct api_request *req, int status, const char *code, const char *message)
{
    req->status = status;
    req->code = code;
    req->message = message;
}

void api_parse_request(const char *path, bool post, const char *body, const char *query,
                       struct api_request *req)
{
    memset(req, 0, sizeof(*req));
    req->route = find_route(path);
    req->action = req->route ? req->route->name : "unknown";
    req->status = 200;
    req->post = post;
    if (body && body[0]) {
        cJSON *json = cJSON_Parse(body);
        if (!cJSON_IsObject(json)) {
            cJSON_Delete(json);
            refuse(req, 400, "bad_input", "the request body is not a JSON object");
            return;
        }
        req->execute = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(json, "execute"));
        req->dry_run = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(json, "dry_run"));
        req->since = seq_from_json(cJSON_GetObjectItemCaseSensitive(json, "since"));
        cJSON_Delete(json);
    } else {
        req->since = api_events_since(query);
    }
    if (!req->route)
        refuse(req, 404, "not_found", "unknown action");
    else if (post && !req->route->may_post)
        refuse(req, 405, "bad_input", "this action only reads: use GET");
}

int api_handle(struct pooler *p, struct api_cache *cache, const char *path, bool post,
               const char *body, bool acting_allowed, const char *query, struct evbuffer *out)
{
    struct api_request req;
    api_parse_request(path, post, body, query, &req);
    struct api_shared *shared = shared_entry(cache, &req, p->manager);
    int64_t look_ms = shared ? live_manager_snapshot(p->manager)->taken_ms : 0;
    if (shared && shared->text && look_ms != 0 && shared->look_ms == look_ms) {
        evbuffer_add(out, shared->text, shared->len);
        return 200;
    }
    struct api_call x = {
        .p = p, .m = p->manager, .req = &req, .acting_allowed = acting_allowed, .status = 200};
    double started = timestamp_monotonic_ms();
    x.run.opts = &p->cfg->manager;
    x.run.source = target_source_for(CONSOLE_SOURCE_SCHEME);
    x.run.have_target = true;
    snprintf(x.run.target.host, sizeof(x.run.target.host), "%s", p->cfg->listen_addr);
    snprintf(x.run.target.port, sizeof(x.run.target.port), "%d", p->cfg->listen_port);
    snprintf(x.run.target.server_version, sizeof(x.run.target.server_version), "pgwarden");
    if (req.status != 200)
        fail(&x, req.status, req.code, req.message);
    else if (!x.m)
        fail(&x, 503, "not_ready", "the manager is not running");
    else
        req.route->handle(&x);
    if (!x.run.failed && !x.run.data)
        fail(&x, 500, "out_of_memory", "out of memory");
    char when[40];
    timestamp_format_iso(timestamp_now_ms(), when, sizeof(when));
    double ms = timestamp_monotonic_ms() - started;
    cJSON *env = render_envelope(&x.run, req.action, when, ms);
    /* Names in the answer (application_name, database) are the clients' bytes: invalid
     * UTF-8 in one made the whole answer unreadable to a JSON parser. */
    char *text = utf8_make_valid(env ? cJSON_PrintUnformatted(env) : NULL);
    if (text) {
        size_t len = strlen(text);
        text[len] = '\n'; /* the NUL's place: the body ends with a newline */
        evbuffer_add(out, text, len + 1);
        if (shared && look_ms != 0 && x.status == 200)
            shared_keep(shared, look_ms, text, len + 1);
        else
            free(text);
    } else {
        x.status = 500;
    }
    cJSON_Delete(env);
    cJSON_Delete(x.run.data);
    return x.status;
}
