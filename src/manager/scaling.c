/* auto-scale: Little's law (mean busy = arrival rate x time in system) plus headroom gives the
 * size the load needs; bounds and step limits keep a single decision safe. The reason string
 * replays the arithmetic so an operator can check it by hand. */
#include "manager/scaling.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "manager/stats.h"

#define SCALING_HEADROOM 1.25

static void say(struct scaling_decision *out, size_t *len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void say(struct scaling_decision *out, size_t *len, const char *fmt, ...)
{
    if (*len >= sizeof(out->reason) - 1)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(out->reason + *len, sizeof(out->reason) - *len, fmt, ap);
    va_end(ap);
    if (n > 0)
        *len += (size_t)n;
    if (*len > sizeof(out->reason) - 1)
        *len = sizeof(out->reason) - 1;
}

const char *scaling_verdict_name(enum scaling_verdict verdict)
{
    switch (verdict) {
    case SCALING_HOLD:
        return "hold";
    case SCALING_GROW:
        return "grow";
    case SCALING_SHRINK:
        return "shrink";
    }
    return "hold";
}

/* Mean busy connections over the interval; writes how it was obtained into the reason. */
static double mean_concurrency(const struct snapshot *prev, const struct snapshot *cur, int busy,
                               struct scaling_decision *out, size_t *len)
{
    double dt_ms = prev != NULL ? (double)(cur->taken_ms - prev->taken_ms) : 0.0;
    if (prev != NULL && dt_ms > 0) {
        const struct snapshot_counters *a = &prev->counters;
        const struct snapshot_counters *b = &cur->counters;
        if (a->has_sessions && b->has_sessions && b->active_time_ms >= a->active_time_ms &&
            b->idle_in_xact_time_ms >= a->idle_in_xact_time_ms) {
            double busy_ms = (b->active_time_ms - a->active_time_ms) +
                             (b->idle_in_xact_time_ms - a->idle_in_xact_time_ms);
            double mean = busy_ms / dt_ms;
            if (isfinite(mean)) {
                say(out, len,
                    "mean busy %.1f (session counters: %.0f ms active + idle in transaction "
                    "over %.1f s)",
                    mean, busy_ms, dt_ms / 1000.0);
                return mean;
            }
        }
        if (a->has_pool_totals && b->has_pool_totals && b->requests_total >= a->requests_total &&
            b->query_time_total_ms >= a->query_time_total_ms) {
            double requests = (double)(b->requests_total - a->requests_total);
            double lambda = requests / (dt_ms / 1000.0);
            double w_ms =
                requests > 0 ? (b->query_time_total_ms - a->query_time_total_ms) / requests : 0.0;
            double mean = lambda * w_ms / 1000.0;
            if (isfinite(mean)) {
                say(out, len, "mean busy %.1f (Little's law: %.1f tx/s x %.1f ms)", mean, lambda,
                    w_ms);
                return mean;
            }
        }
    }
    say(out, len, "mean busy %d (busy connections now; no usable rates)", busy);
    return (double)busy;
}

void scaling_decide(const struct snapshot *prev, const struct snapshot *cur,
                    const struct manager_options *opts, int current_size,
                    struct scaling_decision *out)
{
    memset(out, 0, sizeof(*out));
    size_t len = 0;
    out->min_size = opts->min_pool_size;
    out->max_size = opts->max_pool_size;
    if (out->min_size > out->max_size)
        out->min_size = out->max_size; /* options_validate reports this; stay sane anyway */
    out->growth_rate = opts->growth_rate_pct;
    out->shrink_rate = opts->shrink_rate_pct;

    int observed = 0, busy = 0, waiting_records = 0, others = 0;
    for (size_t i = 0; i < cur->n_conns; i++) {
        const struct conn_record *rec = &cur->conns[i];
        /* The inspecting session and other pools' connections take slots but are not load. */
        if (rec->is_self || !options_match_filters(opts, rec)) {
            others++;
            continue;
        }
        observed++;
        switch (rec->state) {
        case CONN_STATE_ACTIVE:
        case CONN_STATE_FASTPATH:
        case CONN_STATE_IDLE_IN_XACT:
        case CONN_STATE_IDLE_IN_XACT_ABORTED:
            busy++;
            break;
        case CONN_STATE_WAITING:
            busy++;
            waiting_records++;
            break;
        case CONN_STATE_IDLE:
        case CONN_STATE_OTHER:
            break;
        }
    }
    out->peak_busy = busy;
    if (current_size < 0)
        current_size = (cur->mode == SNAPSHOT_MODE_SERVE && cur->capacity.pool_current > 0)
                           ? cur->capacity.pool_current
                           : observed;
    out->current_size = current_size;

    double mean = mean_concurrency(prev, cur, busy, out, &len);
    if (!(mean >= 0))
        mean = 0;
    out->observed_concurrency = mean;
    double with_headroom = mean * SCALING_HEADROOM;
    double need = with_headroom > busy ? with_headroom : (double)busy;
    /* The epsilon keeps 4.0000000001 (float noise) from becoming 5. */
    int target = (int)ceil(need - 1e-9);
    say(out, &len, " x %.2f headroom = %.1f; peak busy %d -> %d", SCALING_HEADROOM, with_headroom,
        busy, target);
    if (cur->mode == SNAPSHOT_MODE_SERVE) {
        int queued = cur->counters.waiting_clients - waiting_records;
        if (queued > 0) {
            target += queued;
            say(out, &len, "; + %d queued clients -> %d", queued, target);
        }
    }

    int lo = out->min_size, hi = out->max_size;
    out->server_budget = -1;
    int usable = stats_capacity_max(cur);
    if (cur->mode == SNAPSHOT_MODE_SERVE)
        usable = cur->capacity.usable;
    /* In serve mode the records are one pool's clients, not connections on the server (the
     * other pools are in capacity.usable already, a fair share of the slots): a client the
     * filters leave out takes no slot. Subtracting it shrank a pool with enough such clients
     * to 0, where every client queues. */
    int taken = cur->mode == SNAPSHOT_MODE_SERVE ? 0 : others;
    if (usable > 0) {
        out->server_budget = usable > taken ? usable - taken : 0;
        if (out->server_budget < hi)
            hi = out->server_budget;
        if (lo > hi)
            lo = hi; /* the server cannot give even the minimum: the budget wins */
    }
    if (target < lo) {
        target = lo;
        say(out, &len, "; bounded to min %d", lo);
    }
    if (target > out->max_size) {
        target = out->max_size;
        say(out, &len, "; bounded to max %d", target);
    }
    if (out->server_budget >= 0 && target > out->server_budget) {
        target = out->server_budget;
        say(out, &len, "; bounded to server budget %d (%d usable slots - %d other connections)",
            target, usable, taken);
    }

    int desired = target;
    say(out, &len, "; current %d", current_size);
    if (desired > current_size) {
        int step = opts->growth_rate_pct > 0
                       ? (int)floor((double)current_size * opts->growth_rate_pct / 100.0 + 1e-9)
                       : 0;
        if (opts->growth_rate_pct > 0 && step < 1)
            step = 1;
        int allowed = current_size + step;
        if (allowed < lo)
            allowed = lo; /* below the minimum: reach it in one step */
        if (allowed < desired) {
            target = allowed;
            say(out, &len, ", growth step %.0f%% allows %d", opts->growth_rate_pct, allowed);
        }
    } else if (desired < current_size) {
        int step = opts->shrink_rate_pct > 0
                       ? (int)floor((double)current_size * opts->shrink_rate_pct / 100.0 + 1e-9)
                       : 0;
        if (opts->shrink_rate_pct > 0 && step < 1)
            step = 1;
        int allowed = current_size - step;
        if (allowed > hi)
            allowed = hi; /* above the maximum or the budget: get back in one step */
        if (allowed > desired) {
            target = allowed;
            say(out, &len, ", shrink step %.0f%% allows %d", opts->shrink_rate_pct, allowed);
        }
    }
    out->target_size = target;
    if (target > current_size)
        out->decision = SCALING_GROW;
    else if (target < current_size)
        out->decision = SCALING_SHRINK;
    else
        out->decision = SCALING_HOLD;
    say(out, &len, " -> target %d (%s)", target, scaling_verdict_name(out->decision));
}
