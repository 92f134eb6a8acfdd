/* The live manager's console commands: its results (SHOW LEAKS, EVENTS, SCALING, HEALTH,
 * ANALYSIS, MANAGER and the SNAPSHOT tables the CLI's pgwarden:// target reads) and its
 * actions (KILL_IDLE, HEALTH_CHECK, AUTO_SCALE). Integer columns are int8: they carry
 * millisecond timestamps. */
#include "admin/manager_console.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin/reply.h"
#include "live/live_manager.h"
#include "manager/reclaim.h"
#include "pool/pool.h"

void manager_console_leaks(struct pooler *p, struct console_out *o)
{
    static const char *const cols[] = {"client",   "pid:q",   "user",    "database",  "application",
                                       "addr",     "state",   "score:q", "held_s:q",  "idle_s:q",
                                       "xact_s:q", "reclaim", "reason",  "last_query"};
    struct reply r;
    reply_begin(&r, o, cols, REPLY_COLS(cols));
    const struct leak_report *leaks = p->manager ? live_manager_leaks(p->manager) : NULL;
    for (size_t i = 0; leaks && i < leaks->total_suspected; i++) {
        const struct leak_suspect *s = &leaks->suspects[i];
        const struct conn_record *c = s->conn;
        char id[32];
        snprintf(id, sizeof(id), "c%lld", (long long)c->id);
        reply_row(&r);
        reply_text(&r, id);
        reply_int(&r, c->pid);
        reply_text(&r, c->user);
        reply_text(&r, c->database);
        reply_text(&r, c->application);
        reply_text(&r, c->client_addr[0] ? c->client_addr : "unix");
        reply_text(&r, snapshot_conn_state_name(c->state));
        reply_int(&r, s->score);
        reply_int(&r, s->held_ms / 1000);
        reply_int(&r, s->idle_ms / 1000);
        reply_int(&r, s->xact_age_ms / 1000);
        reply_text(&r, reclaim_level_name(live_manager_reclaim_done(p->manager, c->id)));
        char reasons[LEAK_MAX_REASONS * (LEAK_REASON_LEN + 2)];
        size_t len = 0;
        reasons[0] = '\0';
        for (size_t k = 0; k < s->n_reasons; k++)
            len += (size_t)snprintf(reasons + len, sizeof(reasons) - len, "%s%s", k ? "; " : "",
                                    s->reasons[k]);
        reply_text(&r, reasons);
        reply_text(&r, snapshot_str(c->last_query));
    }
    reply_end(&r, "SHOW");
}

void manager_console_events(struct pooler *p, struct console_out *o)
{
    static const char *const cols[] = {"seq:q",  "time",  "event",    "database", "user",
                                       "client", "pid:q", "before:q", "after:q",  "reason"};
    struct reply r;
    reply_begin(&r, o, cols, REPLY_COLS(cols));
    const struct event_ring *ev = p->manager ? live_manager_events(p->manager) : NULL;
    for (size_t i = 0; ev && i < ev->n; i++) {
        const struct event *e = events_ring_at(ev, i);
        char when[40], client[32];
        reply_format_time(e->at_ms * 1000, when, sizeof(when));
        snprintf(client, sizeof(client), "c%lld", (long long)e->client_id);
        reply_row(&r);
        reply_int(&r, (int64_t)e->seq);
        reply_text(&r, when);
        reply_text(&r, events_kind_name(e->kind));
        reply_text(&r, e->database);
        reply_text(&r, e->user);
        reply_text(&r, e->client_id ? client : "");
        reply_int(&r, e->pid);
        reply_int(&r, e->before);
        reply_int(&r, e->after);
        reply_text(&r, e->reason);
    }
    reply_end(&r, "SHOW");
}

void manager_console_scaling(struct pooler *p, struct console_out *o)
{
    static const char *const cols[] = {
        "database",  "user",     "configured:q", "min:q",   "max:q",  "size:q", "servers:q",
        "waiting:q", "target:q", "decision",     "applied", "status", "reason", "server_slots:q"};
    struct reply r;
    reply_begin(&r, o, cols, REPLY_COLS(cols));
    struct live_pool_view v;
    for (size_t i = 0; p->manager && live_manager_pool_at(p->manager, i, &v); i++) {
        const struct pool *pool = v.pool;
        reply_row(&r);
        reply_text(&r, pool->db_name);
        reply_text(&r, pool->user_name);
        reply_int(&r, pool->configured_size);
        reply_int(&r, v.lo);
        reply_int(&r, v.hi);
        reply_int(&r, pool->pool_size);
        reply_int(&r, pool->n_servers);
        reply_int(&r, (int64_t)plist_count(&pool->waiting_clients));
        reply_int(&r, v.decision->target_size);
        reply_text(&r, scaling_verdict_name(v.decision->decision));
        reply_text(&r, v.decision->applied ? "yes" : "no");
        reply_text(&r, v.hold);
        reply_text(&r, v.decision->reason);
        reply_int(&r, pool->server_usable_slots);
    }
    reply_end(&r, "SHOW");
}

