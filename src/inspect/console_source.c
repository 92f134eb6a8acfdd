/* Admin-console source: the serve-mode counterpart of collector.c (snapshots), probe.c
 * (health probes) and terminator.c (kills), spoken over the console's simple query protocol.
 *
 * The console serves the live manager's newest snapshot, which it refreshes about once a
 * second; so a read waits for a snapshot newer than the one it must not repeat, and a read is
 * taken whole only when the client rows and the totals carry the same taken_ms. */
#include "inspect/console_source.h"

#include <ctype.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/timestamp.h"
#include "inspect/collector.h"

/* How long a read waits for the manager's next snapshot: a few of its one-second periods. */
#define WAIT_FOR_SNAPSHOT_MS 3500
#define POLL_SNAPSHOT_MS     100

/* ---- the target URI ----------------------------------------------------------------- */

/* The console answers under both virtual database names. */
static const char *const console_databases[] = {"pgbouncer", "pgwarden"};

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = (char)tolower((unsigned char)c);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Percent-decodes src[0..n) into out. False on a bad escape, an embedded NUL or overflow. */
static bool percent_decode(const char *src, size_t n, char *out, size_t out_len)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        char c = src[i];
        if (c == '%') {
            if (i + 2 >= n)
                return false;
            int h = hex_value(src[i + 1]), l = hex_value(src[i + 2]);
            if (h < 0 || l < 0 || (h == 0 && l == 0))
                return false;
            c = (char)(h * 16 + l);
            i += 2;
        }
        if (o + 1 >= out_len)
            return false;
        out[o++] = c;
    }
    out[o] = '\0';
    return true;
}

static bool copy_span(const char *src, size_t n, char *out, size_t out_len)
{
    if (n >= out_len)
        return false;
    memcpy(out, src, n);
    out[n] = '\0';
    return true;
}

/* Splits host[:port] or [v6]:port. */
static bool parse_host_port(const char *s, size_t n, struct console_uri *u, const char **why)
{
    const char *port = NULL;
    size_t port_len = 0;
    if (n > 0 && s[0] == '[') {
        const char *close = memchr(s, ']', n);
        if (close == NULL) {
            *why = "an IPv6 address in [ ] lacks its ']'";
            return false;
        }
        if (!copy_span(s + 1, (size_t)(close - s - 1), u->host, sizeof(u->host))) {
            *why = "the host name is too long";
            return false;
        }
        size_t rest = n - (size_t)(close - s) - 1;
        if (rest > 0) {
            if (close[1] != ':') {
                *why = "only ':PORT' may follow an IPv6 address";
                return false;
            }
            port = close + 2;
            port_len = rest - 1;
        }
    } else {
        const char *colon = memchr(s, ':', n);
        size_t host_len = colon ? (size_t)(colon - s) : n;
        if (!copy_span(s, host_len, u->host, sizeof(u->host))) {
            *why = "the host name is too long";
            return false;
        }
        if (colon != NULL) {
            port = colon + 1;
            port_len = n - host_len - 1;
        }
    }
    if (u->host[0] == '\0') {
        *why = "it names no host (pgwarden://[USER[:PASSWORD]@]HOST:PORT)";
        return false;
    }
    if (port == NULL) {
        snprintf(u->port, sizeof(u->port), "%s", CONSOLE_SOURCE_DEFAULT_PORT);
        return true;
    }
    long value = 0;
    for (size_t i = 0; i < port_len; i++) {
        if (!isdigit((unsigned char)port[i]) || value > 65535) {
            *why = "the port is not a number";
            return false;
        }
        value = value * 10 + (port[i] - '0');
    }
    if (port_len == 0 || value < 1 || value > 65535) {
        *why = "the port must be between 1 and 65535";
        return false;
    }
    snprintf(u->port, sizeof(u->port), "%ld", value);
    return true;
}

bool console_source_parse_uri(const char *uri, struct console_uri *u, struct inspect_error *err)
{
    memset(u, 0, sizeof(*u));
    const char *why = NULL;
    if (strncmp(uri, CONSOLE_SOURCE_SCHEME, strlen(CONSOLE_SOURCE_SCHEME)) != 0) {
        why = "it does not start with " CONSOLE_SOURCE_SCHEME;
        goto bad;
    }
    const char *s = uri + strlen(CONSOLE_SOURCE_SCHEME);
    size_t authority = strcspn(s, "/?#");
    const char *path = s + authority;
    const char *at = NULL;
    for (size_t i = 0; i < authority; i++)
        if (s[i] == '@')
            at = s + i; /* the last '@': a password may hold a raw '@' too */
    const char *hostport = s;
    if (at != NULL) {
        size_t info_len = (size_t)(at - s);
        const char *colon = memchr(s, ':', info_len);
        size_t user_len = colon ? (size_t)(colon - s) : info_len;
        if (!percent_decode(s, user_len, u->user, sizeof(u->user))) {
            why = "the user name is too long or badly %-encoded";
            goto bad;
        }
        u->has_user = u->user[0] != '\0';
        if (colon != NULL) {
            if (!percent_decode(colon + 1, info_len - user_len - 1, u->password,
                                sizeof(u->password))) {
                why = "the password is too long or badly %-encoded";
                goto bad;
            }
            u->has_password = true;
        }
        hostport = at + 1;
    }
    if (!parse_host_port(hostport, (size_t)(s + authority - hostport), u, &why))
        goto bad;
    snprintf(u->database, sizeof(u->database), "%s", console_databases[0]);
    if (path[0] == '/' && path[1] != '\0') {
        bool known = false;
        for (size_t i = 0; i < sizeof(console_databases) / sizeof(console_databases[0]); i++) {
            if (strcmp(path + 1, console_databases[i]) == 0) {
                snprintf(u->database, sizeof(u->database), "%s", console_databases[i]);
                known = true;
            }
        }
        if (!known) {
            why = "the only databases of the admin console are pgbouncer and pgwarden";
            goto bad;
        }
    } else if (path[0] == '?' || path[0] == '#') {
        why = "it takes no parameters (pgwarden://[USER[:PASSWORD]@]HOST:PORT)";
        goto bad;
    }
    return true;
bad:
    inspect_session_error_set(err, "bad_input", NULL, "the pgwarden:// target is malformed: %s",
                              why);
    return false;
}

