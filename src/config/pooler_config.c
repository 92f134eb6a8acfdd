/* pgbouncer.ini → struct pooler_config. One table describes every scalar key (type, default,
 * PgBouncer compatibility, meaning); [databases] and [users] entries are connection-string
 * style and parsed with ini_parse_connstr. */
#include "config/pooler_config.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/log.h"
#include "config/ini.h"
#include "net/sock.h"

enum key_type {
    KEY_INT,
    KEY_BOOL,
    KEY_STRING,
    KEY_DURATION, /* int64 ms; a bare number is seconds, as in PgBouncer */
    KEY_SIZE,     /* int64 bytes */
    KEY_POOL_MODE,
    KEY_AUTH_TYPE,
    KEY_SSLMODE, /* enum tls_sslmode */
    KEY_MODE,    /* int file mode bits; C notation as PgBouncer reads it: 0777 octal, 0x1ff hex */
};

struct key_def {
    const char *name;
    enum key_type type;
    size_t offset;
    const char *default_text;
    bool pgbouncer; /* same name and meaning as PgBouncer */
    const char *meaning;
    bool restart; /* read at start only: a reload or SET cannot change it */
};

#define OFF(field) offsetof(struct pooler_config, field)

static const struct key_def KEYS[] = {
    {"listen_addr", KEY_STRING, OFF(listen_addr), "127.0.0.1", true,
     "comma-separated TCP addresses to listen on (\"*\" = all IPv4 and IPv6 addresses, empty = "
     "no TCP)",
     true},
    {"listen_port", KEY_INT, OFF(listen_port), "6432", true, "TCP port, also names the unix socket",
     true},
    {"unix_socket_dir", KEY_STRING, OFF(unix_socket_dir), "/tmp", true,
     "directory of the unix socket .s.PGSQL.<port> (empty = none)", true},
    {"unix_socket_mode", KEY_MODE, OFF(unix_socket_mode), "0777", true,
     "file mode of the unix socket (octal as 0777; read at start)", true},
    {"unix_socket_group", KEY_STRING, OFF(unix_socket_group), "", true,
     "group (name or number) the unix socket is given (empty = the process's; read at start)",
     true},
    {"listen_backlog", KEY_INT, OFF(listen_backlog), "128", true, "listen(2) backlog", true},
    {"so_reuseport", KEY_BOOL, OFF(so_reuseport), "0", true,
     "set SO_REUSEPORT on the TCP listeners, so several pgwarden processes share the port (give "
     "each its own unix_socket_dir and pidfile, and a peer_id with [peers] so that cancel "
     "requests reach the process holding the query)",
     true},
    {"peer_id", KEY_INT, OFF(peer_id), "0", true,
     "this process's id in a group of peered processes, 1..16383 (0 = no peering); it is "
     "written into the cancel keys handed to clients",
     true},
    {"tcp_defer_accept", KEY_BOOL, OFF(tcp_defer_accept), "1", true,
     "TCP listeners report a new client only once its first packet has arrived "
     "(TCP_DEFER_ACCEPT, 1 s; a silent client is accepted after that), saving a wake-up per "
     "connection",
     true},
    {"auth_type", KEY_AUTH_TYPE, OFF(auth_type), "md5", true,
     "client authentication: trust, plain, md5, scram-sha-256, cert (TLS client certificate "
     "whose common name is the user), peer (unix socket, the peer's Unix user), hba (per "
     "auth_hba_file)",
     false},
    {"auth_file", KEY_STRING, OFF(auth_file), "", true,
     "userlist.txt with \"user\" \"secret\" lines (plain, md5 or SCRAM secrets)", false},
    {"auth_user", KEY_STRING, OFF(auth_user), "", true,
     "user whose auth_file secret logs in to run auth_query for users auth_file does not list "
     "(empty = no lookups; a database's own auth_user= wins)",
     false},
    {"auth_query", KEY_STRING, OFF(auth_query),
     "SELECT rolname, CASE WHEN rolvaliduntil < now() THEN NULL ELSE rolpassword END FROM "
     "pg_authid WHERE rolname=$1 AND rolcanlogin",
     true,
     "query returning (user name, secret) for $1; a NULL secret refuses the user (a database's "
     "own auth_query= wins)",
     false},
    {"auth_dbname", KEY_STRING, OFF(auth_dbname), "", true,
     "[databases] entry auth_query runs in (empty = the client's database; a database's own "
     "auth_dbname= wins; not the admin console)",
     false},
    {"auth_hba_file", KEY_STRING, OFF(auth_hba_file), "", true,
     "pg_hba.conf-style rules for auth_type = hba (local, host, hostssl, hostnossl; read at "
     "start and on reload)",
     false},
    {"auth_ident_file", KEY_STRING, OFF(auth_ident_file), "", true,
     "user name maps (\"map system-user database-user\") for map= on peer and cert lines", false},
    {"scram_iterations", KEY_INT, OFF(scram_iterations), "4096", true,
     "PBKDF2 iterations of the SCRAM secrets pgwarden derives itself: for a plaintext "
     "auth_file password checked over SCRAM, and for an unknown user's mock exchange",
     false},
    {"pool_mode", KEY_POOL_MODE, OFF(pool_mode), "session", true,
     "when a server returns to the pool: session, transaction, statement", false},
    {"max_client_conn", KEY_INT, OFF(max_client_conn), "100", true,
     "most client connections at once; more get ErrorResponse 53300", false},
    {"default_pool_size", KEY_INT, OFF(default_pool_size), "20", true,
     "server connections per database+user pool", false},
    {"min_pool_size", KEY_INT, OFF(min_pool_size), "0", true,
     "server connections kept open per pool even when idle", false},
    {"reserve_pool_size", KEY_INT, OFF(reserve_pool_size), "0", true,
     "extra servers a pool may open when a client waited reserve_pool_timeout", false},
    {"reserve_pool_timeout", KEY_DURATION, OFF(reserve_pool_timeout_ms), "5", true,
     "wait after which the reserve pool is used", false},
    {"max_db_connections", KEY_INT, OFF(max_db_connections), "0", true,
     "most server connections per database over all its pools (0 = no limit)", false},
    {"max_user_connections", KEY_INT, OFF(max_user_connections), "0", true,
     "most server connections per user over all its pools (0 = no limit)", false},
    {"max_db_client_connections", KEY_INT, OFF(max_db_client_connections), "0", true,
     "most client connections per database (0 = no limit); more get an error at login", false},
    {"max_user_client_connections", KEY_INT, OFF(max_user_client_connections), "0", true,
     "most client connections per user (0 = no limit); more get an error at login", false},
    {"server_reset_query", KEY_STRING, OFF(server_reset_query), "DISCARD ALL", true,
     "run when a session-mode client lets its server go (empty = none)", false},
    {"server_reset_query_always", KEY_BOOL, OFF(server_reset_query_always), "0", true,
     "also run server_reset_query in transaction mode", false},
    {"server_check_query", KEY_STRING, OFF(server_check_query), "", true,
     "health check before reusing a server idle longer than server_check_delay (empty = the "
     "empty query)",
     false},
    {"server_check_delay", KEY_DURATION, OFF(server_check_delay_ms), "30", true,
     "idle time after which a server is checked before reuse (0 = check before every reuse)",
     false},
    {"stats_period", KEY_DURATION, OFF(stats_period_ms), "60", true,
     "period over which SHOW STATS averages are computed", false},
    {"server_lifetime", KEY_DURATION, OFF(server_lifetime_ms), "3600", true,
     "servers older than this are closed when released (with jitter; 0 = a server serves one "
     "client, then is closed)",
     false},
    {"server_idle_timeout", KEY_DURATION, OFF(server_idle_timeout_ms), "600", true,
     "idle servers are closed after this (0 = never)", false},
    {"autodb_idle_timeout", KEY_DURATION, OFF(autodb_idle_timeout_ms), "3600", true,
     "pools of databases made from the \"*\" entry are freed, with their statistics, once "
     "unused this long",
     false},
    {"server_connect_timeout", KEY_DURATION, OFF(server_connect_timeout_ms), "15", true,
     "connect plus login to PostgreSQL must finish within this", false},
    {"server_login_retry", KEY_DURATION, OFF(server_login_retry_ms), "15", true,
     "after a failed server login, wait this long before trying again", false},
    {"client_login_timeout", KEY_DURATION, OFF(client_login_timeout_ms), "60", true,
     "a client must finish startup and authentication within this", false},
    {"client_idle_timeout", KEY_DURATION, OFF(client_idle_timeout_ms), "0", true,
     "close clients idle (without a server) longer than this (0 = never)", false},
    {"idle_transaction_timeout", KEY_DURATION, OFF(idle_transaction_timeout_ms), "0", true,
     "close clients idle inside a transaction longer than this (0 = never)", false},
    {"query_timeout", KEY_DURATION, OFF(query_timeout_ms), "0", true,
     "cancel and close a query running longer than this (0 = never)", false},
    {"query_wait_timeout", KEY_DURATION, OFF(query_wait_timeout_ms), "120", true,
     "a client waiting for a server longer than this gets an error (0 = forever)", false},
    {"transaction_timeout", KEY_DURATION, OFF(transaction_timeout_ms), "0", true,
     "close clients whose transaction has been open longer than this (0 = never)", false},
    {"query_wait_notify", KEY_DURATION, OFF(query_wait_notify_ms), "5", true,
     "a client queued for a server longer than this gets a notice saying so (0 = never)", false},
    {"cancel_wait_timeout", KEY_DURATION, OFF(cancel_wait_timeout_ms), "10", true,
     "a cancel connection to PostgreSQL not finished after this (not connected, not sent, or "
     "not yet closed by PostgreSQL) is given up and closed; its server, held until then, is "
     "released, and closed instead of reused when the request had gone out whole (0 = wait "
     "as long as it takes)",
     false},
    {"server_fast_close", KEY_BOOL, OFF(server_fast_close), "0", true,
     "session pooling: a server marked to be closed (RECONNECT, a changed database entry) is "
     "closed with its client at the end of the current transaction instead of the session",
     false},
    {"server_round_robin", KEY_BOOL, OFF(server_round_robin), "0", true,
     "hand out idle servers oldest-released first, spreading load over all of them (default: "
     "most recently released first, so a few stay busy and the rest can time out)",
     false},
    {"application_name_add_host", KEY_BOOL, OFF(application_name_add_host), "0", true,
     "append \" - ADDRESS:PORT\" of the client to the application_name it starts with (\"app\" "
     "when it sends none), so the server's pg_stat_activity shows where a session comes from",
     false},
    {"suspend_timeout", KEY_DURATION, OFF(suspend_timeout_ms), "10", true,
     "SUSPEND waits this long for what was read to be sent on, then drops the connections "
     "that hold it back (0 = wait forever)",
     false},
    {"pkt_buf", KEY_SIZE, OFF(pkt_buf), "8192", true,
     "bytes of the I/O buffer an active connection borrows (PgBouncer: 4096)", true},
    {"sbuf_loopcnt", KEY_INT, OFF(sbuf_loopcnt), "5", true,
     "how many pkt_buf-sized reads one connection gets per loop turn before the others are "
     "served (0 = no cap)",
     false},
    {"max_packet_size", KEY_SIZE, OFF(max_packet_size), "2147483647", true,
     "largest protocol message accepted", false},
    {"disable_pqexec", KEY_BOOL, OFF(disable_pqexec), "0", true,
     "refuse the simple Query protocol: a client that sends a Query message is disconnected "
     "(only clients that use the extended protocol keep working; read at start)",
     true},
    {"max_prepared_statements", KEY_INT, OFF(max_prepared_statements), "200", true,
     "transaction/statement mode: protocol-level named statements kept prepared per server "
     "connection, least recently used closed first; session mode remembers them too, so "
     "that a switch of pool_mode keeps them (0 = named statements are not tracked)",
     false},
    {"ignore_startup_parameters", KEY_STRING, OFF(ignore_startup_parameters), "", true,
     "comma-separated startup parameters accepted and ignored (e.g. extra_float_digits)", false},
    {"track_extra_parameters", KEY_STRING, OFF(track_extra_parameters), "IntervalStyle", true,
     "comma-separated parameters besides the five PgBouncer tracks whose changes PostgreSQL "
     "reports (ParameterStatus): a client's value, from its startup packet or its SET, is "
     "restored on every server it is given",
     false},
    {"log_connections", KEY_BOOL, OFF(log_connections), "1", true, "log client logins", false},
    {"log_disconnections", KEY_BOOL, OFF(log_disconnections), "1", true,
     "log disconnections with the reason", false},
    {"log_pooler_errors", KEY_BOOL, OFF(log_pooler_errors), "1", true,
     "log errors the pooler sends to clients", false},
    {"log_stats", KEY_BOOL, OFF(log_stats), "1", true,
     "log a \"stats:\" line of per-second averages over all pools every stats_period", false},
    {"logfile", KEY_STRING, OFF(logfile), "", true, "log file (empty = stderr)", false},
    {"syslog", KEY_BOOL, OFF(syslog), "0", true,
     "log lines of level info and above go to syslog as well (as \"component: message\")", false},
    {"syslog_ident", KEY_STRING, OFF(syslog_ident), "pgbouncer", true,
     "the program name syslog shows for pgwarden's lines", false},
    {"syslog_facility", KEY_STRING, OFF(syslog_facility), "daemon", true,
     "syslog facility: auth, authpriv, daemon, user, local0 .. local7", false},
    {"pidfile", KEY_STRING, OFF(pidfile), "", true,
     "write the process id here; refuse to start while it names a live process (read at "
     "start)",
     true},
    {"conffile", KEY_STRING, OFF(config_file), "", true,
     "the configuration file being used (default: the one on the command line); SET changes "
     "which file the next RELOAD reads",
     false},
    {"service_name", KEY_STRING, OFF(service_name), "pgbouncer", true,
     "Windows service name in PgBouncer; accepted and unused here", true},
    {"job_name", KEY_STRING, OFF(service_name), "pgbouncer", true, "another name of service_name",
     true},
    {"user", KEY_STRING, OFF(user), "", true,
     "Unix user to switch to once the listeners are bound (needs root; read at start)", true},
    {"admin_users", KEY_STRING, OFF(admin_users), "", true, "admin console users", false},
    {"stats_users", KEY_STRING, OFF(stats_users), "", true, "read-only admin console users", false},
    {"verbose", KEY_INT, OFF(verbose), "0", true, "1 = debug, 2 = trace logging", false},
    {"tcp_keepalive", KEY_BOOL, OFF(tcp_keepalive), "1", true, "TCP keepalive on all sockets",
     false},
    {"tcp_keepidle", KEY_INT, OFF(tcp_keepidle), "0", true,
     "seconds idle before the first keepalive probe (0 = kernel default)", false},
    {"tcp_keepintvl", KEY_INT, OFF(tcp_keepintvl), "0", true,
     "seconds between keepalive probes (0 = kernel default)", false},
    {"tcp_keepcnt", KEY_INT, OFF(tcp_keepcnt), "0", true,
     "unanswered probes before the connection is dropped (0 = kernel default)", false},
    {"tcp_user_timeout", KEY_INT, OFF(tcp_user_timeout_ms), "0", true,
     "milliseconds unacknowledged data may wait before the connection fails (TCP_USER_TIMEOUT; "
     "0 = off)",
     false},
    {"tcp_socket_buffer", KEY_INT, OFF(tcp_socket_buffer), "0", true,
     "bytes of the kernel's send and receive buffers (SO_SNDBUF, SO_RCVBUF) of client and "
     "server TCP sockets (0 = the kernel's default)",
     false},
    {"dns_max_ttl", KEY_DURATION, OFF(dns_max_ttl_ms), "15", true,
     "a server host name's resolved address is reused this long before it is looked up again "
     "(the DNS answer's own TTL is not used)",
     false},
    {"dns_nxdomain_ttl", KEY_DURATION, OFF(dns_nxdomain_ttl_ms), "15", true,
     "a host name that did not resolve (NXDOMAIN or any lookup error) fails new server logins "
     "at once for this long, without asking DNS again",
     false},
    {"dns_zone_check_period", KEY_DURATION, OFF(dns_zone_check_period_ms), "0", true,
     "accepted for PgBouncer configs: zone serial checks exist only in PgBouncer's c-ares "
     "build; pgwarden's resolver (libevent's, as PgBouncer's evdns build) never makes them, "
     "and a value above 0 gets a warning",
     false},
    {"resolv_conf", KEY_STRING, OFF(resolv_conf), "", true,
     "resolv.conf-style file naming the DNS servers and options for server host names (empty "
     "= the system's /etc/resolv.conf; read at start)",
     true},
    {"client_tls_sslmode", KEY_SSLMODE, OFF(client_tls.sslmode), "disable", true,
     "TLS for clients: disable (an SSLRequest is answered N), allow/prefer (TLS when the client "
     "asks), require (plain TCP clients are refused; unix socket clients are not), verify-ca/"
     "verify-full (a client certificate signed by client_tls_ca_file is required)",
     false},
    {"client_tls_key_file", KEY_STRING, OFF(client_tls.key_file), "", true,
     "private key (PEM, not encrypted) for TLS with clients", false},
    {"client_tls_cert_file", KEY_STRING, OFF(client_tls.cert_file), "", true,
     "certificate (PEM, then intermediates) shown to clients", false},
    {"client_tls_ca_file", KEY_STRING, OFF(client_tls.ca_file), "", true,
     "CA certificates that sign client certificates (verify-ca, verify-full)", false},
    {"client_tls_protocols", KEY_STRING, OFF(client_tls.protocols), "secure", true,
     "TLS versions for clients: tlsv1.0 .. tlsv1.3, all, secure (1.2 and 1.3), legacy, !name",
     false},
    {"client_tls_ciphers", KEY_STRING, OFF(client_tls.ciphers), "default", true,
     "TLS 1.2 and older cipher list for clients (OpenSSL syntax; default/secure/fast/normal = "
     "OpenSSL's default, all)",
     false},
    {"client_tls13_ciphers", KEY_STRING, OFF(client_tls.tls13_ciphers), "", true,
     "TLS 1.3 suites for clients, ':'-separated (empty = OpenSSL's default)", false},
    {"client_tls_dheparams", KEY_STRING, OFF(client_tls.dheparams), "auto", true,
     "DHE key exchange with clients: auto, none (legacy is refused)", false},
    {"client_tls_ecdhcurve", KEY_STRING, OFF(client_tls.ecdhcurve), "auto", true,
     "ECDH groups for clients: auto, none, or names separated by ':'", false},
    {"server_tls_sslmode", KEY_SSLMODE, OFF(server_tls.sslmode), "prefer", true,
     "TLS to PostgreSQL over TCP: disable, allow/prefer (TLS when the server agrees, else plain), "
     "require (TLS or no connection), verify-ca (and a trusted certificate), verify-full (and "
     "the host name matches)",
     false},
    {"server_tls_ca_file", KEY_STRING, OFF(server_tls.ca_file), "", true,
     "CA certificates for PostgreSQL's certificate (\"system\" = OpenSSL's store)", false},
    {"server_tls_key_file", KEY_STRING, OFF(server_tls.key_file), "", true,
     "client certificate's private key for PostgreSQL (with server_tls_cert_file)", false},
    {"server_tls_cert_file", KEY_STRING, OFF(server_tls.cert_file), "", true,
     "client certificate shown to PostgreSQL", false},
    {"server_tls_protocols", KEY_STRING, OFF(server_tls.protocols), "secure", true,
     "TLS versions to PostgreSQL (as client_tls_protocols)", false},
    {"server_tls_ciphers", KEY_STRING, OFF(server_tls.ciphers), "default", true,
     "TLS 1.2 and older cipher list to PostgreSQL (as client_tls_ciphers)", false},
    {"server_tls13_ciphers", KEY_STRING, OFF(server_tls.tls13_ciphers), "", true,
     "TLS 1.3 suites to PostgreSQL (empty = OpenSSL's default)", false},
    {"log_format", KEY_STRING, OFF(log_format), "text", false, "text or json (JSON lines)", false},
    {"max_client_prepared_statements", KEY_INT, OFF(max_client_prepared_statements), "10000", false,
     "most protocol-level named statements one client may have prepared at once while they are "
     "tracked (the pooler keeps each one's query text); in transaction and statement mode a "
     "client that prepares one more is disconnected with 54000, in session mode the next ones "
     "are not remembered across a switch of pool_mode (0 = no limit)",
     false},
    {"server_lifetime_jitter", KEY_INT, OFF(server_lifetime_jitter_pct), "10", false,
     "server_lifetime is spread by +/- this percent so servers do not expire together", false},
    {"shutdown_timeout", KEY_DURATION, OFF(shutdown_timeout_ms), "0", false,
     "graceful shutdowns (SIGINT, SIGTERM) end after this at the latest (0 = wait forever)", false},
    {"io_uring", KEY_BOOL, OFF(io_uring), "1", false,
     "send each loop turn's requests and results in one io_uring system call (read at start; "
     "falls back to send() where io_uring is unavailable)",
     true},
    {"http_listen", KEY_STRING, OFF(http_listen), "", false,
     "HTTP endpoint for /healthz, /readyz and /metrics: \"port\" (on 127.0.0.1) or "
     "\"host:port\" (empty = no HTTP; read at start)",
     true},
    {"http_auth_token", KEY_STRING, OFF(http_auth_token), "", false,
     "bearer token every HTTP endpoint but /healthz requires (empty = none; shown masked)", false},
    {"http_auth_token_file", KEY_STRING, OFF(http_auth_token_file), "", false,
     "file whose first line is the HTTP bearer token (instead of http_auth_token; read at start "
     "and on reload)",
     false},
};

