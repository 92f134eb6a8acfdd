/* Output of an action run: the JSON result envelope (DESIGN.md), or a table for people that
 * starts with the one-line verdict. */
#ifndef PGWARDEN_CLI_RENDER_H
#define PGWARDEN_CLI_RENDER_H

#include <stdio.h>

#include "cli/actions.h"

/* Builds the envelope; takes ownership of nothing (data is copied by reference and detached
 * again). Returns a new cJSON owned by the caller. */
cJSON *render_envelope(const struct action_run *run, const char *action_name, const char *timestamp,
                       double duration_ms);
void render_json(const struct action_run *run, const char *action_name, const char *timestamp,
                 double duration_ms, FILE *out);
/* The same envelope on one line (JSON Lines), for a stream of reports such as --watch. */
void render_json_line(const struct action_run *run, const char *action_name, const char *timestamp,
                      double duration_ms, FILE *out);
void render_table(const struct action_run *run, FILE *out, FILE *err);

/* Table renderers of the registry, one per action. */
void render_table_monitor(const struct action_run *run, FILE *out);
void render_table_detect_leaks(const struct action_run *run, FILE *out);
void render_table_health_check(const struct action_run *run, FILE *out);
void render_table_auto_scale(const struct action_run *run, FILE *out);
void render_table_kill_idle(const struct action_run *run, FILE *out);
void render_table_full_analysis(const struct action_run *run, FILE *out);
void render_table_status(const struct action_run *run, FILE *out);

#endif