/* The user libpq will log in as: the URI's, else PGUSER, else "postgres" (not the operating
 * system user libpq would pick, which is rarely a console user). */
static const char *login_user(const struct console_uri *u)
{
    if (u->has_user)
        return u->user;
    const char *env = getenv("PGUSER");
    return env != NULL && env[0] != '\0' ? env : "postgres";
}

/* libpq keywords of one console login. Without a password in the URI, libpq reads
 * PGPASSWORD and .pgpass itself. */
struct login_params {
    const char *keys[9];
    const char *values[9];
};

static void login_params_init(struct login_params *lp, const struct console_uri *u)
{
    const char *timeout = getenv("PGCONNECT_TIMEOUT");
    const char *pairs[][2] = {
        {"host", u->host},
        {"port", u->port},
        {"dbname", u->database},
        {"user", login_user(u)},
        {"application_name", INSPECT_APPLICATION_NAME},
        {"connect_timeout", timeout != NULL && timeout[0] ? timeout : "10"},
        {"password", u->has_password ? u->password : NULL},
    };
    size_t k = 0;
    for (size_t i = 0; i < sizeof(pairs) / sizeof(pairs[0]); i++) {
        if (pairs[i][1] == NULL)
            continue;
        lp->keys[k] = pairs[i][0];
        lp->values[k] = pairs[i][1];
        k++;
    }
    lp->keys[k] = NULL;
    lp->values[k] = NULL;
}

/* Scrubs the password copy so it does not linger in memory longer than the login. */
static void console_uri_forget_password(struct console_uri *u)
{
    volatile char *p = u->password;
    for (size_t i = 0; i < sizeof(u->password); i++)
        p[i] = '\0';
}

/* The reason of a failed login without libpq's 'connection to server at "h", port p
 * failed: ' preamble (the sentence names the address itself) nor a FATAL: prefix. */
static void login_failure_reason(char *out, size_t out_len, const char *libpq_message)
{
    char line[400];
    inspect_session_first_line(line, sizeof(line), libpq_message);
    const char *reason = line;
    const char *failed = strstr(line, " failed: ");
    if (failed != NULL)
        reason = failed + strlen(" failed: ");
    inspect_session_first_line(out, out_len, reason[0] ? reason : "could not connect");
}

/* Runs one console command; NULL with err filled when it did not return want. */
static PGresult *console_exec(PGconn *conn, const char *command, ExecStatusType want,
                              struct inspect_error *err)
{
    PGresult *res = PQexec(conn, command);
    if (res != NULL && PQresultStatus(res) == want)
        return res;
    const char *sqlstate = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    const char *primary = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    char line[400];
    inspect_session_first_line(line, sizeof(line), primary ? primary : PQerrorMessage(conn));
    const char *code = PQstatus(conn) == CONNECTION_BAD                     ? "connection_failed"
                       : sqlstate != NULL && strcmp(sqlstate, "42501") == 0 ? "permission_denied"
                                                                            : "query_failed";
    inspect_session_error_set(err, code, sqlstate, "the pgwarden console answered %s with: %s",
                              command, line[0] ? line : "no result");
    PQclear(res);
    return NULL;
}

PGconn *console_source_connect(const char *uri, struct inspect_target *target,
                               struct inspect_error *err)
{
    memset(target, 0, sizeof(*target));
    struct console_uri u;
    if (!console_source_parse_uri(uri, &u, err)) {
        console_uri_forget_password(&u);
        return NULL;
    }
    snprintf(target->host, sizeof(target->host), "%s", u.host);
    snprintf(target->port, sizeof(target->port), "%s", u.port);
    snprintf(target->database, sizeof(target->database), "%s", u.database);
    snprintf(target->user, sizeof(target->user), "%s", login_user(&u));

