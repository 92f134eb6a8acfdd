/* monitor: counts by state, utilisation, rates from two snapshots, timing, per application. */
#ifndef PGWARDEN_MANAGER_STATS_H
#define PGWARDEN_MANAGER_STATS_H

#include <stdbool.h>
#include <stddef.h>

#include "manager/options.h"
#include "manager/report.h"
#include "manager/snapshot.h"

struct app_stats {
    char application[SNAPSHOT_NAME_LEN];
    int total;
    int active;
    int idle;
    int idle_in_transaction;
};

struct stats_report {
    /* Counts over the records that pass the filters. */
    int total;
    int active;
    int idle;
    int idle_in_transaction; /* includes "(aborted)" */
    int waiting;             /* queued for a server (serve) or waiting on a lock (inspect) */
    int broken;              /* aborted transactions (inspect) / broken servers (serve) */
    int max;                 /* usable slots (inspect) or pool max (serve); 0 = unknown */
    double utilization_pct;  /* all client connections (unfiltered) / max */
    int in_use;              /* the connections utilisation counts (unfiltered) */

    /* false with a single snapshot, a zero/negative interval (clock went backwards) or a
     * counter that went down (statistics reset); rates are then 0, never negative. */
    bool have_rates;
    bool counters_reset; /* a cumulative counter went down between the snapshots */
    double interval_s;
    double requests_per_sec; /* transactions/s (commit + rollback, or pool requests) */
    double created_per_sec;
    double closed_per_sec; /* inspect: sessions started minus growth in connections */

    /* -1 when the source cannot tell. */
    double avg_connect_ms;
    double avg_query_ms;
    double avg_wait_ms;

    int64_t oldest_connection_ms;
    int64_t longest_transaction_ms;
    int64_t longest_idle_ms;

    struct app_stats *by_application; /* owned, sorted by total desc */
    size_t n_applications;
};

/* Slots utilisation is measured against: usable slots (inspect; derived from
 * max_connections when usable is 0) or the pool max (serve); 0 = unknown. */
int stats_capacity_max(const struct snapshot *snap);
/* Connections using a slot (filters ignored: every one takes a slot) / capacity max, in
 * percent; 0 when the capacity is unknown. Inspect: every connection. Serve: clients linked
 * to a server or queued for one (idle clients without a server use none); above 100 when
 * clients queue. */
double stats_utilization_pct(const struct snapshot *snap);
/* The connections that count as using a slot (see stats_utilization_pct). */
int stats_in_use(const struct snapshot *snap);
/* status --warning/--critical: critical when the critical threshold is reached (at or
 * above), else warning when the warning one is, else ok; a percent threshold needs a known
 * capacity. */
enum report_status stats_threshold_status(const struct stats_report *stats,
                                          const struct options_threshold *warning,
                                          const struct options_threshold *critical);

/* Utilisation at or above this share of the capacity is critical: the next burst of logins
 * is refused. */
#define STATS_UTILIZATION_CRITICAL_PCT 95.0

/* The one utilisation rule of monitor, status and full-analysis: critical at or above
 * STATS_UTILIZATION_CRITICAL_PCT, warning strictly above leak_detection_threshold (the
 * threshold itself is still ok, as for the leak pressure bump), ok below or when the
 * capacity is unknown (max <= 0). */
enum report_status stats_utilization_status(const struct stats_report *stats,
                                            const struct manager_options *opts);

/* prev may be NULL (no rates). Returns false only when memory runs out. */
bool stats_compute(const struct snapshot *prev, const struct snapshot *cur,
                   const struct manager_options *opts, struct stats_report *out)
    __attribute__((warn_unused_result));
void stats_report_free(struct stats_report *report);

#endif