/* The manager's snapshot of the pools, record by record, so `pgwarden ACTION --target
 * pgwarden://...` runs the engine on exactly what the live manager sees. Times are ms since
 * the epoch (0 = none). */
void manager_console_snapshot(struct pooler *p, struct console_out *o)
{
    static const char *const cols[] = {"id:q",
                                       "pid:q",
                                       "user",
                                       "database",
                                       "application",
                                       "client_addr",
                                       "state",
                                       "connected_ms:q",
                                       "state_change_ms:q",
                                       "xact_start_ms:q",
                                       "query_start_ms:q",
                                       "requests:q",
                                       "taken_ms:q",
                                       "output_blocked_ms:q",
                                       "hold_total_ms:q",
                                       "app_usual_hold_ms:q",
                                       "replication:q"};
    struct reply r;
    reply_begin(&r, o, cols, REPLY_COLS(cols));
    const struct snapshot *snap = p->manager ? live_manager_snapshot(p->manager) : NULL;
    for (size_t i = 0; snap && i < snap->n_conns; i++) {
        const struct conn_record *c = &snap->conns[i];
        reply_row(&r);
        reply_int(&r, c->id);
        reply_int(&r, c->pid);
        reply_text(&r, c->user);
        reply_text(&r, c->database);
        reply_text(&r, c->application);
        reply_text(&r, c->client_addr);
        reply_text(&r, snapshot_conn_state_name(c->state));
        reply_int(&r, c->connected_ms);
        reply_int(&r, c->state_change_ms);
        reply_int(&r, c->xact_start_ms);
        reply_int(&r, c->query_start_ms);
        reply_int(&r, c->requests);
        reply_int(&r, snap->taken_ms);
        reply_int(&r, c->output_blocked_ms);
        reply_int(&r, c->hold_total_ms);
        reply_int(&r, c->app_usual_hold_ms);
        /* 1 for a walsender's client: the CLI's engine must protect it as the manager does. */
        reply_int(&r, c->is_replication ? 1 : 0);
    }
    reply_end(&r, "SHOW");
}

/* The snapshot's pool-wide counters and limits, one row. */
void manager_console_snapshot_totals(struct pooler *p, struct console_out *o)
{
    static const char *const cols[] = {
        "taken_ms:q",        "requests_total:q",     "query_time_total_ms:q",
        "created_total:q",   "closed_total:q",       "connect_time_total_ms:q",
        "waiting_clients:q", "wait_time_total_ms:q", "waits_total:q",
        "pool_min:q",        "pool_max:q",           "pool_current:q"};
    struct reply r;
    reply_begin(&r, o, cols, REPLY_COLS(cols));
    const struct snapshot *snap = p->manager ? live_manager_snapshot(p->manager) : NULL;
    if (snap) {
        const struct snapshot_counters *k = &snap->counters;
        const struct snapshot_capacity *cap = &snap->capacity;
        reply_row(&r);
        reply_int(&r, snap->taken_ms);
        reply_int(&r, k->requests_total);
        reply_int(&r, (int64_t)k->query_time_total_ms);
        reply_int(&r, k->created_total);
        reply_int(&r, k->closed_total);
        reply_int(&r, (int64_t)k->connect_time_total_ms);
        reply_int(&r, k->waiting_clients);
        reply_int(&r, (int64_t)k->wait_time_total_ms);
        reply_int(&r, k->waits_total);
        reply_int(&r, cap->pool_min);
        reply_int(&r, cap->pool_max);
        reply_int(&r, cap->pool_current);
    }
    reply_end(&r, "SHOW");
}

/* The manager's per-pool records (limits, contents, rates, quantiles; -1 = no observation),
 * so `--target pgwarden://` analyses what the live manager analyses. */