/*
 * PgBouncer keys pgwarden does not implement. Each has a rule chosen by what running without
 * the feature means. Most only tune something pgwarden does its own way: a warning says the
 * key is ignored. Where the file asks for a protection pgwarden cannot give, starting anyway
 * would weaken it without a word, so the load fails instead, naming the key and its value; a
 * reload then keeps the running config.
 */
enum unimplemented_rule {
    RULE_IGNORE,        /* harmless without it: warn that it is ignored */
    RULE_REFUSE_IF_SET, /* any non-empty value asks for a check pgwarden does not make */
};

struct unimplemented_key {
    const char *name;
    enum unimplemented_rule rule;
    const char *risk; /* REFUSE_IF_SET: what happens without the feature */
};

static const struct unimplemented_key UNIMPLEMENTED[] = {
    {"auth_ldap_options", RULE_IGNORE, NULL}, /* only used by auth_type = ldap, refused */
};

enum unimplemented_verdict {
    UNIMPLEMENTED_SILENT, /* nothing to say (an empty value) */
    UNIMPLEMENTED_WARN,   /* accepted; msg is the warning */
    UNIMPLEMENTED_REFUSE, /* the load fails; msg is the reason */
};

static const struct unimplemented_key *find_unimplemented(const struct unimplemented_key *keys,
                                                          size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (!strcasecmp(keys[i].name, name))
            return &keys[i];
    return NULL;
}

