/* auto-scale: a pool size that fits the observed load (Little's law plus headroom), bounded
 * by min/max, the server's usable slots and the growth/shrink step limits. */
#ifndef PGWARDEN_MANAGER_SCALING_H
#define PGWARDEN_MANAGER_SCALING_H

#include <stdbool.h>

#include "manager/options.h"
#include "manager/snapshot.h"

enum scaling_verdict {
    SCALING_HOLD,
    SCALING_GROW,
    SCALING_SHRINK,
};

struct scaling_decision {
    int min_size;
    int max_size;
    int current_size;
    int target_size;
    double growth_rate; /* percent */
    double shrink_rate; /* percent */
    enum scaling_verdict decision;
    double observed_concurrency; /* mean busy connections over the interval (Little's law) */
    int peak_busy;               /* busy connections in the newest snapshot */
    int server_budget;           /* usable slots left for this pool, -1 = unknown */
    bool applied;                /* set by an executor, never by the engine */
    char reason[1024];           /* the arithmetic, in words */
};

/* current_size < 0 means "use the observed size": the pool's current size in serve mode when
 * the snapshot has one, else the client connections that pass the filters.
 * Mean concurrency comes from, in order: the PG14+ session counters (Δ(active_time +
 * idle_in_transaction_time) / Δt, database-wide), the pool totals (λ x W), else the busy
 * connections in cur. target = ceil(max(mean x 1.25, peak_busy)) (+ queued clients in serve),
 * bounded by min/max, by server_budget (usable slots minus connections outside the filters;
 * wins over min) and by one growth/shrink step (floor(current x rate), at least 1; a 0% rate
 * disables that direction). A pool outside [min, max] moves into range in one step. */
void scaling_decide(const struct snapshot *prev, const struct snapshot *cur,
                    const struct manager_options *opts, int current_size,
                    struct scaling_decision *out);
const char *scaling_verdict_name(enum scaling_verdict verdict);

#endif
