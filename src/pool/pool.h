/* Clients, servers and pools of the running pooler. State is the list an object sits on:
 * client_change_state() and server_change_state() are the only writers of the state field,
 * and they check every move against a table of legal transitions.
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

#include "config/pooler_config.h"
#include "manager/histogram.h"
#include "net/loop.h"
#include "net/sendq.h"
#include "net/sock.h"
#include "pool/iobuf.h"
#include "pool/list.h"
#include "pool/params.h"
#include "pool/prepared.h"
#include "proto/owed.h"
#include "proto/scram.h"

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

/* One socket and the buffer it borrows. */
struct pconn {
    int fd;
    struct net_io *io;  /* owned */
    struct iobuf *buf;  /* owned while bytes are in flight, else NULL */
    uint32_t scan;      /* buffer offset: bytes in [pos, scan) are accounted and may be sent */
    uint32_t body_left; /* bytes of the message at scan still to come beyond end */
    bool may_read;      /* the socket may still hold bytes (edge-triggered bookkeeping) */
    bool drop_body;     /* the rest of the current message is swallowed, not forwarded */
    bool closing;       /* peer shut down its side: read to EOF */
    bool send_now;      /* the flusher is pumping its deferred send: send, do not defer again */
    bool want_write;    /* a send was partial: the socket is registered for writable edges */
};

struct client_login; /* private to client.c */
struct console_out;  /* admin/console.h: pending console output */
struct server_login; /* private to server.c */

struct client {
    struct plist node;                /* on the list of its state */
    struct pooler *pooler;            /* borrowed */
    struct pool *pool;                /* borrowed; NULL during login */
    struct server *server;            /* borrowed: the linked server, or NULL */
    struct client_login *login;       /* owned; only during LOGIN */
    struct client *cancel_next;       /* borrowed: cancel-key hash chain */
    struct client_stmt *stmts;        /* owned: named prepared statements (transaction mode) */
    struct console_out *console;      /* owned: unsent admin console output, or NULL */
    struct pstr *params[PARAM_COUNT]; /* owned references: the client's session values */
    struct pconn conn;
    struct plist flush_node; /* on pooler->flush_clients while its request waits for the end
                                of the loop turn; self-linked otherwise */
    uint64_t id;
    uint32_t cancel_pid; /* our BackendKeyData for this client */
    uint32_t cancel_key;
    int64_t connect_us;
    int64_t state_us;   /* when the current state (or wait) began */
    int64_t request_us; /* start of the current transaction (linked), 0 when none */
    int64_t active_us;  /* last activity */
    struct net_addr addr;
    uint32_t xacts;         /* transactions served (released servers) */
    uint8_t state;          /* enum client_state: written only by client_change_state */
    uint8_t console_access; /* enum console_access for admin console clients */
    bool in_cancel_table;
    bool owed_wait; /* stopped forwarding: its server's owed queue is full (backpressure);
                       the server's answers resume it */
    bool reclaimed; /* the manager rolled its transaction back and took its server: its next
                       request is answered with an error (client_reclaim_server) */
    uint32_t discard_left; /* reclaimed: bytes of a dropped message still to come */
};

struct server {
    struct plist node;          /* on the list of its state */
    struct plist flush_node;    /* on pooler->flush_servers while a finished result waits for the
                                   end of the loop turn; self-linked otherwise */
    struct pool *pool;          /* borrowed */
    struct client *client;      /* borrowed: the linked client, or NULL */
    struct server_login *login; /* owned; only during LOGIN */
    struct pstr *params[PARAM_COUNT]; /* owned references: the server's session values */
    struct pconn conn;
    struct owed_queue owed;    /* what the server still owes for the messages sent to it */
    struct server_stmts stmts; /* pooler statements prepared on this server */
    uint64_t id;
    uint32_t be_pid; /* PostgreSQL's BackendKeyData */
    uint32_t be_key;
    int64_t connect_us;
    int64_t state_us;
    int64_t expire_us; /* server_lifetime with jitter; 0 = never */
    int64_t last_used_us;
    uint32_t internal_pending; /* pooler-issued queries whose ReadyForQuery is due */
    int64_t probe_start_us;    /* a health probe is in flight since then (0 = none) */
    uint16_t cancels_in_flight;
    uint8_t state;           /* enum server_state: written only by server_change_state */
    uint8_t xact;            /* last ReadyForQuery status */
    bool close_needed;       /* config changed or lifetime over: close when released */
    bool welcome_source;     /* its login ParameterStatus messages become the pool's welcome */
    uint8_t deferred_scan;   /* outcome of a scan (release, ...) whose bytes were only partly
                                sent to the client: acted on once they are (server.c) */
};