/* Applies k's rule to value; writes the warning or the reason for refusing into msg. */
static enum unimplemented_verdict judge_unimplemented(const struct unimplemented_key *k,
                                                      const char *value, char *msg, size_t msg_len)
{
    switch (k->rule) {
    case RULE_IGNORE:
        snprintf(msg, msg_len, "'%s' is not supported by pgwarden yet; ignored", k->name);
        return UNIMPLEMENTED_WARN;
    case RULE_REFUSE_IF_SET:
        if (!value[0])
            return UNIMPLEMENTED_SILENT;
        snprintf(msg, msg_len,
                 "%s = '%.200s' is refused: pgwarden does not implement it (%s); remove the "
                 "key to run without it",
                 k->name, value, k->risk);
        return UNIMPLEMENTED_REFUSE;
    }
    return UNIMPLEMENTED_SILENT;
}

static bool parse_int(const char *v, long long lo, long long hi, long long *out)
{
    errno = 0;
    char *end;
    long long x = strtoll(v, &end, 10);
    if (errno || end == v || *end != '\0' || x < lo || x > hi)
        return false;
    *out = x;
    return true;
}

/* A file mode in C notation, as PgBouncer reads unix_socket_mode: a leading 0 means octal,
 * 0x hex, else decimal; only permission bits (up to 07777) are accepted. */
