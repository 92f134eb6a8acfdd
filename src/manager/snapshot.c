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

/* Frees the records' own texts and the interned names; the arrays stay. */
static void free_texts(struct snapshot *snap)
{
    for (size_t i = 0; i < snap->n_conns; i++) {
        free(snap->conns[i].backend_start_text);
        free(snap->conns[i].last_query);
        free(snap->conns[i].wait_event_type);
    }
    for (size_t i = 0; i < snap->names.cap; i++)
        free(snap->names.slots[i]);
    free(snap->names.slots);
    memset(&snap->names, 0, sizeof(snap->names));
}

void snapshot_reset(struct snapshot *snap, enum snapshot_mode mode, int64_t taken_ms)
{
    free_texts(snap);
    struct conn_record *conns = snap->conns;
    size_t cap_conns = snap->cap_conns;
    struct pool_record *pools = snap->pools;
    size_t cap_pools = snap->cap_pools;
    snapshot_init(snap, mode, taken_ms);
    snap->conns = conns;
    snap->cap_conns = cap_conns;
    snap->pools = pools;
    snap->cap_pools = cap_pools;
}

/* FNV-1a of the first len bytes. */
static size_t name_hash(const char *text, size_t len)
{
    uint64_t h = 14695981039346656037ULL;
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)text[i]) * 1099511628211ULL;
    return (size_t)h;
}

/* The slot holding the first len bytes of text, or the empty slot where they would go. */
static char **name_slot(const struct snapshot_names *names, const char *text, size_t len)
{
    size_t mask = names->cap - 1;
    for (size_t i = name_hash(text, len) & mask;; i = (i + 1) & mask) {
        char *s = names->slots[i];
        if (s == NULL || (strncmp(s, text, len) == 0 && s[len] == '\0'))
            return &names->slots[i];
    }
}

/* Keeps the set at most half full. */
static bool names_grow(struct snapshot_names *names)
{
    if (2 * (names->n + 1) <= names->cap)
        return true;
    struct snapshot_names grown = {.cap = names->cap ? names->cap * 2 : 16};
    grown.slots = calloc(grown.cap, sizeof(*grown.slots));
    if (grown.slots == NULL)
        return false;
    for (size_t i = 0; i < names->cap; i++) {
        char *s = names->slots[i];
        if (s != NULL)
            *name_slot(&grown, s, strlen(s)) = s;
    }
    grown.n = names->n;
    free(names->slots);
    *names = grown;
    return true;
}

const char *snapshot_name(struct snapshot *snap, const char *text, size_t max)
{
    if (text == NULL || text[0] == '\0')
        return "";
    size_t len = strnlen(text, max - 1);
    if (!names_grow(&snap->names))
        return NULL;
    char **slot = name_slot(&snap->names, text, len);
    if (*slot == NULL) {
        if ((*slot = strndup(text, len)) == NULL)
            return NULL;
        snap->names.n++;
    }
    return *slot;
}

bool snapshot_reserve_conns(struct snapshot *snap, size_t n)
{
    /* A reused array (snapshot_reset) shrinks when the clients it was sized for have left,
     * or it would hold their memory for as long as the pooler runs. */
    if (n <= snap->cap_conns && (n >= snap->cap_conns / 2 || n < snap->n_conns))
        return true;
    if (n == 0)
        n = 1;
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
    rec->user = rec->database = rec->application = rec->client_addr = "";
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
    free_texts(snap);
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

bool snapshot_is_infrastructure(enum snapshot_mode mode, const char *user, const char *application)
{
    static const char *const apps[] = {"Supavisor", "pgbouncer", "PgBouncer",
                                       "supabase_mt_realtime", "pg_cron scheduler"};
    static const char *const app_prefixes[] = {"PostgREST", "pg_net", "pgwarden-"};
    static const char *const users[] = {"supabase_admin",
                                        "supabase_replication_admin",
                                        "authenticator",
                                        "supabase_auth_admin",
                                        "supabase_storage_admin",
                                        "supabase_realtime_admin",
                                        "pgbouncer"};
    for (size_t i = 0; i < sizeof(users) / sizeof(users[0]); i++)
        if (strcmp(user, users[i]) == 0)
            return true;
    if (mode == SNAPSHOT_MODE_SERVE)
        return false;
    for (size_t i = 0; i < sizeof(apps) / sizeof(apps[0]); i++)
        if (strcmp(application, apps[i]) == 0)
            return true;
    for (size_t i = 0; i < sizeof(app_prefixes) / sizeof(app_prefixes[0]); i++)
        if (strncmp(application, app_prefixes[i], strlen(app_prefixes[i])) == 0)
            return true;
    return false;
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
