/* full-analysis: turns the five reports (and the snapshots behind them) into anomalies and
 * recommendations. Server timeouts are preferred over repeated killing, and a global
 * idle_session_timeout is never recommended: behind a pooler it kills the pool's own idle
 * connections (PostgreSQL docs warning; inspect.md section 6, rule 13). */
#include "manager/analysis.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/units.h"

/* A long transaction holds back vacuum; 5 minutes is where common tools start warning. */
#define LONG_TRANSACTION_MS    (5 * 60 * 1000)
#define CHURN_SESSIONS_PER_SEC 2.0
#define MANY_IDLE_MIN          10
/* Serve mode (pool records). Queueing below this p99 is not worth a resize. */
#define POOL_WAIT_NOTICE_MS 10.0
/* Little's law headroom, as auto-scale uses. */
#define POOL_SIZE_HEADROOM 1.25
/* Clients' p99 wait at this share of query_wait_timeout: the next burst times out. */
#define WAIT_TIMEOUT_SHARE 0.5
/* idle_transaction_timeout suggestion: this many times the p99 transaction, at least 1 s. */
#define IDLE_XACT_TIMEOUT_FACTOR   10.0
#define IDLE_XACT_TIMEOUT_FLOOR_MS 1000
/* A session pool whose servers are busy less than this share of the time would need far
 * fewer servers in transaction pooling. */
#define SESSION_BUSY_SHARE  0.2
#define SESSION_MIN_SERVERS 2