    struct login_params lp;
    login_params_init(&lp, &u);
    PGconn *conn = PQconnectdbParams(lp.keys, lp.values, 0);
    console_uri_forget_password(&u);
    if (conn == NULL) {
        inspect_session_error_set(err, "out_of_memory", NULL, "could not allocate a connection");
        return NULL;
    }
    if (PQstatus(conn) != CONNECTION_OK) {
        char reason[400];
        login_failure_reason(reason, sizeof(reason), PQerrorMessage(conn));
        /* libpq gives no SQLSTATE for a refused login; the console's refusal of a user that
         * is in neither admin_users nor stats_users is an authorisation failure too. */
        bool auth = strcmp(health_classify_error(NULL, reason), "auth") == 0 ||
                    strstr(reason, "not allowed") != NULL;
        inspect_session_error_set(
            err, auth ? "auth_failed" : "connection_failed", NULL,
            "could not log in to the pgwarden admin console at %s:%s as %s: %s", target->host,
            target->port, target->user, reason);
        PQfinish(conn);
        return NULL;
    }
    PGresult *res = console_exec(conn, "SHOW VERSION", PGRES_TUPLES_OK, err);
    if (res == NULL) {
        PQfinish(conn);
        return NULL;
    }
    const char *version = PQntuples(res) == 1 && PQnfields(res) >= 1 ? PQgetvalue(res, 0, 0) : "";
    snprintf(target->server_version, sizeof(target->server_version), "%s", version);
    bool is_pgwarden = strncmp(version, "pgwarden", strlen("pgwarden")) == 0;
    PQclear(res);
    if (!is_pgwarden) {
        inspect_session_error_set(
            err, "query_failed", NULL,
            "%s:%s runs '%s', not pgwarden: pgwarden:// targets need pgwarden's "
            "SHOW SNAPSHOT",
            target->host, target->port, target->server_version);
        PQfinish(conn);
        return NULL;
    }
    return conn;
}

/* ---- snapshots ---------------------------------------------------------------------- */

enum client_column {
    CLIENT_ID,
    CLIENT_PID,
    CLIENT_USER,
    CLIENT_DATABASE,
    CLIENT_APPLICATION,
    CLIENT_ADDR,
    CLIENT_STATE,
    CLIENT_CONNECTED_MS,
    CLIENT_STATE_CHANGE_MS,
    CLIENT_XACT_START_MS,
    CLIENT_QUERY_START_MS,
    CLIENT_REQUESTS,
    CLIENT_TAKEN_MS,
    CLIENT_OUTPUT_BLOCKED_MS,
    CLIENT_HOLD_TOTAL_MS,
    CLIENT_APP_USUAL_HOLD_MS,
    CLIENT_REPLICATION,
    N_CLIENT_COLUMNS,
};

static const char *const client_columns[N_CLIENT_COLUMNS] = {
    [CLIENT_ID] = "id",
    [CLIENT_PID] = "pid",
    [CLIENT_USER] = "user",
    [CLIENT_DATABASE] = "database",
    [CLIENT_APPLICATION] = "application",
    [CLIENT_ADDR] = "client_addr",
    [CLIENT_STATE] = "state",
    [CLIENT_CONNECTED_MS] = "connected_ms",
    [CLIENT_STATE_CHANGE_MS] = "state_change_ms",
    [CLIENT_XACT_START_MS] = "xact_start_ms",
    [CLIENT_QUERY_START_MS] = "query_start_ms",
    [CLIENT_REQUESTS] = "requests",
    [CLIENT_TAKEN_MS] = "taken_ms",
    [CLIENT_OUTPUT_BLOCKED_MS] = "output_blocked_ms",
    [CLIENT_HOLD_TOTAL_MS] = "hold_total_ms",
    [CLIENT_APP_USUAL_HOLD_MS] = "app_usual_hold_ms",
    [CLIENT_REPLICATION] = "replication",
};

enum totals_column {
    TOTALS_TAKEN_MS,
    TOTALS_REQUESTS,
    TOTALS_QUERY_TIME_MS,
    TOTALS_CREATED,
    TOTALS_CLOSED,
    TOTALS_CONNECT_TIME_MS,
    TOTALS_WAITING_CLIENTS,
    TOTALS_WAIT_TIME_MS,
    TOTALS_WAITS,
    TOTALS_POOL_MIN,
    TOTALS_POOL_MAX,
    TOTALS_POOL_CURRENT,
    N_TOTALS_COLUMNS,
};

static const char *const totals_columns[N_TOTALS_COLUMNS] = {
    [TOTALS_TAKEN_MS] = "taken_ms",
    [TOTALS_REQUESTS] = "requests_total",
    [TOTALS_QUERY_TIME_MS] = "query_time_total_ms",
    [TOTALS_CREATED] = "created_total",
    [TOTALS_CLOSED] = "closed_total",
    [TOTALS_CONNECT_TIME_MS] = "connect_time_total_ms",
    [TOTALS_WAITING_CLIENTS] = "waiting_clients",
    [TOTALS_WAIT_TIME_MS] = "wait_time_total_ms",
    [TOTALS_WAITS] = "waits_total",
    [TOTALS_POOL_MIN] = "pool_min",
    [TOTALS_POOL_MAX] = "pool_max",
    [TOTALS_POOL_CURRENT] = "pool_current",
};