/* Counters the manager reads (cumulative since start). */
struct pool_stats {
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

struct pool {
    struct plist node;     /* pooler->pools */
    struct pooler *pooler; /* borrowed */
    char *db_name;         /* owned: name clients use */
    char *user_name;       /* owned: client user */
    /* Server connection settings resolved from the config (owned copies). */
    char *host; /* "/dir" for unix sockets */
    int port;
    char *server_db;
    char *server_user;
    char *password;         /* owned, may be NULL: plain password, md5 or SCRAM secret */
    char *startup_extra[8]; /* owned: key, value pairs sent in the server StartupMessage */
    int n_startup_extra;
    char *connect_query; /* owned, may be NULL */
    enum pool_mode mode;
    bool is_admin; /* the admin console's pseudo-pool: no servers */
    int pool_size;       /* servers the pool may open now (auto-scaling moves it) */
    int configured_size; /* pool_size as the config gives it; a reload that keeps it keeps
                            a size the manager learned */
    int min_pool_size;
    int reserve_pool;
    int max_db_connections;
    int max_user_connections;

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

    struct net_sockaddr addr; /* last resolved address of a host name (DNS cache) */
    bool have_addr;
    int64_t addr_expires_us;

    int64_t retry_after_us; /* no new server logins before this (server_login_retry) */
    char *last_error;       /* owned: message of the last failed server login */
    char last_sqlstate[6];
    struct pool_stats stats;
    struct pool_probes probes;
    /* Totals at the start of the current stats_period, and the per-second averages of the
     * last complete period (SHOW STATS avg_* columns). */
    struct pool_stats stats_mark;
    struct pool_stats stats_avg;
};

enum pooler_run_state {
    POOLER_RUNNING,
    POOLER_PAUSED,
    POOLER_SHUTDOWN_SERVERS, /* SIGINT: stop accepting, exit when no server is in use */
    POOLER_SHUTDOWN_CLIENTS, /* SIGTERM: stop accepting, exit when no client is left */
};

struct cancel_req; /* private to cancel handling in server.c */

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
    struct net_timer *janitor; /* owned: periodic housekeeping */
    struct live_manager *manager; /* owned: the engine run on these pools (live/live_manager.h) */
    struct net_timer *reaper;  /* owned: frees closed objects after the loop turn */
    /* Sends held back to the end of the loop turn, after every ready socket was read (see
     * pooler_defer_send): clients' scanned requests, and servers' finished results whose
     * ReadyForQuery releases the server once they are sent. */
    struct plist flush_clients;
    struct plist flush_servers;
    struct net_timer *flusher; /* owned: runs the deferred sends after the turn's callbacks */
    struct net_sendq *sendq;   /* owned: submits them in one system call; NULL: one by one */
#define POOLER_SEND_BATCH 64   /* sends per system call (a turn with more makes several) */
    bool flushing;             /* inside the flusher: it picks up what is deferred meanwhile */
    bool flush_direct;         /* the flusher's last wave: nothing is deferred any more */
#define POOLER_MAX_LISTENERS 8
    int listen_fds[POOLER_MAX_LISTENERS];
    struct net_io *listen_ios[POOLER_MAX_LISTENERS]; /* owned */
    int n_listeners;
    char unix_path[128];
    bool accept_paused;
    bool reap_scheduled;
    enum pooler_run_state run_state;
    int64_t shutdown_deadline_us;
    int64_t stats_period_start_us;
    int exit_code;
};

/* ---- objects.c ---- */
const char *client_state_name(enum client_state st);
const char *server_state_name(enum server_state st);
void client_change_state(struct client *c, enum client_state next);
void server_change_state(struct server *s, enum server_state next);

/* Makes every client and server list of a new pool empty (real pools and the admin
 * console's pseudo-pool alike). */
void pool_init_lists(struct pool *pool);
struct pool *pool_get(struct pooler *p, const struct pooler_db_config *db, const char *db_name,
                      const char *user);
/* Applies (possibly new) config values to an existing pool; marks servers close_needed when
 * the connection target changed. */
void pool_apply_config(struct pool *pool);
void pool_free(struct pool *pool);

