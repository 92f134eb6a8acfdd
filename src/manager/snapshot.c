/* Snapshot storage and the small helpers every analysis shares. */
#include "manager/snapshot.h"

#include "common/timestamp.h"

#include <stdlib.h>
#include <string.h>

void snapshot_init(struct snapshot *snap, enum snapshot_mode mode, int64_t taken_ms)
{
    memset(snap, 0, sizeof(*snap));
    snap->mode = mode;
    snap->taken_ms = taken_ms;
}

bool snapshot_reserve_conns(struct snapshot *snap, size_t n)
{
    if (n <= snap->cap_conns)
        return true;
    struct conn_record *grown = realloc(snap->conns, n * sizeof(*grown));
    if (grown == NULL)
        return false;
    snap->conns = grown;
    snap->cap_conns = n;
    return true;
}

struct conn_record *snapshot_add_conn(struct snapshot *snap)
{
    if (snap->n_conns == snap->cap_conns) {
        size_t new_cap = snap->cap_conns ? snap->cap_conns * 2 : 64;
        struct conn_record *grown = realloc(snap->conns, new_cap * sizeof(*grown));
        if (grown == NULL)
            return NULL;
        snap->conns = grown;
        snap->cap_conns = new_cap;
    }
    struct conn_record *rec = &snap->conns[snap->n_conns++];
    memset(rec, 0, sizeof(*rec));
    rec->visible = true;
    return rec;
}

struct pool_record *snapshot_add_pool(struct snapshot *snap)
{
    if (snap->n_pools == snap->cap_pools) {
        size_t new_cap = snap->cap_pools ? snap->cap_pools * 2 : 8;
        struct pool_record *grown = realloc(snap->pools, new_cap * sizeof(*grown));
        if (grown == NULL)
            return NULL;
        snap->pools = grown;
        snap->cap_pools = new_cap;
    }
    struct pool_record *rec = &snap->pools[snap->n_pools++];
    memset(rec, 0, sizeof(*rec));
    rec->wait_p95_ms = rec->wait_p99_ms = rec->wait_max_ms = -1;
    rec->xact_p95_ms = rec->xact_p99_ms = -1;
    return rec;
}

static const char *const pool_mode_names[] = {
    [SNAPSHOT_POOL_SESSION] = "session",
    [SNAPSHOT_POOL_TRANSACTION] = "transaction",
    [SNAPSHOT_POOL_STATEMENT] = "statement",
};

const char *snapshot_pool_mode_name(enum snapshot_pool_mode mode)
{
    return (size_t)mode < sizeof(pool_mode_names) / sizeof(pool_mode_names[0])
               ? pool_mode_names[mode]
               : "unknown";
}

const char *snapshot_str(const char *text)
{
    return text ? text : "";
}

bool snapshot_set_text(char **field, const char *value, size_t max)
{
    free(*field);
    *field = strndup(value, max - 1);
    return *field != NULL;
}

void snapshot_free(struct snapshot *snap)
{
    for (size_t i = 0; i < snap->n_conns; i++) {
        free(snap->conns[i].backend_start_text);
        free(snap->conns[i].last_query);
        free(snap->conns[i].wait_event_type);
    }
    free(snap->conns);
    snap->conns = NULL;
    snap->n_conns = 0;
    snap->cap_conns = 0;
    free(snap->pools);
    snap->pools = NULL;
    snap->n_pools = 0;
    snap->cap_pools = 0;
}

int64_t snapshot_now_ms(void)
{
    return timestamp_now_ms();
}

int64_t snapshot_age_ms(const struct snapshot *snap, int64_t at_ms)
{
    if (at_ms <= 0 || snap->taken_ms <= at_ms)
        return 0;
    return snap->taken_ms - at_ms;
}

bool snapshot_is_pgwarden_conn(const struct conn_record *rec)
{
    return strncmp(rec->application, SNAPSHOT_PGWARDEN_APP_PREFIX,
                   sizeof(SNAPSHOT_PGWARDEN_APP_PREFIX) - 1) == 0;
}

static const char *const state_names[] = {
    [CONN_STATE_ACTIVE] = "active",
    [CONN_STATE_IDLE] = "idle",
    [CONN_STATE_IDLE_IN_XACT] = "idle in transaction",
    [CONN_STATE_IDLE_IN_XACT_ABORTED] = "idle in transaction (aborted)",
    [CONN_STATE_FASTPATH] = "fastpath function call",
    [CONN_STATE_WAITING] = "waiting",
    [CONN_STATE_OTHER] = "other",
};

const char *snapshot_conn_state_name(enum conn_state state)
{
    if ((unsigned)state >= sizeof(state_names) / sizeof(state_names[0]))
        return "other";
    return state_names[state];
}

enum conn_state snapshot_conn_state_from_text(const char *text)
{
    if (text == NULL)
        return CONN_STATE_OTHER;
    for (size_t i = 0; i < sizeof(state_names) / sizeof(state_names[0]); i++) {
        if (i != CONN_STATE_OTHER && strcmp(text, state_names[i]) == 0)
            return (enum conn_state)i;
    }
    return CONN_STATE_OTHER;
}

bool snapshot_conn_state_in_xact(enum conn_state state)
{
    return state == CONN_STATE_IDLE_IN_XACT || state == CONN_STATE_IDLE_IN_XACT_ABORTED;
}