static bool parse_mode(const char *v, long long *out)
{
    errno = 0;
    char *end;
    long long x = strtoll(v, &end, 0);
    if (errno || end == v || *end != '\0' || x < 0 || x > 07777)
        return false;
    *out = x;
    return true;
}

/* PgBouncer keeps its switches in integer keys, so "2" or "-1" mean on there: any integer is
 * accepted, 0 = off; and the words on/off, true/false, yes/no. */
static bool parse_bool(const char *v, bool *out)
{
    long long i;
    if (parse_int(v, LLONG_MIN, LLONG_MAX, &i)) {
        *out = i != 0;
        return true;
    }
    if (!strcasecmp(v, "on") || !strcasecmp(v, "true") || !strcasecmp(v, "yes")) {
        *out = true;
        return true;
    }
    if (!strcasecmp(v, "off") || !strcasecmp(v, "false") || !strcasecmp(v, "no")) {
        *out = false;
        return true;
    }
    return false;
}

/* A bare number is seconds (PgBouncer); units us, ms, s, min, h, d are accepted too. */
static bool parse_duration_ms(const char *v, int64_t *out)
{
    errno = 0;
    char *end;
    double x = strtod(v, &end);
    if (errno || end == v || !(x >= 0) || !isfinite(x))
        return false;
    while (*end == ' ')
        end++;
    double scale;
    if (*end == '\0' || !strcmp(end, "s") || !strcmp(end, "sec"))
        scale = 1000.0;
    else if (!strcmp(end, "ms"))
        scale = 1.0;
    else if (!strcmp(end, "us"))
        scale = 0.001;
    else if (!strcmp(end, "min"))
        scale = 60000.0;
    else if (!strcmp(end, "h"))
        scale = 3600000.0;
    else if (!strcmp(end, "d"))
        scale = 86400000.0;
    else
        return false;
    double ms = x * scale;
    if (ms > 9e15)
        return false;
    *out = (int64_t)ms;
    if (*out == 0 && ms > 0)
        *out = 1;
    return true;
}

static bool parse_size(const char *v, int64_t *out)
{
    errno = 0;
    char *end;
    long long x = strtoll(v, &end, 10);
    if (errno || end == v || x < 0)
        return false;
    while (*end == ' ')
        end++;
    long long mul = 1;
    if (*end == '\0' || !strcasecmp(end, "b"))
        mul = 1;
    else if (!strcasecmp(end, "kb"))
        mul = 1024;
    else if (!strcasecmp(end, "mb"))
        mul = 1024 * 1024;
    else if (!strcasecmp(end, "gb"))
        mul = 1024LL * 1024 * 1024;
    else
        return false;
    if (x > INT64_MAX / mul)
        return false;
    *out = x * mul;
    return true;
}

static int parse_pool_mode(const char *v)
{
    if (!strcasecmp(v, "session"))
        return POOL_MODE_SESSION;
    if (!strcasecmp(v, "transaction"))
        return POOL_MODE_TRANSACTION;
    if (!strcasecmp(v, "statement"))
        return POOL_MODE_STATEMENT;
    return -1;
}

const char *pooler_config_pool_mode_name(enum pool_mode mode)
{
    switch (mode) {
    case POOL_MODE_SESSION:
        return "session";
    case POOL_MODE_TRANSACTION:
        return "transaction";
    case POOL_MODE_STATEMENT:
        return "statement";
    }
    return "?";
}

static bool set_key(struct pooler_config *cfg, const struct key_def *k, const char *v, char *err,
                    size_t err_len)
{
    void *field = (char *)cfg + k->offset;
    long long i;
    int64_t d;
    bool b;
    switch (k->type) {
    case KEY_INT:
        if (!parse_int(v, 0, INT32_MAX, &i)) {
            snprintf(err, err_len, "%s: '%.64s' is not a non-negative integer", k->name, v);
            return false;
        }
        *(int *)field = (int)i;
        return true;
    case KEY_BOOL:
        if (!parse_bool(v, &b)) {
            snprintf(err, err_len, "%s: '%.64s' is not a boolean (use 0/1, on/off)", k->name, v);
            return false;
        }
        *(bool *)field = b;
        return true;
    case KEY_STRING: {
        char *copy = strdup(v);
        if (!copy) {
            snprintf(err, err_len, "out of memory");
            return false;
        }
        free(*(char **)field);
        *(char **)field = copy;
        return true;
    }
    case KEY_DURATION:
        if (!parse_duration_ms(v, &d)) {
            snprintf(err, err_len, "%s: '%.64s' is not a duration (seconds, or 250ms, 5min, 1h)",
                     k->name, v);
            return false;
        }
        *(int64_t *)field = d;
        return true;
    case KEY_SIZE:
        if (!parse_size(v, &d)) {
            snprintf(err, err_len, "%s: '%.64s' is not a size (bytes, or 8kB, 1MB)", k->name, v);
            return false;
        }
        *(int64_t *)field = d;
        return true;
    case KEY_POOL_MODE: {
        int m = parse_pool_mode(v);
        if (m < 0) {
            snprintf(err, err_len, "pool_mode: '%.64s' is not session, transaction or statement",
                     v);
            return false;
        }
        *(enum pool_mode *)field = (enum pool_mode)m;
        return true;
    }
    case KEY_AUTH_TYPE: {
        enum pooler_auth_type t;
        if (!strcasecmp(v, "trust"))
            t = POOLER_AUTH_TRUST;
        else if (!strcasecmp(v, "plain"))
            t = POOLER_AUTH_PLAIN;
        else if (!strcasecmp(v, "md5"))
            t = POOLER_AUTH_MD5;
        else if (!strcasecmp(v, "scram-sha-256"))
            t = POOLER_AUTH_SCRAM;
        else if (!strcasecmp(v, "cert"))
            t = POOLER_AUTH_CERT;
        else if (!strcasecmp(v, "peer"))
            t = POOLER_AUTH_PEER;
        else if (!strcasecmp(v, "hba"))
            t = POOLER_AUTH_HBA;
        else {
            snprintf(err, err_len,
                     "auth_type: '%.64s' is not supported (use trust, plain, md5, scram-sha-256, "
                     "cert, peer, hba)",
                     v);
            return false;
        }
        *(enum pooler_auth_type *)field = t;
        return true;
    }
    case KEY_SSLMODE: {
        enum tls_sslmode m;
        if (!tls_sslmode_parse(v, &m)) {
            snprintf(err, err_len,
                     "%s: '%.64s' is not an sslmode (disable, allow, prefer, require, verify-ca, "
                     "verify-full)",
                     k->name, v);
            return false;
        }
        *(enum tls_sslmode *)field = m;
        return true;
    }
    case KEY_MODE:
        if (!parse_mode(v, &i)) {
            snprintf(err, err_len, "%s: '%.64s' is not a file mode (octal, e.g. 0770)", k->name, v);
            return false;
        }
        *(int *)field = (int)i;
        return true;
    }
    return false;
}

bool pooler_config_init_defaults(struct pooler_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    char err[256];
    for (size_t i = 0; i < sizeof(KEYS) / sizeof(KEYS[0]); i++) {
        if (!set_key(cfg, &KEYS[i], KEYS[i].default_text, err, sizeof(err))) {
            pooler_config_free(cfg);
            return false;
        }
    }
    options_init_defaults(&cfg->manager);
    return true;
}

/* Keeps a warning of the load for pooler_config_log_warnings. Out of memory, it is logged
 * at once instead of being lost. */
