/* monitor: counts by state, utilisation, rates from two snapshots, timing, per application. */
#ifndef PGWARDEN_MANAGER_STATS_H
#define PGWARDEN_MANAGER_STATS_H

#include <stdbool.h>
#include <stddef.h>

#include "manager/options.h"
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

    bool have_rates; /* false with a single snapshot or a zero/negative interval */
    double interval_s;
    double requests_per_sec; /* transactions/s (commit + rollback, or pool requests) */
    double created_per_sec;
    double closed_per_sec;

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

/* prev may be NULL (no rates). Returns false only when memory runs out. */
bool stats_compute(const struct snapshot *prev, const struct snapshot *cur,
                   const struct manager_options *opts, struct stats_report *out)
    __attribute__((warn_unused_result));
void stats_report_free(struct stats_report *report);

#endif
