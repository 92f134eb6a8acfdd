/* The implementations of the actions, for both modes (run->source says which); the registry
 * in actions.c points at them. Each fills run->data or run->error, run->verdict and
 * run->exit_code. */
#ifndef PGWARDEN_CLI_INSPECT_ACTIONS_H
#define PGWARDEN_CLI_INSPECT_ACTIONS_H

#include "cli/actions.h"

void inspect_actions_monitor(struct action_run *run);
/* The monitor report from two given snapshots (the registry's watch_report). */
void inspect_actions_monitor_report(struct action_run *run, const struct snapshot *prev,
                                    const struct snapshot *cur);
void inspect_actions_detect_leaks(struct action_run *run);
void inspect_actions_health_check(struct action_run *run);
void inspect_actions_auto_scale(struct action_run *run);
void inspect_actions_kill_idle(struct action_run *run);
void inspect_actions_full_analysis(struct action_run *run);
void inspect_actions_status(struct action_run *run);

#endif
