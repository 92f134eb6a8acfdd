/* The pooler's typed configuration: pgbouncer.ini keys ([databases], [users], [pgbouncer])
 * plus pgwarden's own ([pgwarden], [manager]). Loaded whole and validated; a reload builds a
 * new struct and swaps it in only when it loaded cleanly, so readers never see a half-applied
 * config. */
#ifndef PGWARDEN_CONFIG_POOLER_CONFIG_H
#define PGWARDEN_CONFIG_POOLER_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/auth_file.h"
#include "config/hba.h"
#include "manager/options.h"
#include "net/tls.h"

enum pool_mode {
    POOL_MODE_SESSION,
    POOL_MODE_TRANSACTION,
    POOL_MODE_STATEMENT,
};

enum pooler_auth_type {
    POOLER_AUTH_TRUST,
    POOLER_AUTH_PLAIN,
    POOLER_AUTH_MD5,
    POOLER_AUTH_SCRAM,
    POOLER_AUTH_CERT, /* the TLS client certificate's common name is the user name */
    POOLER_AUTH_PEER, /* unix socket: the peer's Unix user name is the user name */
    POOLER_AUTH_HBA,  /* per auth_hba_file */
};

/* One [databases] entry. Numeric fields are -1 when not set (the [pgbouncer] default applies). */
struct pooler_db_config {
    char *name;             /* owned: the name clients connect to ("*" = fallback) */
    char *host;             /* owned: NULL = unix socket in /var/run/postgresql (as PgBouncer);
                               a comma-separated list of up to 16 hosts */
    int port;               /* 5432 when unset */
    char *dbname;           /* owned: NULL = same as name (or the client's for "*") */
    char *user;             /* owned: forced server user, NULL = the client's user */
    char *password;         /* owned: for the forced user; NULL = from auth_file */
    char *client_encoding;  /* owned, NULL = unset: startup parameters sent to the server */
    char *datestyle;        /* owned */
    char *timezone;         /* owned */
    char *application_name; /* owned */
    char *connect_query;    /* owned: run once after each server login */
    char *auth_dbname;      /* owned: where auth_query runs for this database, NULL = global */
    char *auth_user;        /* owned: who runs auth_query for this database, NULL = global */
    char *auth_query;       /* owned: the lookup for this database's clients, NULL = global */
    int pool_size;
    int min_pool_size;
    int reserve_pool;
    int max_db_connections;
    int max_db_client_connections;
    int64_t server_lifetime_ms; /* -1 = the [pgbouncer] value (0 there: used once) */
    int pool_mode;              /* enum pool_mode or -1 */
    bool load_balance_disable;  /* load_balance_hosts = disable: keep to one host of the list
                                   until a connection to it fails (else round-robin) */
};

/* One side's *_tls_* keys. Strings are owned; "" = not set. dheparams and ecdhcurve exist
 * for clients only (server_tls has no such keys: NULL). */
struct pooler_tls_config {
    enum tls_sslmode sslmode;
    char *key_file;
    char *cert_file;
    char *ca_file;
    char *protocols;
    char *ciphers;
    char *tls13_ciphers;
    char *dheparams;
    char *ecdhcurve;
};

/* One [users] entry. Numbers are -1 when not set; the timeouts override the [pgbouncer] ones
 * for this user's clients when set above 0 (PgBouncer). */
struct pooler_user_config {
    char *name;    /* owned */
    int pool_mode; /* enum pool_mode or -1 */
    int pool_size;
    int reserve_pool_size;
    int max_user_connections;
    int max_user_client_connections;
    int64_t query_timeout_ms;
    int64_t idle_transaction_timeout_ms;
    int64_t client_idle_timeout_ms;
    int64_t transaction_timeout_ms;
};

/* One [peers] entry: another pgwarden (or PgBouncer) of the same group, where cancel requests
 * carrying its peer_id are forwarded. */
struct pooler_peer_config {
    int id;     /* 1..16383 */
    char *host; /* owned: a unix socket directory ("/...") or a numeric address */
    int port;
};

struct pooler_config {
    char *config_file; /* owned: absolute or as given */

