/* Hand-built snapshots shared by the manager unit tests (header-only: each test_*.c is its
 * own executable). Times are relative to FX_NOW so ages read as plain seconds. */
#ifndef PGWARDEN_TEST_MANAGER_FIXTURE_H
#define PGWARDEN_TEST_MANAGER_FIXTURE_H

#include <stdio.h>
#include <string.h>

#include "manager/options.h"
#include "manager/snapshot.h"

#define FX_NOW  1700000000000LL
#define FX_S(s) ((int64_t)(s)*1000)

/* An inspect snapshot of a server with max_connections 100, 3 reserved: 97 usable. */
static inline void fx_snapshot(struct snapshot *snap, enum snapshot_mode mode, int64_t taken)
{
    snapshot_init(snap, mode, taken);
    snap->capacity.max_connections = 100;
    snap->capacity.superuser_reserved = 3;
    snap->capacity.usable = 97;
    snap->server.version_num = 160000;
    snap->server.can_read_all = true;
}

/* A visible client connection in `state` for `in_state_s` seconds, connected `age_s` ago. */
static inline struct conn_record *fx_conn_at(struct snapshot *snap, int64_t id, const char *user,
                                             const char *app, enum conn_state state,
                                             int64_t in_state_s, int64_t age_s)
{
    struct conn_record *rec = snapshot_add_conn(snap);
    if (rec == NULL)
        return NULL;
    rec->id = id;
    rec->pid = (int32_t)id;
    rec->user = snapshot_name(snap, user, SNAPSHOT_NAME_LEN);
    rec->database = snapshot_name(snap, "appdb", SNAPSHOT_NAME_LEN);
    rec->application = snapshot_name(snap, app, SNAPSHOT_NAME_LEN);
    rec->state = state;
    rec->connected_ms = snap->taken_ms - FX_S(age_s);
    rec->state_change_ms = snap->taken_ms - FX_S(in_state_s);
    rec->query_start_ms = rec->state_change_ms;
    if (snapshot_conn_state_in_xact(state))
        rec->xact_start_ms = rec->state_change_ms;
    else if (state == CONN_STATE_ACTIVE)
        rec->xact_start_ms = rec->state_change_ms;
    return rec;
}

/* Same, connected 10 seconds before it entered its state. */
static inline struct conn_record *fx_conn(struct snapshot *snap, int64_t id, const char *user,
                                          const char *app, enum conn_state state,
                                          int64_t in_state_s)
{
    return fx_conn_at(snap, id, user, app, state, in_state_s, in_state_s + 10);
}

static inline void fx_options(struct manager_options *opts)
{
    options_init_defaults(opts);
}

#endif
