/* monitor: counts by state over the filtered records, utilisation over all of them, and rates
 * from the difference of two snapshots (guarded against clock jumps and counter resets). */
#include "manager/stats.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int stats_capacity_max(const struct snapshot *snap)
{
    if (snap->mode == SNAPSHOT_MODE_SERVE)
        return snap->capacity.pool_max > 0 ? snap->capacity.pool_max : 0;
    if (snap->capacity.usable > 0)
        return snap->capacity.usable;
    int derived = snap->capacity.max_connections - snap->capacity.superuser_reserved -
                  snap->capacity.reserved;
    return derived > 0 ? derived : 0;
}

int stats_in_use(const struct snapshot *snap)
{
    size_t using = snap->n_conns;
    if (snap->mode == SNAPSHOT_MODE_SERVE) {
        /* A pooler's clients use its servers only while linked to one or queued for one:
         * many idle clients over few servers is what pooling is for. */
        using = 0;
        for (size_t i = 0; i < snap->n_conns; i++)
            if (snap->conns[i].pid != 0 || snap->conns[i].state == CONN_STATE_WAITING)
                using ++;
    }
    return (int)using;
}

double stats_utilization_pct(const struct snapshot *snap)
{
    int max = stats_capacity_max(snap);
    if (max <= 0)
        return 0.0;
    return (double)stats_in_use(snap) * 100.0 / (double)max;
}

/* One threshold crossed: a count of connections in use, or a share of the capacity. */
static bool crossed(const struct options_threshold *t, const struct stats_report *stats)
{
    if (!t->set)
        return false;
    if (t->percent)
        return stats->max > 0 && stats->utilization_pct >= t->value;
    return (double)stats->in_use >= t->value;
}

enum report_status stats_threshold_status(const struct stats_report *stats,
                                          const struct options_threshold *warning,
                                          const struct options_threshold *critical)
{
    if (crossed(critical, stats))
        return REPORT_CRITICAL;
    if (crossed(warning, stats))
        return REPORT_WARNING;
    return REPORT_OK;
}

enum report_status stats_utilization_status(const struct stats_report *stats,
                                            const struct manager_options *opts)
{
    if (stats->max <= 0)
        return REPORT_OK;
    if (stats->utilization_pct >= STATS_UTILIZATION_CRITICAL_PCT)
        return REPORT_CRITICAL;
    if (stats->utilization_pct > opts->leak_detection_threshold_pct)
        return REPORT_WARNING;
    return REPORT_OK;
}

static int compare_app_name(const void *a, const void *b)
{
    const struct conn_record *ra = *(const struct conn_record *const *)a;
    const struct conn_record *rb = *(const struct conn_record *const *)b;
    return strcmp(ra->application, rb->application);
}

static int compare_app_total(const void *a, const void *b)
{
    const struct app_stats *x = a;
    const struct app_stats *y = b;
    if (x->total != y->total)
        return x->total > y->total ? -1 : 1;
    return strcmp(x->application, y->application);
}

/* Groups filtered records by application: sort pointers by name, then one pass. */
static bool group_by_application(const struct snapshot *cur, const struct manager_options *opts,
                                 struct stats_report *out)
{
    if (cur->n_conns == 0)
        return true;
    const struct conn_record **recs = malloc(cur->n_conns * sizeof(*recs));
    if (recs == NULL)
        return false;
    size_t n = 0;
    for (size_t i = 0; i < cur->n_conns; i++) {
        if (options_match_filters(opts, &cur->conns[i]))
            recs[n++] = &cur->conns[i];
    }
    qsort(recs, n, sizeof(*recs), compare_app_name);
    size_t groups = 0;
    for (size_t i = 0; i < n; i++) {
        if (i == 0 || strcmp(recs[i]->application, recs[i - 1]->application) != 0)
            groups++;
    }
    if (groups > 0) {
        out->by_application = calloc(groups, sizeof(*out->by_application));
        if (out->by_application == NULL) {
            free(recs);
            return false;
        }
    }
    struct app_stats *app = NULL;
    for (size_t i = 0; i < n; i++) {
        if (i == 0 || strcmp(recs[i]->application, recs[i - 1]->application) != 0) {
            app = &out->by_application[out->n_applications++];
            snprintf(app->application, sizeof(app->application), "%s", recs[i]->application);
        }
        app->total++;
        if (recs[i]->state == CONN_STATE_ACTIVE || recs[i]->state == CONN_STATE_FASTPATH)
            app->active++;
        else if (recs[i]->state == CONN_STATE_IDLE)
            app->idle++;
        else if (snapshot_conn_state_in_xact(recs[i]->state))
            app->idle_in_transaction++;
    }
    free(recs);
    if (out->n_applications > 1)
        qsort(out->by_application, out->n_applications, sizeof(*out->by_application),
              compare_app_total);
    return true;
}

/* Difference of a cumulative counter; false when it went down (statistics reset). */
static bool delta_i64(int64_t before, int64_t after, double *out)
{
    if (after < before)
        return false;
    *out = (double)(after - before);
    return true;
}

static void compute_rates(const struct snapshot *prev, const struct snapshot *cur,
                          struct stats_report *out)
{
    if (prev == NULL || cur->taken_ms <= prev->taken_ms)
        return;
    const struct snapshot_counters *a = &prev->counters;
    const struct snapshot_counters *b = &cur->counters;
    double dt = (double)(cur->taken_ms - prev->taken_ms) / 1000.0;
    double requests = 0, created = 0, closed = 0;
    bool ok = true;

