/* A snapshot is plain data describing one moment of a connection source: one record per
 * connection plus pool/server counters and limits. Both sources fill it (serve: the live
 * pools; inspect: pg_stat_activity and friends); the engine only ever reads it. */
#ifndef PGWARDEN_MANAGER_SNAPSHOT_H
#define PGWARDEN_MANAGER_SNAPSHOT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Sizes follow PostgreSQL: names are at most NAMEDATALEN-1 (63) bytes. */
#define SNAPSHOT_NAME_LEN      64
#define SNAPSHOT_ADDR_LEN      48
#define SNAPSHOT_QUERY_LEN     256
#define SNAPSHOT_TIMESTAMP_LEN 40

enum snapshot_mode {
    SNAPSHOT_MODE_INSPECT,
    SNAPSHOT_MODE_SERVE,
};

/* Connection states as pg_stat_activity names them, plus the pooler's own "waiting" (a
 * client queued for a server). Anything unrecognised is CONN_STATE_OTHER and is never a
 * kill target. */
enum conn_state {
    CONN_STATE_ACTIVE,
    CONN_STATE_IDLE,
    CONN_STATE_IDLE_IN_XACT,
    CONN_STATE_IDLE_IN_XACT_ABORTED,
    CONN_STATE_FASTPATH,
    CONN_STATE_WAITING,
    CONN_STATE_OTHER,
};

/* One connection. Times are milliseconds since the Unix epoch; 0 means "not known / none"
 * (xact_start_ms is 0 outside a transaction).
 *
 * The names (user, database, application, client_addr) are never NULL ("" when not known)
 * and are interned in the snapshot (snapshot_name): a record holds four pointers rather than
 * four arrays, and the live manager keeps a record per client twice (this run's and the
 * previous one), so 10,000 clients of one application cost the texts once, not 20,000 times.
 * They live as long as the snapshot that holds the record. */
struct conn_record {
    int64_t id;  /* serve: client id; inspect: backend pid */
    int32_t pid; /* server backend pid, 0 when none is linked */
    enum conn_state state;
    const char *user;        /* borrowed from the snapshot's names */
    const char *database;    /* borrowed from the snapshot's names */
    const char *application; /* borrowed from the snapshot's names */
    const char *client_addr; /* borrowed from the snapshot's names; "" for unix sockets */
    int64_t connected_ms;    /* backend_start / client connect time */
    int64_t state_change_ms; /* when the current state began */
    int64_t xact_start_ms;   /* 0 when not in a transaction */
    int64_t query_start_ms;  /* start of the last query, 0 if none yet */
    /* Inspect mode only: owned by the snapshot (snapshot_free frees them), NULL when not known
     * (always in serve, where a record per client is kept twice and these texts would be
     * most of its size). Read them through snapshot_str.
     * backend_start_text is the identity for re-checks: pg_stat_activity.backend_start as
     * PostgreSQL printed it, so an executor can compare it exactly without a round trip
     * through floating seconds. last_query is cut at SNAPSHOT_QUERY_LEN - 1 bytes. */
    char *backend_start_text;
    char *last_query;
    char *wait_event_type;
    int64_t requests;          /* serve: queries/transactions served on this connection */
    int64_t hold_total_ms;     /* serve: server time held by those finished transactions */
    int64_t app_usual_hold_ms; /* serve: what this application usually holds a server per
                                  transaction (manager/hold_norms); 0 = not known yet */
    int64_t output_blocked_ms; /* serve: the client has left results unread this long while
                                  holding a server (its socket takes no more); 0 = not */
    bool is_superuser;
    bool waiting_on_lock; /* wait_event_type = 'Lock' */
    bool blocking_others; /* appears in another backend's pg_blocking_pids() */
    /* A replication connection itself (a walsender), never a leak suspect nor a kill target.
     * A role's REPLICATION attribute does not make its ordinary sessions one. */
    bool is_replication;
    bool is_self;           /* the inspecting session itself */
    bool is_infrastructure; /* pooler/platform roles and apps (Supavisor, PostgREST, ...) */
    bool visible;           /* false when the row read "<insufficient privilege>" */
};