    /* [pgbouncer] */
    char *listen_addr; /* owned; "" = no TCP listener */
    int listen_port;
    char *unix_socket_dir;   /* owned; "" = no unix socket */
    int unix_socket_mode;    /* permission bits of the socket file */
    char *unix_socket_group; /* owned; "" = the process's group; a name or a number */
    int listen_backlog;
    bool tcp_defer_accept; /* wake on a new client only once its first packet is there */
    enum pooler_auth_type auth_type;
    char *auth_file;       /* owned; NULL = none */
    char *auth_user;       /* owned; "" = no auth_query lookups */
    char *auth_query;      /* owned: $1 is the user name */
    char *auth_dbname;     /* owned; "" = the client's database */
    char *auth_hba_file;   /* owned; "" = none (auth_type = hba needs it) */
    char *auth_ident_file; /* owned; "" = none */
    enum pool_mode pool_mode;
    int max_client_conn;
    int default_pool_size;
    int min_pool_size;
    int reserve_pool_size;
    int64_t reserve_pool_timeout_ms;
    int max_db_connections;
    int max_user_connections;
    int max_db_client_connections;   /* clients per database (0 = no limit) */
    int max_user_client_connections; /* clients per user (0 = no limit) */
    char *server_reset_query;        /* owned; "" = none */
    bool server_reset_query_always;
    char *server_check_query; /* owned; "" = the empty query */
    int64_t server_check_delay_ms;
    int64_t stats_period_ms;
    int64_t server_lifetime_ms;
    int64_t server_idle_timeout_ms;
    int64_t server_connect_timeout_ms;
    int64_t server_login_retry_ms;
    int64_t client_login_timeout_ms;
    int64_t client_idle_timeout_ms;
    int64_t idle_transaction_timeout_ms;
    int64_t query_timeout_ms;
    int64_t query_wait_timeout_ms;
    int64_t transaction_timeout_ms; /* a transaction open longer is ended with its client */
    int64_t query_wait_notify_ms;   /* a client queued this long is told so (0 = never) */
    bool server_fast_close;  /* session pooling: a server marked close_needed leaves at once */
    bool server_round_robin; /* idle servers handed out FIFO instead of LIFO */
    bool application_name_add_host; /* " - ADDRESS:PORT" appended to application_name */
    int64_t pkt_buf;
    int64_t max_packet_size;
    int max_prepared_statements;        /* per server connection, LRU; 0 = no rewriting */
    int max_client_prepared_statements; /* named statements one client keeps; 0 = no limit */
    char *ignore_startup_parameters;    /* owned: comma-separated */
    char *track_extra_parameters;       /* owned: comma-separated; their SETs are followed */
    bool log_connections;
    bool log_disconnections;
    bool log_pooler_errors;
    char *logfile;         /* owned; "" = stderr */
    bool syslog;           /* log lines go to syslog as well */
    char *syslog_ident;    /* owned: the name syslog shows ("pgbouncer", as PgBouncer) */
    char *syslog_facility; /* owned: auth, authpriv, daemon, user, local0..local7 */
    char *pidfile;         /* owned; "" = none */
    char *user;        /* owned: Unix user to switch to once listening; "" = stay (read at start) */
    char *admin_users; /* owned; kept for the admin console */
    char *stats_users; /* owned */
    int verbose;
    bool tcp_keepalive;
    int tcp_keepidle;
    int tcp_keepintvl;
    int tcp_keepcnt;
    int tcp_user_timeout_ms;          /* milliseconds, as PgBouncer */
    int tcp_socket_buffer;            /* bytes, SO_SNDBUF and SO_RCVBUF (0 = the kernel's) */
    int64_t dns_max_ttl_ms;           /* a resolved server address is reused this long */
    int64_t dns_nxdomain_ttl_ms;      /* a failed lookup is remembered this long */
    int64_t dns_zone_check_period_ms; /* accepted; zone serial checks need c-ares (warning) */
    char *resolv_conf;                /* owned: resolver configuration ("" = the system's) */
    bool disable_pqexec;              /* a simple Query message ends the client (read at start) */
    bool log_stats;                   /* a "stats:" line every stats_period */
    int sbuf_loopcnt; /* reads of pkt_buf bytes one connection gets per loop turn (0 = no cap) */
    int64_t cancel_wait_timeout_ms; /* a cancel not sent on within this is dropped (0 = never) */
    int64_t autodb_idle_timeout_ms; /* auto-database ("*") pools unused this long are freed */
    char *service_name;             /* owned: Windows service name; accepted, unused here */
    int scram_iterations;           /* of the SCRAM secrets the pooler derives itself */

    /* TLS (docs/TLS.md): client_tls_* for connections from clients (pgwarden is the TLS
     * server), server_tls_* for connections to PostgreSQL. */
    struct pooler_tls_config client_tls;
    struct pooler_tls_config server_tls;

    /* [pgwarden] */
    char *log_format;               /* owned: "text" or "json" */
    int server_lifetime_jitter_pct; /* spread of server_lifetime, +/- percent */
    int64_t shutdown_timeout_ms;    /* deadline of graceful shutdowns; 0 = none */
    int64_t suspend_timeout_ms;     /* SUSPEND drops what has not flushed by then; 0 = none */
    bool io_uring;                  /* batch a turn's deferred sends (read at start only) */
    char *http_listen;              /* owned: "" = no HTTP; "port" or "host:port" */
    char *http_auth_token;          /* owned, secret: bearer token ("" = none) */
    char *http_auth_token_file;     /* owned: file holding the token ("" = none) */

