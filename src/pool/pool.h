/* The pooler's data types: clients, servers, pools and the pooler itself. Functions live in
 * the header of the file that implements them (states.h, objects.h, handout.h, batch.h,
 * cancel.h, client.h, server.h, conn.h, janitor.h, serve.h).
 *
 * State is the list an object sits on: states_client_change() and states_server_change()
 * (states.h) are the only writers of the state field, and they check every move against a
 * table of legal transitions.
 *
 *   client:  LOGIN ──auth ok──► WAITING_LOGIN ──server login──► ACTIVE ◄──► WAITING
 *              │                      │                          │  (needs a server / got one)
 *              └──────────────────────┴──────── close ───────────┴──► JUSTFREE (freed after
 *                                                                      the loop turn)
 *   server:  LOGIN ──► IDLE ──► ACTIVE ──release──► IDLE | TESTED (reset/check query) |
 *                        ▲                          BEING_CANCELED (cancel in flight)
 *                        └──────── TESTED ◄──────── (check before reuse)
 *            any ──close──► JUSTFREE
 *
 * Data path: each connection borrows an iobuf only while bytes are in flight. Bytes read from
 * a client are forwarded to its server as whole ranges after only the 5-byte headers were
 * looked at; the same for server→client. A connection stops reading while its peer cannot
 * take more (backpressure), so memory per connection is bounded by pkt_buf.
 */
#ifndef PGWARDEN_POOL_POOL_H
#define PGWARDEN_POOL_POOL_H

#include <stdbool.h>
#include <stdint.h>

#include "common/heap.h"
#include "config/pooler_config.h"
#include "manager/histogram.h"
#include "net/tls.h"
#include "net/loop.h"
#include "net/sendq.h"
#include "net/sock.h"
#include "pool/iobuf.h"
#include "pool/list.h"
#include "pool/params.h"
#include "pool/prepared.h"
#include "proto/owed.h"
#include "proto/scram.h"
#include "proto/startup_options.h"

struct pooler;
struct pool;
struct client;
struct server;

enum client_state {
    CL_FREE,          /* not on any list (being built or destroyed) */
    CL_LOGIN,         /* startup + authentication: pooler->login_clients */
    CL_WAITING_LOGIN, /* authenticated, waiting for the pool's first server login */
    CL_ACTIVE,        /* logged in; may hold a server: pool->active_clients */
    CL_WAITING,       /* needs a server: pool->waiting_clients (FIFO) */
    CL_JUSTFREE,      /* closed; freed after the loop turn: pooler->justfree_clients */
    CL_STATE_COUNT,
};

enum server_state {
    SV_FREE,           /* not on any list */
    SV_LOGIN,          /* connecting and authenticating: pool->login_servers */
    SV_IDLE,           /* ready, no client: pool->idle_servers */
    SV_TESTED,         /* running a reset or check query, no client: pool->tested_servers */
    SV_ACTIVE,         /* linked to a client: pool->active_servers */
    SV_BEING_CANCELED, /* released while a cancel for it is in flight */
    SV_JUSTFREE,       /* closed; freed after the loop turn */
    SV_STATE_COUNT,
};

struct tls_conn;
struct tls_context;

/* One socket and the buffer it borrows. With tls set, every read and write of the socket goes
 * through it (conn.c); plain connections pay one pointer test for that. */
struct pconn {
    int fd;
    struct net_io *io;    /* owned */
    struct tls_conn *tls; /* owned: TLS on this socket (handshake included), else NULL */
    struct iobuf *buf;    /* owned while bytes are in flight, else NULL */
    uint32_t scan;        /* buffer offset: bytes in [pos, scan) are accounted and may be sent */
    uint32_t body_left;   /* bytes of the message at scan still to come beyond end */
    bool may_read;        /* the socket may still hold bytes (edge-triggered bookkeeping) */
    bool drop_body;       /* the rest of the current message is swallowed, not forwarded */
    bool closing;         /* peer shut down its side: read to EOF */
    bool send_now;        /* the flusher is pumping its deferred send: send, do not defer again */
    bool want_write;      /* registered for writable edges: a send was partial (or a TLS read
                             waits for the writable edge) */
    /* TLS only: an operation waits for the other edge than its own (conn_tls_edges). */
    bool read_wants_write; /* a read needs the writable edge before it can go on */
    bool send_wants_read;  /* a send needs the readable edge before it can go on */
    bool tls_booked;       /* its handshake's outcome is in the pooler's tls_*_counts */
};