static void add_anomaly(struct analysis_report *out, const char *code, enum report_status severity,
                        const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void add_recommendation(struct analysis_report *out, enum report_status severity,
                               const char *setting, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void add_anomaly(struct analysis_report *out, const char *code, enum report_status severity,
                        const char *fmt, ...)
{
    if (out->n_anomalies >= ANALYSIS_MAX_ITEMS)
        return;
    struct anomaly *a = &out->anomalies[out->n_anomalies++];
    snprintf(a->code, sizeof(a->code), "%s", code);
    a->severity = severity;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(a->message, sizeof(a->message), fmt, ap);
    va_end(ap);
}

static void add_recommendation(struct analysis_report *out, enum report_status severity,
                               const char *setting, const char *fmt, ...)
{
    if (out->n_recommendations >= ANALYSIS_MAX_ITEMS)
        return;
    struct recommendation *r = &out->recommendations[out->n_recommendations++];
    r->severity = severity;
    snprintf(r->setting, sizeof(r->setting), "%s", setting ? setting : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->message, sizeof(r->message), fmt, ap);
    va_end(ap);
}

static void check_capacity(const struct snapshot *cur, const struct manager_options *opts,
                           struct analysis_report *out)
{
    const struct stats_report *st = out->stats;
    bool full = out->health != NULL && out->health->free_slots == 0;
    if (st == NULL || (st->max <= 0 && !full))
        return;
    enum report_status sev = full ? REPORT_CRITICAL : stats_utilization_status(st, opts);
    if (sev == REPORT_CRITICAL) {
        add_anomaly(out, "capacity_at_limit", sev,
                    "%zu client connections use %.0f%% of %d usable slots; new logins will be "
                    "refused",
                    cur->n_conns, st->utilization_pct, st->max);
    } else if (sev == REPORT_WARNING) {
        add_anomaly(out, "capacity_near_limit", sev,
                    "%zu client connections use %.0f%% of %d usable slots (threshold %g%%)",
                    cur->n_conns, st->utilization_pct, st->max, opts->leak_detection_threshold_pct);
    }
    if (sev != REPORT_OK)
        add_recommendation(out, sev, "",
                           "Free connection slots: route clients through a transaction-mode "
                           "pooler or shrink application pools; raising max_connections needs "
                           "a restart and costs memory per connection.");
}

static void check_idle_in_transaction(const struct snapshot *cur,
                                      const struct manager_options *opts,
                                      struct analysis_report *out)
{
    int over = 0;
    int64_t longest = 0;
    for (size_t i = 0; i < cur->n_conns; i++) {
        const struct conn_record *rec = &cur->conns[i];
        /* Only sessions detect-leaks could report: otherwise this anomaly would count
         * sessions the leak report never accounts for. */
        if (!leaks_may_suspect(opts, rec) || !snapshot_conn_state_in_xact(rec->state))
            continue;
        int64_t idle = snapshot_age_ms(cur, rec->state_change_ms);
        if (idle > opts->leak_hold_threshold_ms) {
            over++;
            if (idle > longest)
                longest = idle;
        }
    }
    char a[32], b[32];
    if (over > 0)
        add_anomaly(out, "idle_in_transaction", REPORT_WARNING,
                    "%d session%s idle in transaction longer than %s (longest %s); they hold "
                    "locks and hold back vacuum",
                    over, over == 1 ? "" : "s",
                    units_format_duration(opts->leak_hold_threshold_ms, a, sizeof(a)),
                    units_format_duration(longest, b, sizeof(b)));
    bool leaked_xact = false;
    if (out->leaks != NULL) {
        for (size_t i = 0; i < out->leaks->total_suspected; i++)
            leaked_xact |= snapshot_conn_state_in_xact(out->leaks->suspects[i].conn->state);
    }
    if ((over > 0 || leaked_xact) && cur->server.idle_in_xact_session_timeout_ms == 0) {
        char setting[128];
        snprintf(setting, sizeof(setting), "idle_in_transaction_session_timeout = '%s'",
                 units_format_pg_duration(opts->leak_hold_threshold_ms, a, sizeof(a)));
        add_recommendation(out, REPORT_WARNING, setting,
                           "Set idle_in_transaction_session_timeout (now off) so the server "
                           "ends sessions that leave a transaction open; set it per role with "
                           "ALTER ROLE ... SET if some jobs need longer.");
    }
}

static void check_transactions_and_idle(const struct snapshot *cur,
                                        const struct manager_options *opts,
                                        struct analysis_report *out)
{
    const struct stats_report *st = out->stats;
    if (st == NULL)
        return;
    char a[32];
    if (st->longest_transaction_ms >= LONG_TRANSACTION_MS)
        add_anomaly(out, "long_transaction", REPORT_WARNING,
                    "a transaction has been open for %s; long transactions hold back vacuum",
                    units_format_duration(st->longest_transaction_ms, a, sizeof(a)));
    if (st->idle >= MANY_IDLE_MIN && st->idle * 2 > st->total) {
        bool tight = st->max > 0 && st->utilization_pct > opts->leak_detection_threshold_pct;
        add_anomaly(out, "many_idle_connections", tight ? REPORT_WARNING : REPORT_OK,
                    "%d of %d connections are idle%s", st->idle, st->total,
                    tight ? " while slots are scarce" : "");
        /* Not idle_session_timeout: behind a pooler it would cut the pool's own connections. */
        add_recommendation(out, tight ? REPORT_WARNING : REPORT_OK, "",
                           "Most connections sit idle: lower the application pools' size or "
                           "idle timeout so they return unused connections.");
    }
    (void)cur;
}

static void check_churn(const struct snapshot *prev, const struct snapshot *cur,
                        struct analysis_report *out)
{
    if (prev == NULL || !prev->counters.has_sessions || !cur->counters.has_sessions ||
        cur->taken_ms <= prev->taken_ms)
        return;
    const struct snapshot_counters *a = &prev->counters, *b = &cur->counters;
    double dt = (double)(cur->taken_ms - prev->taken_ms) / 1000.0;
    if (b->sessions >= a->sessions) {
        double rate = (double)(b->sessions - a->sessions) / dt;
        if (rate >= CHURN_SESSIONS_PER_SEC) {
            add_anomaly(out, "connection_churn", REPORT_WARNING,
                        "%.1f new sessions per second; each one costs a backend start", rate);
            add_recommendation(out, REPORT_WARNING, "",
                               "Clients open %.1f sessions a second: route short-lived clients "
                               "(serverless functions, scripts) through a transaction-mode "
                               "pooler.",
                               rate);
        }
    }
    if (b->sessions_abandoned > a->sessions_abandoned) {
        int64_t n = b->sessions_abandoned - a->sessions_abandoned;
        add_anomaly(out, "sessions_abandoned", REPORT_WARNING,
                    "%lld session%s ended because the client connection was lost", (long long)n,
                    n == 1 ? "" : "s");
        if (cur->server.version_num >= 140000)
            add_recommendation(out, REPORT_OK, "client_connection_check_interval = '10s'",
                               "Clients vanish without closing: enable "
                               "client_connection_check_interval and TCP keepalives so the "
                               "server notices dead clients sooner.");
    }
}

static void check_health(const struct snapshot *cur, struct analysis_report *out)
{
    const struct health_report *h = out->health;
    if (h != NULL && h->unhealthy > 0) {
        bool all = h->healthy == 0;
        add_anomaly(out, "health_failures", all ? REPORT_CRITICAL : REPORT_WARNING,
                    "%d of %d health probes failed (%.0f%%)", h->unhealthy, h->total_checked,
                    h->failure_rate * 100.0);
    }
    if (cur->server.in_recovery)
        add_anomaly(out, "in_recovery", REPORT_WARNING,
                    "the server is a standby in recovery: read-only, writes will fail");
}

static void check_visibility(const struct snapshot *cur, struct analysis_report *out)
{
    int hidden = 0;
    for (size_t i = 0; i < cur->n_conns; i++)
        hidden += !cur->conns[i].visible;
    if (cur->server.invisible_rows > hidden)
        hidden = cur->server.invisible_rows;
    if (hidden == 0)
        return;
    add_anomaly(out, "insufficient_privilege", REPORT_WARNING,
                "%d session%s hidden from this role (<insufficient privilege>); their states "
                "are unknown",
                hidden, hidden == 1 ? " is" : "s are");
    add_recommendation(out, REPORT_WARNING, "",
                       "Grant pg_read_all_stats to the inspecting role (GRANT pg_read_all_stats "
                       "TO <role>) so every session can be analysed.");
}

static void check_leaks(struct analysis_report *out)
{
    const struct leak_report *lk = out->leaks;
    if (lk == NULL)
        return;
    out->has_leak_risk = lk->detected || lk->n_growth > 0;
    for (size_t i = 0; i < lk->n_growth; i++) {
        const struct leak_growth *g = &lk->growth[i];
        add_anomaly(out, "connection_growth", REPORT_WARNING,
                    "application '%s' (user '%s') grew from %d to %d connections and closed "
                    "none",
                    g->application, g->user, g->before, g->after);
    }
    if (lk->detected) {
        enum report_status sev = leaks_status(lk);
        add_anomaly(out, "connection_leak", sev,
                    "%zu suspected leaked connection%s (confidence %d, risk %s)",
                    lk->total_suspected, lk->total_suspected == 1 ? "" : "s", lk->confidence,
                    leaks_risk_name(lk->risk_level));
        add_recommendation(out, sev, "", "%s", lk->recommendation);
    }
}

static void check_actions(const struct snapshot *cur, struct analysis_report *out)
{
    const struct scaling_decision *sc = out->scaling;
    if (sc != NULL && sc->decision != SCALING_HOLD) {
        char setting[128] = "";
        if (cur->mode == SNAPSHOT_MODE_SERVE)
            snprintf(setting, sizeof(setting), "default_pool_size = %d", sc->target_size);
        add_recommendation(out, REPORT_OK, setting, "%s the pool from %d to %d: %s",
                           sc->decision == SCALING_GROW ? "Grow" : "Shrink", sc->current_size,
                           sc->target_size, sc->reason);
    }
    const struct kill_plan *idle = out->idle;
    if (idle != NULL && idle->dry_run && idle->candidates > 0) {
        size_t now =
            idle->candidates < (size_t)idle->limit ? idle->candidates : (size_t)idle->limit;
        add_recommendation(out, REPORT_OK, "",
                           "%zu idle session%s can be reclaimed: run kill-idle with --execute "
                           "(it terminates at most %zu this run).",
                           idle->candidates, idle->candidates == 1 ? "" : "s", now);
    }
}

/* ---- serve mode: what the pooler sees per pool ---- */

static int compare_pool_server(const void *a, const void *b)
{
    return strcmp((*(const struct pool_record *const *)a)->server,
                  (*(const struct pool_record *const *)b)->server);
}

/* Pools that together may open more connections than their server has usable slots: at a
 * burst some of them fail their logins. */
static void check_pools_vs_server(const struct snapshot *cur, struct analysis_report *out)
{
    if (cur->n_pools == 0)
        return;
    const struct pool_record **by_server = malloc(cur->n_pools * sizeof(*by_server));
    if (by_server == NULL)
        return; /* an advisory check: skipped when memory is short */
    for (size_t i = 0; i < cur->n_pools; i++)
        by_server[i] = &cur->pools[i];
    qsort(by_server, cur->n_pools, sizeof(*by_server), compare_pool_server);
    for (size_t i = 0; i < cur->n_pools;) {
        size_t end = i;
        int most = 0, usable = 0;
        while (end < cur->n_pools && strcmp(by_server[end]->server, by_server[i]->server) == 0) {
            most += by_server[end]->max_size + by_server[end]->reserve;
            if (by_server[end]->server_usable > usable)
                usable = by_server[end]->server_usable;
            end++;
        }
        if (usable > 0 && most > usable) {
            add_anomaly(out, "pools_exceed_server", REPORT_WARNING,
                        "the %zu pool%s on server %s may open %d connections; it has %d usable "
                        "slots",
                        end - i, end - i == 1 ? "" : "s", by_server[i]->server, most, usable);
            add_recommendation(out, REPORT_WARNING, "",
                               "Pools on %s may open %d connections but the server takes %d: "
                               "lower their pool_size/reserve_pool (or [manager] "
                               "max_pool_size), or cap them with max_db_connections, so a burst "
                               "does not end in refused logins.",
                               by_server[i]->server, most, usable);
        }
        i = end;
    }
    free(by_server);
}

/* Clients that queue: a size from Little's law (busy servers = transactions/s x mean
 * transaction time, plus headroom), and a warning when the queueing nears
 * query_wait_timeout. */
static void check_pool_queueing(const struct pool_record *pl, struct analysis_report *out)
{
    char a[32], b[32];
    if (pl->query_wait_timeout_ms > 0 && pl->wait_p99_ms >= 0 &&
        pl->wait_p99_ms >= WAIT_TIMEOUT_SHARE * (double)pl->query_wait_timeout_ms)
        add_anomaly(out, "wait_near_timeout", REPORT_WARNING,
                    "clients of pool %s/%s wait up to %s (p99) for a server; query_wait_timeout "
                    "%s ends their queries",
                    pl->database, pl->user,
                    units_format_duration((int64_t)pl->wait_p99_ms, a, sizeof(a)),
                    units_format_duration(pl->query_wait_timeout_ms, b, sizeof(b)));
    if (pl->wait_p99_ms < POOL_WAIT_NOTICE_MS || pl->xacts_per_sec <= 0 || pl->avg_xact_ms <= 0)
        return;
    double busy = pl->xacts_per_sec * pl->avg_xact_ms / 1000.0;
    int need = (int)ceil(busy * POOL_SIZE_HEADROOM);
    if (need <= pl->size)
        return;
    char setting[128];
    snprintf(setting, sizeof(setting), "pool_size = %d", need);
    add_recommendation(out, REPORT_WARNING, setting,
                       "Pool %s/%s queues clients (p99 wait %.0f ms): %.1f tx/s x %.1f ms per "
                       "transaction keeps %.1f servers busy (Little's law); with %.0f%% headroom "
                       "it needs %d, it has %d.%s",
                       pl->database, pl->user, pl->wait_p99_ms, pl->xacts_per_sec, pl->avg_xact_ms,
                       busy, (POOL_SIZE_HEADROOM - 1.0) * 100.0, need, pl->size,
                       pl->max_size > pl->size ? " Auto-scaling may grow it up to max_pool_size."
                                               : "");
}

/* A session pool whose servers mostly sit idle under their clients: transaction pooling
 * would serve the same clients with fewer servers, if they keep no session state. */
static void check_session_pool(const struct pool_record *pl, struct analysis_report *out)
{
    if (pl->mode != SNAPSHOT_POOL_SESSION || pl->sv_active < SESSION_MIN_SERVERS ||
        pl->queries_per_sec <= 0)
        return;
    double share = pl->queries_per_sec * pl->avg_query_ms / 1000.0 / (double)pl->sv_active;
    if (share >= SESSION_BUSY_SHARE)
        return;
    add_recommendation(
        out, REPORT_OK, "pool_mode = transaction",
        "Pool %s/%s runs in session mode and its %d linked servers are busy %.0f%% "
        "of the time: if its clients keep no session state (SET, LISTEN, session "
        "advisory locks, temporary tables, WITH HOLD cursors), transaction "
        "pooling serves them with about %d.",
        pl->database, pl->user, pl->sv_active, share * 100.0,
        (int)ceil(pl->queries_per_sec * pl->avg_query_ms / 1000.0 * POOL_SIZE_HEADROOM));
}

/* idle_transaction_timeout off: suggest one from the observed transaction times, so a
 * client that leaves a transaction open gives its server back on its own. */
static void check_idle_transaction_timeout(const struct snapshot *cur, struct analysis_report *out)
{
    double p99 = -1;
    for (size_t i = 0; i < cur->n_pools; i++) {
        if (cur->pools[i].idle_transaction_timeout_ms > 0)
            return; /* set already (one setting for every pool) */
        if (cur->pools[i].xact_p99_ms > p99)
            p99 = cur->pools[i].xact_p99_ms;
    }
    if (p99 < 0)
        return;
    int64_t ms = (int64_t)ceil(p99 * IDLE_XACT_TIMEOUT_FACTOR);
    if (ms < IDLE_XACT_TIMEOUT_FLOOR_MS)
        ms = IDLE_XACT_TIMEOUT_FLOOR_MS;
    int64_t seconds = (ms + 999) / 1000;
    char setting[128], a[32];
    snprintf(setting, sizeof(setting), "idle_transaction_timeout = %lld", (long long)seconds);
    add_recommendation(out, REPORT_OK, setting,
                       "idle_transaction_timeout is off: transactions take up to %s (p99 over "
                       "the recent stats periods), so %llds (%.0fx that, at least 1 s) ends "
                       "only clients that left a transaction open.",
                       units_format_duration((int64_t)ceil(p99), a, sizeof(a)), (long long)seconds,
                       IDLE_XACT_TIMEOUT_FACTOR);
}

static void check_pools(const struct snapshot *cur, struct analysis_report *out)
{
    check_pools_vs_server(cur, out);
    for (size_t i = 0; i < cur->n_pools; i++) {
        check_pool_queueing(&cur->pools[i], out);
        check_session_pool(&cur->pools[i], out);
    }
    check_idle_transaction_timeout(cur, out);
}

enum report_status analysis_quick_status(const struct stats_report *stats,
                                         const struct leak_report *leaks,
                                         const struct manager_options *opts)
{
    bool thresholds = opts->status_warning.set || opts->status_critical.set;
    enum report_status use =
        thresholds ? stats_threshold_status(stats, &opts->status_warning, &opts->status_critical)
                   : stats_utilization_status(stats, opts);
    return report_status_worse(use, leaks_status(leaks));
}

void analysis_run(const struct snapshot *prev, const struct snapshot *cur,
                  const struct manager_options *opts, struct analysis_report *out)
{
    out->n_anomalies = 0;
    out->n_recommendations = 0;
    out->has_leak_risk = false;
    out->status = REPORT_OK;
    memset(out->anomalies, 0, sizeof(out->anomalies));
    memset(out->recommendations, 0, sizeof(out->recommendations));

    check_capacity(cur, opts, out);
    check_leaks(out);
    check_idle_in_transaction(cur, opts, out);
    check_transactions_and_idle(cur, opts, out);
    check_churn(prev, cur, out);
    check_health(cur, out);
    check_visibility(cur, out);
    check_actions(cur, out);
    check_pools(cur, out);

    enum report_status status = out->health != NULL ? out->health->status : REPORT_OK;
    for (size_t i = 0; i < out->n_anomalies; i++)
        status = report_status_worse(status, out->anomalies[i].severity);
    for (size_t i = 0; i < out->n_recommendations; i++)
        status = report_status_worse(status, out->recommendations[i].severity);
    out->status = status;
}