__attribute__((format(printf, 2, 3))) static void add_warning(struct pooler_config *cfg,
                                                              const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    char **more = realloc(cfg->warnings, (cfg->n_warnings + 1) * sizeof(*more));
    char *copy = more ? strdup(msg) : NULL;
    if (more)
        cfg->warnings = more;
    if (!copy) {
        log_warning("config", "%s", msg);
        return;
    }
    cfg->warnings[cfg->n_warnings++] = copy;
}

void pooler_config_log_warnings(const struct pooler_config *cfg)
{
    for (size_t i = 0; i < cfg->n_warnings; i++)
        log_warning("config", "%s", cfg->warnings[i]);
}

/* Judges value of the unimplemented key u: keeps a warning (prefixed with warn_where) and
 * returns true, or returns false with the reason (prefixed with err_where) in err. */
static bool apply_unimplemented(struct pooler_config *cfg, const struct unimplemented_key *u,
                                const char *value, const char *warn_where, const char *err_where,
                                char *err, size_t err_len)
{
    char msg[512];
    switch (judge_unimplemented(u, value, msg, sizeof(msg))) {
    case UNIMPLEMENTED_SILENT:
        return true;
    case UNIMPLEMENTED_WARN:
        add_warning(cfg, "%s%s", warn_where, msg);
        return true;
    case UNIMPLEMENTED_REFUSE:
        break;
    }
    snprintf(err, err_len, "%s%s", err_where, msg);
    return false;
}

/* ---- [databases] and [users] ---- */

struct db_parse {
    struct pooler_config *cfg; /* borrowed: where warnings go */
    struct pooler_db_config *db;
};

static bool set_str(char **field, const char *v)
{
    char *c = strdup(v);
    if (!c)
        return false;
    free(*field);
    *field = c;
    return true;
}

static bool db_connstr_cb(void *ctx, const char *key, const char *value, char *err, size_t err_len)
{
    struct pooler_db_config *db = ((struct db_parse *)ctx)->db;
    long long i;
    bool ok = true;
    if (!strcmp(key, "host")) {
        /* A list: no empty entry ("a,,b", a trailing comma), at most 16 (pool.h). */
        int n = 1;
        for (const char *c = value; *c; c++)
            n += *c == ',';
        if (!value[0] || value[0] == ',' || value[strlen(value) - 1] == ',' ||
            strstr(value, ",,") || n > 16) {
            snprintf(err, err_len, "host: '%.64s' is not a host or a list of up to 16 hosts",
                     value);
            return false;
        }
        ok = set_str(&db->host, value);
    } else if (!strcmp(key, "load_balance_hosts")) {
        if (!strcmp(value, "round-robin"))
            db->load_balance_disable = false;
        else if (!strcmp(value, "disable"))
            db->load_balance_disable = true;
        else {
            snprintf(err, err_len, "load_balance_hosts: '%.32s' is not round-robin or disable",
                     value);
            return false;
        }
    } else if (!strcmp(key, "port")) {
        if (!parse_int(value, 1, 65535, &i)) {
            snprintf(err, err_len, "port: '%.32s' is not a port number", value);
            return false;
        }
        db->port = (int)i;
    } else if (!strcmp(key, "dbname"))
        ok = set_str(&db->dbname, value);
    else if (!strcmp(key, "user"))
        ok = set_str(&db->user, value);
    else if (!strcmp(key, "password"))
        ok = set_str(&db->password, value);
    else if (!strcmp(key, "client_encoding"))
        ok = set_str(&db->client_encoding, value);
    else if (!strcasecmp(key, "datestyle"))
        ok = set_str(&db->datestyle, value);
    else if (!strcasecmp(key, "timezone"))
        ok = set_str(&db->timezone, value);
    else if (!strcmp(key, "application_name"))
        ok = set_str(&db->application_name, value);
    else if (!strcmp(key, "connect_query"))
        ok = set_str(&db->connect_query, value);
    else if (!strcmp(key, "auth_dbname"))
        ok = set_str(&db->auth_dbname, value);
    else if (!strcmp(key, "auth_user"))
        ok = set_str(&db->auth_user, value);
    else if (!strcmp(key, "auth_query"))
        ok = set_str(&db->auth_query, value);
    else if (!strcmp(key, "pool_size") || !strcmp(key, "min_pool_size") ||
             !strcmp(key, "reserve_pool") || !strcmp(key, "reserve_pool_size") ||
             !strcmp(key, "max_db_connections") || !strcmp(key, "max_db_client_connections")) {
        if (!parse_int(value, 0, INT32_MAX, &i)) {
            snprintf(err, err_len, "%s: '%.32s' is not a non-negative integer", key, value);
            return false;
        }
        if (!strcmp(key, "pool_size"))
            db->pool_size = (int)i;
        else if (!strcmp(key, "min_pool_size"))
            db->min_pool_size = (int)i;
        else if (!strcmp(key, "max_db_connections"))
            db->max_db_connections = (int)i;
        else if (!strcmp(key, "max_db_client_connections"))
            db->max_db_client_connections = (int)i;
        else
            db->reserve_pool = (int)i;
    } else if (!strcmp(key, "server_lifetime")) {
        int64_t ms;
        if (!parse_duration_ms(value, &ms)) {
            snprintf(err, err_len, "server_lifetime: '%.32s' is not a duration", value);
            return false;
        }
        /* As PgBouncer: 0 in a database entry means the [pgbouncer] value. */
        db->server_lifetime_ms = ms > 0 ? ms : -1;
    } else if (!strcmp(key, "pool_mode")) {
        db->pool_mode = parse_pool_mode(value);
        if (db->pool_mode < 0) {
            snprintf(err, err_len, "pool_mode: '%.32s' is not session, transaction or statement",
                     value);
            return false;
        }
    } else {
        add_warning(((struct db_parse *)ctx)->cfg,
                    "[databases] %s: unknown connection parameter '%s' ignored", db->name, key);
    }
    if (!ok)
        snprintf(err, err_len, "out of memory");
    return ok;
}

static void db_free(struct pooler_db_config *db)
{
    free(db->name);
    free(db->host);
    free(db->dbname);
    free(db->user);
    if (db->password) {
        memset(db->password, 0, strlen(db->password));
        free(db->password);
    }
    free(db->client_encoding);
    free(db->datestyle);
    free(db->timezone);
    free(db->application_name);
    free(db->connect_query);
    free(db->auth_dbname);
    free(db->auth_user);
    free(db->auth_query);
}

static bool add_db(struct pooler_config *cfg, const char *name, const char *value, char *err,
                   size_t err_len)
{
    if (strlen(name) > 63) {
        snprintf(err, err_len, "database name '%.64s...' is longer than 63 bytes", name);
        return false;
    }
    for (size_t i = 0; i < cfg->n_dbs; i++) {
        if (!strcmp(cfg->dbs[i].name, name)) {
            snprintf(err, err_len, "database '%s' is defined twice", name);
            return false;
        }
    }
    struct pooler_db_config *dbs = realloc(cfg->dbs, (cfg->n_dbs + 1) * sizeof(*dbs));
    if (!dbs) {
        snprintf(err, err_len, "out of memory");
        return false;
    }
    cfg->dbs = dbs;
    struct pooler_db_config *db = &dbs[cfg->n_dbs];
    memset(db, 0, sizeof(*db));
    db->port = 5432;
    db->pool_size = db->min_pool_size = db->reserve_pool = db->max_db_connections = -1;
    db->max_db_client_connections = -1;
    db->server_lifetime_ms = -1;
    db->pool_mode = -1;
    db->name = strdup(name);
    if (!db->name) {
        snprintf(err, err_len, "out of memory");
        return false;
    }
    struct db_parse ctx = {cfg, db};
    if (!ini_parse_connstr(value, db_connstr_cb, &ctx, err, err_len)) {
        db_free(db);
        return false;
    }
    cfg->n_dbs++;
    return true;
}

struct user_parse {
    struct pooler_config *cfg; /* borrowed: where warnings go */
    struct pooler_user_config *u;
};

/* The [users] parameters besides pool_mode (PgBouncer's per-user settings): counts and
 * durations. */
