/* health-check: summarises probe results (latency percentiles, failure rate) and the
 * server's connection headroom. Probing itself is the source's job (inspect/probe.c,
 * the pool's checker in serve mode). */
#ifndef PGWARDEN_MANAGER_HEALTH_H
#define PGWARDEN_MANAGER_HEALTH_H

#include <stdbool.h>
#include <stddef.h>

#include "manager/options.h"
#include "manager/report.h"
#include "manager/snapshot.h"

struct health_probe {
    int64_t id;
    bool healthy;
    double latency_ms; /* connect + query; for failures, time until the failure */
    double connect_ms;
    double query_ms;
    char error[256];      /* "" when healthy; never contains a password */
    char error_class[32]; /* db_slots_exhausted, auth, network, timeout, admin_shutdown, ... */
    char sqlstate[6];
};

struct health_report {
    int total_checked;
    int healthy;
    int unhealthy;
    double avg_latency_ms;
    double p95_latency_ms;
    double max_latency_ms;
    double failure_rate; /* 0.0-1.0 */
    /* Headroom, from the snapshot when one was taken (-1 = unknown). */
    int used_slots;
    int usable_slots;
    int free_slots;
    bool in_recovery;
    enum report_status status;
    /* Why this status, in words, without the status name: "1 of 5 probes failed". */
    char reason[256];
};

/* snap may be NULL (server unreachable): headroom fields are then -1. Latency statistics
 * cover every probe with a finite, non-negative latency, failed ones included; p95 is the
 * nearest rank (the ceil(0.95 n)-th smallest). Status: critical when every probe failed or no
 * usable slot is free; warning on any failure, recovery, or < 10% free slots; with no probes
 * only the headroom decides. */
void health_summarize(const struct health_probe *probes, size_t n_probes,
                      const struct snapshot *snap, const struct manager_options *opts,
                      struct health_report *out);

/* Classifies a connection/query failure by SQLSTATE and message (reference: inspect.md 2.5).
 * Returns a static string: db_slots_exhausted (53300, every "remaining connection slots are
 * reserved" variant), connection_limit ("too many connections for role/database", which is
 * also 53300 but a per-role/database limit), pooler_clients_exhausted (EMAXCONN,
 * EMAXCONNSESSION, "Max client connections reached"), auth (28P01, 28000), starting_up
 * (57P03), admin_shutdown (57P01, 57P02), idle_in_transaction_timeout (25P03),
 * idle_session_timeout (57P05), timeout, network (08xxx, refused, unresolvable host), or
 * error. Both arguments may be NULL. */
const char *health_classify_error(const char *sqlstate, const char *message);

#endif