    /* [databases], [users] */
    struct pooler_db_config *dbs; /* owned, n_dbs entries */
    size_t n_dbs;
    struct pooler_user_config *users; /* owned */
    size_t n_users;

    /* [peers] and this process's place in the group (peer_id 0 = no peering) */
    int peer_id;
    bool so_reuseport; /* TCP listeners shared with the other processes of the group */
    struct pooler_peer_config *peers; /* owned, n_peers entries */
    size_t n_peers;

    /* auth_file contents, loaded with the config so a reload swaps both together. */
    struct auth_file auth;
    /* auth_hba_file and auth_ident_file contents (auth_type = hba only), loaded the same way. */
    struct hba hba;
    struct ident_map ident;

    /* [manager] */
    struct manager_options manager;

    /* Warnings of the load (unknown and ignored keys), in file order. Loading only collects them:
     * the caller logs them with pooler_config_log_warnings once its log target (logfile) is open,
     * so they reach it and not only stderr. */
    char **warnings; /* owned, n_warnings strings (owned) */
    size_t n_warnings;
};

/* The [peers] entry for id, or NULL. */
const struct pooler_peer_config *pooler_config_find_peer(const struct pooler_config *cfg, int id);

/* Sets every key to its default (strings are owned copies). */
__attribute__((warn_unused_result)) bool pooler_config_init_defaults(struct pooler_config *cfg);

/* Loads path into a freshly initialised cfg. On failure returns false with "file:line: reason"
 * in err and leaves cfg freed. Unknown keys are ignored with a warning in cfg->warnings. A
 * PgBouncer key pgwarden does not implement is ignored with a warning too, unless running
 * without it would weaken security (a per-database auth_user or auth_query, auth_type pam or
 * ldap): then the load fails,
 * naming the key and its value. The TLS keys are checked here (sslmode names, protocol lists);
 * their files are read when the pooler builds its TLS contexts. */
__attribute__((warn_unused_result)) bool
pooler_config_load(const char *path, struct pooler_config *cfg, char *err, size_t err_len);
/* Same from a string (tests); name is used in errors and for relative includes. */
__attribute__((warn_unused_result)) bool pooler_config_load_string(const char *text,
                                                                   const char *name,
                                                                   struct pooler_config *cfg,
                                                                   char *err, size_t err_len);

void pooler_config_free(struct pooler_config *cfg);

/* Logs cfg->warnings (component "config"), each once per call. */
void pooler_config_log_warnings(const struct pooler_config *cfg);

/* The [databases] entry for name, else the "*" entry, else NULL (borrowed). */
const struct pooler_db_config *pooler_config_find_db(const struct pooler_config *cfg,
                                                     const char *name);
const struct pooler_user_config *pooler_config_find_user(const struct pooler_config *cfg,
                                                         const char *name);

const char *pooler_config_pool_mode_name(enum pool_mode mode);

/* The client_tls_* (client_side) or server_tls_* settings of cfg, for tls_context_new_*. The
 * strings are borrowed from cfg: valid while cfg is. */
void pooler_config_tls_settings(const struct pooler_config *cfg, bool client_side,
                                struct tls_settings *out);

/* SET key = value on a live configuration (the admin console): a [pgbouncer]/[pgwarden] key
 * that a reload may change, checked like a loaded file. On refusal the configuration is
 * unchanged and err says why. A later RELOAD reads the file again, as in PgBouncer. */
enum pooler_set_result {
    POOLER_SET_OK,
    POOLER_SET_UNKNOWN, /* no such key, or one pgwarden does not implement */
    POOLER_SET_REFUSED, /* read at start only, or a bad value */
};
enum pooler_set_result pooler_config_set(struct pooler_config *cfg, const char *key,
                                         const char *value, char *err, size_t err_len);

/* Describes every [pgbouncer]/[pgwarden] key (docs and --help). */
typedef void (*pooler_config_describe_fn)(void *ctx, const char *section, const char *key,
                                          const char *default_text, bool pgbouncer_compatible,
                                          const char *meaning);
void pooler_config_describe(pooler_config_describe_fn emit, void *ctx);

/* Calls emit once per [pgbouncer]/[pgwarden] key with its current value formatted as it would
 * be written in the file (durations in seconds, sizes in bytes, booleans 0/1), its default,
 * and whether a reload can change it. The one secret key, http_auth_token, is masked. */
typedef void (*pooler_config_value_fn)(void *ctx, const char *key, const char *value,
                                       const char *default_text, bool reloadable);
void pooler_config_values(const struct pooler_config *cfg, pooler_config_value_fn emit, void *ctx);

#endif
