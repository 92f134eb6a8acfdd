/* full-analysis: every report plus anomalies, recommendations and an overall status. */
#ifndef PGWARDEN_MANAGER_ANALYSIS_H
#define PGWARDEN_MANAGER_ANALYSIS_H

#include <stdbool.h>
#include <stddef.h>

#include "manager/health.h"
#include "manager/leaks.h"
#include "manager/reaper.h"
#include "manager/report.h"
#include "manager/scaling.h"
#include "manager/stats.h"

#define ANALYSIS_MAX_ITEMS 32

struct anomaly {
    char code[48]; /* e.g. "capacity_near_limit", "idle_in_transaction", "connection_churn" */
    enum report_status severity;
    char message[256];
};

struct recommendation {
    enum report_status severity;
    char message[512];
    char setting[128]; /* e.g. "idle_in_transaction_session_timeout = '60s'" or "" */
};

struct analysis_report {
    /* Inputs, computed by the caller from the same snapshots (borrowed). */
    const struct stats_report *stats;
    const struct leak_report *leaks;
    const struct health_report *health; /* may be NULL */
    const struct scaling_decision *scaling;
    const struct kill_plan *idle;

    struct anomaly anomalies[ANALYSIS_MAX_ITEMS];
    size_t n_anomalies;
    struct recommendation recommendations[ANALYSIS_MAX_ITEMS];
    size_t n_recommendations;
    bool has_leak_risk;
    enum report_status status;
};

/* Fills everything after the input pointers (which it never changes; any may be NULL and is
 * then skipped). Anomaly severity REPORT_OK means "informational". status = the worst
 * severity among anomalies, recommendations and the health status. */
void analysis_run(const struct snapshot *prev, const struct snapshot *cur,
                  const struct manager_options *opts, struct analysis_report *out);

/* The status of one snapshot without probes (the status action): the worse of the
 * utilisation rule (stats_utilization_status, or stats_threshold_status when --warning or
 * --critical is given) and the leak rule (leaks_status), the rules full-analysis applies. */
enum report_status analysis_quick_status(const struct stats_report *stats,
                                         const struct leak_report *leaks,
                                         const struct manager_options *opts);

#endif