    if (a->has_pool_totals && b->has_pool_totals) {
        ok = delta_i64(a->requests_total, b->requests_total, &requests) &&
             delta_i64(a->created_total, b->created_total, &created) &&
             delta_i64(a->closed_total, b->closed_total, &closed);
    } else {
        if (a->has_xacts && b->has_xacts) {
            double commits = 0, rollbacks = 0;
            ok = delta_i64(a->xact_commit, b->xact_commit, &commits) &&
                 delta_i64(a->xact_rollback, b->xact_rollback, &rollbacks);
            requests = commits + rollbacks;
        }
        if (ok && a->has_sessions && b->has_sessions) {
            ok = delta_i64(a->sessions, b->sessions, &created);
            /* PostgreSQL counts sessions started, not ended: what started and is not still
             * here has closed. An estimate, clamped at 0. */
            double grown = (double)cur->n_conns - (double)prev->n_conns;
            closed = created - grown > 0 ? created - grown : 0;
        }
    }
    if (!ok) {
        out->counters_reset = true;
        return;
    }
    out->have_rates = true;
    out->interval_s = dt;
    out->requests_per_sec = requests / dt;
    out->created_per_sec = created / dt;
    out->closed_per_sec = closed / dt;
}

/* Mean of a total over a count, preferring the interval's deltas when both are usable. */
static double mean_over(const struct snapshot *prev, bool use_delta, double total_before,
                        double total_after, int64_t count_before, int64_t count_after)
{
    if (prev != NULL && use_delta && count_after > count_before && total_after >= total_before)
        return (total_after - total_before) / (double)(count_after - count_before);
    if (count_after > 0 && total_after >= 0)
        return total_after / (double)count_after;
    return -1.0;
}

static void compute_timing(const struct snapshot *prev, const struct snapshot *cur,
                           struct stats_report *out)
{
    const struct snapshot_counters *b = &cur->counters;
    const struct snapshot_counters *a = prev ? &prev->counters : b;
    bool delta = out->have_rates;
    out->avg_connect_ms = out->avg_query_ms = out->avg_wait_ms = -1.0;
    if (b->has_pool_totals) {
        bool pd = delta && a->has_pool_totals;
        out->avg_connect_ms =
            mean_over(prev, pd, a->connect_time_total_ms, b->connect_time_total_ms,
                      a->created_total, b->created_total);
        out->avg_query_ms = mean_over(prev, pd, a->query_time_total_ms, b->query_time_total_ms,
                                      a->requests_total, b->requests_total);
        out->avg_wait_ms = mean_over(prev, pd, a->wait_time_total_ms, b->wait_time_total_ms,
                                     a->waits_total, b->waits_total);
    } else if (b->has_sessions && b->has_xacts) {
        /* Active time per transaction approximates the query time a pool would see. */
        bool pd = delta && a->has_sessions && a->has_xacts;
        out->avg_query_ms =
            mean_over(prev, pd, a->active_time_ms, b->active_time_ms,
                      a->xact_commit + a->xact_rollback, b->xact_commit + b->xact_rollback);
    }
}

bool stats_compute(const struct snapshot *prev, const struct snapshot *cur,
                   const struct manager_options *opts, struct stats_report *out)
{
    memset(out, 0, sizeof(*out));
    for (size_t i = 0; i < cur->n_conns; i++) {
        const struct conn_record *rec = &cur->conns[i];
        if (!options_match_filters(opts, rec))
            continue;
        out->total++;
        switch (rec->state) {
        case CONN_STATE_ACTIVE:
        case CONN_STATE_FASTPATH:
            out->active++;
            break;
        case CONN_STATE_IDLE:
            out->idle++;
            break;
        case CONN_STATE_IDLE_IN_XACT_ABORTED:
            /* An aborted transaction is still idle in transaction: count it in both. */
            out->broken++;
            __attribute__((fallthrough));
        case CONN_STATE_IDLE_IN_XACT:
            out->idle_in_transaction++;
            break;
        case CONN_STATE_WAITING:
        case CONN_STATE_OTHER:
            break;
        }
        if (rec->state == CONN_STATE_WAITING || rec->waiting_on_lock)
            out->waiting++;

        int64_t age = snapshot_age_ms(cur, rec->connected_ms);
        if (age > out->oldest_connection_ms)
            out->oldest_connection_ms = age;
        if (rec->xact_start_ms != 0) {
            int64_t xact = snapshot_age_ms(cur, rec->xact_start_ms);
            if (xact > out->longest_transaction_ms)
                out->longest_transaction_ms = xact;
        }
        if (rec->state == CONN_STATE_IDLE || snapshot_conn_state_in_xact(rec->state)) {
            int64_t idle = snapshot_age_ms(cur, rec->state_change_ms);
            if (idle > out->longest_idle_ms)
                out->longest_idle_ms = idle;
        }
    }
    out->max = stats_capacity_max(cur);
    out->utilization_pct = stats_utilization_pct(cur);
    out->in_use = stats_in_use(cur);
    compute_rates(prev, cur, out);
    compute_timing(prev, cur, out);
    if (!group_by_application(cur, opts, out)) {
        stats_report_free(out);
        return false;
    }
    return true;
}

void stats_report_free(struct stats_report *report)
{
    free(report->by_application);
    report->by_application = NULL;
    report->n_applications = 0;
}