/* Columns are found by name, so a pooler that adds or reorders columns still reads. */
static bool find_columns(const PGresult *res, const char *command, const char *const *names,
                         size_t n, int *index, struct inspect_error *err)
{
    for (size_t i = 0; i < n; i++) {
        index[i] = PQfnumber(res, names[i]);
        if (index[i] < 0) {
            inspect_session_error_set(
                err, "query_failed", NULL,
                "%s has no column '%s': this pgwarden is too old for pgwarden:// "
                "targets",
                command, names[i]);
            return false;
        }
    }
    return true;
}

static int64_t get_i64(const PGresult *res, int row, int col)
{
    return PQgetisnull(res, row, col) ? 0 : strtoll(PQgetvalue(res, row, col), NULL, 10);
}

static void get_text(char *out, size_t out_len, const PGresult *res, int row, int col)
{
    snprintf(out, out_len, "%s", PQgetisnull(res, row, col) ? "" : PQgetvalue(res, row, col));
}

/* Interns a column's text as a record name (cut at max - 1 bytes); false when memory ran
 * out. */
static bool get_name(struct snapshot *snap, const char **field, size_t max, const PGresult *res,
                     int row, int col)
{
    *field = snapshot_name(snap, PQgetisnull(res, row, col) ? "" : PQgetvalue(res, row, col), max);
    return *field != NULL;
}

enum read_result {
    READ_OK,
    READ_FAILED,  /* err says why */
    READ_NOT_YET, /* no snapshot newer than asked for yet */
    READ_TORN,    /* the manager replaced its snapshot between the two commands */
};

static enum read_result read_totals(PGconn *conn, int64_t newer_than_ms, struct snapshot *snap,
                                    struct inspect_error *err)
{
    static const char command[] = "SHOW SNAPSHOT_TOTALS";
    PGresult *res = console_exec(conn, command, PGRES_TUPLES_OK, err);
    if (res == NULL)
        return READ_FAILED;
    int col[N_TOTALS_COLUMNS];
    if (!find_columns(res, command, totals_columns, N_TOTALS_COLUMNS, col, err)) {
        PQclear(res);
        return READ_FAILED;
    }
    /* No row: the manager has not sampled yet (the pooler just started). */
    int64_t taken = PQntuples(res) == 1 ? get_i64(res, 0, col[TOTALS_TAKEN_MS]) : 0;
    if (taken == 0 || taken <= newer_than_ms) {
        PQclear(res);
        return READ_NOT_YET;
    }
    snap->taken_ms = taken;
    struct snapshot_counters *k = &snap->counters;
    k->has_pool_totals = true;
    k->requests_total = get_i64(res, 0, col[TOTALS_REQUESTS]);
    k->query_time_total_ms = (double)get_i64(res, 0, col[TOTALS_QUERY_TIME_MS]);
    k->created_total = get_i64(res, 0, col[TOTALS_CREATED]);
    k->closed_total = get_i64(res, 0, col[TOTALS_CLOSED]);
    k->connect_time_total_ms = (double)get_i64(res, 0, col[TOTALS_CONNECT_TIME_MS]);
    k->waiting_clients = (int)get_i64(res, 0, col[TOTALS_WAITING_CLIENTS]);
    k->wait_time_total_ms = (double)get_i64(res, 0, col[TOTALS_WAIT_TIME_MS]);
    k->waits_total = get_i64(res, 0, col[TOTALS_WAITS]);
    snap->capacity.pool_min = (int)get_i64(res, 0, col[TOTALS_POOL_MIN]);
    snap->capacity.pool_max = (int)get_i64(res, 0, col[TOTALS_POOL_MAX]);
    snap->capacity.pool_current = (int)get_i64(res, 0, col[TOTALS_POOL_CURRENT]);
    PQclear(res);
    return READ_OK;
}

