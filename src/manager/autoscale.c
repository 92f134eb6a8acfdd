/* Bounds, hysteresis and cooldown for live auto-scaling. */
#include "manager/autoscale.h"

#include <stdio.h>

void autoscale_bounds(int base, int keep, const struct manager_options *opts, int *lo, int *hi)
{
    *lo = base;
    *hi = base;
    if (options_is_set(opts, "min_pool_size") && opts->min_pool_size < base)
        *lo = opts->min_pool_size;
    if (*lo < keep)
        *lo = keep < base ? keep : base;
    if (options_is_set(opts, "max_pool_size") && opts->max_pool_size > base)
        *hi = opts->max_pool_size;
}

int autoscale_fair_share(int usable_slots, int pools_on_server, int configured)
{
    if (usable_slots <= 0)
        return 0;
    int share = usable_slots / (pools_on_server > 0 ? pools_on_server : 1);
    return share > configured ? share : configured;
}

bool autoscale_accept(struct autoscale_state *st, const struct scaling_decision *d, int64_t now_ms,
                      int64_t interval_ms, char *why, size_t why_len)
{
    if (d->decision == SCALING_HOLD || d->target_size == d->current_size) {
        st->streak = 0;
        st->streak_verdict = SCALING_HOLD;
        snprintf(why, why_len, "hold");
        return false;
    }
    /* Hysteresis waits out load that comes and goes; a pool outside its bounds (a RELOAD
     * lowered max_pool_size or raised min_pool_size, more pools now share the server) is
     * not load: confirming it over ten intervals let a lowered maximum be exceeded all that
     * time. The decision's target is inside the bounds, so it goes at once. */
    int hi =
        d->server_budget >= 0 && d->server_budget < d->max_size ? d->server_budget : d->max_size;
    int lo = d->min_size < hi ? d->min_size : hi;
    if ((d->decision == SCALING_SHRINK && d->current_size > hi) ||
        (d->decision == SCALING_GROW && d->current_size < lo)) {
        st->last_resize_ms = now_ms;
        st->streak = 0;
        st->streak_verdict = SCALING_HOLD;
        snprintf(why, why_len, "size %d outside the bounds %d..%d: %s at once", d->current_size, lo,
                 hi, scaling_verdict_name(d->decision));
        return true;
    }
    if (d->decision != st->streak_verdict) {
        st->streak_verdict = d->decision;
        st->streak = 0;
    }
    st->streak++;
    bool grow = d->decision == SCALING_GROW;
    int need = grow ? AUTOSCALE_GROW_STREAK : AUTOSCALE_SHRINK_STREAK;
    int64_t cooldown = (grow ? AUTOSCALE_GROW_COOLDOWN : AUTOSCALE_SHRINK_COOLDOWN) * interval_ms;
    if (st->streak < need) {
        snprintf(why, why_len, "%s seen %d of %d times in a row", scaling_verdict_name(d->decision),
                 st->streak, need);
        return false;
    }
    if (st->last_resize_ms && now_ms - st->last_resize_ms < cooldown) {
        snprintf(why, why_len, "cooling down: last resize %.1f s ago, %s waits %.1f s",
                 (double)(now_ms - st->last_resize_ms) / 1000.0, scaling_verdict_name(d->decision),
                 (double)cooldown / 1000.0);
        return false;
    }
    st->last_resize_ms = now_ms;
    st->streak = 0;
    snprintf(why, why_len, "%s confirmed %d times in a row", scaling_verdict_name(d->decision),
             need);
    return true;
}