struct client_login;   /* private to client.c */
struct client_session; /* private to client.c */
struct console_out;    /* admin/console.h: pending console output */
struct server_login;   /* private to server.c */

struct client {
    struct plist node;                /* on the list of its state */
    struct pooler *pooler;            /* borrowed */
    struct pool *pool;                /* borrowed; NULL during login */
    struct server *server;            /* borrowed: the linked server, or NULL */
    struct client_login *login;       /* owned; only during LOGIN */
    struct client *cancel_next;       /* borrowed: cancel-key hash chain */
    struct client_stmt *stmts;        /* owned: named prepared statements (prepared.h) */
    struct client_session *session;   /* owned (client.c): its user, startup parameters and what
                                         its SET, RESET and DEALLOCATE statements did */
    struct console_out *console;      /* owned: unsent admin console output, or NULL */
    struct pstr *params[PARAM_COUNT]; /* owned references: the client's session values */
    struct pconn conn;
    struct plist flush_node; /* on pooler->flush_clients while its request waits for the end
                                of the loop turn; self-linked otherwise */
    uint64_t id;
    uint32_t cancel_pid; /* our BackendKeyData for this client */
    uint32_t cancel_key;
    int64_t connect_us;
    int64_t state_us;    /* when the current state (or wait) began */
    int64_t request_us;  /* start of the current transaction (linked), 0 when none */
    int64_t active_us;   /* last activity */
    int64_t query_us;    /* when the current request's first bytes arrived (query time) */
    int64_t answered_us; /* when its last request was answered (its ReadyForQuery): idleness
                            counts from here, a long query is not idle time */
    struct net_addr addr;
    uint32_t xacts;         /* transactions served (released servers) */
    int64_t hold_us;        /* server time held by those transactions */
    uint8_t state;          /* enum client_state: written only by states_client_change */
    uint8_t console_access; /* enum console_access for admin console clients */
    uint8_t console_wait;   /* enum console_wait: a command whose answer waits (PAUSE, ...) */
    /* A replication connection (enum startup_replication): it waits in WAITING_LOGIN for a
     * server of its own, opened with its startup parameters, linked to it for life and closed
     * with it ("Replication connections" in ARCHITECTURE.md). */
    uint8_t replication;
    char *console_wait_db; /* owned: the database it waits for, NULL = all */
    bool console_skipping; /* console: discarding extended-protocol messages up to Sync */
    bool in_cancel_table;
    bool owed_wait; /* stopped forwarding: its server's owed queue is full (backpressure);
                       the server's answers resume it */
    int64_t output_blocked_us; /* since when its results wait on its socket (0 = they do not) */
    bool output_torn;          /* a server message was cut after part of it reached the client: an
                                  ErrorResponse now would be read as that message's bytes */
    bool reclaimed;        /* the manager rolled its transaction back and took its server: its next
                              request is answered with an error (client_reclaim_server) */
    uint32_t discard_left; /* reclaimed: bytes of a dropped message still to come */
    int64_t wait_noticed_us; /* state_us of the wait it was told about (query_wait_notify) */
    /* owned: a replication client's "options" startup parameter, passed on verbatim to its
     * server; NULL otherwise */
    char *repl_options;
};

struct auth_lookup; /* private to auth_lookup.c */