static enum read_result read_clients(PGconn *conn, struct snapshot *snap, struct inspect_error *err)
{
    static const char command[] = "SHOW SNAPSHOT";
    PGresult *res = console_exec(conn, command, PGRES_TUPLES_OK, err);
    if (res == NULL)
        return READ_FAILED;
    int col[N_CLIENT_COLUMNS];
    if (!find_columns(res, command, client_columns, N_CLIENT_COLUMNS, col, err)) {
        PQclear(res);
        return READ_FAILED;
    }
    int rows = PQntuples(res);
    for (int i = 0; i < rows; i++) {
        if (get_i64(res, i, col[CLIENT_TAKEN_MS]) != snap->taken_ms) {
            PQclear(res);
            return READ_TORN;
        }
        struct conn_record *rec = snapshot_add_conn(snap);
        if (rec == NULL) {
            inspect_session_error_set(err, "out_of_memory", NULL,
                                      "out of memory reading %d clients", rows);
            PQclear(res);
            return READ_FAILED;
        }
        rec->id = get_i64(res, i, col[CLIENT_ID]);
        rec->pid = (int32_t)get_i64(res, i, col[CLIENT_PID]);
        if (!get_name(snap, &rec->user, SNAPSHOT_NAME_LEN, res, i, col[CLIENT_USER]) ||
            !get_name(snap, &rec->database, SNAPSHOT_NAME_LEN, res, i, col[CLIENT_DATABASE]) ||
            !get_name(snap, &rec->application, SNAPSHOT_NAME_LEN, res, i,
                      col[CLIENT_APPLICATION]) ||
            !get_name(snap, &rec->client_addr, SNAPSHOT_ADDR_LEN, res, i, col[CLIENT_ADDR])) {
            inspect_session_error_set(err, "out_of_memory", NULL,
                                      "out of memory reading %d clients", rows);
            PQclear(res);
            return READ_FAILED;
        }
        rec->state = snapshot_conn_state_from_text(PQgetvalue(res, i, col[CLIENT_STATE]));
        rec->connected_ms = get_i64(res, i, col[CLIENT_CONNECTED_MS]);
        rec->state_change_ms = get_i64(res, i, col[CLIENT_STATE_CHANGE_MS]);
        rec->xact_start_ms = get_i64(res, i, col[CLIENT_XACT_START_MS]);
        rec->query_start_ms = get_i64(res, i, col[CLIENT_QUERY_START_MS]);
        rec->requests = get_i64(res, i, col[CLIENT_REQUESTS]);
        rec->output_blocked_ms = get_i64(res, i, col[CLIENT_OUTPUT_BLOCKED_MS]);
        rec->hold_total_ms = get_i64(res, i, col[CLIENT_HOLD_TOTAL_MS]);
        rec->app_usual_hold_ms = get_i64(res, i, col[CLIENT_APP_USUAL_HOLD_MS]);
        /* A walsender's client: never a leak suspect nor a kill-idle target, as in the
         * pooler's own manager (a pooler without the column is refused as too old above,
         * rather than read as if it had none). */
        rec->is_replication = get_i64(res, i, col[CLIENT_REPLICATION]) != 0;
        /* The pooler's own rule (pool_source.c): a platform role that connects through
         * the pooler is never a suspect nor a target; a client's name exempts nobody. */
        rec->is_infrastructure =
            snapshot_is_infrastructure(SNAPSHOT_MODE_SERVE, rec->user, rec->application);
    }
    PQclear(res);
    return READ_OK;
}

/* SHOW SNAPSHOT_POOLS: one record per pool (limits, contents, rates, quantiles). */
enum pool_column {
    POOL_DATABASE,
    POOL_USER,
    POOL_SERVER,
    POOL_MODE,
    POOL_SIZE,
    POOL_RESERVE,
    POOL_MAX_SIZE,
    POOL_SERVER_USABLE,
    POOL_CL_ACTIVE,
    POOL_CL_WAITING,
    POOL_CL_IDLE,
    POOL_SV_ACTIVE,
    POOL_SV_IDLE,
    POOL_SV_TESTED,
    POOL_SV_LOGIN,
    POOL_XACTS_PER_SEC,
    POOL_QUERIES_PER_SEC,
    POOL_OPENED_PER_SEC,
    POOL_CLOSED_PER_SEC,
    POOL_BYTES_IN_PER_SEC,
    POOL_BYTES_OUT_PER_SEC,
    POOL_AVG_XACT_MS,
    POOL_AVG_QUERY_MS,
    POOL_AVG_WAIT_MS,
    POOL_WAIT_P95_MS,
    POOL_WAIT_P99_MS,
    POOL_WAIT_MAX_MS,
    POOL_XACT_P95_MS,
    POOL_XACT_P99_MS,
    POOL_QUERY_WAIT_TIMEOUT_MS,
    POOL_IDLE_TRANSACTION_TIMEOUT_MS,
    N_POOL_COLUMNS,
};

static const char *const pool_columns[N_POOL_COLUMNS] = {
    [POOL_DATABASE] = "database",
    [POOL_USER] = "user",
    [POOL_SERVER] = "server",
    [POOL_MODE] = "pool_mode",
    [POOL_SIZE] = "size",
    [POOL_RESERVE] = "reserve",
    [POOL_MAX_SIZE] = "max_size",
    [POOL_SERVER_USABLE] = "server_usable",
    [POOL_CL_ACTIVE] = "cl_active",
    [POOL_CL_WAITING] = "cl_waiting",
    [POOL_CL_IDLE] = "cl_idle",
    [POOL_SV_ACTIVE] = "sv_active",
    [POOL_SV_IDLE] = "sv_idle",
    [POOL_SV_TESTED] = "sv_tested",
    [POOL_SV_LOGIN] = "sv_login",
    [POOL_XACTS_PER_SEC] = "xacts_per_sec",
    [POOL_QUERIES_PER_SEC] = "queries_per_sec",
    [POOL_OPENED_PER_SEC] = "servers_opened_per_sec",
    [POOL_CLOSED_PER_SEC] = "servers_closed_per_sec",
    [POOL_BYTES_IN_PER_SEC] = "bytes_in_per_sec",
    [POOL_BYTES_OUT_PER_SEC] = "bytes_out_per_sec",
    [POOL_AVG_XACT_MS] = "avg_xact_ms",
    [POOL_AVG_QUERY_MS] = "avg_query_ms",
    [POOL_AVG_WAIT_MS] = "avg_wait_ms",
    [POOL_WAIT_P95_MS] = "wait_p95_ms",
    [POOL_WAIT_P99_MS] = "wait_p99_ms",
    [POOL_WAIT_MAX_MS] = "wait_max_ms",
    [POOL_XACT_P95_MS] = "xact_p95_ms",
    [POOL_XACT_P99_MS] = "xact_p99_ms",
    [POOL_QUERY_WAIT_TIMEOUT_MS] = "query_wait_timeout_ms",
    [POOL_IDLE_TRANSACTION_TIMEOUT_MS] = "idle_transaction_timeout_ms",
};