static const struct {
    const char *key;
    size_t offset;
    bool duration; /* int64_t milliseconds; else int */
} USER_KEYS[] = {
    {"pool_size", offsetof(struct pooler_user_config, pool_size), false},
    {"reserve_pool_size", offsetof(struct pooler_user_config, reserve_pool_size), false},
    {"max_user_connections", offsetof(struct pooler_user_config, max_user_connections), false},
    {"max_user_client_connections",
     offsetof(struct pooler_user_config, max_user_client_connections), false},
    {"query_timeout", offsetof(struct pooler_user_config, query_timeout_ms), true},
    {"idle_transaction_timeout", offsetof(struct pooler_user_config, idle_transaction_timeout_ms),
     true},
    {"client_idle_timeout", offsetof(struct pooler_user_config, client_idle_timeout_ms), true},
    {"transaction_timeout", offsetof(struct pooler_user_config, transaction_timeout_ms), true},
};

static bool user_connstr_cb(void *ctx, const char *key, const char *value, char *err,
                            size_t err_len)
{
    struct pooler_user_config *u = ((struct user_parse *)ctx)->u;
    long long i;
    if (!strcmp(key, "pool_mode")) {
        u->pool_mode = parse_pool_mode(value);
        if (u->pool_mode < 0) {
            snprintf(err, err_len, "pool_mode: '%.32s' is not session, transaction or statement",
                     value);
            return false;
        }
    } else {
        size_t k = 0;
        while (k < sizeof(USER_KEYS) / sizeof(USER_KEYS[0]) && strcmp(USER_KEYS[k].key, key))
            k++;
        if (k == sizeof(USER_KEYS) / sizeof(USER_KEYS[0])) {
            add_warning(((struct user_parse *)ctx)->cfg, "[users] %s: unknown setting '%s' ignored",
                        u->name, key);
            return true;
        }
        void *field = (char *)u + USER_KEYS[k].offset;
        if (USER_KEYS[k].duration ? !parse_duration_ms(value, field)
                                  : !parse_int(value, 0, INT32_MAX, &i)) {
            snprintf(err, err_len, "%s: '%.32s' is not a %s", key, value,
                     USER_KEYS[k].duration ? "duration (seconds, or 250ms, 5min)"
                                           : "non-negative integer");
            return false;
        }
        if (!USER_KEYS[k].duration)
            *(int *)field = (int)i;
    }
    return true;
}

static bool add_user(struct pooler_config *cfg, const char *name, const char *value, char *err,
                     size_t err_len)
{
    struct pooler_user_config *us = realloc(cfg->users, (cfg->n_users + 1) * sizeof(*us));
    if (!us) {
        snprintf(err, err_len, "out of memory");
        return false;
    }
    cfg->users = us;
    struct pooler_user_config *u = &us[cfg->n_users];
    memset(u, 0, sizeof(*u));
    u->pool_mode = u->pool_size = u->reserve_pool_size = u->max_user_connections = -1;
    u->max_user_client_connections = -1;
    u->query_timeout_ms = u->idle_transaction_timeout_ms = u->client_idle_timeout_ms = -1;
    u->transaction_timeout_ms = -1;
    u->name = strdup(name);
    if (!u->name) {
        snprintf(err, err_len, "out of memory");
        return false;
    }
    struct user_parse ctx = {cfg, u};
    if (!ini_parse_connstr(value, user_connstr_cb, &ctx, err, err_len)) {
        free(u->name);
        return false;
    }
    cfg->n_users++;
    return true;
}

/* [peers]: "<peer_id> = host=... port=..." as in PgBouncer. */
static bool peer_connstr_cb(void *ctx, const char *key, const char *value, char *err,
                            size_t err_len)
{
    struct pooler_config *cfg = ctx;
    struct pooler_peer_config *peer = &cfg->peers[cfg->n_peers];
    long long i;
    if (!strcmp(key, "host")) {
        if (value[0] != '/' && !net_host_is_numeric(value)) {
            /* Resolving would block the loop when a cancel comes: names are not taken. */
            snprintf(err, err_len,
                     "host: a peer is a unix socket directory or a numeric "
                     "address");
            return false;
        }
        free(peer->host);
        peer->host = strdup(value);
        if (!peer->host) {
            snprintf(err, err_len, "out of memory");
            return false;
        }
    } else if (!strcmp(key, "port")) {
        if (!parse_int(value, 1, 65535, &i)) {
            snprintf(err, err_len, "port: '%.16s' is not a port number", value);
            return false;
        }
        peer->port = (int)i;
    } else if (strcmp(key, "pool_size") != 0) { /* cancels need no pool of their own here */
        add_warning(cfg, "[peers] %d: unknown setting '%s' ignored", peer->id, key);
    }
    return true;
}

static bool add_peer(struct pooler_config *cfg, const char *name, const char *value, char *err,
                     size_t err_len)
{
    long long id;
    if (!parse_int(name, 1, 16383, &id)) {
        snprintf(err, err_len, "[peers] '%.16s' is not a peer_id (1..16383)", name);
        return false;
    }
    if (pooler_config_find_peer(cfg, (int)id)) {
        snprintf(err, err_len, "[peers] peer %lld is listed twice", id);
        return false;
    }
    struct pooler_peer_config *ps = realloc(cfg->peers, (cfg->n_peers + 1) * sizeof(*ps));
    if (!ps) {
        snprintf(err, err_len, "out of memory");
        return false;
    }
    cfg->peers = ps;
    struct pooler_peer_config *peer = &ps[cfg->n_peers];
    *peer = (struct pooler_peer_config){.id = (int)id, .host = NULL, .port = 6432};
    if (!ini_parse_connstr(value, peer_connstr_cb, cfg, err, err_len)) {
        free(peer->host);
        return false;
    }
    if (!peer->host) {
        snprintf(err, err_len, "[peers] peer %lld: host is missing", id);
        return false;
    }
    cfg->n_peers++;
    return true;
}

const struct pooler_peer_config *pooler_config_find_peer(const struct pooler_config *cfg, int id)
{
    for (size_t i = 0; i < cfg->n_peers; i++)
        if (cfg->peers[i].id == id)
            return &cfg->peers[i];
    return NULL;
}

static bool entry_cb(void *ctx, const char *section, const char *key, const char *value,
                     const char *file, int line, char *err, size_t err_len)
{
    struct pooler_config *cfg = ctx;
    if (!strcasecmp(section, "databases"))
        return add_db(cfg, key, value, err, err_len);
    if (!strcasecmp(section, "users"))
        return add_user(cfg, key, value, err, err_len);
    if (!strcasecmp(section, "peers"))
        return add_peer(cfg, key, value, err, err_len);
    if (!strcasecmp(section, "manager")) {
        enum options_result r = options_set(&cfg->manager, key, value, err, err_len);
        if (r == OPTIONS_UNKNOWN_KEY) {
            add_warning(cfg, "%s:%d: unknown [manager] key '%s' ignored", file, line, key);
            return true;
        }
        return r == OPTIONS_OK;
    }
    if (!strcasecmp(section, "pgbouncer") || !strcasecmp(section, "pgwarden")) {
        for (size_t i = 0; i < sizeof(KEYS) / sizeof(KEYS[0]); i++)
            if (!strcasecmp(KEYS[i].name, key))
                return set_key(cfg, &KEYS[i], value, err, err_len);
        const struct unimplemented_key *u = find_unimplemented(
            UNIMPLEMENTED, sizeof(UNIMPLEMENTED) / sizeof(UNIMPLEMENTED[0]), key);
        if (u) {
            char where[512];
            snprintf(where, sizeof(where), "%s:%d: ", file, line);
            return apply_unimplemented(cfg, u, value, where, "", err, err_len); /* ini adds it */
        }
        /* Manager keys may also sit in [pgwarden]. */
        if (!strcasecmp(section, "pgwarden") && options_is_known_key(key))
            return options_set(&cfg->manager, key, value, err, err_len) == OPTIONS_OK;
        add_warning(cfg, "%s:%d: unknown key '%s' in [%s] ignored", file, line, key, section);
        return true;
    }
    add_warning(cfg, "%s:%d: unknown section [%s] ignored", file, line, section);
    return true;
}

