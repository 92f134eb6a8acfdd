/* The action registry. One table: the command line and --help read it, and the HTTP API
 * will dispatch through it too. */
#include <string.h>

#include "cli/actions.h"
#include "cli/inspect_actions.h"
#include "cli/render.h"

static const struct action_def actions[] = {
    {"monitor", "connections by state, utilisation, throughput and timing",
     "Reads pg_stat_activity, pg_stat_database and pg_settings twice, --interval apart, and\n"
     "reports counts by state and application, utilisation of the usable slots, rates and\n"
     "timing, plus one record per connection. Against pgwarden:// it reads the pooler's\n"
     "SHOW SNAPSHOT and SHOW SNAPSHOT_TOTALS instead (utilisation of the pools' sizes).\n"
     "With --watch D it reports again every D over the same connection, rates from the\n"
     "previous report, until Ctrl-C or --count reports. Changes nothing.",
     true, inspect_actions_monitor, render_table_monitor, inspect_actions_monitor_report,
     OPTION_USE_MONITOR},
    {"detect-leaks", "connections that look leaked, with a score and the evidence",
     "Scores every client connection 0-100 from its evidence (idle in transaction versus\n"
     "--leak-hold-threshold, transaction age, connection age, applications whose connection\n"
     "count only grows between the two samples, utilisation versus\n"
     "--leak-detection-threshold) and lists the suspects with their reasons. Changes nothing.",
     true, inspect_actions_detect_leaks, render_table_detect_leaks, NULL, OPTION_USE_DETECT_LEAKS},
    {"health-check", "can we connect and query, how fast, how often it fails",
     "Opens --connections fresh connections in parallel, times the connect and SELECT 1 on\n"
     "each, and reports latency percentiles, the failure rate, connection headroom and\n"
     "whether the server is in recovery. Against pgwarden:// each probe is a fresh admin\n"
     "console login and one SHOW VERSION, one after another. Against an unreachable server\n"
     "it still reports (failure rate 1.0, exit code 2).",
     false, inspect_actions_health_check, render_table_health_check, NULL, OPTION_USE_HEALTH_CHECK},
    {"auto-scale", "the pool size that fits the observed load",
     "Estimates concurrency with Little's law from two samples and proposes a pool size\n"
     "within --min-pool-size/--max-pool-size, the server's usable slots and the\n"
     "--growth-rate/--shrink-rate steps from --current-size (default: observed client\n"
     "connections). It only recommends, in both modes: a pgwarden applies its own manager's\n"
     "decisions.",
     true, inspect_actions_auto_scale, render_table_auto_scale, NULL, OPTION_USE_AUTO_SCALE},
    {"kill-idle", "idle sessions that can go, within the safety limits",
     "Plans by default (dry run). Candidates: sessions idle longer than --idle-timeout and\n"
     "idle in transaction longer than --leak-hold-threshold. Never: this session, superusers,\n"
     "walsenders and other non-client backends, application_name starting with 'pgwarden',\n"
     "known platform roles and applications, or --exclude-user/--exclude-app/--exclude-addr\n"
     "(name rules miss most poolers' server connections: exclude a pooler by address). At most\n"
     "--max-kill-percentage of client connections per run. With --execute it terminates\n"
     "each planned session with a statement that re-checks it is still the same backend in\n"
     "the same idle period (needs superuser or pg_signal_backend; otherwise refused with exit\n"
     "code 4). Against pgwarden:// it closes each planned client with KILL_CLIENT after\n"
     "re-checking it on a newer snapshot (needs a user in admin_users; otherwise refused with\n"
     "exit code 4). Asks on a terminal unless --yes.",
     false, inspect_actions_kill_idle, render_table_kill_idle, NULL, OPTION_USE_KILL_IDLE},
    {"full-analysis", "all of the above plus anomalies and recommendations",
     "Runs monitor, detect-leaks, health-check, auto-scale and a kill-idle plan (never\n"
     "executed) on the same samples, then lists anomalies and recommendations with an overall\n"
     "status. Changes nothing.",
     true, inspect_actions_full_analysis, render_table_full_analysis, NULL,
     OPTION_USE_FULL_ANALYSIS},
    {"status", "one line for a prompt, a cron job or a load balancer",
     "One snapshot, no probes: the verdict line (OK/WARNING/CRITICAL with counts) and the\n"
     "matching exit code.",
     false, inspect_actions_status, render_table_status, NULL, OPTION_USE_STATUS},
    {NULL, NULL, NULL, false, NULL, NULL, NULL, 0},
};

const struct action_def *actions_all(void)
{
    return actions;
}

const struct action_def *actions_find(const char *name)
{
    for (const struct action_def *a = actions; a->name != NULL; a++) {
        if (strcmp(a->name, name) == 0)
            return a;
    }
    return NULL;
}
