/* Engine reports to JSON with cJSON. Durations are milliseconds (`*_ms`), rates per second,
 * percentages 0-100; unknown values are null rather than a made-up number. */
#include "cli/report_json.h"

#include "common/timestamp.h"

#include <math.h>
#include <stdio.h>

static void add_number_or_null(cJSON *obj, const char *name, double value, bool known)
{
    if (known && isfinite(value))
        cJSON_AddNumberToObject(obj, name, value);
    else
        cJSON_AddNullToObject(obj, name);
}

/* Rounds to 2 decimals so JSON stays readable without pretending to more precision. */
static double round2(double v)
{
    return round(v * 100.0) / 100.0;
}

static void add_ms(cJSON *obj, const char *name, double ms)
{
    add_number_or_null(obj, name, round2(ms), ms >= 0);
}

static void add_epoch_ms_as_iso(cJSON *obj, const char *name, int64_t ms)
{
    if (ms <= 0) {
        cJSON_AddNullToObject(obj, name);
        return;
    }
    char buf[40];
    timestamp_format_iso(ms, buf, sizeof(buf));
    cJSON_AddStringToObject(obj, name, buf);
}

cJSON *report_json_connection(const struct snapshot *snap, const struct conn_record *rec)
{
    cJSON *c = cJSON_CreateObject();
    cJSON_AddNumberToObject(c, "id", (double)rec->id);
    add_number_or_null(c, "pid", rec->pid, rec->pid > 0);
    cJSON_AddStringToObject(c, "user", rec->user);
    cJSON_AddStringToObject(c, "database", rec->database);
    cJSON_AddStringToObject(c, "application", rec->application);
    cJSON_AddStringToObject(c, "client_addr", rec->client_addr);
    cJSON_AddStringToObject(c, "state", snapshot_conn_state_name(rec->state));
    add_epoch_ms_as_iso(c, "connected_at", rec->connected_ms);
    cJSON_AddNumberToObject(c, "held_ms", (double)snapshot_age_ms(snap, rec->connected_ms));
    cJSON_AddNumberToObject(c, "state_ms", (double)snapshot_age_ms(snap, rec->state_change_ms));
    add_number_or_null(c, "xact_age_ms", (double)snapshot_age_ms(snap, rec->xact_start_ms),
                       rec->xact_start_ms > 0);
    cJSON_AddStringToObject(c, "wait_event_type", snapshot_str(rec->wait_event_type));
    cJSON_AddBoolToObject(c, "blocking_others", rec->blocking_others);
    cJSON_AddBoolToObject(c, "superuser", rec->is_superuser);
    cJSON_AddBoolToObject(c, "self", rec->is_self);
    cJSON_AddStringToObject(c, "last_query", rec->visible ? snapshot_str(rec->last_query) : "");
    return c;
}

