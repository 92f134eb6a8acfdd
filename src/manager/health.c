/* health-check summary: latency over every probe (failed probes included, since a probe that
 * times out is exactly the slowness we want to see), failure rate, and slot headroom. */
#include "manager/health.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "manager/stats.h"

/* Below this share of free usable slots the server is one burst away from refusing logins. */
#define HEALTH_LOW_HEADROOM_PCT 10.0

static int compare_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

void health_summarize(const struct health_probe *probes, size_t n_probes,
                      const struct snapshot *snap, const struct manager_options *opts,
                      struct health_report *out)
{
    memset(out, 0, sizeof(*out));
    out->used_slots = out->usable_slots = out->free_slots = -1;

    double *lat = n_probes ? malloc(n_probes * sizeof(*lat)) : NULL;
    size_t n_lat = 0;
    double sum = 0.0;
    for (size_t i = 0; i < n_probes; i++) {
        out->total_checked++;
        if (probes[i].healthy)
            out->healthy++;
        else
            out->unhealthy++;
        double l = probes[i].latency_ms;
        if (!isfinite(l) || l < 0)
            continue; /* a probe that never measured its latency */
        sum += l;
        if (l > out->max_latency_ms)
            out->max_latency_ms = l;
        if (lat != NULL)
            lat[n_lat++] = l;
    }
    if (n_lat > 0) {
        out->avg_latency_ms = sum / (double)n_lat;
        qsort(lat, n_lat, sizeof(*lat), compare_double);
        /* Nearest rank: the smallest latency with at least 95% of probes at or below it. */
        size_t rank = (size_t)ceil(0.95 * (double)n_lat);
        out->p95_latency_ms = lat[rank > 0 ? rank - 1 : 0];
    }
    free(lat);
    if (out->total_checked > 0)
        out->failure_rate = (double)out->unhealthy / (double)out->total_checked;

    if (snap != NULL) {
        out->used_slots = (int)snap->n_conns;
        out->in_recovery = snap->server.in_recovery;
        int usable = snap->capacity.usable;
        if (usable <= 0 && snap->mode == SNAPSHOT_MODE_INSPECT)
            usable = stats_capacity_max(snap);
        if (usable > 0) {
            out->usable_slots = usable;
            out->free_slots = usable > out->used_slots ? usable - out->used_slots : 0;
        }
    }

    const char *why = "all probes succeeded";
    char buf[128];
    out->status = REPORT_OK;
    if (out->total_checked == 0)
        why = "no probes were run";
    if (out->unhealthy > 0) {
        out->status = REPORT_WARNING;
        snprintf(buf, sizeof(buf), "%d of %d probes failed", out->unhealthy, out->total_checked);
        why = buf;
    }
    if (out->in_recovery && out->status == REPORT_OK) {
        out->status = REPORT_WARNING;
        why = "the server is a standby in recovery (read-only)";
    }
    if (out->free_slots >= 0 && out->usable_slots > 0 &&
        (double)out->free_slots * 100.0 / out->usable_slots < HEALTH_LOW_HEADROOM_PCT &&
        out->status == REPORT_OK) {
        out->status = REPORT_WARNING;
        snprintf(buf, sizeof(buf), "only %d of %d usable slots are free", out->free_slots,
                 out->usable_slots);
        why = buf;
    }
    if (out->total_checked > 0 && out->healthy == 0) {
        out->status = REPORT_CRITICAL;
        snprintf(buf, sizeof(buf), "every probe failed (%d of %d)", out->unhealthy,
                 out->total_checked);
        why = buf;
    } else if (out->free_slots == 0) {
        out->status = REPORT_CRITICAL;
        snprintf(buf, sizeof(buf), "no free connection slots (%d of %d used)", out->used_slots,
                 out->usable_slots);
        why = buf;
    }
    snprintf(out->reason, sizeof(out->reason), "%s", why);
    (void)opts;
}

static bool contains(const char *haystack, const char *needle)
{
    return haystack != NULL && strcasestr(haystack, needle) != NULL;
}

const char *health_classify_error(const char *sqlstate, const char *message)
{
    const char *s = sqlstate ? sqlstate : "";
    const char *m = message ? message : "";

    /* Role/database connection limits share SQLSTATE 53300 but are not the server's slots. */
    if (contains(m, "too many connections for role") ||
        contains(m, "too many connections for database"))
        return "connection_limit";
    if (strcmp(s, "53300") == 0 || contains(m, "remaining connection slots are reserved") ||
        contains(m, "sorry, too many clients already"))
        return "db_slots_exhausted";
    if (contains(m, "EMAXCONNSESSION") || contains(m, "EMAXCONN") ||
        contains(m, "Max client connections reached"))
        return "pooler_clients_exhausted";
    if (strcmp(s, "28P01") == 0 || strcmp(s, "28000") == 0 ||
        contains(m, "password authentication failed") || contains(m, "no pg_hba.conf entry"))
        return "auth";
    if (strcmp(s, "57P03") == 0 || contains(m, "the database system is starting up"))
        return "starting_up";
    if (strcmp(s, "57P01") == 0 || strcmp(s, "57P02") == 0 ||
        contains(m, "terminating connection due to administrator command"))
        return "admin_shutdown";
    if (strcmp(s, "25P03") == 0)
        return "idle_in_transaction_timeout";
    if (strcmp(s, "57P05") == 0)
        return "idle_session_timeout";
    if (contains(m, "timeout expired") || contains(m, "timed out") ||
        contains(m, "statement timeout"))
        return "timeout";
    if (strncmp(s, "08", 2) == 0 || contains(m, "could not connect") ||
        contains(m, "Connection refused") || contains(m, "could not translate host name") ||
        contains(m, "server closed the connection unexpectedly") ||
        contains(m, "No route to host") || contains(m, "Network is unreachable"))
        return "network";
    return "error";
}
