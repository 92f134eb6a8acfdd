/* The serve-mode source of the manager: turns the live pools into a struct snapshot (one
 * record per client, pool counters and limits). Reads only what the pool keeps anyway, so
 * sampling costs nothing on the hot path. */
#ifndef PGWARDEN_LIVE_POOL_SOURCE_H
#define PGWARDEN_LIVE_POOL_SOURCE_H

#include <stdbool.h>

#include "manager/health.h"
#include "manager/snapshot.h"
#include "pool/pool.h"

/* The manager's state for a logged-in client. */
enum conn_state pool_source_conn_state(const struct client *c);

/* Whether the client is in the state a snapshot saw (its state_change_ms) and served no
 * request since (its requests): KILL_CLIENT's guard, checked in the loop turn that acts. */
bool pool_source_client_unchanged(const struct client *c, int64_t state_change_ms_seen,
                                  int64_t requests_seen);

/* Appends a record per logged-in client of every pool (only database db when db is not NULL)
 * to snap, which the caller initialised with snapshot_init(SNAPSHOT_MODE_SERVE, ...), and
 * fills counters and capacity. False when memory ran out (snap keeps what was added). */
__attribute__((warn_unused_result)) bool pool_source_fill(const struct pooler *p, const char *db,
                                                          struct snapshot *snap);

/* The pool's recent background probe outcomes as the engine's probe records (at most
 * POOL_PROBE_KEEP, written to out); returns how many. */
size_t pool_source_probes(const struct pool *pool, struct health_probe *out);

/* The same for one pool only (its counters and limits, and its clients' records when
 * with_clients; its pool record tells where they are in snap->conns). */
__attribute__((warn_unused_result)) bool
pool_source_fill_pool(const struct pool *pool, bool with_clients, struct snapshot *snap);

#endif