struct server {
    struct plist node;          /* on the list of its state */
    struct auth_lookup *lookup; /* borrowed: the auth_query this server runs, or NULL */
    struct plist flush_node;    /* on pooler->flush_servers while a finished result waits for the
                                   end of the loop turn; self-linked otherwise */
    struct pool *pool;          /* borrowed */
    struct client *client;      /* borrowed: the linked client, or NULL */
    struct server_login *login; /* owned; only during LOGIN */
    struct pstr *params[PARAM_COUNT]; /* owned references: the server's session values */
    struct pconn conn;
    struct owed_queue owed;      /* what the server still owes for the messages sent to it */
    struct server_stmts stmts;   /* pooler statements prepared on this server */
    struct unnamed_stmt unnamed; /* who may have left the unnamed statement (prepared.h) */
    uint8_t host_idx;            /* its entry in pool->hosts */
    uint64_t id;
    uint32_t be_pid; /* PostgreSQL's BackendKeyData */
    uint32_t be_key;
    int64_t connect_us;
    int64_t state_us;
    int64_t expire_us; /* server_lifetime with jitter; 0 = not yet (server_lifetime = 0 sets
                          it when the server is first used: it serves one client) */
    int64_t last_used_us;
    int64_t ready_us;          /* its last ReadyForQuery (idle_transaction_timeout counts from
                                  there) */
    uint32_t internal_pending; /* pooler-issued queries whose ReadyForQuery is due */
    int64_t probe_start_us;    /* a health probe is in flight since then (0 = none) */
    bool reading_slots;        /* the pooler's query for the server's usable slots is due */
    uint16_t cancels_in_flight;
    uint8_t state;         /* enum server_state: written only by states_server_change */
    uint8_t xact;          /* last ReadyForQuery status */
    bool close_needed;     /* config changed or lifetime over: close when released */
    bool cancel_unsettled; /* a cancel sent to it ended without PostgreSQL's close (given up
                              at cancel_wait_timeout after its packet left, or answered with
                              bytes): it may still land, so the server is closed when
                              released, never handed to another client */
    bool welcome_source;   /* its login ParameterStatus messages become the pool's welcome */
    bool used_since_ready; /* linked to a client since its login or its last check/reset
                              query: server_check_delay = 0 checks it before the next */
    /* The client that sent it a named Parse under its own name in a transaction or
     * statement pool (max_prepared_statements = 0: not tracked), 0 = none. Another client
     * could Bind that name and run this client's SQL, so DEALLOCATE ALL runs before the
     * server goes to anyone else; that client gets its statements back with the server, as
     * its luck would have it on PostgreSQL's side of PgBouncer. */
    uint64_t named_stmts_client;
    uint8_t deferred_scan; /* outcome of a scan (release, ...) whose bytes were only partly
                              sent to the client: acted on once they are (server.c) */
    uint8_t replication;   /* enum startup_replication: a walsender opened for the client it is
                              linked to from its launch; never idle, never reused. Its bytes
                              pass through unexamined, outside the owed model */
};

/* Counters the manager reads (cumulative since start). */
struct pool_stats {
    int64_t server_assignments; /* a server was linked to a client */
    int64_t xact_count;
    int64_t query_count;
    int64_t xact_time_us;
    int64_t query_time_us;
    int64_t wait_time_us;
    int64_t wait_count;
    int64_t bytes_received; /* from clients */
    int64_t bytes_sent;     /* to clients */
    int64_t servers_created;
    int64_t servers_closed;
    int64_t clients_created;
    int64_t clients_closed;
    int64_t connect_time_us;
    int64_t login_failures;
    /* Protocol-level prepared statements (transaction pooling): named Parse messages from
     * clients, Parse messages the pooler sent to servers, Bind messages to named ones. */
    int64_t client_parse_count;
    int64_t server_parse_count;
    int64_t bind_count;
    /* Distributions of the times above, in microseconds (fixed buckets, no allocation). */
    struct histogram wait_hist;
    struct histogram xact_hist;
    struct histogram query_hist;
};

/* Outcomes of the background health probes on a pool's idle servers (the newest
 * POOL_PROBE_KEEP; totals since start). */
#define POOL_PROBE_KEEP 16
struct pool_probes {
    float latency_ms[POOL_PROBE_KEEP];
    bool ok[POOL_PROBE_KEEP];
    uint32_t n;    /* kept, at most POOL_PROBE_KEEP */
    uint32_t next; /* slot of the next outcome */
    int64_t total;
    int64_t failed;
    int64_t last_us;
    char last_error[128]; /* of the newest failure, "" when none */
};

#define POOL_MAX_HOSTS 16

/* One entry of a database's host list (host=a,b,c), with its DNS cache. */
struct pool_host {
    const char *name;         /* borrowed from pool->host_names */
    struct net_sockaddr addr; /* last resolved address of a host name */
    bool have_addr;
    int64_t addr_expires_us;        /* dns_max_ttl after the lookup */
    int64_t lookup_failed_until_us; /* dns_nxdomain_ttl after a failed lookup: until then new
                                       logins fail at once for lookup_error */
    char lookup_error[64];          /* the resolver's reason (gai_strerror's words) */
};