/* Rules between values that one key alone cannot check (load, and SET on the console). */
static bool check_values(struct pooler_config *cfg, const char *name, char *err, size_t err_len)
{
    if (cfg->listen_port < 1 || cfg->listen_port > 65535) {
        snprintf(err, err_len, "%s: listen_port %d is not a port number", name, cfg->listen_port);
        return false;
    }
    if (cfg->peer_id < 0 || cfg->peer_id > 16383) {
        snprintf(err, err_len, "%s: peer_id %d is not between 0 and 16383", name, cfg->peer_id);
        return false;
    }
    if (cfg->pkt_buf < 1024 || cfg->pkt_buf > 16 * 1024 * 1024) {
        snprintf(err, err_len, "%s: pkt_buf must be between 1kB and 16MB", name);
        return false;
    }
    if (cfg->max_packet_size < 1024) {
        snprintf(err, err_len, "%s: max_packet_size must be at least 1kB", name);
        return false;
    }
    if (cfg->max_packet_size > 0x7fffffffLL)
        cfg->max_packet_size = 0x7fffffffLL;
    if (cfg->scram_iterations < 1) {
        snprintf(err, err_len, "%s: scram_iterations must be at least 1", name);
        return false;
    }
    if (cfg->server_lifetime_jitter_pct > 50) {
        snprintf(err, err_len, "%s: server_lifetime_jitter must be 0..50 (percent)", name);
        return false;
    }
    int facility;
    if (!log_syslog_facility_parse(cfg->syslog_facility, &facility)) {
        snprintf(err, err_len,
                 "%s: syslog_facility '%.64s' is not one of auth, authpriv, daemon, user, "
                 "local0 .. local7",
                 name, cfg->syslog_facility);
        return false;
    }
    if (strcmp(cfg->log_format, "text") && strcmp(cfg->log_format, "json")) {
        snprintf(err, err_len, "%s: log_format must be text or json", name);
        return false;
    }
    /* The protocol lists are checked now; files, ciphers and curves when the pooler builds
     * its TLS contexts (at start, a bad one stops it; on reload the old context stays). */
    const struct pooler_tls_config *sides[] = {&cfg->client_tls, &cfg->server_tls};
    for (size_t i = 0; i < 2; i++) {
        struct tls_protocols range;
        char why[256];
        if (!tls_protocols_parse(sides[i]->protocols, &range, why, sizeof(why))) {
            snprintf(err, err_len, "%s: %s_tls_protocols = '%.64s': %s", name,
                     i == 0 ? "client" : "server", sides[i]->protocols, why);
            return false;
        }
    }
    /* Only a verifying TLS context asks clients for a certificate. */
    if (cfg->auth_type == POOLER_AUTH_CERT && cfg->client_tls.sslmode < TLS_VERIFY_CA) {
        snprintf(err, err_len,
                 "%s: auth_type cert needs client_tls_sslmode verify-ca or verify-full (and "
                 "client_tls_ca_file): only then do clients present a certificate",
                 name);
        return false;
    }
    /* The console is no database a query can run in (PgBouncer's words). A database entry's
     * auth_dbname= naming it is refused at login instead, as PgBouncer does. */
    if (!strcmp(cfg->auth_dbname, "pgbouncer") || !strcmp(cfg->auth_dbname, "pgwarden")) {
        snprintf(err, err_len, "%s: cannot use the reserved \"%s\" database as an auth_dbname",
                 name, cfg->auth_dbname);
        return false;
    }
    bool password_type = cfg->auth_type == POOLER_AUTH_PLAIN || cfg->auth_type == POOLER_AUTH_MD5 ||
                         cfg->auth_type == POOLER_AUTH_SCRAM;
    if (password_type && (!cfg->auth_file || !cfg->auth_file[0])) {
        snprintf(err, err_len, "%s: auth_type %s needs auth_file", name,
                 cfg->auth_type == POOLER_AUTH_MD5 ? "md5" : "scram-sha-256/plain");
        return false;
    }
    return true;
}

/* Where a file the config names is (ini_relative_path); false with a reason in err. */
static bool file_path(const char *config_name, const char *setting, const char *file, char *path,
                      size_t path_len, char *err, size_t err_len)
{
    if (ini_relative_path(config_name, file, path, path_len))
        return true;
    snprintf(err, err_len, "%s: %s: file name too long", config_name, setting);
    return false;
}

/* auth_hba_file and auth_ident_file, read with the config so that a reload swaps rules and
 * maps together with the users they name; a file that does not parse fails the load (at
 * start pgwarden does not run, on reload the running rules stay). */
static bool load_hba(struct pooler_config *cfg, const char *name, char *err, size_t err_len)
{
    char path[4096];
    bool have_hba = cfg->auth_hba_file && cfg->auth_hba_file[0];
    if (cfg->auth_type != POOLER_AUTH_HBA) {
        if (have_hba)
            add_warning(cfg, "auth_hba_file is used only with auth_type = hba; ignored");
        return true;
    }
    if (!have_hba) {
        snprintf(err, err_len, "%s: auth_type hba needs auth_hba_file", name);
        return false;
    }
    if (cfg->auth_ident_file && cfg->auth_ident_file[0]) {
        if (!file_path(name, "auth_ident_file", cfg->auth_ident_file, path, sizeof(path), err,
                       err_len) ||
            !hba_ident_load(path, &cfg->ident, err, err_len))
            return false;
    }
    if (!file_path(name, "auth_hba_file", cfg->auth_hba_file, path, sizeof(path), err, err_len) ||
        !hba_load(path, &cfg->hba, err, err_len))
        return false;
    if (cfg->hba.n_skipped)
        add_warning(cfg,
                    "%s: %zu line(s) naming a +group skipped (first: line %d): role membership "
                    "is known to the server only",
                    path, cfg->hba.n_skipped, cfg->hba.first_skipped_line);
    const char *missing = hba_missing_map(&cfg->hba, &cfg->ident);
    if (missing) {
        snprintf(err, err_len, "%s: map=%.64s is not defined in auth_ident_file", path, missing);
        return false;
    }
    return true;
}

/* Values that PgBouncer takes with a default instead of an error: a file it starts with must
 * start pgwarden too, so they get a warning (SET on the console refuses them instead). */
static bool soften_values(struct pooler_config *cfg, const char *name)
{
    int facility;
    if (!log_syslog_facility_parse(cfg->syslog_facility, &facility)) {
        add_warning(cfg, "%s: syslog_facility '%.64s' is unknown; daemon is used", name,
                    cfg->syslog_facility);
        char *daemon = strdup("daemon");
        if (!daemon)
            return false;
        free(cfg->syslog_facility);
        cfg->syslog_facility = daemon;
    }
    if (cfg->dns_zone_check_period_ms > 0)
        add_warning(cfg,
                    "%s: dns_zone_check_period is ignored: zone serial checks need a c-ares "
                    "resolver and pgwarden's is libevent's (as in PgBouncer built with evdns)",
                    name);
    return true;
}

static bool finish(struct pooler_config *cfg, const char *name, char *err, size_t err_len)
{
    if (!soften_values(cfg, name)) {
        snprintf(err, err_len, "out of memory");
        return false;
    }
    if (!check_values(cfg, name, err, err_len))
        return false;
    if (cfg->auth_file && cfg->auth_file[0]) {
        char path[4096];
        if (!file_path(name, "auth_file", cfg->auth_file, path, sizeof(path), err, err_len) ||
            !auth_file_load(path, &cfg->auth, err, err_len))
            return false;
    }
    if (!load_hba(cfg, name, err, err_len))
        return false;
    char opt_err[256];
    if (!options_validate(&cfg->manager, opt_err, sizeof(opt_err))) {
        snprintf(err, err_len, "%s: [manager] %s", name, opt_err);
        return false;
    }
    return true;
}

bool pooler_config_load_string(const char *text, const char *name, struct pooler_config *cfg,
                               char *err, size_t err_len)
{
    if (!pooler_config_init_defaults(cfg)) {
        snprintf(err, err_len, "out of memory");
        return false;
    }
    free(cfg->config_file); /* the conffile key's default */
    cfg->config_file = strdup(name);
    if (!ini_parse_string(text, name, entry_cb, cfg, err, err_len) ||
        !finish(cfg, name, err, err_len)) {
        pooler_config_free(cfg);
        return false;
    }
    return true;
}