/* Server slot budget. usable = max_connections - superuser_reserved - reserved. */
struct snapshot_capacity {
    int max_connections;
    int superuser_reserved;
    int reserved; /* PostgreSQL 16+ reserved_connections, else 0 */
    int usable;
    /* Pool bounds (serve mode; inspect leaves them 0). */
    int pool_min;
    int pool_max;
    int pool_current;
};

/* Cumulative counters; rates come from the difference of two snapshots. has_* tell which
 * groups the source could read (PostgreSQL 14+ session counters, pooler totals). */
struct snapshot_counters {
    bool has_sessions;
    int64_t sessions;
    int64_t sessions_abandoned;
    int64_t sessions_fatal;
    int64_t sessions_killed;
    double session_time_ms;
    double active_time_ms;
    double idle_in_xact_time_ms;
    bool has_xacts;
    int64_t xact_commit;
    int64_t xact_rollback;
    bool has_pool_totals;
    int64_t requests_total; /* transactions/queries served */
    double query_time_total_ms;
    int64_t created_total; /* connections opened */
    int64_t closed_total;  /* connections closed */
    double connect_time_total_ms;
    int waiting_clients; /* clients queued right now */
    double wait_time_total_ms;
    int64_t waits_total;
};

/* Server facts and settings the analyses care about (inspect mode; 0 = unknown/off). */
struct snapshot_server {
    int version_num;
    bool in_recovery;
    bool can_read_all; /* superuser or pg_read_all_stats: all rows visible */
    bool can_signal;   /* superuser or pg_signal_backend */
    bool is_superuser;
    bool looks_like_supabase;
    int64_t idle_in_xact_session_timeout_ms;
    int64_t idle_session_timeout_ms;
    int64_t statement_timeout_ms;
    int invisible_rows;
    int non_client_backends;
};

enum snapshot_pool_mode {
    SNAPSHOT_POOL_SESSION,
    SNAPSHOT_POOL_TRANSACTION,
    SNAPSHOT_POOL_STATEMENT,
};

/* One pool (serve mode): its limits, what is in it now, and what it did over the recent
 * window (per-second rates and mean times of the last complete stats_period; quantiles over
 * the last one to two periods; -1 = no observation yet). */
struct pool_record {
    char database[SNAPSHOT_NAME_LEN];
    char user[SNAPSHOT_NAME_LEN];
    char server[SNAPSHOT_ADDR_LEN + 8]; /* "host:port" (or "/socket/dir:port") it connects to */
    enum snapshot_pool_mode mode;
    int size;          /* servers it may open now */
    int reserve;       /* extra servers for clients that waited reserve_pool_timeout */
    int max_size;      /* the most it may be sized to: [manager] max_pool_size, else size */
    int server_usable; /* the server's usable slots (max_connections - reserved); 0 = unknown */
    int cl_active, cl_waiting, cl_idle;
    int sv_active, sv_idle, sv_tested, sv_login;
    double xacts_per_sec, queries_per_sec;
    double servers_opened_per_sec, servers_closed_per_sec;
    double bytes_in_per_sec, bytes_out_per_sec;
    double avg_xact_ms, avg_query_ms, avg_wait_ms;
    double wait_p95_ms, wait_p99_ms, wait_max_ms;
    double xact_p95_ms, xact_p99_ms;
    /* Its clients' records: snap->conns[first_conn .. first_conn + n_conns) (serve mode fills
     * a pool's clients right after its record). */
    size_t first_conn, n_conns;
    /* The pooler's timeouts for this pool, 0 = off. */
    int64_t query_wait_timeout_ms;
    int64_t idle_transaction_timeout_ms;
};