cJSON *report_json_pool(const struct pool_record *pl)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "database", pl->database);
    cJSON_AddStringToObject(o, "user", pl->user);
    cJSON_AddStringToObject(o, "server", pl->server);
    cJSON_AddStringToObject(o, "pool_mode", snapshot_pool_mode_name(pl->mode));
    cJSON_AddNumberToObject(o, "size", pl->size);
    cJSON_AddNumberToObject(o, "reserve", pl->reserve);
    cJSON_AddNumberToObject(o, "max_size", pl->max_size);
    add_number_or_null(o, "server_usable_slots", pl->server_usable, pl->server_usable > 0);
    cJSON *cl = cJSON_AddObjectToObject(o, "clients");
    cJSON_AddNumberToObject(cl, "active", pl->cl_active);
    cJSON_AddNumberToObject(cl, "waiting", pl->cl_waiting);
    cJSON_AddNumberToObject(cl, "idle", pl->cl_idle);
    cJSON *sv = cJSON_AddObjectToObject(o, "servers");
    cJSON_AddNumberToObject(sv, "active", pl->sv_active);
    cJSON_AddNumberToObject(sv, "idle", pl->sv_idle);
    cJSON_AddNumberToObject(sv, "tested", pl->sv_tested);
    cJSON_AddNumberToObject(sv, "login", pl->sv_login);
    cJSON *rate = cJSON_AddObjectToObject(o, "per_sec");
    cJSON_AddNumberToObject(rate, "transactions", round2(pl->xacts_per_sec));
    cJSON_AddNumberToObject(rate, "queries", round2(pl->queries_per_sec));
    cJSON_AddNumberToObject(rate, "servers_opened", round2(pl->servers_opened_per_sec));
    cJSON_AddNumberToObject(rate, "servers_closed", round2(pl->servers_closed_per_sec));
    cJSON_AddNumberToObject(rate, "bytes_in", round2(pl->bytes_in_per_sec));
    cJSON_AddNumberToObject(rate, "bytes_out", round2(pl->bytes_out_per_sec));
    cJSON *t = cJSON_AddObjectToObject(o, "timing_ms");
    add_ms(t, "avg_transaction", pl->avg_xact_ms);
    add_ms(t, "avg_query", pl->avg_query_ms);
    add_ms(t, "avg_wait", pl->avg_wait_ms);
    add_ms(t, "wait_p95", pl->wait_p95_ms);
    add_ms(t, "wait_p99", pl->wait_p99_ms);
    add_ms(t, "wait_max", pl->wait_max_ms);
    add_ms(t, "transaction_p95", pl->xact_p95_ms);
    add_ms(t, "transaction_p99", pl->xact_p99_ms);
    return o;
}

cJSON *report_json_stats(const struct stats_report *stats, const struct snapshot *snap,
                         const struct manager_options *opts)
{
    cJSON *data = cJSON_CreateObject();
    cJSON *conns = cJSON_AddObjectToObject(data, "connections");
    cJSON_AddNumberToObject(conns, "total", stats->total);
    cJSON_AddNumberToObject(conns, "active", stats->active);
    cJSON_AddNumberToObject(conns, "idle", stats->idle);
    cJSON_AddNumberToObject(conns, "idle_in_transaction", stats->idle_in_transaction);
    cJSON_AddNumberToObject(conns, "waiting", stats->waiting);
    cJSON_AddNumberToObject(conns, "broken", stats->broken);
    add_number_or_null(conns, "max", stats->max, stats->max > 0);
    add_number_or_null(data, "utilization_pct", round2(stats->utilization_pct), stats->max > 0);

    cJSON *tp = cJSON_AddObjectToObject(data, "throughput");
    add_number_or_null(tp, "requests_per_sec", round2(stats->requests_per_sec), stats->have_rates);
    add_number_or_null(tp, "created_per_sec", round2(stats->created_per_sec), stats->have_rates);
    add_number_or_null(tp, "closed_per_sec", round2(stats->closed_per_sec), stats->have_rates);
    add_number_or_null(tp, "interval_s", round2(stats->interval_s), stats->have_rates);

    cJSON *timing = cJSON_AddObjectToObject(data, "timing");
    add_ms(timing, "avg_connect_ms", stats->avg_connect_ms);
    add_ms(timing, "avg_query_ms", stats->avg_query_ms);
    add_ms(timing, "avg_wait_ms", stats->avg_wait_ms);
    cJSON_AddNumberToObject(timing, "oldest_connection_ms", (double)stats->oldest_connection_ms);
    cJSON_AddNumberToObject(timing, "longest_transaction_ms",
                            (double)stats->longest_transaction_ms);
    cJSON_AddNumberToObject(timing, "longest_idle_ms", (double)stats->longest_idle_ms);

    cJSON *apps = cJSON_AddArrayToObject(data, "by_application");
    for (size_t i = 0; i < stats->n_applications; i++) {
        const struct app_stats *a = &stats->by_application[i];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "application", a->application);
        cJSON_AddNumberToObject(o, "total", a->total);
        cJSON_AddNumberToObject(o, "active", a->active);
        cJSON_AddNumberToObject(o, "idle", a->idle);
        cJSON_AddNumberToObject(o, "idle_in_transaction", a->idle_in_transaction);
        cJSON_AddItemToArray(apps, o);
    }
    if (snap != NULL) {
        cJSON *list = cJSON_AddArrayToObject(data, "connection_list");
        for (size_t i = 0; i < snap->n_conns; i++) {
            if (options_match_filters(opts, &snap->conns[i]))
                cJSON_AddItemToArray(list, report_json_connection(snap, &snap->conns[i]));
        }
        cJSON *server = cJSON_AddObjectToObject(data, "server");
        cJSON_AddNumberToObject(server, "max_connections", snap->capacity.max_connections);
        cJSON_AddNumberToObject(server, "superuser_reserved_connections",
                                snap->capacity.superuser_reserved);
        cJSON_AddNumberToObject(server, "reserved_connections", snap->capacity.reserved);
        cJSON_AddNumberToObject(server, "usable_connections", snap->capacity.usable);
        cJSON_AddBoolToObject(server, "in_recovery", snap->server.in_recovery);
        cJSON_AddBoolToObject(server, "can_read_all_stats", snap->server.can_read_all);
        cJSON_AddNumberToObject(server, "invisible_rows", snap->server.invisible_rows);
        cJSON_AddNumberToObject(server, "non_client_backends", snap->server.non_client_backends);
        if (snap->mode == SNAPSHOT_MODE_SERVE) {
            /* A pooler's capacity is its pools' sizes (summed over pools), not server slots. */
            cJSON *pool = cJSON_AddObjectToObject(data, "pool");
            cJSON_AddNumberToObject(pool, "min_size", snap->capacity.pool_min);
            cJSON_AddNumberToObject(pool, "max_size", snap->capacity.pool_max);
            cJSON_AddNumberToObject(pool, "current_size", snap->capacity.pool_current);
            cJSON_AddNumberToObject(pool, "waiting_clients", snap->counters.waiting_clients);
            cJSON *pools = cJSON_AddArrayToObject(data, "pools");
            for (size_t i = 0; i < snap->n_pools; i++)
                cJSON_AddItemToArray(pools, report_json_pool(&snap->pools[i]));
        }
    }
    return data;
}