static double get_double(const PGresult *res, int row, int col)
{
    return PQgetisnull(res, row, col) ? 0.0 : strtod(PQgetvalue(res, row, col), NULL);
}

static const struct {
    const char *name;
    enum snapshot_pool_mode mode;
} pool_modes[] = {{"session", SNAPSHOT_POOL_SESSION},
                  {"transaction", SNAPSHOT_POOL_TRANSACTION},
                  {"statement", SNAPSHOT_POOL_STATEMENT}};

static enum read_result read_pools(PGconn *conn, struct snapshot *snap, struct inspect_error *err)
{
    static const char command[] = "SHOW SNAPSHOT_POOLS";
    PGresult *res = console_exec(conn, command, PGRES_TUPLES_OK, err);
    if (res == NULL)
        return READ_FAILED;
    int col[N_POOL_COLUMNS];
    if (!find_columns(res, command, pool_columns, N_POOL_COLUMNS, col, err)) {
        PQclear(res);
        return READ_FAILED;
    }
    int rows = PQntuples(res);
    for (int i = 0; i < rows; i++) {
        struct pool_record *pl = snapshot_add_pool(snap);
        if (pl == NULL) {
            inspect_session_error_set(err, "out_of_memory", NULL, "out of memory reading %d pools",
                                      rows);
            PQclear(res);
            return READ_FAILED;
        }
        get_text(pl->database, sizeof(pl->database), res, i, col[POOL_DATABASE]);
        get_text(pl->user, sizeof(pl->user), res, i, col[POOL_USER]);
        get_text(pl->server, sizeof(pl->server), res, i, col[POOL_SERVER]);
        const char *mode = PQgetvalue(res, i, col[POOL_MODE]);
        for (size_t m = 0; m < sizeof(pool_modes) / sizeof(pool_modes[0]); m++)
            if (!strcmp(mode, pool_modes[m].name))
                pl->mode = pool_modes[m].mode;
        int *counts[] = {&pl->size,      &pl->reserve,    &pl->max_size, &pl->server_usable,
                         &pl->cl_active, &pl->cl_waiting, &pl->cl_idle,  &pl->sv_active,
                         &pl->sv_idle,   &pl->sv_tested,  &pl->sv_login};
        for (size_t k = 0; k < sizeof(counts) / sizeof(counts[0]); k++)
            *counts[k] = (int)get_i64(res, i, col[POOL_SIZE + (int)k]);
        double *values[] = {&pl->xacts_per_sec,
                            &pl->queries_per_sec,
                            &pl->servers_opened_per_sec,
                            &pl->servers_closed_per_sec,
                            &pl->bytes_in_per_sec,
                            &pl->bytes_out_per_sec,
                            &pl->avg_xact_ms,
                            &pl->avg_query_ms,
                            &pl->avg_wait_ms,
                            &pl->wait_p95_ms,
                            &pl->wait_p99_ms,
                            &pl->wait_max_ms,
                            &pl->xact_p95_ms,
                            &pl->xact_p99_ms};
        for (size_t k = 0; k < sizeof(values) / sizeof(values[0]); k++)
            *values[k] = get_double(res, i, col[POOL_XACTS_PER_SEC + (int)k]);
        pl->query_wait_timeout_ms = get_i64(res, i, col[POOL_QUERY_WAIT_TIMEOUT_MS]);
        pl->idle_transaction_timeout_ms = get_i64(res, i, col[POOL_IDLE_TRANSACTION_TIMEOUT_MS]);
    }
    PQclear(res);
    return READ_OK;
}

static void sleep_ms(int64_t ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0)
        ;
}

bool console_source_take_snapshot(PGconn *conn, const struct manager_options *opts,
                                  int64_t newer_than_ms, struct snapshot *snap,
                                  struct inspect_error *err)
{
    /* The console has no filters: the engine applies --user/--database/--application to the
     * records, and the counters are the pooler's totals over all pools. */
    (void)opts;
    double deadline = timestamp_monotonic_ms() + WAIT_FOR_SNAPSHOT_MS;
    for (;;) {
        snapshot_init(snap, SNAPSHOT_MODE_SERVE, 0);
        enum read_result r = read_totals(conn, newer_than_ms, snap, err);
        if (r == READ_OK)
            r = read_clients(conn, snap, err);
        if (r == READ_OK)
            r = read_pools(conn, snap, err);
        if (r == READ_OK)
            return true;
        snapshot_free(snap);
        if (r == READ_FAILED)
            return false;
        if (timestamp_monotonic_ms() >= deadline) {
            inspect_session_error_set(
                err, "query_failed", NULL, "%s",
                r == READ_TORN  ? "the pooler's snapshot kept changing while it was "
                                  "read"
                : newer_than_ms ? "the pooler's manager took no new snapshot "
                                  "within 3.5 s (is it stalled?)"
                                : "the pooler's manager has not taken a snapshot "
                                  "yet");
            return false;
        }
        sleep_ms(POLL_SNAPSHOT_MS);
    }
}