/* Interned texts: an open-addressing set of owned strings (slots NULL when empty). */
struct snapshot_names {
    char **slots; /* owned, and each string in it */
    size_t cap;   /* 0 or a power of two */
    size_t n;
};

struct snapshot {
    enum snapshot_mode mode;
    int64_t taken_ms;
    struct conn_record *conns; /* owned */
    size_t n_conns;
    size_t cap_conns;
    struct pool_record *pools; /* owned; serve mode only */
    size_t n_pools;
    size_t cap_pools;
    struct snapshot_capacity capacity;
    struct snapshot_counters counters;
    struct snapshot_server server;
    struct snapshot_names names; /* owned: what the records' names point to */
};

void snapshot_init(struct snapshot *snap, enum snapshot_mode mode, int64_t taken_ms);
/* Empties snap for a new look at taken_ms (as snapshot_free then snapshot_init) but keeps
 * its record array: the live manager refills the same two arrays every run instead of
 * freeing one and growing another, which would leave holes in the heap. */
void snapshot_reset(struct snapshot *snap, enum snapshot_mode mode, int64_t taken_ms);
/* Appends a zeroed record (names "") and returns it (borrowed; valid until the next append),
 * or NULL when memory runs out. */
struct conn_record *snapshot_add_conn(struct snapshot *snap);
/* The snapshot's copy of text, cut at max - 1 bytes (NULL reads as ""): one copy per distinct
 * text, owned by snap and valid until snapshot_reset or snapshot_free. NULL when memory ran
 * out. */
const char *snapshot_name(struct snapshot *snap, const char *text, size_t max);
/* A record's optional text, "" when the snapshot does not have it. */
const char *snapshot_str(const char *text);
/* Sets an optional text of a record to a copy of value, cut at max - 1 bytes. False when
 * memory ran out. */
bool snapshot_set_text(char **field, const char *value, size_t max);
/* Room for n connections in one allocation, when the count is known beforehand (serve): the
 * manager keeps a record per client in two snapshots, so the doubling's slack would show in
 * memory per idle client. An array more than twice too large shrinks to n. False when memory
 * ran out. */
bool snapshot_reserve_conns(struct snapshot *snap, size_t n);
/* Appends a zeroed pool record (quantiles -1) and returns it, or NULL on out of memory. */
struct pool_record *snapshot_add_pool(struct snapshot *snap);
const char *snapshot_pool_mode_name(enum snapshot_pool_mode mode);
void snapshot_free(struct snapshot *snap);

/* Milliseconds since the epoch of the wall clock (not monotonic: snapshot times are compared
 * with server timestamps). */
int64_t snapshot_now_ms(void);

/* Elapsed milliseconds between a record time and the snapshot time, clamped at 0 so a clock
 * that went backwards never yields negative ages; 0 when the time is unknown. */
int64_t snapshot_age_ms(const struct snapshot *snap, int64_t at_ms);

/* pgwarden's own connections to a server (and its inspecting sessions) carry an
 * application_name starting with this; kill-idle never plans them. */
#define SNAPSHOT_PGWARDEN_APP_PREFIX "pgwarden"

/* True when the record's application_name marks it as a pgwarden connection. */
bool snapshot_is_pgwarden_conn(const struct conn_record *rec);

/* Whether a connection belongs to the pooler or platform infrastructure (Supabase's roles,
 * Supavisor, PostgREST, pg_net, pgwarden's own sessions): never a leak suspect nor a kill-idle
 * target. Roles count in both modes. Application names count in inspect mode only: in serve
 * mode every record is a pooled client whose name is its own choice, so a name would let any
 * client exempt itself (the role is what it authenticated as). */
bool snapshot_is_infrastructure(enum snapshot_mode mode, const char *user, const char *application);

const char *snapshot_conn_state_name(enum conn_state state);
/* Maps pg_stat_activity.state text (NULL allowed) to the enum. */
enum conn_state snapshot_conn_state_from_text(const char *text);
bool snapshot_conn_state_in_xact(enum conn_state state);

#endif