struct pool {
    struct plist node;     /* pooler->pools */
    struct pooler *pooler; /* borrowed */
    char *db_name;         /* owned: name clients use */
    char *user_name;       /* owned: the clients' user, or the database's forced user (user=),
                              whose one pool every client of the database shares */
    /* Server connection settings resolved from the config (owned copies). */
    char *host; /* as configured: "/dir" for unix sockets, or a comma-separated list */
    int port;
    char *host_names; /* owned: host with its commas turned into NULs */
    struct pool_host hosts[POOL_MAX_HOSTS];
    int n_hosts;
    int next_host;         /* the entry the next server connects to */
    bool host_round_robin; /* load_balance_hosts: round-robin (else disable) */
    char *server_db;
    char *server_user;
    char *password;          /* owned, may be NULL: plain password, md5 or SCRAM secret */
    bool password_looked_up; /* password came from auth_query: a reload keeps it */
    char *startup_extra[8];  /* owned: key, value pairs sent in the server StartupMessage */
    int n_startup_extra;
    char *connect_query; /* owned, may be NULL */
    enum pool_mode mode;
    bool is_admin;       /* the admin console's pseudo-pool: no servers */
    int pool_size;       /* servers the pool may open now (auto-scaling moves it) */
    int configured_size; /* pool_size as the config gives it; a reload that keeps it keeps
                            a size the manager learned */
    int min_pool_size;
    int reserve_pool;
    int max_db_connections;
    int max_user_connections;
    bool limits_lowered;        /* a reload or SET lowered one of the two, or auto-scaling the
                                   pool's size: servers over it close when released
                                   (handout_over_limit); the janitor clears it once the pool,
                                   database and user are within them */
    int64_t server_lifetime_ms; /* the database's, else the global one; 0 = used once */
    /* The pool user's [users] timeouts where set above 0, else the [pgbouncer] ones (for a
     * forced-user database, the forced user's, as PgBouncer counts them per server user). */
    int64_t query_timeout_ms;
    int64_t idle_transaction_timeout_ms;
    int64_t transaction_timeout_ms;
    int64_t client_idle_timeout_ms;
    bool forced_user;     /* user_name is the database's user=: min_pool_size is kept
                             even with no client (PgBouncer) */
    bool auth_lookup;     /* auth_user's pool that runs auth_query (auth_lookup.c): no client
                             ever gets its servers, so no client's startup parameters reach them */
    struct plist lookups; /* auth_lookup.c: requests queued or running on this pool */

    struct plist waiting_login_clients;
    struct plist active_clients;
    struct plist waiting_clients;
    struct plist login_servers;
    struct plist idle_servers;
    struct plist tested_servers;
    struct plist active_servers;
    struct plist canceling_servers;
    int n_servers; /* all servers not yet JUSTFREE */
    int n_clients;

    uint8_t *welcome; /* owned: ParameterStatus messages of the first server login */
    size_t welcome_len;
    bool welcome_ready;
    struct pstr *defaults[PARAM_COUNT]; /* owned: server's initial values */

    bool have_scram_keys; /* SCRAM pass-through keys from an authenticated client */
    uint8_t scram_client_key[SCRAM_KEY_LEN];
    uint8_t scram_server_key[SCRAM_KEY_LEN];

    int64_t retry_after_us; /* no new server logins before this (server_login_retry) */
    char *last_error;       /* owned: message of the last failed server login, NULL once one
                               succeeds; a server starting up or shutting down (57P03) leaves
                               it as it was */
    char last_sqlstate[6];
    struct pool_stats stats;
    struct pool_probes probes;
    int server_usable_slots; /* the server's max_connections minus reserved slots, read at a
                                server login (0 = not known yet) */
    int64_t slots_read_us;   /* when that was last asked */
    bool db_paused;          /* PAUSE <db>: no server handed out, idle ones closed (pool/control) */
    bool db_disabled;        /* DISABLE <db>: no new client logins (pool/control) */
    bool activating;         /* handout_activate is running (a nested call asks it for */
    bool activate_again;     /* another pass instead of recursing) */
    /* Totals at the start of the current stats_period, and the per-second averages of the
     * last complete period (SHOW STATS avg_* columns). */
    struct pool_stats stats_mark;
    struct pool_stats stats_avg;
    /* The mark of the period before (quantiles cover one to two periods, never an empty
     * window right after a roll), and the longest wait of this period and the last. */
    struct pool_stats stats_prev_mark;
    int64_t period_us;       /* length of the last complete stats period */
    int64_t unused_since_us; /* an auto-database's pool with no client or server since then
                                (0 = in use; freed after autodb_idle_timeout) */
    int64_t wait_max_us;
    int64_t prev_wait_max_us;
};

