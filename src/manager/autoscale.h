/* Live auto-scaling policy for `pgwarden serve`: the bounds a pool may move within, and the
 * hysteresis and cooldown that turn a stream of scaling_decide() verdicts (one per manager
 * interval) into few, deliberate resizes. Pure. */
#ifndef PGWARDEN_MANAGER_AUTOSCALE_H
#define PGWARDEN_MANAGER_AUTOSCALE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "manager/options.h"
#include "manager/scaling.h"

/* Consecutive equal verdicts needed before a resize: growing answers queueing quickly,
 * shrinking waits for sustained idleness. */
#define AUTOSCALE_GROW_STREAK   2
#define AUTOSCALE_SHRINK_STREAK 10
/* Intervals to wait after a resize before the next one in the same direction. */
#define AUTOSCALE_GROW_COOLDOWN   2
#define AUTOSCALE_SHRINK_COOLDOWN 10

/* Bounds of a pool whose configured size (default_pool_size / pool_size) is base: from
 * [manager] min_pool_size (at most base) to max_pool_size (at least base), each only when the
 * user set it; unset, that side stays at base, so a PgBouncer config alone never resizes.
 * keep is the pool's PgBouncer min_pool_size (servers kept open even when idle): the pool
 * never shrinks below it (nor below base for it), since a size under it would close the
 * servers the operator asked to keep warm and forbid opening them again. */
void autoscale_bounds(int base, int keep, const struct manager_options *opts, int *lo, int *hi);

/* The server slots one pool may grow into: an equal share of the server's usable slots
 * (max_connections minus reserved) among the pools that use that server, but never less
 * than the pool's configured size (a configuration is not overruled, only growth beyond it
 * is bounded). 0 when the server's slots are unknown. */
int autoscale_fair_share(int usable_slots, int pools_on_server, int configured);

/* One pool's hysteresis state between decisions. */
struct autoscale_state {
    enum scaling_verdict streak_verdict;
    int streak;
    int64_t last_resize_ms; /* 0 = never */
};

/* Feeds one decision; true when it should be applied now. why says what holds it back (or
 * that it goes ahead). interval_ms is the time between decisions. A decision that brings a
 * pool back inside its bounds (d's min_size..max_size, and server_budget when known) goes
 * at once, without streak or cooldown. */
bool autoscale_accept(struct autoscale_state *st, const struct scaling_decision *d, int64_t now_ms,
                      int64_t interval_ms, char *why, size_t why_len);

#endif
