/* Inspect-mode source: reads pg_stat_activity, pg_stat_database and pg_settings into a
 * snapshot (client backends only; version-gated for PostgreSQL 12-17). */
#ifndef PGWARDEN_INSPECT_COLLECTOR_H
#define PGWARDEN_INSPECT_COLLECTOR_H

#include <libpq-fe.h>
#include <stdbool.h>

#include "inspect/session.h"
#include "manager/options.h"
#include "manager/snapshot.h"

/* Takes one snapshot. Times come from the server's clock (clock_timestamp()), so client and
 * server clock skew never distorts ages. On failure err says why and snap is left empty. */
bool collector_take_snapshot(PGconn *conn, const struct manager_options *opts,
                             struct snapshot *snap, struct inspect_error *err)
    __attribute__((warn_unused_result));

/* Rewrites the name filters and exclusions into the form pg_stat_activity shows, so a name
 * given as the client set it matches its row: application names as the server cleans them
 * (a byte outside printable ASCII becomes '?' before PostgreSQL 16, "\xNN" from 16) and
 * every name cut to 63 bytes at a character boundary. A trailing '*' (prefix match) is kept.
 * Idempotent. A name that cannot be rewritten for lack of memory is left as given. */
void collector_adopt_names(PGconn *conn, struct manager_options *opts);

#endif