cJSON *report_json_leaks(const struct leak_report *leaks, const struct snapshot *snap)
{
    cJSON *data = cJSON_CreateObject();
    cJSON_AddBoolToObject(data, "detected", leaks->detected);
    cJSON_AddNumberToObject(data, "confidence", leaks->confidence);
    cJSON_AddStringToObject(data, "risk_level", leaks_risk_name(leaks->risk_level));
    cJSON_AddNumberToObject(data, "utilization_pct", round2(leaks->utilization_pct));
    cJSON_AddNumberToObject(data, "total_suspected", (double)leaks->total_suspected);
    cJSON *list = cJSON_AddArrayToObject(data, "suspected_connections");
    for (size_t i = 0; i < leaks->total_suspected; i++) {
        const struct leak_suspect *s = &leaks->suspects[i];
        const struct conn_record *rec = s->conn;
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "id", (double)rec->id);
        add_number_or_null(o, "pid", rec->pid, rec->pid > 0);
        cJSON_AddStringToObject(o, "user", rec->user);
        cJSON_AddStringToObject(o, "database", rec->database);
        cJSON_AddStringToObject(o, "application", rec->application);
        cJSON_AddStringToObject(o, "client_addr", rec->client_addr);
        cJSON_AddStringToObject(o, "state", snapshot_conn_state_name(rec->state));
        cJSON_AddNumberToObject(o, "held_ms", (double)s->held_ms);
        cJSON_AddNumberToObject(o, "idle_ms", (double)s->idle_ms);
        cJSON_AddNumberToObject(o, "xact_age_ms", (double)s->xact_age_ms);
        cJSON_AddNumberToObject(o, "score", s->score);
        cJSON *reasons = cJSON_AddArrayToObject(o, "reasons");
        for (size_t r = 0; r < s->n_reasons; r++)
            cJSON_AddItemToArray(reasons, cJSON_CreateString(s->reasons[r]));
        cJSON_AddStringToObject(o, "last_query", rec->visible ? snapshot_str(rec->last_query) : "");
        if (rec->backend_start_text && rec->backend_start_text[0])
            cJSON_AddStringToObject(o, "backend_start", rec->backend_start_text);
        cJSON_AddItemToArray(list, o);
    }
    cJSON *growth = cJSON_AddArrayToObject(data, "growing_applications");
    for (size_t i = 0; i < leaks->n_growth; i++) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "application", leaks->growth[i].application);
        cJSON_AddStringToObject(o, "user", leaks->growth[i].user);
        cJSON_AddNumberToObject(o, "before", leaks->growth[i].before);
        cJSON_AddNumberToObject(o, "after", leaks->growth[i].after);
        cJSON_AddItemToArray(growth, o);
    }
    cJSON_AddStringToObject(data, "recommendation", leaks->recommendation);
    (void)snap;
    return data;
}