enum pooler_run_state {
    POOLER_RUNNING,
    POOLER_PAUSED,
    POOLER_SUSPENDED, /* SUSPEND: pooled clients and their servers are not read until RESUME */
    POOLER_SHUTDOWN_SERVERS, /* SIGINT: stop accepting, exit when no server is in use */
    POOLER_SHUTDOWN_CLIENTS, /* SIGTERM: stop accepting, exit when no client is left */
};

struct cancel_req; /* private to cancel.c */

struct live_manager;

struct pooler {
    struct net_loop *loop;     /* owned */
    struct pooler_config *cfg; /* owned; replaced whole on reload */
    struct iobuf_cache bufs;
    struct stmt_registry stmts;
    struct plist pools;
    struct pool *admin_pool; /* owned: console clients live here (not on pools) */
    struct plist login_clients;
    struct plist justfree_clients;
    struct plist justfree_servers;
    struct plist cancel_reqs;
    struct client **cancel_table; /* owned: buckets of the cancel-key hash */
    size_t cancel_buckets;        /* power of two */
    /* Random words for cancel keys, drawn in batches: each RAND_bytes call costs a getpid()
     * system call (OpenSSL's fork check), one per connection if drawn key by key. */
    uint32_t cancel_random[64];
    int cancel_random_left;
    int n_clients;
    int n_cancel_reqs;
    uint64_t next_id;
    struct net_timer *janitor;    /* owned: periodic housekeeping */
    struct live_manager *manager; /* owned: the engine run on these pools (live/live_manager.h) */
    struct net_timer *reaper;     /* owned: frees closed objects after the loop turn */
    /* Sends held back to the end of the loop turn, after every ready socket was read (see
     * batch_defer_send): clients' scanned requests, and servers' finished results whose
     * ReadyForQuery releases the server once they are sent. */
    struct plist flush_clients;
    struct plist flush_servers;
    struct net_timer *flusher; /* owned: runs the deferred sends after the turn's callbacks */
    struct net_sendq *sendq;   /* owned: submits them in one system call; NULL: one by one */
    /* TLS contexts built from the config (serve.c; a reload swaps them when the new ones
     * build): accepting clients, NULL when client_tls_sslmode = disable; connecting to
     * PostgreSQL over TCP, NULL when server_tls_sslmode = disable. Connections hold their own
     * reference, so a swap never pulls one from under an open connection. */
    struct tls_context *client_tls; /* owned */
    struct tls_context *server_tls; /* owned */
    /* Handshake outcomes since start, for /metrics (pconn_tls_book_*). */
    struct tls_counters tls_client_counts;
    struct tls_counters tls_server_counts;
#define POOLER_SEND_BATCH 64 /* sends per system call (a turn with more makes several) */
    bool flushing;           /* inside the flusher: it picks up what is deferred meanwhile */
    bool flush_direct;       /* the flusher's last wave: nothing is deferred any more */
#define POOLER_MAX_LISTENERS 8
    int listen_fds[POOLER_MAX_LISTENERS];
    struct net_io *listen_ios[POOLER_MAX_LISTENERS]; /* owned */
    int n_listeners;
    char unix_path[128];
    bool accept_paused;
    bool reap_scheduled;
    enum pooler_run_state run_state;
    int64_t shutdown_since_us; /* when SHUTDOWN WAIT_FOR_* began (0 = running) */
    int64_t suspend_since_us;  /* when the last SUSPEND began (suspend_timeout counts from it) */
    uint64_t shutdown_last_id; /* the last id handed out before shutdown began: clients with a
                                  larger id came since and are refused a server (ids, not
                                  clock times, which can step) */
    int64_t shutdown_deadline_us;
    int64_t stats_period_start_us;
    int exit_code;
    struct db_control *db_controls; /* owned: per-database PAUSE/DISABLE (pool/control) */
    size_t n_db_controls;
    struct heap_trim heap; /* the janitor returns what bursts freed (common/heap.h) */
};

/* SUSPEND: no bytes are read from logged-in clients or from servers linked to them (what
 * was read already is still forwarded and sent); logins, the console and the pooler's own
 * queries on idle servers go on. */
static inline bool pooler_reads_suspended(const struct pooler *p)
{
    return p->run_state == POOLER_SUSPENDED;
}

/* Now, in microseconds since the epoch, as cached for this loop turn (no system call). */
static inline int64_t pooler_now(struct pooler *p)
{
    return net_loop_now_us(p->loop);
}

#endif