struct client *client_new(struct pooler *p, int fd, const struct net_addr *addr);
/* Sends an ErrorResponse (best effort) and closes. */
void client_fail(struct client *c, const char *sqlstate, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Closes the connection; its server is released when clean, closed otherwise. */
void client_close(struct client *c, const char *reason);
/* Sends bytes the pooler generated (welcome, errors); false when the socket failed. */
__attribute__((warn_unused_result)) bool client_send_raw(struct client *c, const void *data,
                                                         size_t len);
void client_register_cancel(struct client *c);
struct client *client_find_cancel(struct pooler *p, uint32_t pid, uint32_t key);

/* Launches a server login for pool; false when it could not even start. */
bool server_launch(struct pool *pool);
void server_close(struct server *s, const char *reason);

/* Gives idle servers to waiting clients, launches servers within limits. */
void pool_activate(struct pool *pool);
/* A client needs a server: link now, or queue. */
void pool_request_server(struct client *c);
/* The linked client is done with s (transaction end or client gone). */
void pool_release_server(struct server *s);
/* Server logins for pool are failing and none is left: tell every waiting client now
 * instead of letting it sit until query_wait_timeout (PgBouncer does the same). */
void pool_fail_waiters(struct pool *pool);
/* The server finished login or a reset/check query. */
void pool_server_ready(struct server *s);
/* Sends a health probe (server_check_query, default the empty query) to an idle server; it
 * is back in the pool when answered. False when it could not be sent (the server is closed). */
bool pool_probe_server(struct server *s);
/* Records the outcome of s's probe in flight, if any (latency up to now). */
void pool_note_probe(struct server *s, bool ok, const char *error);
int pool_db_server_count(struct pooler *p, const char *db_name);
int pool_user_server_count(struct pooler *p, const char *user);

void pooler_schedule_reap(struct pooler *p);
void pooler_reap(struct pooler *p);
/* Queues c's scanned request for sending at the end of the loop turn. False when the
 * flusher could not be created (send now instead). */
__attribute__((warn_unused_result)) bool pooler_defer_send(struct client *c);
__attribute__((warn_unused_result)) bool pooler_defer_result(struct server *s);

/* ---- conn.c: buffer plumbing shared by both directions ---- */
enum fill_result {
    FILL_OK,    /* bytes were read */
    FILL_AGAIN, /* nothing to read now */
    FILL_FULL,  /* no room: flush first */
    FILL_EOF,
    FILL_ERROR,
    FILL_NO_MEMORY,
};
enum fill_result pconn_fill(struct pooler *p, struct pconn *c);
enum flush_result {
    FLUSH_DONE,
    FLUSH_PARTIAL, /* destination would block */
    FLUSH_ERROR,
};
enum flush_result pconn_flush(struct pconn *src, int dst_fd, int64_t *counter);
/* Books n bytes of src's sendable range as sent (pconn_flush, or a batched send). */
void pconn_sent(struct pconn *src, size_t n, int64_t *counter);
/* Returns the buffer to the cache when it holds nothing. */
void pconn_release_if_empty(struct pooler *p, struct pconn *c);
void pconn_drop_buffer(struct pooler *p, struct pconn *c);

/* ---- client.c ---- */
void client_io_cb(int fd, unsigned what, void *arg);
/* A send to the client was partial: wake up on its writable edge from now on. */
void client_want_writable(struct client *c);
/* Runs the client's data path (after it got a server, or its server drained). */
void client_pump(struct client *c);
/* Nothing is in flight between the client and its server either way (or it has none), so
 * the pooler may speak to the client or take the server away without cutting a message. */
bool client_is_quiet(const struct client *c);
/* Sends the client a NoticeResponse (WARNING) when it is quiet; false when not sent. */
bool client_send_notice(struct client *c, const char *message);
/* Rolls back the open transaction of a quiet client and returns its server to the pool (after
 * the reset query where one applies). The client stays connected; its next request is answered
 * with an error saying why, and the one after that runs normally. False when the client is not
 * quiet or holds no transaction. */
bool client_reclaim_server(struct client *c, const char *why);
/* Cancels the query the client's server is running (as a client cancel request would). */
bool client_cancel_query(struct client *c);
/* Pool's first server logged in: finish the logins of waiting clients. */
void client_finish_login(struct client *c);
void client_login_free(struct client *c);
/* Cancel request received on a fresh connection. */
void pooler_handle_cancel(struct pooler *p, uint32_t pid, const uint8_t *key, size_t key_len);

/* ---- server.c ---- */
void server_io_cb(int fd, unsigned what, void *arg);
void server_pump(struct server *s);
/* Sends bytes the pooler wrote itself straight to the server (small, on a socket that takes
 * them at once); false when it could not, and the server must then be closed. */
__attribute__((warn_unused_result)) bool server_send_raw(struct server *s, const void *data,
                                                         size_t len);
void server_login_free(struct server *s);
/* Sends a pooler-generated query whose results are swallowed. */
__attribute__((warn_unused_result)) bool server_send_internal_query(struct server *s,
                                                                    const char *sql);
/* Client→server accounting of one forwarded frontend message (flags and id: see
 * owed_note_frontend). A message that cannot be counted leaves the server unusable for
 * anyone else: it stays with its client and is closed afterwards. */
void server_note_frontend(struct server *s, uint8_t type, uint8_t flags, uint64_t id);
bool server_is_clean(const struct server *s);
/* A request (the client's or the pooler's) is still running on s. */
bool server_owes_answers(const struct server *s);
/* The linked client is going away: a finished result still waiting to be sent to it is
 * dropped, so the server counts as idle again. */
void server_drop_undelivered_result(struct server *s);
void cancel_req_start(struct pooler *p, struct server *s);
void cancel_reqs_forget_server(struct pooler *p, struct server *s);
void cancel_reqs_expire(struct pooler *p, int64_t now_us);
void cancel_reqs_free_all(struct pooler *p);

/* ---- janitor.c ---- */
void janitor_run(void *arg);

static inline int64_t pooler_now(struct pooler *p)
{
    return net_loop_now_us(p->loop);
}

#endif