cJSON *report_json_health(const struct health_report *health, const struct health_probe *probes,
                          size_t n_probes)
{
    cJSON *data = cJSON_CreateObject();
    cJSON_AddNumberToObject(data, "total_checked", health->total_checked);
    cJSON_AddNumberToObject(data, "healthy", health->healthy);
    cJSON_AddNumberToObject(data, "unhealthy", health->unhealthy);
    cJSON_AddNumberToObject(data, "avg_latency_ms", round2(health->avg_latency_ms));
    cJSON_AddNumberToObject(data, "p95_latency_ms", round2(health->p95_latency_ms));
    cJSON_AddNumberToObject(data, "max_latency_ms", round2(health->max_latency_ms));
    cJSON_AddNumberToObject(data, "failure_rate", round(health->failure_rate * 10000) / 10000);
    cJSON_AddStringToObject(data, "status", report_status_name(health->status));
    cJSON_AddStringToObject(data, "verdict", health->reason);
    cJSON *headroom = cJSON_AddObjectToObject(data, "headroom");
    add_number_or_null(headroom, "used_slots", health->used_slots, health->used_slots >= 0);
    add_number_or_null(headroom, "usable_slots", health->usable_slots, health->usable_slots >= 0);
    add_number_or_null(headroom, "free_slots", health->free_slots, health->free_slots >= 0);
    cJSON_AddBoolToObject(data, "in_recovery", health->in_recovery);
    cJSON *checks = cJSON_AddArrayToObject(data, "checks");
    for (size_t i = 0; i < n_probes; i++) {
        const struct health_probe *p = &probes[i];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "id", (double)p->id);
        cJSON_AddBoolToObject(o, "healthy", p->healthy);
        cJSON_AddNumberToObject(o, "latency_ms", round2(p->latency_ms));
        add_number_or_null(o, "connect_ms", round2(p->connect_ms), p->connect_ms > 0);
        add_number_or_null(o, "query_ms", round2(p->query_ms), p->healthy);
        if (p->healthy) {
            cJSON_AddNullToObject(o, "error");
        } else {
            cJSON_AddStringToObject(o, "error", p->error);
            cJSON_AddStringToObject(o, "error_class", p->error_class);
            if (p->sqlstate[0])
                cJSON_AddStringToObject(o, "sqlstate", p->sqlstate);
        }
        cJSON_AddItemToArray(checks, o);
    }
    return data;
}

cJSON *report_json_scaling(const struct scaling_decision *scaling)
{
    cJSON *data = cJSON_CreateObject();
    cJSON_AddNumberToObject(data, "min_size", scaling->min_size);
    cJSON_AddNumberToObject(data, "max_size", scaling->max_size);
    cJSON_AddNumberToObject(data, "current_size", scaling->current_size);
    cJSON_AddNumberToObject(data, "target_size", scaling->target_size);
    cJSON_AddNumberToObject(data, "growth_rate", scaling->growth_rate);
    cJSON_AddNumberToObject(data, "shrink_rate", scaling->shrink_rate);
    cJSON_AddStringToObject(data, "decision", scaling_verdict_name(scaling->decision));
    cJSON_AddStringToObject(data, "reason", scaling->reason);
    cJSON_AddBoolToObject(data, "applied", scaling->applied);
    cJSON_AddNumberToObject(data, "observed_concurrency", round2(scaling->observed_concurrency));
    cJSON_AddNumberToObject(data, "peak_busy", scaling->peak_busy);
    add_number_or_null(data, "server_budget", scaling->server_budget, scaling->server_budget >= 0);
    return data;
}

