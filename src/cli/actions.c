/* The action registry. One table: the command line and --help read it, and the HTTP API
 * will dispatch through it too. */
#include <string.h>

#include "cli/action.h"
#include "cli/inspect_actions.h"
#include "cli/render.h"

static const struct action_def actions[] = {
    {"monitor", "connections by state, utilisation, throughput and timing",
     "Reads pg_stat_activity, pg_stat_database and pg_settings twice, --interval apart, and\n"
     "reports counts by state and application, utilisation of the usable slots, rates and\n"
     "timing, plus one record per connection. Changes nothing.",
     true, inspect_action_monitor, render_table_monitor},
    {"detect-leaks", "connections that look leaked, with a score and the evidence",
     "Scores every client connection 0-100 from its evidence (idle in transaction versus\n"
     "--leak-hold-threshold, transaction age, connection age, applications whose connection\n"
     "count only grows between the two samples, utilisation versus\n"
     "--leak-detection-threshold) and lists the suspects with their reasons. Changes nothing.",
     true, inspect_action_detect_leaks, render_table_detect_leaks},
    {"health-check", "can we connect and query, how fast, how often it fails",
     "Opens --connections fresh connections in parallel, times the connect and SELECT 1 on\n"
     "each, and reports latency percentiles, the failure rate, connection headroom and\n"
     "whether the server is in recovery. Against an unreachable server it still reports\n"
     "(failure rate 1.0, exit code 2).",
     false, inspect_action_health_check, render_table_health_check},
    {"auto-scale", "the pool size that fits the observed load",
     "Estimates concurrency with Little's law from two samples and proposes a pool size\n"
     "within --min-pool-size/--max-pool-size, the server's usable slots and the\n"
     "--growth-rate/--shrink-rate steps from --current-size (default: observed client\n"
     "connections). In inspect mode it only recommends.",
     true, inspect_action_auto_scale, render_table_auto_scale},
    {"kill-idle", "idle sessions that can go, within the safety limits",
     "Plans by default (dry run). Candidates: sessions idle longer than --idle-timeout and\n"
     "idle in transaction longer than --leak-hold-threshold. Never: this session, superusers,\n"
     "non-client backends, replication roles, pooler/platform roles and applications, or\n"
     "--exclude-user/--exclude-app. At most --max-kill-percentage of client connections per\n"
     "run. With --execute it terminates each planned session with a statement that re-checks\n"
     "it is still the same backend in the same idle period (needs superuser or\n"
     "pg_signal_backend; otherwise refused with exit code 4). Asks on a terminal unless --yes.",
     false, inspect_action_kill_idle, render_table_kill_idle},
    {"full-analysis", "all of the above plus anomalies and recommendations",
     "Runs monitor, detect-leaks, health-check, auto-scale and a kill-idle plan (never\n"
     "executed) on the same samples, then lists anomalies and recommendations with an overall\n"
     "status. Changes nothing.",
     true, inspect_action_full_analysis, render_table_full_analysis},
    {"status", "one line for a prompt, a cron job or a load balancer",
     "One snapshot, no probes: the verdict line (OK/WARNING/CRITICAL with counts) and the\n"
     "matching exit code.",
     false, inspect_action_status, render_table_status},
    {NULL, NULL, NULL, false, NULL, NULL},
};

const struct action_def *action_all(void)
{
    return actions;
}

const struct action_def *action_find(const char *name)
{
    for (const struct action_def *a = actions; a->name != NULL; a++) {
        if (strcmp(a->name, name) == 0)
            return a;
    }
    return NULL;
}