void manager_console_snapshot_pools(struct pooler *p, struct console_out *o)
{
    static const char *const cols[] = {"database",
                                       "user",
                                       "server",
                                       "pool_mode",
                                       "size:q",
                                       "reserve:q",
                                       "max_size:q",
                                       "server_usable:q",
                                       "cl_active:q",
                                       "cl_waiting:q",
                                       "cl_idle:q",
                                       "sv_active:q",
                                       "sv_idle:q",
                                       "sv_tested:q",
                                       "sv_login:q",
                                       "xacts_per_sec:n",
                                       "queries_per_sec:n",
                                       "servers_opened_per_sec:n",
                                       "servers_closed_per_sec:n",
                                       "bytes_in_per_sec:n",
                                       "bytes_out_per_sec:n",
                                       "avg_xact_ms:n",
                                       "avg_query_ms:n",
                                       "avg_wait_ms:n",
                                       "wait_p95_ms:n",
                                       "wait_p99_ms:n",
                                       "wait_max_ms:n",
                                       "xact_p95_ms:n",
                                       "xact_p99_ms:n",
                                       "query_wait_timeout_ms:q",
                                       "idle_transaction_timeout_ms:q"};
    struct reply r;
    reply_begin(&r, o, cols, REPLY_COLS(cols));
    const struct snapshot *snap = p->manager ? live_manager_snapshot(p->manager) : NULL;
    for (size_t i = 0; snap && i < snap->n_pools; i++) {
        const struct pool_record *pl = &snap->pools[i];
        reply_row(&r);
        reply_text(&r, pl->database);
        reply_text(&r, pl->user);
        reply_text(&r, pl->server);
        reply_text(&r, snapshot_pool_mode_name(pl->mode));
        const int counts[] = {pl->size,      pl->reserve,    pl->max_size, pl->server_usable,
                              pl->cl_active, pl->cl_waiting, pl->cl_idle,  pl->sv_active,
                              pl->sv_idle,   pl->sv_tested,  pl->sv_login};
        for (size_t k = 0; k < sizeof(counts) / sizeof(counts[0]); k++)
            reply_int(&r, counts[k]);
        const double values[] = {pl->xacts_per_sec,
                                 pl->queries_per_sec,
                                 pl->servers_opened_per_sec,
                                 pl->servers_closed_per_sec,
                                 pl->bytes_in_per_sec,
                                 pl->bytes_out_per_sec,
                                 pl->avg_xact_ms,
                                 pl->avg_query_ms,
                                 pl->avg_wait_ms,
                                 pl->wait_p95_ms,
                                 pl->wait_p99_ms,
                                 pl->wait_max_ms,
                                 pl->xact_p95_ms,
                                 pl->xact_p99_ms};
        for (size_t k = 0; k < sizeof(values) / sizeof(values[0]); k++)
            reply_double(&r, values[k], 3);
        reply_int(&r, pl->query_wait_timeout_ms);
        reply_int(&r, pl->idle_transaction_timeout_ms);
    }
    reply_end(&r, "SHOW");
}

/* full-analysis on the live pools: the overall status, then each anomaly and recommendation. */
void manager_console_analysis(struct pooler *p, struct console_out *o)
{
    static const char *const cols[] = {"kind", "code", "severity", "message", "setting"};
    struct reply r;
    reply_begin(&r, o, cols, REPLY_COLS(cols));
    struct live_analysis la;
    if (p->manager && live_manager_analyse(p->manager, &la)) {
        const struct analysis_report *a = &la.analysis;
        char summary[160];
        snprintf(summary, sizeof(summary), "%zu anomal%s, %zu recommendation%s, leak risk %s",
                 a->n_anomalies, a->n_anomalies == 1 ? "y" : "ies", a->n_recommendations,
                 a->n_recommendations == 1 ? "" : "s",
                 a->leaks ? leaks_risk_name(a->leaks->risk_level) : "none");
        reply_row(&r);
        reply_text(&r, "status");
        reply_text(&r, "");
        reply_text(&r, report_status_name(a->status));
        reply_text(&r, summary);
        reply_text(&r, "");
        for (size_t i = 0; i < a->n_anomalies; i++) {
            reply_row(&r);
            reply_text(&r, "anomaly");
            reply_text(&r, a->anomalies[i].code);
            reply_text(&r, report_status_name(a->anomalies[i].severity));
            reply_text(&r, a->anomalies[i].message);
            reply_text(&r, "");
        }
        for (size_t i = 0; i < a->n_recommendations; i++) {
            reply_row(&r);
            reply_text(&r, "recommendation");
            reply_text(&r, "");
            reply_text(&r, report_status_name(a->recommendations[i].severity));
            reply_text(&r, a->recommendations[i].message);
            reply_text(&r, a->recommendations[i].setting);
        }
        live_manager_analysis_free(&la);
    }
    reply_end(&r, "SHOW");
}

