/* /api/v1/<action>: the engine's reports on the live pools, in the CLI's envelope. */
#include "http/api.h"

#include <cjson/cJSON.h>
#include <event2/buffer.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cli/action.h"
#include "cli/render.h"
#include "cli/report_json.h"
#include "cli/target_source.h"
#include "common/timestamp.h"
#include "inspect/console_source.h"
#include "live/live_manager.h"
#include "live/pool_source.h"
#include "manager/analysis.h"
#include "manager/stats.h"
#include "pool/pool.h"

#define API_PREFIX "/api/v1/"

/* One request: what the handlers read and fill. */
struct api_call {
    struct pooler *p;
    struct live_manager *m;
    bool post;
    cJSON *body; /* owned, may be NULL */
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

static bool body_flag(const struct api_call *x, const char *name)
{
    const cJSON *v = x->body ? cJSON_GetObjectItemCaseSensitive(x->body, name) : NULL;
    return cJSON_IsTrue(v);
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

/* The recent probe outcomes of every pool (ids renumbered across pools). */
static size_t all_probes(struct api_call *x, struct health_probe **out)
{
    size_t n = 0, cap = 0;
    *out = NULL;
    for (struct plist *it = x->p->pools.next; it != &x->p->pools; it = it->next)
        cap += plist_entry(it, struct pool, node)->probes.n;
    if (cap == 0 || !(*out = calloc(cap, sizeof(**out))))
        return 0;
    for (struct plist *it = x->p->pools.next; it != &x->p->pools; it = it->next)
        n += pool_source_probes(plist_entry(it, struct pool, node), *out + n);
    for (size_t i = 0; i < n; i++)
        (*out)[i].id = (int64_t)i + 1;
    return n;
}

static void api_health_check(struct api_call *x)
{
    if (x->post) {
        if (!x->acting_allowed) {
            fail(x, 403, "refused", "acting over HTTP needs http_auth_token to be set");
            return;
        }
        (void)live_manager_health_check(x->m);
    }
    struct health_probe *probes;
    size_t n = all_probes(x, &probes);
    struct health_report h;
    health_summarize(probes, n, NULL, x->run.opts, &h);
    x->run.data = report_json_health(&h, probes, n);
    free(probes);
}

static void api_auto_scale(struct api_call *x)
{
    if (x->post) {
        if (!x->acting_allowed) {
            fail(x, 403, "refused", "acting over HTTP needs http_auth_token to be set");
            return;
        }
        live_manager_auto_scale(x->m, !body_flag(x, "dry_run"));
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
    bool execute = x->post && body_flag(x, "execute");
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
    kill_plan_free(&plan);
}

static void api_full_analysis(struct api_call *x)
{
    const struct snapshot *cur, *prev;
    if (!snapshots(x, &cur, &prev))
        return;
    struct stats_report stats;
    struct kill_plan idle;
    if (!stats_compute(prev, cur, x->run.opts, &stats)) {
        fail(x, 500, "out_of_memory", "out of memory");
        return;
    }
    struct manager_options plan_opts = *x->run.opts;
    plan_opts.execute = false;
    if (!reaper_plan(cur, &plan_opts, &idle)) {
        stats_report_free(&stats);
        fail(x, 500, "out_of_memory", "out of memory");
        return;
    }
    struct health_probe *probes;
    size_t n = all_probes(x, &probes);
    struct health_report h;
    health_summarize(probes, n, NULL, x->run.opts, &h);
    struct scaling_decision scaling;
    scaling_decide(prev, cur, x->run.opts, -1, &scaling);
    struct analysis_report analysis = {
        .stats = &stats,
        .leaks = live_manager_leaks(x->m),
        .health = &h,
        .scaling = &scaling,
        .idle = &idle,
    };
    analysis_run(prev, cur, x->run.opts, &analysis);
    x->run.data = report_json_analysis(&analysis, cur, probes, n, x->run.opts);
    free(probes);
    kill_plan_free(&idle);
    stats_report_free(&stats);
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
        cJSON_AddStringToObject(o, "event", event_kind_name(e->kind));
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
    const cJSON *since_item = x->body ? cJSON_GetObjectItemCaseSensitive(x->body, "since") : NULL;
    double since = cJSON_IsNumber(since_item) ? since_item->valuedouble : 0;
    for (size_t i = 0; list && i < ev->n; i++) {
        const struct event *e = event_ring_at(ev, i);
        if ((double)e->seq <= since)
            continue;
        cJSON *o = event_json(e);
        if (!o)
            break;
        cJSON_AddItemToArray(list, o);
    }
    x->run.data = data;
}

bool api_is_event_stream(const char *path, const char *query)
{
    return path && !strcmp(path, API_PREFIX "events") && query && strstr(query, "follow");
}

uint64_t api_events_since(const char *query)
{
    const char *since = query ? strstr(query, "since=") : NULL;
    return since ? strtoull(since + 6, NULL, 10) : 0;
}

uint64_t api_write_events_sse(struct pooler *p, uint64_t after, struct evbuffer *out)
{
    if (!p->manager)
        return after;
    const struct event_ring *ev = live_manager_events(p->manager);
    for (size_t i = 0; i < ev->n; i++) {
        const struct event *e = event_ring_at(ev, i);
        if (e->seq <= after)
            continue;
        cJSON *o = event_json(e);
        char *text = o ? cJSON_PrintUnformatted(o) : NULL;
        cJSON_Delete(o);
        if (!text)
            break;
        evbuffer_add_printf(out, "id: %llu\nevent: %s\ndata: %s\n\n", (unsigned long long)e->seq,
                            event_kind_name(e->kind), text);
        free(text);
        after = e->seq;
    }
    return after;
}

struct api_route {
    const char *name;
    bool may_post;
    void (*handle)(struct api_call *x);
};

static const struct api_route ROUTES[] = {
    {"monitor", false, api_monitor},          {"detect-leaks", false, api_detect_leaks},
    {"health-check", true, api_health_check}, {"auto-scale", true, api_auto_scale},
    {"kill-idle", true, api_kill_idle},       {"full-analysis", false, api_full_analysis},
    {"events", false, api_events},
};

static const struct api_route *find_route(const char *path)
{
    if (!path || strncmp(path, API_PREFIX, strlen(API_PREFIX)))
        return NULL;
    const char *name = path + strlen(API_PREFIX);
    for (size_t i = 0; i < sizeof(ROUTES) / sizeof(ROUTES[0]); i++)
        if (!strcmp(name, ROUTES[i].name))
            return &ROUTES[i];
    return NULL;
}

bool api_is_route(const char *path)
{
    return path && !strncmp(path, API_PREFIX, strlen(API_PREFIX));
}

/* ?since=N for /events as a JSON body equivalent. */
static cJSON *query_as_body(const char *query)
{
    if (!query || !strstr(query, "since="))
        return NULL;
    cJSON *o = cJSON_CreateObject();
    if (o)
        cJSON_AddNumberToObject(o, "since", (double)api_events_since(query));
    return o;
}

int api_handle(struct pooler *p, const char *path, bool post, const char *body,
               bool acting_allowed, const char *query, struct evbuffer *out)
{
    const struct api_route *route = find_route(path);
    struct api_call x = {.p = p, .m = p->manager, .post = post, .acting_allowed = acting_allowed,
                         .status = 200};
    double started = timestamp_monotonic_ms();
    x.run.opts = &p->cfg->manager;
    x.run.source = target_source_for(CONSOLE_SOURCE_SCHEME);
    x.run.have_target = true;
    snprintf(x.run.target.host, sizeof(x.run.target.host), "%s", p->cfg->listen_addr);
    snprintf(x.run.target.port, sizeof(x.run.target.port), "%d", p->cfg->listen_port);
    snprintf(x.run.target.server_version, sizeof(x.run.target.server_version), "pgwarden");
    x.body = body && body[0] ? cJSON_Parse(body) : query_as_body(query);
    if (body && body[0] && !cJSON_IsObject(x.body))
        fail(&x, 400, "bad_input", "the request body is not a JSON object");
    else if (!route)
        fail(&x, 404, "not_found", "unknown action");
    else if (post && !route->may_post)
        fail(&x, 405, "bad_input", "this action only reads: use GET");
    else if (!x.m)
        fail(&x, 503, "not_ready", "the manager is not running");
    else
        route->handle(&x);
    if (!x.run.failed && !x.run.data)
        fail(&x, 500, "out_of_memory", "out of memory");
    char when[40];
    timestamp_format_iso(timestamp_now_ms(), when, sizeof(when));
    double ms = timestamp_monotonic_ms() - started;
    cJSON *env = render_envelope(&x.run, route ? route->name : "unknown", when, ms);
    char *text = env ? cJSON_PrintUnformatted(env) : NULL;
    if (text) {
        evbuffer_add(out, text, strlen(text));
        evbuffer_add(out, "\n", 1);
        free(text);
    } else {
        x.status = 500;
    }
    cJSON_Delete(env);
    cJSON_Delete(x.run.data);
    cJSON_Delete(x.body);
    return x.status;
}
