/* PgBouncer's SHOW tables, with PgBouncer 1.25's columns, order and types, computed from the
 * live pool objects, so exporters, dashboards and scripts written for PgBouncer read pgwarden
 * unchanged. Read only; no secret (password, auth_file entry, cancel key of another user's
 * session to a stats user) is ever printed. */
#ifndef PGWARDEN_ADMIN_POOLER_TABLES_H
#define PGWARDEN_ADMIN_POOLER_TABLES_H

#include "admin/console.h"

struct pooler;

void pooler_tables_pools(struct pooler *p, struct console_out *o);
void pooler_tables_peer_pools(struct pooler *p, struct console_out *o);
void pooler_tables_stats(struct pooler *p, struct console_out *o);
void pooler_tables_stats_totals(struct pooler *p, struct console_out *o);
void pooler_tables_stats_averages(struct pooler *p, struct console_out *o);
void pooler_tables_totals(struct pooler *p, struct console_out *o);
/* pgwarden's: per pool, servers and clients created and closed, login failures, connect time
 * (microseconds), since start. */
void pooler_tables_pool_counters(struct pooler *p, struct console_out *o);
void pooler_tables_databases(struct pooler *p, struct console_out *o);
void pooler_tables_users(struct pooler *p, struct console_out *o);
void pooler_tables_peers(struct pooler *p, struct console_out *o);
void pooler_tables_clients(struct pooler *p, struct console_out *o);
void pooler_tables_servers(struct pooler *p, struct console_out *o);
void pooler_tables_sockets(struct pooler *p, struct console_out *o);
void pooler_tables_active_sockets(struct pooler *p, struct console_out *o);
void pooler_tables_fds(struct pooler *p, struct console_out *o);
void pooler_tables_lists(struct pooler *p, struct console_out *o);
void pooler_tables_mem(struct pooler *p, struct console_out *o);
void pooler_tables_dns_hosts(struct pooler *p, struct console_out *o);
void pooler_tables_dns_zones(struct pooler *p, struct console_out *o);
void pooler_tables_config(struct pooler *p, struct console_out *o);
void pooler_tables_version(struct pooler *p, struct console_out *o);
void pooler_tables_state(struct pooler *p, struct console_out *o);
/* SHOW HELP: the command list as a NOTICE, as PgBouncer answers. */
void pooler_tables_help(struct pooler *p, struct console_out *o);

#endif
