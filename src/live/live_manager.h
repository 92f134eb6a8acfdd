/* The live manager: the engine (src/manager) run inside `pgwarden serve` on the pools it owns.
 * Every second it takes a snapshot of the pools (live/pool_source), runs detect-leaks on it,
 * logs each new suspect once, takes the graduated reclaim steps `leak_reclaim` allows
 * (live/pool_executor), resizes pools within their bounds (manager/autoscale), probes idle
 * servers every health_check_interval, and records every decision and action as an event. The
 * console and the HTTP API read its latest results; nothing here runs on the per-message path. */
#ifndef PGWARDEN_LIVE_LIVE_MANAGER_H
#define PGWARDEN_LIVE_LIVE_MANAGER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "manager/analysis.h"
#include "manager/events.h"
#include "manager/health.h"
#include "manager/leaks.h"
#include "manager/reaper.h"
#include "manager/reclaim.h"
#include "manager/scaling.h"
#include "manager/snapshot.h"
#include "pool/pool.h"

/* How often the manager looks at the pools. */
#define LIVE_MANAGER_PERIOD_MS 1000

struct live_manager;

/* Starts the periodic runs on p's loop. NULL when memory runs out. */
struct live_manager *live_manager_new(struct pooler *p);
void live_manager_free(struct live_manager *m);
/* pool is about to be freed (an auto-database unused for autodb_idle_timeout): what the
 * manager keeps about it goes. */
void live_manager_forget_pool(struct live_manager *m, const struct pool *pool);

/* One run now (the timer calls this; tests and commands may too). */
void live_manager_run(struct live_manager *m);

/* Results of the latest run, valid until the next one. The report's suspects point into
 * the snapshot. */
const struct snapshot *live_manager_snapshot(const struct live_manager *m);
/* The run before the latest (rates), or NULL before the second run. */
const struct snapshot *live_manager_prev_snapshot(const struct live_manager *m);
const struct leak_report *live_manager_leaks(const struct live_manager *m);
/* The furthest reclaim step taken on a client so far (RECLAIM_OFF: none). */
enum reclaim_level live_manager_reclaim_done(const struct live_manager *m, int64_t client_id);
const struct event_ring *live_manager_events(const struct live_manager *m);

/* kill-idle on the live pools: plans with the engine's reaper (idle clients past
 * idle_timeout, clients idle in a transaction past leak_hold_threshold, within
 * max_kill_percentage) on a fresh snapshot, and with execute disconnects the planned clients.
 * Every planned or taken action is an event. False when memory ran out. The plan's records
 * point into the manager's snapshot (valid until the next run); free it with reaper_kill_plan_free.
 */
bool live_manager_kill_idle(struct live_manager *m, bool execute, struct kill_plan *out);

/* One auto-scaling decision per pool now, without hysteresis or cooldown; applied when apply
 * (whatever auto_scaling says), else recorded as a recommendation. Results show in
 * live_manager_pool_at. */
void live_manager_auto_scale(struct live_manager *m, bool apply);
/* Probes every idle server now; returns how many probes were sent (their outcomes arrive
 * later). */
int live_manager_health_check(struct live_manager *m);

/* The latest auto-scaling decision (every `interval`, at least every second) and health
 * summary (every health_check_interval) of a pool. */
struct live_pool_view {
    const struct pool *pool;
    const struct scaling_decision *decision;
    int lo, hi;                         /* the pool's bounds (autoscale_bounds) */
    const char *hold;                   /* why it was or was not applied */
    const struct health_report *health; /* latest health summary, NULL before the first */
};
/* The recent probe outcomes of every pool, ids numbered across pools; *out is owned by the
 * caller (free), NULL when there are none or memory ran out. */
size_t live_manager_probes(const struct live_manager *m, struct health_probe **out);

/* full-analysis on the live pools: every report of the engine on the latest run's
 * snapshots, then the analysis of them all (the console's SHOW ANALYSIS and the API). */
struct live_analysis {
    const struct snapshot *cur, *prev; /* borrowed from the manager */
    struct stats_report stats;
    struct kill_plan idle; /* dry run */
    struct health_probe *probes;
    size_t n_probes;
    struct health_report health;
    struct scaling_decision scaling;
    struct analysis_report analysis;
};
/* False before the manager's first run or when memory ran out (nothing to free then). */
bool live_manager_analyse(const struct live_manager *m, struct live_analysis *out)
    __attribute__((warn_unused_result));
void live_manager_analysis_free(struct live_analysis *a);

size_t live_manager_pool_count(const struct live_manager *m);
bool live_manager_pool_at(const struct live_manager *m, size_t i, struct live_pool_view *out);

#endif