bool pooler_config_load(const char *path, struct pooler_config *cfg, char *err, size_t err_len)
{
    if (!pooler_config_init_defaults(cfg)) {
        snprintf(err, err_len, "out of memory");
        return false;
    }
    free(cfg->config_file);
    cfg->config_file = strdup(path);
    if (!ini_parse_file(path, entry_cb, cfg, err, err_len) || !finish(cfg, path, err, err_len)) {
        pooler_config_free(cfg);
        return false;
    }
    return true;
}

void pooler_config_free(struct pooler_config *cfg)
{
    for (size_t i = 0; i < sizeof(KEYS) / sizeof(KEYS[0]); i++) {
        if (KEYS[i].type == KEY_STRING) {
            char **f = (char **)((char *)cfg + KEYS[i].offset);
            free(*f);
            *f = NULL;
        }
    }
    for (size_t i = 0; i < cfg->n_dbs; i++)
        db_free(&cfg->dbs[i]);
    free(cfg->dbs);
    for (size_t i = 0; i < cfg->n_users; i++)
        free(cfg->users[i].name);
    free(cfg->users);
    for (size_t i = 0; i < cfg->n_peers; i++)
        free(cfg->peers[i].host);
    free(cfg->peers);
    cfg->peers = NULL;
    cfg->n_peers = 0;
    auth_file_free(&cfg->auth);
    hba_free(&cfg->hba);
    hba_ident_free(&cfg->ident);
    options_free(&cfg->manager);
    for (size_t i = 0; i < cfg->n_warnings; i++)
        free(cfg->warnings[i]);
    free(cfg->warnings);
    cfg->warnings = NULL;
    cfg->n_warnings = 0;
    cfg->dbs = NULL;
    cfg->users = NULL;
    cfg->n_dbs = cfg->n_users = 0;
}

const struct pooler_db_config *pooler_config_find_db(const struct pooler_config *cfg,
                                                     const char *name)
{
    const struct pooler_db_config *fallback = NULL;
    for (size_t i = 0; i < cfg->n_dbs; i++) {
        if (!strcmp(cfg->dbs[i].name, name))
            return &cfg->dbs[i];
        if (!strcmp(cfg->dbs[i].name, "*"))
            fallback = &cfg->dbs[i];
    }
    return fallback;
}

void pooler_config_tls_settings(const struct pooler_config *cfg, bool client_side,
                                struct tls_settings *out)
{
    const struct pooler_tls_config *t = client_side ? &cfg->client_tls : &cfg->server_tls;
    *out = (struct tls_settings){
        .side = client_side ? "client" : "server",
        .sslmode = t->sslmode,
        .key_file = t->key_file,
        .cert_file = t->cert_file,
        .ca_file = t->ca_file,
        .protocols = t->protocols,
        .ciphers = t->ciphers,
        .tls13_ciphers = t->tls13_ciphers,
        .dheparams = t->dheparams,
        .ecdhcurve = t->ecdhcurve,
    };
}

const struct pooler_user_config *pooler_config_find_user(const struct pooler_config *cfg,
                                                         const char *name)
{
    for (size_t i = 0; i < cfg->n_users; i++)
        if (!strcmp(cfg->users[i].name, name))
            return &cfg->users[i];
    return NULL;
}

/* Bytes of a key's field, for restoring it when a SET is refused. */
static size_t field_size(enum key_type type)
{
    static const size_t sizes[] = {
        [KEY_INT] = sizeof(int),
        [KEY_BOOL] = sizeof(bool),
        [KEY_STRING] = sizeof(char *),
        [KEY_DURATION] = sizeof(int64_t),
        [KEY_SIZE] = sizeof(int64_t),
        [KEY_POOL_MODE] = sizeof(enum pool_mode),
        [KEY_AUTH_TYPE] = sizeof(enum pooler_auth_type),
        [KEY_SSLMODE] = sizeof(enum tls_sslmode),
        [KEY_MODE] = sizeof(int),
    };
    return sizes[type];
}

enum pooler_set_result pooler_config_set(struct pooler_config *cfg, const char *key,
                                         const char *value, char *err, size_t err_len)
{
    const struct key_def *k = NULL;
    for (size_t i = 0; i < sizeof(KEYS) / sizeof(KEYS[0]) && !k; i++)
        if (!strcasecmp(KEYS[i].name, key))
            k = &KEYS[i];
    if (!k) {
        snprintf(err, err_len, "unknown or unsupported key: %.64s", key);
        return POOLER_SET_UNKNOWN;
    }
    if (k->restart) {
        snprintf(err, err_len, "%s is read at start only: change it in the file and restart",
                 k->name);
        return POOLER_SET_REFUSED;
    }
    unsigned char saved[sizeof(int64_t) > sizeof(char *) ? sizeof(int64_t) : sizeof(char *)];
    void *field = (char *)cfg + k->offset;
    size_t n = field_size(k->type);
    memcpy(saved, field, n);
    if (k->type == KEY_STRING)
        *(char **)field = NULL; /* set_key frees the old value: keep it until the checks pass */
    if (!set_key(cfg, k, value, err, err_len)) {
        memcpy(field, saved, n);
        return POOLER_SET_REFUSED;
    }
    if (!check_values(cfg, "SET", err, err_len)) {
        if (k->type == KEY_STRING)
            free(*(char **)field);
        memcpy(field, saved, n);
        return POOLER_SET_REFUSED;
    }
    if (k->type == KEY_STRING)
        free(*(char **)saved);
    return POOLER_SET_OK;
}

void pooler_config_describe(pooler_config_describe_fn emit, void *ctx)
{
    for (size_t i = 0; i < sizeof(KEYS) / sizeof(KEYS[0]); i++)
        emit(ctx, KEYS[i].pgbouncer ? "pgbouncer" : "pgwarden", KEYS[i].name, KEYS[i].default_text,
             KEYS[i].pgbouncer, KEYS[i].meaning);
}

void pooler_config_values(const struct pooler_config *cfg, pooler_config_value_fn emit, void *ctx)
{
    for (size_t i = 0; i < sizeof(KEYS) / sizeof(KEYS[0]); i++) {
        const struct key_def *k = &KEYS[i];
        const void *field = (const char *)cfg + k->offset;
        char buf[64];
        const char *v = buf;
        switch (k->type) {
        case KEY_INT:
            snprintf(buf, sizeof(buf), "%d", *(const int *)field);
            break;
        case KEY_BOOL:
            snprintf(buf, sizeof(buf), "%d", *(const bool *)field ? 1 : 0);
            break;
        case KEY_STRING:
            v = *(char *const *)field ? *(char *const *)field : "";
            if (v[0] && !strcmp(k->name, "http_auth_token"))
                v = "********"; /* the one secret of the table: SHOW CONFIG shows it is set */
            break;
        case KEY_DURATION: {
            int64_t ms = *(const int64_t *)field;
            if (ms % 1000 == 0)
                snprintf(buf, sizeof(buf), "%lld", (long long)(ms / 1000));
            else
                snprintf(buf, sizeof(buf), "%lldms", (long long)ms);
            break;
        }
        case KEY_SIZE:
            snprintf(buf, sizeof(buf), "%lld", (long long)*(const int64_t *)field);
            break;
        case KEY_POOL_MODE:
            v = pooler_config_pool_mode_name(*(const enum pool_mode *)field);
            break;
        case KEY_AUTH_TYPE: {
            static const char *const names[] = {"trust", "plain", "md5", "scram-sha-256",
                                                "cert",  "peer",  "hba"};
            v = names[*(const enum pooler_auth_type *)field];
            break;
        }
        case KEY_SSLMODE:
            v = tls_sslmode_name(*(const enum tls_sslmode *)field);
            break;
        case KEY_MODE:
            snprintf(buf, sizeof(buf), "0%03o", (unsigned)*(const int *)field);
            break;
        }
        emit(ctx, k->name, v, k->default_text, !k->restart);
    }
}