cJSON *report_json_kill_plan(const struct kill_plan *plan, const struct snapshot *snap)
{
    cJSON *data = cJSON_CreateObject();
    cJSON_AddBoolToObject(data, "dry_run", plan->dry_run);
    cJSON_AddNumberToObject(data, "candidates", (double)plan->candidates);
    cJSON_AddNumberToObject(data, "killed", (double)plan->killed);
    cJSON_AddNumberToObject(data, "skipped", (double)plan->skipped);
    cJSON_AddNumberToObject(data, "limit", plan->limit);
    cJSON_AddNumberToObject(data, "client_connections", plan->client_connections);
    cJSON_AddNumberToObject(data, "hidden", (double)plan->hidden);
    cJSON *actions = cJSON_AddArrayToObject(data, "actions");
    for (size_t i = 0; i < plan->n_actions; i++) {
        const struct kill_action *a = &plan->actions[i];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "id", (double)a->conn->id);
        add_number_or_null(o, "pid", a->conn->pid, a->conn->pid > 0);
        cJSON_AddStringToObject(o, "user", a->conn->user);
        cJSON_AddStringToObject(o, "application", a->conn->application);
        cJSON_AddStringToObject(o, "state", snapshot_conn_state_name(a->conn->state));
        cJSON_AddNumberToObject(o, "idle_ms", (double)a->idle_ms);
        cJSON_AddStringToObject(o, "result", reaper_kill_result_name(a->result));
        cJSON_AddStringToObject(o, "reason", a->reason);
        cJSON_AddItemToArray(actions, o);
    }
    (void)snap;
    return data;
}

cJSON *report_json_analysis(const struct analysis_report *analysis, const struct snapshot *snap,
                            const struct health_probe *probes, size_t n_probes,
                            const struct manager_options *opts)
{
    cJSON *data = cJSON_CreateObject();
    cJSON_AddItemToObject(data, "statistics", report_json_stats(analysis->stats, NULL, opts));
    cJSON_AddItemToObject(data, "leaks", report_json_leaks(analysis->leaks, snap));
    if (analysis->health != NULL)
        cJSON_AddItemToObject(data, "health",
                              report_json_health(analysis->health, probes, n_probes));
    else
        cJSON_AddNullToObject(data, "health");
    cJSON_AddItemToObject(data, "scaling", report_json_scaling(analysis->scaling));
    cJSON_AddItemToObject(data, "idle", report_json_kill_plan(analysis->idle, snap));
    cJSON *anomalies = cJSON_AddArrayToObject(data, "anomalies");
    for (size_t i = 0; i < analysis->n_anomalies; i++) {
        const struct anomaly *a = &analysis->anomalies[i];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "code", a->code);
        cJSON_AddStringToObject(o, "severity", report_status_name(a->severity));
        cJSON_AddStringToObject(o, "message", a->message);
        cJSON_AddItemToArray(anomalies, o);
    }
    cJSON *recs = cJSON_AddArrayToObject(data, "recommendations");
    for (size_t i = 0; i < analysis->n_recommendations; i++) {
        const struct recommendation *r = &analysis->recommendations[i];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "severity", report_status_name(r->severity));
        cJSON_AddStringToObject(o, "message", r->message);
        if (r->setting[0])
            cJSON_AddStringToObject(o, "setting", r->setting);
        else
            cJSON_AddNullToObject(o, "setting");
        cJSON_AddItemToArray(recs, o);
    }
    cJSON_AddBoolToObject(data, "has_leak_risk", analysis->has_leak_risk);
    cJSON_AddStringToObject(data, "status", report_status_name(analysis->status));
    return data;
}