void manager_console_health(struct pooler *p, struct console_out *o)
{
    static const char *const cols[] = {
        "database",        "user",   "servers:q", "idle:q", "probes:q", "failed:q", "recent:q",
        "recent_failed:q", "avg_ms", "p95_ms",    "max_ms", "status",   "reason",   "last_error"};
    struct reply r;
    reply_begin(&r, o, cols, REPLY_COLS(cols));
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
        reply_row(&r);
        reply_text(&r, pool->db_name);
        reply_text(&r, pool->user_name);
        reply_int(&r, pool->n_servers);
        reply_int(&r, (int64_t)plist_count(&pool->idle_servers));
        reply_int(&r, pool->probes.total);
        reply_int(&r, pool->probes.failed);
        reply_int(&r, h ? h->total_checked : 0);
        reply_int(&r, h ? h->unhealthy : 0);
        reply_text(&r, avg);
        reply_text(&r, p95);
        reply_text(&r, max);
        reply_text(&r, h ? report_status_name(h->status) : "unknown");
        reply_text(&r, h ? h->reason : "not checked yet");
        reply_text(&r, pool->probes.last_error);
    }
    reply_end(&r, "SHOW");
}

static void manager_row(void *ctx, const char *key, const char *value)
{
    struct reply *r = ctx;
    reply_row(r);
    reply_text(r, key);
    reply_text(r, value);
}

/* The [manager] settings in force, in a form the CLI can apply to its own runs. */
void manager_console_settings(struct pooler *p, struct console_out *o)
{
    static const char *const cols[] = {"key", "value"};
    struct reply r;
    reply_begin(&r, o, cols, 2);
    options_each_value(&p->cfg->manager, manager_row, &r);
    reply_row(&r);
    reply_text(&r, "leak_reclaim");
    reply_text(&r, reclaim_level_name(p->cfg->manager.leak_reclaim));
    reply_end(&r, "SHOW");
}

/* ---- manager actions: KILL_IDLE, HEALTH_CHECK, AUTO_SCALE ---- */

static void kill_idle_rows(struct pooler *p, struct console_out *o, bool execute)
{
    static const char *const cols[] = {"client",      "pid:q",    "user",   "database",
                                       "application", "idle_s:q", "result", "reason"};
    struct kill_plan plan;
    if (!p->manager || !live_manager_kill_idle(p->manager, execute, &plan)) {
        reply_error(o, "53200", "out of memory planning kill-idle");
        return;
    }
    struct reply r;
    reply_begin(&r, o, cols, REPLY_COLS(cols));
    for (size_t i = 0; i < plan.n_actions; i++) {
        const struct kill_action *a = &plan.actions[i];
        char id[32];
        snprintf(id, sizeof(id), "c%lld", (long long)a->conn->id);
        reply_row(&r);
        reply_text(&r, id);
        reply_int(&r, a->conn->pid);
        reply_text(&r, a->conn->user);
        reply_text(&r, a->conn->database);
        reply_text(&r, a->conn->application);
        reply_int(&r, a->idle_ms / 1000);
        reply_text(&r, reaper_kill_result_name(a->result));
        reply_text(&r, a->reason);
    }
    reaper_kill_plan_free(&plan);
    reply_end(&r, "KILL_IDLE");
}

void manager_console_kill_idle(struct pooler *p, const char *sql, struct console_out *o)
{
    (void)sql;
    kill_idle_rows(p, o, true);
}

void manager_console_kill_idle_dry_run(struct pooler *p, struct console_out *o)
{
    kill_idle_rows(p, o, false);
}

void manager_console_health_check(struct pooler *p, const char *sql, struct console_out *o)
{
    (void)sql;
    static const char *const cols[] = {"probes_sent:q"};
    struct reply r;
    reply_begin(&r, o, cols, 1);
    reply_row(&r);
    reply_int(&r, p->manager ? live_manager_health_check(p->manager) : 0);
    reply_end(&r, "HEALTH_CHECK");
}

void manager_console_auto_scale(struct pooler *p, const char *sql, struct console_out *o)
{
    (void)sql;
    if (p->manager)
        live_manager_auto_scale(p->manager, true);
    manager_console_scaling(p, o);
}

void manager_console_auto_scale_dry_run(struct pooler *p, struct console_out *o)
{
    if (p->manager)
        live_manager_auto_scale(p->manager, false);
    manager_console_scaling(p, o);
}