/* ---- health probes ------------------------------------------------------------------ */

/* Waits until conn's socket is ready for events or the deadline passes (false). */
static bool wait_socket(PGconn *conn, short events, double deadline)
{
    for (;;) {
        double left = deadline - timestamp_monotonic_ms();
        if (left <= 0)
            return false;
        struct pollfd pfd = {.fd = PQsocket(conn), .events = events};
        int n = poll(&pfd, 1, (int)left + 1);
        if (n > 0)
            return true;
        if (n == 0)
            return false;
        /* EINTR: poll again with what is left */
    }
}

static void probe_fail(struct health_probe *r, double started, const char *sqlstate,
                       const char *message)
{
    r->healthy = false;
    r->latency_ms = timestamp_monotonic_ms() - started;
    char reason[256];
    login_failure_reason(reason, sizeof(reason), message);
    snprintf(r->error, sizeof(r->error), "%s", reason);
    snprintf(r->sqlstate, sizeof(r->sqlstate), "%s", sqlstate ? sqlstate : "");
    snprintf(r->error_class, sizeof(r->error_class), "%s",
             health_classify_error(sqlstate, r->error));
}

static const char probe_timeout_message[] = "timeout expired before the probe finished";

/* Drives libpq's non-blocking login to the end or the deadline. */
static bool probe_login(PGconn *conn, double deadline, const char **why)
{
    PostgresPollingStatusType status = PGRES_POLLING_WRITING;
    while (status != PGRES_POLLING_OK) {
        if (status == PGRES_POLLING_FAILED) {
            *why = PQerrorMessage(conn);
            return false;
        }
        if (!wait_socket(conn, status == PGRES_POLLING_READING ? POLLIN : POLLOUT, deadline)) {
            *why = probe_timeout_message;
            return false;
        }
        status = PQconnectPoll(conn);
    }
    return true;
}

static void probe_one(const struct login_params *lp, double deadline, struct health_probe *r)
{
    double started = timestamp_monotonic_ms();
    PGconn *conn = PQconnectStartParams(lp->keys, lp->values, 0);
    const char *why = NULL;
    if (conn == NULL || PQstatus(conn) == CONNECTION_BAD) {
        probe_fail(r, started, NULL, conn ? PQerrorMessage(conn) : "out of memory");
        PQfinish(conn);
        return;
    }
    if (!probe_login(conn, deadline, &why)) {
        probe_fail(r, started, NULL, why);
        PQfinish(conn);
        return;
    }
    double connected = timestamp_monotonic_ms();
    r->connect_ms = connected - started;
    if (!PQsendQuery(conn, "SHOW VERSION")) {
        probe_fail(r, started, NULL, PQerrorMessage(conn));
        PQfinish(conn);
        return;
    }
    while (PQisBusy(conn)) {
        if (!wait_socket(conn, POLLIN, deadline)) {
            probe_fail(r, started, NULL, probe_timeout_message);
            PQfinish(conn);
            return;
        }
        if (!PQconsumeInput(conn)) {
            probe_fail(r, started, NULL, PQerrorMessage(conn));
            PQfinish(conn);
            return;
        }
    }
    char sqlstate[6], message[256];
    bool ok = inspect_session_read_one_row(conn, sqlstate, message, sizeof(message));
    if (!ok) {
        probe_fail(r, started, sqlstate, message[0] ? message : "SHOW VERSION returned no row");
    } else {
        double now = timestamp_monotonic_ms();
        r->healthy = true;
        r->query_ms = now - connected;
        r->latency_ms = now - started;
    }
    PQfinish(conn);
}

void console_source_probe(const char *uri, size_t n, int timeout_ms, struct health_probe *probes)
{
    for (size_t i = 0; i < n; i++) {
        memset(&probes[i], 0, sizeof(probes[i]));
        probes[i].id = (int64_t)i + 1;
    }
    struct console_uri u;
    struct inspect_error err = {0};
    if (!console_source_parse_uri(uri, &u, &err)) {
        for (size_t i = 0; i < n; i++) {
            snprintf(probes[i].error, sizeof(probes[i].error), "%.200s", err.message);
            snprintf(probes[i].error_class, sizeof(probes[i].error_class), "error");
        }
        console_uri_forget_password(&u);
        return;
    }
    struct login_params lp;
    login_params_init(&lp, &u);
    double deadline = timestamp_monotonic_ms() + timeout_ms;
    for (size_t i = 0; i < n; i++)
        probe_one(&lp, deadline, &probes[i]);
    console_uri_forget_password(&u);
}

