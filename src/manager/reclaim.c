/* Graduated leak reclaim decisions. */
#include "manager/reclaim.h"

#include <strings.h>

#include "manager/options.h"
#include "manager/reaper.h"

static const char *const LEVEL_NAMES[RECLAIM_LEVEL_COUNT] = {
    [RECLAIM_OFF] = "off",
    [RECLAIM_NOTICE] = "notice",
    [RECLAIM_CANCEL] = "cancel",
    [RECLAIM_ROLLBACK] = "rollback",
    [RECLAIM_DISCONNECT] = "disconnect",
};

const char *reclaim_level_name(enum reclaim_level level)
{
    return (unsigned)level < RECLAIM_LEVEL_COUNT ? LEVEL_NAMES[level] : "unknown";
}

bool reclaim_level_from_text(const char *text, enum reclaim_level *out)
{
    for (int i = 0; text && i < RECLAIM_LEVEL_COUNT; i++) {
        if (!strcasecmp(text, LEVEL_NAMES[i])) {
            *out = (enum reclaim_level)i;
            return true;
        }
    }
    return false;
}

bool reclaim_step_applies(enum reclaim_level step, enum conn_state state)
{
    switch (step) {
    case RECLAIM_NOTICE:
    case RECLAIM_DISCONNECT:
        return true;
    case RECLAIM_CANCEL:
        return state == CONN_STATE_ACTIVE;
    case RECLAIM_ROLLBACK:
        return snapshot_conn_state_in_xact(state);
    case RECLAIM_OFF:
    case RECLAIM_LEVEL_COUNT:
        break;
    }
    return false;
}

enum reclaim_level reclaim_allowed(const struct manager_options *opts,
                                   const struct conn_record *rec)
{
    if (opts->leak_reclaim > RECLAIM_NOTICE && reaper_exclusion(opts, rec))
        return RECLAIM_NOTICE;
    return opts->leak_reclaim;
}

int64_t reclaim_step_gap_ms(int64_t leak_hold_threshold_ms)
{
    int64_t gap = leak_hold_threshold_ms / 2;
    if (gap < 1000)
        return 1000;
    return gap > 60000 ? 60000 : gap;
}

enum reclaim_level reclaim_next_step(enum reclaim_level allowed, const struct reclaim_track *t,
                                     enum conn_state state, int64_t now_ms, int64_t gap_ms)
{
    if (t->done != RECLAIM_OFF && now_ms - t->last_ms < gap_ms)
        return RECLAIM_OFF;
    for (int step = (int)t->done + 1; step <= (int)allowed && step < RECLAIM_LEVEL_COUNT; step++)
        if (reclaim_step_applies((enum reclaim_level)step, state))
            return (enum reclaim_level)step;
    return RECLAIM_OFF;
}
