/* The live manager in the admin console: SHOW LEAKS, EVENTS, SCALING, HEALTH, ANALYSIS,
 * MANAGER, SNAPSHOT, SNAPSHOT_TOTALS, SNAPSHOT_POOLS (read by admin and stats users) and
 * KILL_IDLE, HEALTH_CHECK, AUTO_SCALE (admin users; their DRY RUN forms read only). Columns
 * and meanings: docs/MANAGER.md. Empty tables when the manager is off. */
#ifndef PGWARDEN_ADMIN_MANAGER_CONSOLE_H
#define PGWARDEN_ADMIN_MANAGER_CONSOLE_H

#include "admin/console.h"

struct pooler;

void manager_console_leaks(struct pooler *p, struct console_out *o);
void manager_console_events(struct pooler *p, struct console_out *o);
void manager_console_scaling(struct pooler *p, struct console_out *o);
void manager_console_health(struct pooler *p, struct console_out *o);
void manager_console_analysis(struct pooler *p, struct console_out *o);
void manager_console_settings(struct pooler *p, struct console_out *o);
void manager_console_snapshot(struct pooler *p, struct console_out *o);
void manager_console_snapshot_totals(struct pooler *p, struct console_out *o);
void manager_console_snapshot_pools(struct pooler *p, struct console_out *o);
void manager_console_kill_idle_dry_run(struct pooler *p, struct console_out *o);
void manager_console_auto_scale_dry_run(struct pooler *p, struct console_out *o);
/* Acting commands (sql as typed; no argument is used). */
void manager_console_kill_idle(struct pooler *p, const char *sql, struct console_out *o);
void manager_console_health_check(struct pooler *p, const char *sql, struct console_out *o);
void manager_console_auto_scale(struct pooler *p, const char *sql, struct console_out *o);

#endif