/* ---- kills -------------------------------------------------------------------------- */

bool console_source_may_kill(PGconn *conn, const struct inspect_target *target,
                             struct inspect_error *err)
{
    /* No client id starts with a letter other than 'c', so this kills nothing: an admin gets
     * "needs a client id", a stats user "admin access needed" (checked first). */
    PGresult *res = PQexec(conn, "KILL_CLIENT permission-check");
    const char *sqlstate = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    bool refused = sqlstate != NULL && strcmp(sqlstate, "42501") == 0;
    bool lost = PQstatus(conn) == CONNECTION_BAD;
    PQclear(res);
    if (lost) {
        char line[400];
        inspect_session_first_line(line, sizeof(line), PQerrorMessage(conn));
        inspect_session_error_set(err, "connection_failed", NULL, "lost the pgwarden console: %s",
                                  line);
        return false;
    }
    if (refused) {
        inspect_session_error_set(err, "refused", "42501",
                                  "user '%s' may only read the pgwarden console (stats_users): "
                                  "KILL_CLIENT needs a user in admin_users; nothing was done",
                                  target->user);
        return false;
    }
    return true;
}

static const struct conn_record *find_client(const struct snapshot *snap, int64_t id)
{
    for (size_t i = 0; i < snap->n_conns; i++)
        if (snap->conns[i].id == id)
            return &snap->conns[i];
    return NULL;
}

/* The plan is re-checked first on a newer snapshot: the same client (ids are never reused),
 * in the same state since the same moment, with no request served since. KILL_CLIENT's
 * guarded form then checks the same in the pooler's loop turn that closes it, so a client
 * that woke up after that snapshot is spared too (55000). */
static bool still_idle(const struct conn_record *planned, const struct conn_record *now)
{
    return now != NULL && now->state == planned->state &&
           now->state_change_ms == planned->state_change_ms && now->requests == planned->requests;
}

static void kill_one(PGconn *conn, struct kill_action *action)
{
    char command[96];
    snprintf(command, sizeof(command), "KILL_CLIENT %lld %lld %lld", (long long)action->conn->id,
             (long long)action->conn->state_change_ms, (long long)action->conn->requests);
    PGresult *res = PQexec(conn, command);
    const char *sqlstate = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    if (res != NULL && PQresultStatus(res) == PGRES_COMMAND_OK) {
        action->result = KILL_TERMINATED;
        snprintf(action->reason, sizeof(action->reason), "terminated with KILL_CLIENT");
    } else if (sqlstate != NULL && strcmp(sqlstate, "42704") == 0) {
        action->result = KILL_GONE;
        snprintf(action->reason, sizeof(action->reason),
                 "spared: the client disconnected before KILL_CLIENT");
    } else if (sqlstate != NULL && strcmp(sqlstate, "55000") == 0) {
        action->result = KILL_GONE;
        snprintf(action->reason, sizeof(action->reason),
                 "spared: it ran something or changed state just before KILL_CLIENT");
    } else {
        const char *primary = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
        char line[160];
        inspect_session_first_line(line, sizeof(line), primary ? primary : PQerrorMessage(conn));
        bool denied = sqlstate != NULL && strcmp(sqlstate, "42501") == 0;
        action->result = denied ? KILL_DENIED : KILL_FAILED;
        snprintf(action->reason, sizeof(action->reason), "%s: %s",
                 denied ? "permission denied" : "failed", line);
    }
    PQclear(res);
}

void console_source_kill(PGconn *conn, const struct manager_options *opts,
                         const struct snapshot *snap, struct kill_plan *plan)
{
    plan->killed = 0;
    struct snapshot fresh;
    struct inspect_error err = {0};
    bool have_fresh = console_source_take_snapshot(conn, opts, snap->taken_ms, &fresh, &err);
    for (size_t i = 0; i < plan->n_actions; i++) {
        struct kill_action *action = &plan->actions[i];
        if (action->result != KILL_PLANNED)
            continue;
        if (!have_fresh) {
            action->result = KILL_FAILED;
            snprintf(action->reason, sizeof(action->reason),
                     "not terminated: could not re-check it (%.150s)", err.message);
            continue;
        }
        const struct conn_record *now = find_client(&fresh, action->conn->id);
        if (!still_idle(action->conn, now)) {
            action->result = KILL_GONE;
            snprintf(action->reason, sizeof(action->reason), "%s",
                     now == NULL ? "spared: the client disconnected since the plan"
                                 : "spared: it ran something or changed state since the plan");
            continue;
        }
        kill_one(conn, action);
        if (action->result == KILL_TERMINATED)
            plan->killed++;
    }
    if (have_fresh)
        snapshot_free(&fresh);
}

void console_source_adopt_settings(PGconn *conn, struct manager_options *opts)
{
    PGresult *res = PQexec(conn, "SHOW MANAGER");
    if (PQresultStatus(res) == PGRES_TUPLES_OK && PQnfields(res) == 2) {
        for (int i = 0; i < PQntuples(res); i++)
            (void)options_adopt(opts, PQgetvalue(res, i, 0), PQgetvalue(res, i, 1));
    }
    PQclear(res);
}
