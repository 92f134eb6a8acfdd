/* kill-idle planning: find idle sessions past their timeout, drop the protected ones, order
 * the rest by harm and cut at the per-run percentage limit. */
#include "manager/reaper.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/units.h"

const char *reaper_kill_result_name(enum kill_result result)
{
    switch (result) {
    case KILL_PLANNED:
        return "planned";
    case KILL_TERMINATED:
        return "terminated";
    case KILL_SKIPPED_LIMIT:
        return "skipped_limit";
    case KILL_SKIPPED_PROTECTED:
        return "skipped_protected";
    case KILL_GONE:
        return "gone";
    case KILL_DENIED:
        return "denied";
    case KILL_FAILED:
        return "failed";
    }
    return "unknown";
}

const char *reaper_exclusion(const struct manager_options *opts, const struct conn_record *rec)
{
    if (options_user_excluded(opts, rec->user))
        return "protected: user is excluded (exclude_user)";
    if (options_app_excluded(opts, rec->application))
        return "protected: application is excluded (exclude_app)";
    if (options_addr_excluded(opts, rec->client_addr))
        return "protected: client address is excluded (exclude_addr)";
    return NULL;
}

/* Order: the not-overridable rules first (inspect.md section 6, rule 4), then the configured
 * exclusions. The application_name rule is inspect mode's: there pgwarden's own sessions are
 * rows of pg_stat_activity. In serve mode every record is a pooled client, and the name is
 * the client's choice: honouring it would let any client exempt itself. */
static const char *protection(const struct snapshot *snap, const struct manager_options *opts,
                              const struct conn_record *rec)
{
    if (rec->is_self)
        return "protected: the inspecting session itself";
    if (!rec->visible)
        return "protected: row not visible (insufficient privilege)";
    if (rec->is_superuser)
        return "protected: superuser session";
    if (rec->is_replication)
        return "protected: replication connection (walsender)";
    if (snap->mode != SNAPSHOT_MODE_SERVE && snapshot_is_pgwarden_conn(rec))
        return "protected: a pgwarden connection (application_name starts with "
               "\"" SNAPSHOT_PGWARDEN_APP_PREFIX "\")";
    if (rec->is_infrastructure)
        return "protected: pooler/platform infrastructure connection";
    return reaper_exclusion(opts, rec);
}

static int compare_actions(const void *a, const void *b)
{
    const struct kill_action *x = a;
    const struct kill_action *y = b;
    bool xi = snapshot_conn_state_in_xact(x->conn->state),
         yi = snapshot_conn_state_in_xact(y->conn->state);
    if (xi != yi)
        return xi ? -1 : 1;
    if (x->idle_ms != y->idle_ms)
        return x->idle_ms > y->idle_ms ? -1 : 1;
    if (x->conn->id != y->conn->id)
        return x->conn->id < y->conn->id ? -1 : 1;
    return 0;
}

bool reaper_plan(const struct snapshot *snap, const struct manager_options *opts,
                 struct kill_plan *out)
{
    memset(out, 0, sizeof(*out));
    out->dry_run = !opts->execute;
    out->client_connections = (int)snap->n_conns;
    /* The epsilon absorbs binary noise (e.g. 10% of 30 computing as 2.9999999). */
    double limit = floor(opts->max_kill_percentage * (double)snap->n_conns / 100.0 + 1e-9);
    out->limit = limit > 0 ? (int)limit : 0;
    if (snap->n_conns == 0)
        return true;

    /* Two passes into one array: candidates at the front, protected at the back, so the
     * final order is planned, over-limit, protected without a second allocation. */
    struct kill_action *actions = calloc(snap->n_conns, sizeof(*actions));
    if (actions == NULL)
        return false;
    size_t n_cand = 0, n_prot = 0;
    struct kill_action *prot = calloc(snap->n_conns, sizeof(*prot));
    if (prot == NULL) {
        free(actions);
        return false;
    }
    char a[32], b[32];
    for (size_t i = 0; i < snap->n_conns; i++) {
        const struct conn_record *rec = &snap->conns[i];
        if (!options_match_filters(opts, rec))
            continue;
        /* A hidden row has no state to judge (PostgreSQL shows it NULL), so it is rarely
         * listed; counted so a run that found nothing can say it could not see everything. */
        if (!rec->visible)
            out->hidden++;
        int64_t idle = snapshot_age_ms(snap, rec->state_change_ms);
        int64_t threshold;
        const char *threshold_name;
        if (rec->state == CONN_STATE_IDLE) {
            threshold = opts->idle_timeout_ms;
            threshold_name = "idle_timeout";
        } else if (snapshot_conn_state_in_xact(rec->state)) {
            threshold = opts->leak_hold_threshold_ms;
            threshold_name = "leak_hold_threshold";
        } else {
            continue; /* active, fastpath, waiting, unknown: never targets */
        }
        if (idle <= threshold)
            continue;
        const char *prot_reason = protection(snap, opts, rec);
        struct kill_action *act = prot_reason ? &prot[n_prot++] : &actions[n_cand++];
        act->conn = rec;
        act->idle_ms = idle;
        units_format_duration(idle, a, sizeof(a));
        units_format_duration(threshold, b, sizeof(b));
        if (prot_reason != NULL) {
            act->result = KILL_SKIPPED_PROTECTED;
            snprintf(act->reason, sizeof(act->reason), "%s (%s for %s)", prot_reason,
                     snapshot_conn_state_name(rec->state), a);
        } else if (snapshot_conn_state_in_xact(rec->state)) {
            snprintf(act->reason, sizeof(act->reason),
                     "%s for %s (> %s %s); terminating frees its slot%s",
                     snapshot_conn_state_name(rec->state), a, threshold_name, b,
                     rec->state == CONN_STATE_IDLE_IN_XACT ? " and its locks" : "");
        } else {
            snprintf(act->reason, sizeof(act->reason), "idle for %s (> %s %s)", a, threshold_name,
                     b);
        }
    }
    qsort(actions, n_cand, sizeof(*actions), compare_actions);
    for (size_t i = 0; i < n_cand; i++) {
        if ((int)i < out->limit) {
            actions[i].result = KILL_PLANNED;
        } else {
            actions[i].result = KILL_SKIPPED_LIMIT;
            snprintf(actions[i].reason, sizeof(actions[i].reason),
                     "over the per-run limit of %d (max_kill_percentage %g%% of %d client "
                     "connections); idle for %s",
                     out->limit, opts->max_kill_percentage, out->client_connections,
                     units_format_duration(actions[i].idle_ms, a, sizeof(a)));
        }
    }
    qsort(prot, n_prot, sizeof(*prot), compare_actions);
    memcpy(actions + n_cand, prot, n_prot * sizeof(*prot));
    free(prot);
    out->actions = actions;
    out->n_actions = n_cand + n_prot;
    out->candidates = n_cand;
    out->skipped = n_prot + (n_cand > (size_t)out->limit ? n_cand - (size_t)out->limit : 0);
    return true;
}

void reaper_kill_plan_free(struct kill_plan *plan)
{
    free(plan->actions);
    plan->actions = NULL;
    plan->n_actions = 0;
}
