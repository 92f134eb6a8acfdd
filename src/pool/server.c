/* Server side: connecting and logging in to PostgreSQL (TLS per server_tls_sslmode; trust,
 * cleartext, md5, SCRAM with a password or pass-through keys), the outstanding-request FIFO
 * that decides when a server may be released, and the server→client data path. */
#include "pool/server.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "common/log.h"
#include "net/tls.h"
#include "pool/auth_lookup.h"
#include "pool/batch.h"
#include "pool/cancel.h"
#include "pool/client.h"
#include "pool/conn.h"
#include "pool/handout.h"
#include "pool/objects.h"
#include "pool/states.h"
#include "proto/md5_auth.h"
#include "proto/scram.h"

enum server_login_step {
    SL_RESOLVING, /* waiting for an asynchronous DNS answer; no socket yet */
    SL_CONNECTING,
    SL_SSL_ANSWER,    /* SSLRequest sent; its one-byte answer is due */
    SL_TLS_HANDSHAKE, /* the server said 'S': TLS handshake, then the startup over TLS */
    SL_AUTH,          /* startup sent; authentication and parameter messages follow */
};

struct server_login {
    enum server_login_step step;
    struct net_resolve *resolve; /* pending lookup, cancelled if the server goes first */
    struct scram_client scram;
    uint8_t *welcome; /* owned: ParameterStatus messages collected for the pool */
    size_t welcome_len;
    uint32_t welcome_params; /* ParameterStatus messages seen in this login */
};

enum server_scan_result {
    SSCAN_OK,
    SSCAN_RELEASE,        /* transaction over: release after flushing */
    SSCAN_INTERNAL_DONE,  /* pooler query finished on a server without client */
    SSCAN_FLUSH_FIRST,    /* forwardable bytes precede a message to swallow */
    SSCAN_INTERNAL_ERROR, /* a pooler-issued query failed */
    SSCAN_BAD,            /* framing or protocol-state violation */
    SSCAN_NO_XACT_BLOCKS, /* statement mode: the client opened a transaction block */
};

void server_login_free(struct server *s)
{
    struct server_login *l = s->login;
    if (!l)
        return;
    net_resolve_cancel(l->resolve);
    l->resolve = NULL;
    scram_client_clear(&l->scram);
    free(l->welcome);
    free(l);
    s->login = NULL;
}

/* max_connections minus the slots only superusers (and, on PostgreSQL 16+, roles with
 * pg_use_reserved_connections) may use: what ordinary pools can have at most. */
#define SLOTS_QUERY                                                                                \
    "SELECT coalesce(current_setting('max_connections', true)::int, 0)"                            \
    " - coalesce(current_setting('superuser_reserved_connections', true)::int, 0)"                 \
    " - coalesce(current_setting('reserved_connections', true)::int, 0)"
#define SLOTS_REREAD_US (600LL * 1000000) /* settings change only with a server restart */

/* ---- what the server owes ---- */

/* Command tags after which the pooler's statements on a server are not what it thinks.
 * DISCARD ALL and DEALLOCATE ALL drop them all. PREPARE and DEALLOCATE may drop or replace
 * one under its name (a client can read the names in pg_prepared_statements); DO and CALL
 * may run those commands out of sight. After these, every statement is re-created, Close
 * first, before its next use, so a replaced one never runs for a client. (A function called
 * from a plain SELECT can do the same unseen: see docs/SECURITY.md.) */
static const struct {
    const char *tag;
    bool all_dropped;
} STMT_TAGS[] = {
    {"DISCARD ALL", true}, {"DEALLOCATE ALL", true}, {"DEALLOCATE", false}, {"PREPARE", false},
    {"DO", false},         {"CALL", false},
};

/* A CommandComplete body (tag and NUL) from a client's command. Only these short tags are
 * compared; longer bodies are never read. */
static void note_command_tag(struct server *s, const char *body, uint32_t len)
{
    for (size_t i = 0; i < sizeof(STMT_TAGS) / sizeof(STMT_TAGS[0]); i++) {
        if (len != strlen(STMT_TAGS[i].tag) + 1 || memcmp(body, STMT_TAGS[i].tag, len))
            continue;
        if (STMT_TAGS[i].all_dropped)
            s->stmts.n = 0;
        else
            prepared_server_distrust(&s->stmts);
        return;
    }
}

static void forget_stmt(void *ctx, enum owed_msg msg, uint64_t id)
{
    struct server *s = ctx;
    if (msg == OWED_PARSE)
        prepared_server_remove(&s->stmts, id);
    else if (!prepared_server_add(&s->stmts, id)) /* a skipped Close: the statement stays */
        s->close_needed = true;
}

void server_note_frontend(struct server *s, uint8_t type, uint8_t flags, uint64_t id)
{
    if (!owed_note_frontend(&s->owed, type, flags, id))
        s->close_needed = true;
}

bool server_owes_answers(const struct server *s)
{
    return !owed_is_idle(&s->owed) || s->internal_pending > 0;
}

bool server_is_clean(const struct server *s)
{
    return owed_is_idle(&s->owed) && s->xact == WIRE_XACT_IDLE && s->internal_pending == 0;
}

/* ---- sending ---- */

/* Login messages and pooler queries are small and go out on a socket with an empty send
 * buffer; failing to send them at once means the connection is unusable. */
bool server_send_raw(struct server *s, const void *data, size_t len)
{
    return conn_send_all(&s->conn, data, len);
}

bool server_send_internal_query(struct server *s, const char *sql)
{
    size_t need = strlen(sql) + 16;
    uint8_t stackbuf[512];
    uint8_t *buf = need <= sizeof(stackbuf) ? stackbuf : malloc(need);
    if (!buf)
        return false;
    struct wire_buf b;
    wire_buf_init(&b, buf, need);
    wire_build_query(&b, sql);
    bool ok = !b.overflow && server_send_raw(s, buf, b.len);
    if (buf != stackbuf)
        free(buf);
    if (ok)
        s->internal_pending++;
    return ok;
}

bool server_idle_alive(struct server *s)
{
    uint8_t byte;
    ssize_t n = recv(s->conn.fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return true;
    /* With TLS the bytes may be a record that carries no data (a session ticket): the
     * readable edge they raised lets server_pump sort it out. */
    if (n > 0 && s->conn.tls)
        return true;
    server_close(s, n == 0  ? "server closed the connection while idle"
                    : n > 0 ? "server sent data while idle"
                            : "server connection error while idle");
    return false;
}

/* ---- lifecycle ---- */

/* The pool's server_lifetime spread by server_lifetime_jitter; 0 when the lifetime is 0 (the
 * server expires at its first use, link_client). */
static int64_t jittered_lifetime_us(const struct pool *pool)
{
    const struct pooler_config *cfg = pool->pooler->cfg;
    if (pool->server_lifetime_ms <= 0)
        return 0;
    int64_t base = pool->server_lifetime_ms * 1000;
    uint32_t r = 0;
    if (cfg->server_lifetime_jitter_pct > 0 && RAND_bytes((unsigned char *)&r, sizeof(r)) == 1) {
        int64_t spread = base * cfg->server_lifetime_jitter_pct / 100;
        base += (int64_t)(r % (uint32_t)(2 * spread + 1)) - spread;
    }
    return base;
}

void server_apply_lifetime(struct server *s)
{
    if (s->replication != STARTUP_REPLICATION_NONE)
        return;
    int64_t life = jittered_lifetime_us(s->pool);
    /* Lifetime 0: the server expires at its next use (link_client sets it then). */
    s->expire_us = life ? s->connect_us + life : 0;
}

/* Postgres' "the database system is starting up / shutting down / in recovery mode". */
#define SQLSTATE_CANNOT_CONNECT_NOW "57P03"

/* A failed login: no new one before server_login_retry. The error is kept for the clients
 * that arrive meanwhile (and for health reporting), except that of a server starting up or
 * shutting down, which is no reason to turn anyone away: they wait for it. */
static void record_login_failure(struct pool *pool, const char *sqlstate, const char *msg)
{
    pool->stats.login_failures++;
    pool->retry_after_us =
        pooler_now(pool->pooler) + pool->pooler->cfg->server_login_retry_ms * 1000;
    if (!strcmp(sqlstate, SQLSTATE_CANNOT_CONNECT_NOW))
        return;
    free(pool->last_error);
    pool->last_error = strdup(msg);
    snprintf(pool->last_sqlstate, sizeof(pool->last_sqlstate), "%s", sqlstate);
}

/* Registers the connecting socket; the writable edge continues the login. */
static bool attach_socket(struct server *s, int fd)
{
    struct pooler *p = s->pool->pooler;
    s->conn.fd = fd;
    s->conn.io = net_io_new(p->loop, fd, NET_IO_EDGE_RW, server_io_cb, s);
    if (!s->conn.io)
        return false;
    s->login->step = SL_CONNECTING;
    return true;
}

static void login_failed(struct server *s, const char *sqlstate, const char *msg);
static void login_refused(struct server *s, const char *sqlstate, const char *msg);

/* load_balance_hosts = disable: a failed connection moves the pool to the next host of its
 * list (round-robin moves on anyway). */
static void move_past_failed_host(struct pool *pool, int idx)
{
    if (!pool->host_round_robin && pool->n_hosts > 1 && pool->next_host == idx)
        pool->next_host = (idx + 1) % pool->n_hosts;
}

bool server_mid_message(const struct server *s)
{
    /* body_left: the message's header and first bytes are scanned, and go out as they come
     * (a message larger than the buffer is streamed), its end has not arrived. */
    return s->conn.body_left > 0;
}

struct pool_host *server_host(const struct server *s)
{
    struct pool *pool = s->pool;
    /* A reload may have shortened the list under a server that was still in use. */
    return &pool->hosts[s->host_idx < pool->n_hosts ? s->host_idx : 0];
}

/* A lookup's answer is kept for dns_max_ttl, a failure for dns_nxdomain_ttl (PgBouncer's
 * keys): within them new logins neither ask DNS again nor wait for it. */
static void remember_address(struct pool *pool, struct pool_host *h,
                             const struct net_sockaddr *addr, int64_t now)
{
    h->addr = *addr;
    h->have_addr = true;
    h->addr_expires_us = now + pool->pooler->cfg->dns_max_ttl_ms * 1000;
    h->lookup_failed_until_us = 0;
}

static void remember_lookup_failure(struct pool *pool, struct pool_host *h, const char *why,
                                    int64_t now)
{
    snprintf(h->lookup_error, sizeof(h->lookup_error), "%s", why);
    h->lookup_failed_until_us = now + pool->pooler->cfg->dns_nxdomain_ttl_ms * 1000;
}

static void resolved_cb(void *arg, bool ok, const struct net_sockaddr *addr, const char *err)
{
    struct server *s = arg;
    struct pool_host *h = server_host(s);
    s->login->resolve = NULL;
    int64_t now = pooler_now(s->pool->pooler);
    char msg[320];
    if (!ok) {
        remember_lookup_failure(s->pool, h, err, now);
        /* A name that does not resolve will not for the next client either; but in a host
         * list the next host may serve, so the clients wait for it (PgBouncer). */
        /* PgBouncer's words first ("server DNS lookup failed"), then which name and why. */
        snprintf(msg, sizeof(msg), "server DNS lookup failed: cannot resolve %s: %s", h->name,
                 h->lookup_error);
        if (s->pool->n_hosts > 1)
            login_failed(s, "08006", msg);
        else
            login_refused(s, "08006", msg);
        return;
    }
    remember_address(s->pool, h, addr, now);
    int fd = net_connect_addr(addr, msg, sizeof(msg));
    if (fd < 0) {
        login_failed(s, NULL, msg);
        return;
    }
    if (!attach_socket(s, fd)) {
        close(fd);
        s->conn.fd = -1;
        login_failed(s, NULL, "out of memory");
    }
}

bool server_launch(struct pool *pool)
{
    return server_launch_for(pool, NULL);
}

bool server_launch_for(struct pool *pool, struct client *repl_client)
{
    struct pooler *p = pool->pooler;
    char err[256] = "";
    struct server *s = calloc(1, sizeof(*s));
    struct server_login *l = calloc(1, sizeof(*l));
    if (!s || !l) {
        free(s);
        free(l);
        return false;
    }
    s->pool = pool;
    s->login = l;
    s->conn.fd = -1;
    s->id = ++p->next_id;
    s->xact = WIRE_XACT_IDLE;
    owed_init(&s->owed, forget_stmt, s);
    plist_init(&s->node);
    plist_init(&s->flush_node);
    scram_client_init(&l->scram);
    s->connect_us = pooler_now(p);
    /* A host list (host=a,b,c): round-robin moves on with every new connection; disable
     * stays on one entry until a connection to it fails (end_login moves on then). */
    s->host_idx = (uint8_t)(pool->next_host < pool->n_hosts ? pool->next_host : 0);
    if (pool->host_round_robin && pool->n_hosts > 1)
        pool->next_host = (s->host_idx + 1) % pool->n_hosts;
    struct pool_host *h = server_host(s);

    /* Unix sockets and numeric addresses connect at once; names go through the resolver
     * (or its cache) so the loop never waits for DNS. */
    int fd = -1;
    bool pending = false, unresolved = false;
    struct net_sockaddr addr;
    const char *host = h->name;
    if (host[0] == '/' || net_host_is_numeric(host)) {
        fd = net_connect(host, pool->port, err, sizeof(err));
    } else if (h->have_addr && s->connect_us < h->addr_expires_us) {
        fd = net_connect_addr(&h->addr, err, sizeof(err));
    } else if (s->connect_us < h->lookup_failed_until_us) {
        snprintf(err, sizeof(err), "cannot resolve %s: %s", host, h->lookup_error);
        unresolved = true;
    } else {
        switch (net_resolve_start(p->loop, host, pool->port, &addr, err, sizeof(err), resolved_cb,
                                  s, &l->resolve)) {
        case NET_RESOLVE_DONE:
            remember_address(pool, h, &addr, s->connect_us);
            fd = net_connect_addr(&addr, err, sizeof(err));
            break;
        case NET_RESOLVE_PENDING:
            pending = true;
            break;
        case NET_RESOLVE_FAILED:
            remember_lookup_failure(pool, h, err, s->connect_us);
            snprintf(err, sizeof(err), "cannot resolve %s: %s", host, h->lookup_error);
            unresolved = true;
            break;
        }
    }
    if (!pending && (fd < 0 || !attach_socket(s, fd))) {
        if (fd >= 0)
            close(fd);
        char msg[300];
        snprintf(msg, sizeof(msg), "%s%s",
                 unresolved ? "server DNS lookup failed: " : "connect failed: ",
                 fd < 0 ? err : "out of memory");
        log_warning("pool", "%s/%s: server login failed: %s", pool->db_name, pool->user_name, msg);
        record_login_failure(pool, "08006", msg);
        move_past_failed_host(pool, s->host_idx);
        free(s);
        free(l);
        if (unresolved && pool->n_hosts <= 1) /* as in resolved_cb */
            handout_fail_waiters(pool);
        return false;
    }
    if (pending)
        l->step = SL_RESOLVING;
    int64_t life = jittered_lifetime_us(pool);
    s->expire_us = life ? s->connect_us + life : 0;
    if (repl_client) {
        /* Linked from the start: its startup packet is the client's (send_startup), and
         * closing either end closes the other. */
        s->replication = repl_client->replication;
        s->client = repl_client;
        repl_client->server = s;
        s->expire_us = 0; /* a walsender lives as long as its client */
    }
    pool->n_servers++;
    pool->stats.servers_created++;
    states_server_change(s, SV_LOGIN);
    log_debug("pool", "server %llu: %s %s:%d for %s/%s", (unsigned long long)s->id,
              pending ? "resolving" : "connecting to", host, pool->port, pool->db_name,
              pool->user_name);
    return true;
}

void server_close(struct server *s, const char *reason)
{
    if (s->state == SV_JUSTFREE)
        return;
    struct pool *pool = s->pool;
    struct pooler *p = pool->pooler;
    long long age_s = (long long)((pooler_now(p) - s->connect_us) / 1000000);
    if (p->cfg->log_disconnections)
        log_info("pool", "server %llu %s/%s: closing because: %s (age=%llds)",
                 (unsigned long long)s->id, pool->db_name, pool->user_name, reason, age_s);
    else
        log_debug("pool", "server %llu %s/%s: closing because: %s (age=%llds)",
                  (unsigned long long)s->id, pool->db_name, pool->user_name, reason, age_s);
    handout_note_probe(s, false, reason); /* a probe in flight failed with its server */
    auth_lookup_server_gone(s, reason);   /* and so did an auth_query */
    if (s->client) {
        struct client *c = s->client;
        c->output_torn |= server_mid_message(s);
        s->client = NULL;
        c->server = NULL;
        objects_client_fail(c, "08006", "server connection closed: %s", reason);
    }
    /* A polite Terminate lets PostgreSQL end the backend without logging an error. */
    if (s->state != SV_LOGIN && s->conn.fd >= 0) {
        uint8_t t[8];
        struct wire_buf b;
        wire_buf_init(&b, t, sizeof(t));
        wire_build_terminate(&b);
        if (!server_send_raw(s, t, b.len))
            log_debug("pool", "server %llu: Terminate not delivered", (unsigned long long)s->id);
    }
    cancel_reqs_forget_server(p, s);
    server_login_free(s);
    prepared_server_free_all(&s->stmts);
    owed_reset(&s->owed);
    conn_drop_buffer(p, &s->conn);
    for (int i = 0; i < PARAM_COUNT; i++) {
        params_unref(s->params[i]);
        s->params[i] = NULL;
    }
    pool->n_servers--;
    pool->stats.servers_closed++;
    states_server_change(s, SV_JUSTFREE);
    objects_schedule_reap(p);
}

/* What a failed login means for the clients waiting for the pool (PgBouncer's rules):
 *
 *   the server could not be reached, or   clients stay queued; the login is retried after
 *   broke off the login (a refused        server_login_retry (their wait is bounded by
 *   connect, a close, connect timeout,    query_timeout / query_wait_timeout); new clients
 *   a garbled message)                    meanwhile are told the error at once
 *                                         (handout_login_failing)
 *   57P03 (starting up, shutting down)    clients stay queued; nobody is told
 *   refused: an ErrorResponse, no usable  every waiting client gets the error now: a
 *   credentials (28xxx), and, where       retry would only meet the same answer
 *   pgwarden is stricter than PgBouncer,
 *   any answer it will not take (a
 *   protocol violation, a TLS exchange
 *   the policy refuses) and a name that
 *   does not resolve
 */
static void end_login(struct server *s, bool refused, const char *severity, const char *sqlstate,
                      const char *msg)
{
    struct pool *pool = s->pool;
    if (s->replication != STARTUP_REPLICATION_NONE) {
        /* A walsender's login is its client's alone: PostgreSQL may refuse it for reasons
         * of its own (the role may not replicate, no pg_hba.conf replication line) that say
         * nothing about the pool's other logins, so the pool records no failure, blocks no
         * retry and fails no other client, whether refused or broken off. PgBouncer's words
         * in the log ("login failed"), PostgreSQL's for the client. */
        log_warning("pool", "%s/%s: replication server login failed: %s%s%s", pool->db_name,
                    pool->user_name, sqlstate ? sqlstate : "", sqlstate ? " " : "", msg);
        move_past_failed_host(pool, s->host_idx);
        struct client *c = s->client;
        if (c) {
            s->client = NULL;
            c->server = NULL;
        }
        server_close(s, "login failed");
        if (c)
            objects_client_fail_reason(c, "login failed", sqlstate ? sqlstate : "08006",
                                       "login failed: %s", msg);
        handout_activate(pool);
        return;
    }
    /* The server's own words as PgBouncer logs them ("FATAL database ... does not exist"),
     * then the SQLSTATE; pgwarden's own reasons carry only the SQLSTATE. */
    if (severity)
        log_warning("pool", "%s/%s: server login failed: %s %s (%s)", pool->db_name,
                    pool->user_name, severity, msg, sqlstate ? sqlstate : "");
    else
        log_warning("pool", "%s/%s: server login failed: %s%s%s", pool->db_name, pool->user_name,
                    sqlstate ? sqlstate : "", sqlstate ? " " : "", msg);
    record_login_failure(pool, sqlstate ? sqlstate : "08006", msg);
    move_past_failed_host(pool, s->host_idx);
    server_close(s, msg);
    auth_lookup_login_failed(pool, msg);
    if (refused && sqlstate && strcmp(sqlstate, SQLSTATE_CANNOT_CONNECT_NOW) != 0)
        handout_fail_waiters(pool);
}

/* The login broke off: unreachable server, a close, a protocol error. */
static void login_failed(struct server *s, const char *sqlstate, const char *msg)
{
    end_login(s, false, NULL, sqlstate, msg);
}

void server_login_failed(struct server *s, const char *sqlstate, const char *msg)
{
    login_failed(s, sqlstate, msg);
}

/* The server (or the lack of credentials it accepts) refused the login. */
static void login_refused(struct server *s, const char *sqlstate, const char *msg)
{
    end_login(s, true, NULL, sqlstate, msg);
}

static bool send_startup(struct server *s)
{
    struct pool *pool = s->pool;
    struct wire_startup_param params[8 + PARAM_COUNT + 2];
    size_t n = 0;
    params[n++] = (struct wire_startup_param){"user", pool->server_user};
    params[n++] = (struct wire_startup_param){"database", pool->server_db};
    for (int i = 0; i + 1 < pool->n_startup_extra && n < 8; i += 2)
        params[n++] =
            (struct wire_startup_param){pool->startup_extra[i], pool->startup_extra[i + 1]};
    struct client *c = s->client;
    if (s->replication != STARTUP_REPLICATION_NONE && c) {
        /* A walsender takes its session settings only here: a physical one runs no SET. So
         * the client's startup parameters and its "options" go in the packet, as PgBouncer
         * sends them; the database entry's own settings above come first and the client's
         * override them. */
        params[n++] = (struct wire_startup_param){
            "replication",
            startup_options_replication_value((enum startup_replication)s->replication)};
        for (int i = 0; i < PARAM_COUNT; i++)
            if (c->params[i])
                params[n++] = (struct wire_startup_param){params_name(i), c->params[i]->str};
        if (c->repl_options)
            params[n++] = (struct wire_startup_param){"options", c->repl_options};
    }
    uint8_t buf[8192];
    struct wire_buf b;
    wire_buf_init(&b, buf, sizeof(buf));
    wire_build_startup(&b, params, n);
    return !b.overflow && server_send_raw(s, buf, b.len);
}

/* A login's ParameterStatus messages. PostgreSQL reports a couple of dozen parameters (a few
 * more with extensions), each under its NAMEDATALEN name and a setting of at most a few kB;
 * a server that sends far more is not a PostgreSQL the pool should keep. */
#define WELCOME_MAX_PARAMS 256
#define WELCOME_MAX_BYTES  (64 * 1024)

enum welcome_result {
    WELCOME_OK,
    WELCOME_TOO_MUCH,  /* more than a PostgreSQL sends: the server refused, in effect */
    WELCOME_NO_MEMORY, /* our failure: this login fails, the server is not to blame */
};

/* Adds one ParameterStatus to the welcome kept for the pool's clients. */
static enum welcome_result welcome_append(struct server *s, const uint8_t *msg, size_t len)
{
    struct server_login *l = s->login;
    if (++l->welcome_params > WELCOME_MAX_PARAMS || l->welcome_len + len > WELCOME_MAX_BYTES)
        return WELCOME_TOO_MUCH;
    if (s->pool->welcome_ready && s->replication == STARTUP_REPLICATION_NONE)
        return WELCOME_OK; /* counted only: the pool already has its welcome */
    uint8_t *w = realloc(l->welcome, l->welcome_len + len);
    if (!w)
        return WELCOME_NO_MEMORY;
    memcpy(w + l->welcome_len, msg, len);
    l->welcome = w;
    l->welcome_len += len;
    return WELCOME_OK;
}

/* The largest PasswordMessage the pooler builds: a cleartext password from auth_file or the
 * database entry is sent whole (PgBouncer allows about 2 kB; PostgreSQL takes far more). */
#define AUTH_MSG_MAX (64 * 1024)

/* Handles one authentication request from the server. Returns false after failing. */
static bool handle_auth(struct server *s, const uint8_t *body, size_t len)
{
    struct pool *pool = s->pool;
    struct server_login *l = s->login;
    uint32_t code;
    const uint8_t *data;
    size_t dlen;
    char err[256];
    char out[SCRAM_OUT_MAX];
    size_t out_len = 0;
    uint8_t stack_msg[SCRAM_OUT_MAX + 64];
    uint8_t *msg = stack_msg; /* owned when it is not stack_msg: a long cleartext password */
    size_t msg_cap = sizeof(stack_msg);
    struct wire_buf b;
    wire_buf_init(&b, msg, msg_cap);
    if (!wire_parse_auth(body, len, &code, &data, &dlen)) {
        login_refused(s, "08P01", "invalid authentication request from server");
        return false;
    }
    const char *pw = pool->password;
    switch (code) {
    case WIRE_AUTH_OK:
        return true;
    case WIRE_AUTH_CLEARTEXT:
        if (!pw || auth_file_secret_kind(pw) != AUTH_SECRET_PLAIN) {
            login_refused(s, "28P01", "server asked for a cleartext password; none is configured");
            return false;
        }
        if (strlen(pw) + WIRE_HEADER_LEN + 1 > msg_cap) {
            msg_cap = strlen(pw) + WIRE_HEADER_LEN + 1;
            msg = msg_cap <= AUTH_MSG_MAX ? malloc(msg_cap) : NULL;
            if (!msg) {
                login_refused(s, "28P01",
                              msg_cap > AUTH_MSG_MAX
                                  ? "the configured password is longer than 64 kB"
                                  : "out of memory for the password message");
                return false;
            }
            wire_buf_init(&b, msg, msg_cap);
        }
        wire_build_password(&b, pw);
        break;
    case WIRE_AUTH_MD5: {
        char resp[MD5_AUTH_BUF_SIZE];
        if (dlen != MD5_AUTH_SALT_LEN || !pw ||
            !md5_auth_build_response(pw, pool->server_user, data, resp)) {
            login_refused(s, "28P01", "server asked for an md5 password; none is usable");
            return false;
        }
        wire_build_password(&b, resp);
        OPENSSL_cleanse(resp, sizeof(resp));
        break;
    }
    case WIRE_AUTH_SASL: {
        if (!wire_sasl_offers(data, dlen, SCRAM_MECHANISM)) {
            login_refused(s, "28000", "server offers no supported SASL mechanism");
            return false;
        }
        enum scram_result r;
        if (pw && scram_is_secret(pw)) {
            if (!pool->have_scram_keys) {
                login_refused(s, "28P01",
                              "wrong password type: the SCRAM secret in auth_file logs in to "
                              "the server only after a client logged in with SCRAM");
                return false;
            }
            r = scram_client_start(&l->scram, "", NULL, pool->scram_client_key,
                                   pool->scram_server_key, out, sizeof(out), &out_len, err,
                                   sizeof(err));
        } else if (pw && auth_file_secret_kind(pw) == AUTH_SECRET_PLAIN) {
            r = scram_client_start(&l->scram, "", pw, NULL, NULL, out, sizeof(out), &out_len, err,
                                   sizeof(err));
        } else {
            login_refused(s, "28P01", "server asked for SCRAM; no usable password is configured");
            return false;
        }
        if (r != SCRAM_OK) {
            login_refused(s, "28P01", err);
            return false;
        }
        wire_build_sasl_initial(&b, SCRAM_MECHANISM, out, out_len);
        break;
    }
    case WIRE_AUTH_SASL_CONTINUE:
        if (scram_client_continue(&l->scram, (const char *)data, dlen, out, sizeof(out), &out_len,
                                  err, sizeof(err)) != SCRAM_OK) {
            login_refused(s, "28P01", err);
            return false;
        }
        wire_build_sasl_response(&b, out, out_len);
        break;
    case WIRE_AUTH_SASL_FINAL:
        if (scram_client_finish(&l->scram, (const char *)data, dlen, err, sizeof(err)) !=
            SCRAM_OK) {
            login_refused(s, "28P01", err);
            return false;
        }
        return true;
    default:
        login_refused(s, "28000", "server asked for an unsupported authentication method");
        return false;
    }
    OPENSSL_cleanse(out, sizeof(out));
    bool overflow = b.overflow;
    bool sent = !overflow && server_send_raw(s, msg, b.len);
    OPENSSL_cleanse(msg, msg_cap);
    if (msg != stack_msg)
        free(msg);
    if (overflow) {
        login_refused(s, "08P01", "authentication message too large for its buffer");
        return false;
    }
    if (!sent) {
        login_failed(s, NULL, "could not send to server");
        return false;
    }
    return true;
}

static void login_complete(struct server *s)
{
    struct pool *pool = s->pool;
    struct server_login *l = s->login;
    pool->stats.connect_time_us += pooler_now(pool->pooler) - s->connect_us;
    if (s->replication != STARTUP_REPLICATION_NONE) {
        /* Its parameters are its client's (application_name, options): they are that
         * client's welcome, never the pool's. No pooler query runs on it (a physical
         * walsender takes no SQL): neither the slots query nor connect_query. A login that
         * went through shows the server can be reached: a cached failure goes. */
        objects_pool_forget_login_failure(pool);
        uint8_t *welcome = l->welcome;
        size_t welcome_len = l->welcome_len;
        l->welcome = NULL;
        server_login_free(s);
        log_debug("pool", "server %llu: replication connection logged in (backend pid %u)",
                  (unsigned long long)s->id, s->be_pid);
        handout_replication_ready(s, welcome, welcome_len);
        free(welcome);
        return;
    }
    /* A server a RELOAD made obsolete during its login reports the old target's parameters:
     * the welcome waits for a server of the target in force. */
    if (!pool->welcome_ready && !s->close_needed) {
        free(pool->welcome);
        pool->welcome = l->welcome;
        pool->welcome_len = l->welcome_len;
        l->welcome = NULL;
        for (int i = 0; i < PARAM_COUNT; i++) {
            params_unref(pool->defaults[i]);
            pool->defaults[i] = params_ref(s->params[i]);
        }
        pool->welcome_ready = true;
    }
    objects_pool_forget_login_failure(pool);
    server_login_free(s);
    log_debug("pool", "server %llu: logged in (backend pid %u)", (unsigned long long)s->id,
              s->be_pid);
    /* The server's usable connection slots bound auto-scaling: read them now and then. */
    int64_t now = pooler_now(pool->pooler);
    bool read_slots = !pool->slots_read_us || now - pool->slots_read_us > SLOTS_REREAD_US;
    if (read_slots || pool->connect_query) {
        states_server_change(s, SV_TESTED);
        if (read_slots) {
            pool->slots_read_us = now;
            s->reading_slots = true;
            if (!server_send_internal_query(s, SLOTS_QUERY)) {
                server_close(s, "pooler query could not be sent");
                return;
            }
        }
        if (pool->connect_query && !server_send_internal_query(s, pool->connect_query))
            server_close(s, "connect_query could not be sent");
        return;
    }
    handout_server_ready(s);
}

/* ---- TLS to the server ---- */

/* The context for s: TCP servers only (a unix socket is never encrypted), NULL when
 * server_tls_sslmode = disable. The current one is asked at each step: a reload meanwhile
 * marks the server close_needed, so a stale decision never outlives its login. */
static struct tls_context *server_tls_context(const struct server *s)
{
    return server_host(s)->name[0] == '/' ? NULL : s->pool->pooler->server_tls;
}

/* PgBouncer's line for a new server connection, with the pooler's own address over TCP. */
static void log_connected(const struct server *s)
{
    const struct pool *pool = s->pool;
    if (!pool->pooler->cfg->log_connections)
        return;
    if (server_host(s)->name[0] == '/') {
        log_info("pool", "server %llu %s/%s: new connection to server", (unsigned long long)s->id,
                 pool->db_name, pool->user_name);
        return;
    }
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    struct net_addr local = {0};
    char addr[64] = "?";
    if (getsockname(s->conn.fd, (struct sockaddr *)&ss, &len) == 0) {
        net_addr_from_sockaddr(&local, (const struct sockaddr *)&ss, len);
        net_addr_format(&local, addr, sizeof(addr));
    }
    /* PgBouncer names the server's address before the event ("db/user@host:port new
     * connection to server"); tools and its test suite look for it. */
    log_info("pool", "server %llu %s/%s@%s:%d new connection to server (from %s)",
             (unsigned long long)s->id, pool->db_name, pool->user_name, server_host(s)->name,
             pool->port, addr);
}

/* The socket is connected: ask for TLS, or log in in the clear. */
static void begin_login(struct server *s)
{
    struct server_login *l = s->login;
    if (!server_tls_context(s)) {
        if (!send_startup(s)) {
            login_failed(s, NULL, "could not send startup packet");
            return;
        }
        l->step = SL_AUTH;
        return; /* the answer raises a readable edge */
    }
    uint8_t req[8];
    struct wire_buf b;
    wire_buf_init(&b, req, sizeof(req));
    wire_put_u32(&b, sizeof(req));
    wire_put_u32(&b, WIRE_SSL_REQUEST_CODE);
    if (b.overflow || !server_send_raw(s, req, b.len)) {
        login_failed(s, NULL, "could not send the SSL request");
        return;
    }
    l->step = SL_SSL_ANSWER;
}

/* Reads the server's one-byte answer to the SSLRequest. True when the login goes on (TLS
 * handshake, or the startup sent in the clear), false while waiting or after failing. The
 * answer is all the pooler takes from the server before TLS: whatever else it sent (an
 * ErrorResponse, bytes after 'S' that a man in the middle could have injected, CVE-2021-23222
 * class) ends the login, and none of it reaches a client. */
static bool read_ssl_answer(struct server *s)
{
    struct pooler *p = s->pool->pooler;
    if (!s->conn.may_read)
        return false;
    switch (conn_fill(p, &s->conn)) {
    case FILL_OK:
        break;
    case FILL_AGAIN:
    case FILL_WANT_WRITE: /* not TLS yet: never */
        return false;
    case FILL_FULL: /* an empty buffer: never */
    case FILL_EOF:
    case FILL_ERROR:
        login_failed(s, NULL, "server closed the connection after the SSL request");
        return false;
    case FILL_NO_MEMORY:
        login_failed(s, NULL, "out of memory");
        return false;
    }
    struct iobuf *b = s->conn.buf;
    uint8_t answer = b->data[b->pos];
    bool more = b->end - b->pos > 1;
    conn_drop_buffer(p, &s->conn);
    if (answer == 'S' && !more) {
        struct tls_context *ctx = server_tls_context(s);
        char err[300];
        if (!ctx) {
            login_failed(s, NULL, "server_tls_sslmode changed to disable during the login");
            return false;
        }
        s->conn.tls =
            tls_conn_new(ctx, s->conn.fd, server_host(s)->name, NULL, 0, err, sizeof(err));
        if (!s->conn.tls) {
            char msg[400];
            snprintf(msg, sizeof(msg), "cannot start TLS with the server: %s", err);
            login_refused(s, "08006", msg);
            return false;
        }
        s->login->step = SL_TLS_HANDSHAKE;
        return true;
    }
    if (answer == 'N' && !more) {
        struct tls_context *ctx = server_tls_context(s);
        if (ctx && tls_context_sslmode(ctx) >= TLS_REQUIRE) {
            conn_tls_book_failure(&s->conn, &p->tls_server_counts, TLS_FAILURE_PROTOCOL);
            char msg[160];
            snprintf(msg, sizeof(msg), "server does not accept TLS (server_tls_sslmode = %s)",
                     tls_sslmode_name(tls_context_sslmode(ctx)));
            login_refused(s, "08006", msg);
            return false;
        }
        if (!send_startup(s)) {
            login_failed(s, NULL, "could not send startup packet");
            return false;
        }
        s->login->step = SL_AUTH;
        return true;
    }
    char msg[160];
    if (answer == 'S' || answer == 'N')
        snprintf(msg, sizeof(msg),
                 "server sent unencrypted data after its answer '%c' to the SSL request", answer);
    else
        snprintf(msg, sizeof(msg),
                 "unexpected answer to the SSL request (a message of type 0x%02x); nothing of "
                 "it is passed on",
                 answer);
    login_refused(s, "08P01", msg);
    return false;
}

/* Advances the TLS handshake with the server; once done, sends the startup over TLS. True
 * when the login goes on, false while waiting for an edge or after failing. */
static bool server_tls_handshake(struct server *s)
{
    char msg[400];
    switch (tls_handshake(s->conn.tls)) {
    case TLS_IO_DONE:
        break;
    case TLS_IO_WANT_READ:
        s->conn.may_read = false;
        return false;
    case TLS_IO_WANT_WRITE:
        return false; /* registered for both edges since the connect */
    case TLS_IO_EOF:
    case TLS_IO_ERROR:
        snprintf(msg, sizeof(msg), "TLS handshake with the server failed: %s",
                 tls_error(s->conn.tls));
        login_refused(s, "08006", msg);
        return false;
    }
    conn_tls_book_ok(&s->conn, &s->pool->pooler->tls_server_counts);
    tls_describe(s->conn.tls, msg, sizeof(msg));
    log_debug("pool", "server %llu: TLS established: %s", (unsigned long long)s->id, msg);
    if (!send_startup(s)) {
        login_failed(s, NULL, "could not send startup packet");
        return false;
    }
    s->login->step = SL_AUTH;
    s->conn.may_read = true; /* records may wait inside OpenSSL already */
    return true;
}

static void login_event(struct server *s, unsigned what)
{
    struct pooler *p = s->pool->pooler;
    struct server_login *l = s->login;
    if (l->step == SL_CONNECTING) {
        if (!(what & (NET_IO_WRITABLE | NET_IO_READABLE)))
            return;
        int e = net_connect_result(s->conn.fd);
        if (e != 0) {
            char msg[256];
            snprintf(msg, sizeof(msg), "connect failed: %s", strerror(e));
            login_failed(s, NULL, msg);
            return;
        }
        log_connected(s);
        begin_login(s);
        return; /* the answer raises a readable edge */
    }
    /* Each step either moves the login on (true) or waits for an edge, or failed (false;
     * the login is freed then). */
    if (l->step == SL_SSL_ANSWER && !read_ssl_answer(s))
        return;
    if (s->login->step == SL_TLS_HANDSHAKE && !server_tls_handshake(s))
        return;
    for (;;) {
        if (s->conn.may_read) {
            enum fill_result r = conn_fill(p, &s->conn);
            if (r == FILL_EOF || r == FILL_ERROR) {
                login_failed(s, NULL, "server closed the connection during login");
                return;
            }
            if (r == FILL_NO_MEMORY || r == FILL_FULL) {
                login_refused(s, "08P01", "server login message too large");
                return;
            }
        }
        struct iobuf *b = s->conn.buf;
        if (!b)
            return;
        while (b->pos < b->end) {
            uint8_t type;
            uint32_t len;
            enum wire_header_result h = wire_parse_header(
                b->data + b->pos, b->end - b->pos, p->bufs.size - WIRE_HEADER_LEN, &type, &len);
            if (h == WIRE_HEADER_BAD_LENGTH) {
                login_refused(s, "08P01", "invalid message length from server during login");
                return;
            }
            if (h == WIRE_HEADER_INCOMPLETE || b->end - b->pos - WIRE_HEADER_LEN < len)
                break;
            const uint8_t *msg = b->data + b->pos;
            const uint8_t *body = msg + WIRE_HEADER_LEN;
            b->pos += WIRE_HEADER_LEN + len;
            switch (type) {
            case WIRE_BE_AUTH:
                if (!handle_auth(s, body, len))
                    return;
                break;
            case WIRE_BE_PARAMETER_STATUS: {
                const char *name, *value;
                if (!wire_parse_parameter_status(body, len, &name, &value)) {
                    login_refused(s, "08P01", "invalid ParameterStatus from server");
                    return;
                }
                int id = params_lookup(name);
                if (id >= 0)
                    params_set(&s->params[id], value);
                enum welcome_result w = welcome_append(s, msg, WIRE_HEADER_LEN + len);
                if (w == WELCOME_NO_MEMORY) {
                    login_failed(s, "53200", "out of memory");
                    return;
                }
                if (w == WELCOME_TOO_MUCH) {
                    login_refused(s, "08P01", "too many ParameterStatus messages from server");
                    return;
                }
                break;
            }
            case WIRE_BE_BACKEND_KEY_DATA:
                if (!wire_parse_backend_key(body, len, &s->be_pid, &s->be_key)) {
                    login_refused(s, "08P01", "invalid BackendKeyData from server");
                    return;
                }
                break;
            case WIRE_BE_ERROR: {
                struct wire_error e;
                char m[300];
                if (!wire_parse_error(body, len, &e))
                    memset(&e, 0, sizeof(e));
                snprintf(m, sizeof(m), "%s", e.message ? e.message : "server login failed");
                end_login(s, true, e.severity ? e.severity : "ERROR",
                          e.sqlstate && strlen(e.sqlstate) == 5 ? e.sqlstate : "08P01", m);
                return;
            }
            case WIRE_BE_READY_FOR_QUERY: {
                uint8_t st;
                if (!wire_parse_ready(body, len, &st)) {
                    login_refused(s, "08P01", "invalid ReadyForQuery from server");
                    return;
                }
                s->xact = st;
                bool leftover = b->pos < b->end;
                if (leftover) {
                    login_refused(s, "08P01", "unexpected data after server login");
                    return;
                }
                conn_drop_buffer(p, &s->conn);
                login_complete(s);
                return;
            }
            case WIRE_BE_NOTICE:
            case WIRE_BE_NEGOTIATE_PROTOCOL:
                break;
            default:
                login_refused(s, "08P01", "unexpected message from server during login");
                return;
            }
        }
        if (b->pos == b->end)
            b->pos = b->end = 0;
        if (!s->conn.may_read)
            break;
    }
    conn_release_if_empty(p, &s->conn);
}

/* ---- server → client ---- */

static bool release_due(const struct server *s)
{
    /* A client in the middle of sending a message keeps its server until it is complete. */
    return s->pool->mode != POOL_MODE_SESSION && server_is_clean(s) &&
           (!s->client || s->client->conn.body_left == 0);
}

void server_drop_undelivered_result(struct server *s)
{
    struct iobuf *b = s->conn.buf;
    if (s->deferred_scan == SSCAN_OK || !b || s->conn.scan != b->end)
        return; /* nothing held back, or bytes not yet scanned: the caller sees it busy */
    /* Tests look for this line: it shows the race was exercised. */
    log_debug("pool",
              "server %llu: result dropped undelivered: its client left in the turn "
              "the result ended",
              (unsigned long long)s->id);
    b->pos = b->end = 0;
    s->conn.scan = 0;
    s->deferred_scan = SSCAN_OK;
    plist_remove(&s->flush_node);
    conn_release_if_empty(s->pool->pooler, &s->conn);
}

static enum server_scan_result server_scan(struct server *s)
{
    struct pconn *cn = &s->conn;
    struct iobuf *b = cn->buf;
    struct client *c = s->client;
    uint32_t cap = s->pool->pooler->bufs.size;
    uint32_t max = (uint32_t)s->pool->pooler->cfg->max_packet_size;
    while (cn->scan < b->end) {
        if (cn->body_left) {
            uint32_t n = b->end - cn->scan;
            if (n > cn->body_left)
                n = cn->body_left;
            cn->scan += n;
            cn->body_left -= n;
            if (cn->drop_body)
                b->pos = cn->scan;
            continue;
        }
        uint8_t type;
        uint32_t len;
        enum wire_header_result h =
            wire_parse_header(b->data + cn->scan, b->end - cn->scan, max, &type, &len);
        if (h == WIRE_HEADER_INCOMPLETE)
            break;
        if (h == WIRE_HEADER_BAD_LENGTH)
            return SSCAN_BAD;
        if (s->replication != STARTUP_REPLICATION_NONE) {
            /* A walsender's answers (CopyBothResponse, XLogData in CopyData, results of
             * replication commands) go to its one client as they come: the owed model, which
             * exists to find the moment a server may be released, has nothing to decide for
             * a server that is never released. Without a client nothing is forwarded. */
            uint32_t whole = WIRE_HEADER_LEN + len;
            if (b->end - cn->scan >= whole) {
                cn->scan += whole;
            } else {
                cn->body_left = whole - (b->end - cn->scan);
                cn->scan = b->end;
                cn->drop_body = c == NULL;
            }
            if (c == NULL)
                b->pos = cn->scan;
            continue;
        }
        bool internal = s->internal_pending > 0;
        bool swallow = c == NULL || internal;
        if (!swallow && owed_answer_swallowed(&s->owed, type))
            swallow = true; /* the answer to a message the pooler injected */
        if (swallow && b->pos != cn->scan)
            return SSCAN_FLUSH_FIRST;
        bool need_whole = type == WIRE_BE_READY_FOR_QUERY || type == WIRE_BE_PARAMETER_STATUS ||
                          (s->lookup && (type == WIRE_BE_DATA_ROW || type == WIRE_BE_ERROR));
        if (need_whole) {
            if (len > cap - WIRE_HEADER_LEN)
                return SSCAN_BAD; /* cannot inspect it in one buffer */
            if (b->end - cn->scan - WIRE_HEADER_LEN < len)
                break; /* wait for the rest (the buffer is compacted when full) */
        }
        const uint8_t *body = b->data + cn->scan + WIRE_HEADER_LEN;
        enum server_scan_result after = SSCAN_OK;
        /* Every answer to the client's messages goes through the owed model; one that fits
         * nowhere means the pooler no longer knows where the server is: close it. */
        enum owed_verdict v = OWED_OK;
        if (!internal && c) {
            v = owed_on_backend(&s->owed, type);
            if (v == OWED_VIOLATION) {
                log_warning("pool",
                            "server %llu %s/%s: unexpected message '%c' from server (%s): closing",
                            (unsigned long long)s->id, s->pool->db_name, s->pool->user_name,
                            type >= 0x20 && type < 0x7f ? type : '?',
                            owed_mode_name((enum owed_mode)s->owed.mode));
                return SSCAN_BAD;
            }
        }
        /* The client's session follows its SET, RESET and DEALLOCATE statements and named
         * Parses through these answers (client.c). */
        if (type == WIRE_BE_PARAMETER_STATUS || type == WIRE_BE_COMMAND_COMPLETE ||
            type == WIRE_BE_READY_FOR_QUERY || type == WIRE_BE_ERROR ||
            type == WIRE_BE_PARSE_COMPLETE)
            client_note_server_message(
                s, !swallow, type, b->end - cn->scan - WIRE_HEADER_LEN >= len ? body : NULL, len);
        switch (type) {
        case WIRE_BE_READY_FOR_QUERY: {
            uint8_t st;
            if (!wire_parse_ready(body, len, &st))
                return SSCAN_BAD;
            s->xact = st;
            s->ready_us = pooler_now(s->pool->pooler);
            if (internal) {
                s->internal_pending--;
                if (s->internal_pending == 0 && c == NULL)
                    after = SSCAN_INTERNAL_DONE;
                break;
            }
            if (c == NULL)
                return SSCAN_BAD; /* a ReadyForQuery nobody asked for */
            c->answered_us = s->ready_us;
            s->pool->stats.query_count++;
            int64_t began = c->query_us > c->request_us ? c->query_us : c->request_us;
            if (began) {
                s->pool->stats.query_time_us += pooler_now(c->pooler) - began;
                histogram_observe(&s->pool->stats.query_hist, pooler_now(c->pooler) - began);
            }
            if (v != OWED_IDLE)
                break;
            if (release_due(s))
                after = SSCAN_RELEASE;
            else if (s->pool->mode == POOL_MODE_STATEMENT && st != WIRE_XACT_IDLE)
                after = SSCAN_NO_XACT_BLOCKS;
            break;
        }
        case WIRE_BE_PARAMETER_STATUS: {
            const char *name, *value;
            if (!wire_parse_parameter_status(body, len, &name, &value))
                return SSCAN_BAD;
            int id = params_lookup(name);
            if (id >= 0)
                params_set(&s->params[id], value); /* the client's: client_note_server_message */
            break;
        }
        case WIRE_BE_ERROR:
            if (internal && s->reading_slots) {
                /* A PostgreSQL-compatible server without these settings: slots stay unknown,
                 * the server is fine. */
                s->reading_slots = false;
                break;
            }
            if (internal) {
                auth_lookup_on_error(s, body, len);
                return SSCAN_INTERNAL_ERROR;
            }
            if (c == NULL) {
                s->close_needed = true; /* unasked, e.g. a FATAL termination of an idle server */
                break;
            }
            if (b->end - cn->scan - WIRE_HEADER_LEN >= len) {
                struct wire_error e;
                if (!wire_parse_error(body, len, &e))
                    break;
                /* A statement the pooler counts as prepared is missing (26000), or a name it
                 * gives its statements is taken (42P05): SQL run inside a function or DO
                 * block (no PREPARE/DEALLOCATE tag to see) changed them. Re-create before
                 * next use. */
                if (e.sqlstate && (!strcmp(e.sqlstate, "26000") || !strcmp(e.sqlstate, "42P05")))
                    prepared_server_distrust(&s->stmts);
                /* The backend exits after a FATAL: read on to its end now rather than trust
                 * a short read (its reset may already be queued behind these bytes). */
                if (e.severity && (!strcmp(e.severity, "FATAL") || !strcmp(e.severity, "PANIC")))
                    cn->closing = true;
            }
            break;
        case WIRE_BE_COMMAND_COMPLETE:
            if (b->end - cn->scan - WIRE_HEADER_LEN >= len)
                note_command_tag(s, (const char *)body, len);
            if (c == NULL && !internal)
                return SSCAN_BAD;
            break;
        case WIRE_BE_NOTICE:
        case WIRE_BE_NOTIFICATION:
            break;
        case WIRE_BE_DATA_ROW: {
            long long slots;
            if (internal && s->lookup)
                auth_lookup_on_row(s, body, len);
            if (internal && s->reading_slots) {
                if (b->end - cn->scan - WIRE_HEADER_LEN >= len &&
                    wire_parse_data_row_int(body, len, &slots) && slots > 0 && slots < 1000000)
                    s->pool->server_usable_slots = (int)slots;
                s->reading_slots = false; /* its one row, usable or not */
            }
            if (c == NULL && !internal)
                return SSCAN_BAD; /* results with no request outstanding */
            break;
        }
        default:
            if (c == NULL && !internal)
                return SSCAN_BAD; /* results with no request outstanding */
            break;
        }
        uint32_t whole = WIRE_HEADER_LEN + len;
        if (b->end - cn->scan >= whole) {
            cn->scan += whole;
        } else {
            cn->body_left = whole - (b->end - cn->scan);
            cn->scan = b->end;
            cn->drop_body = swallow;
        }
        if (swallow)
            b->pos = cn->scan;
        if (after != SSCAN_OK)
            return after;
    }
    return SSCAN_OK;
}

void server_pump(struct server *s)
{
    struct pool *pool = s->pool;
    struct pooler *p = pool->pooler;
    int reads = 0;
    bool budget_spent = false; /* sbuf_loopcnt reads made: the rest waits for a later wake-up */
    for (;;) {
        if (s->state == SV_JUSTFREE || s->state == SV_LOGIN)
            return;
        bool progressed = false;
        /* Suspended: a server linked to a client is not read (see pooler_reads_suspended). */
        const bool can_read = !budget_spent && !(s->client && pooler_reads_suspended(p));
        if (s->conn.may_read && can_read) {
            enum fill_result r = conn_fill(p, &s->conn);
            if (r == FILL_EOF || r == FILL_ERROR) {
                server_close(s, r == FILL_EOF ? "server closed the connection"
                                              : "server connection error");
                handout_activate(pool);
                return;
            }
            if (r == FILL_NO_MEMORY) {
                server_close(s, "out of memory");
                return;
            }
            progressed = r == FILL_OK;
            if (progressed)
                budget_spent = conn_read_budget_spent(&s->conn, &reads, p->cfg->sbuf_loopcnt);
        }
        struct iobuf *b = s->conn.buf;
        if (!b)
            break;
        uint32_t before = s->conn.scan;
        if (!s->client && b->pos < s->conn.scan)
            b->pos = s->conn.scan; /* nobody to deliver to: never loop on unsendable bytes */
        enum server_scan_result sr = server_scan(s);
        progressed |= s->conn.scan != before;
        if (s->deferred_scan != SSCAN_OK) {
            /* An earlier scan ended a result (ReadyForQuery: release) but its send was held
             * back to the end of the turn or was partial (slow client); its bytes are scanned
             * already, so act on it now -- unless the client has sent another request to this
             * server meanwhile, which keeps the server linked. */
            if (sr == SSCAN_OK)
                sr = (enum server_scan_result)s->deferred_scan;
            if (sr == SSCAN_RELEASE && !release_due(s)) {
                /* Tests look for this line: it shows the race was exercised. */
                log_debug("pool",
                          "server %llu: kept by its client, whose next request came in "
                          "the turn its result ended",
                          (unsigned long long)s->id);
                sr = SSCAN_OK;
            }
            s->deferred_scan = SSCAN_OK;
        }
        struct client *c = s->client;
        if (c) {
            /* A finished result goes out at the end of the loop turn (batch_defer_result),
             * after every ready socket was read; the release waits for it. */
            if (sr == SSCAN_RELEASE && !s->conn.send_now && b->pos < s->conn.scan &&
                batch_defer_result(s)) {
                s->deferred_scan = (uint8_t)sr;
                return;
            }
            switch (conn_flush(&s->conn, &c->conn, &pool->stats.bytes_sent)) {
            case FLUSH_DONE:
                c->output_blocked_us = 0;
                break;
            case FLUSH_PARTIAL:
                /* Backpressure: no more reads until the client drains. The scan outcome is
                 * kept, or a result's final ReadyForQuery would never release the server. */
                if (sr != SSCAN_OK && sr != SSCAN_FLUSH_FIRST)
                    s->deferred_scan = (uint8_t)sr;
                if (!c->output_blocked_us) /* the manager flags clients that stop reading */
                    c->output_blocked_us = pooler_now(c->pooler);
                client_want_writable(c);
                return;
            case FLUSH_ERROR:
                /* A finished result that cannot be delivered leaves the server idle: keep
                 * the release pending so closing the client releases it, not closes it. */
                if (sr == SSCAN_RELEASE)
                    s->deferred_scan = (uint8_t)sr;
                objects_client_close(c, "could not send to client");
                return;
            }
        } else if (b->pos == b->end) {
            b->pos = b->end = 0;
            s->conn.scan = 0;
        }
        switch (sr) {
        case SSCAN_OK:
            break;
        case SSCAN_FLUSH_FIRST:
            continue;
        case SSCAN_BAD:
            server_close(s, "protocol violation from server");
            handout_activate(pool);
            return;
        case SSCAN_INTERNAL_ERROR:
            handout_note_probe(s, false, "probe query failed on the server");
            server_close(s, "pooler query failed on server");
            handout_activate(pool);
            return;
        case SSCAN_INTERNAL_DONE:
            auth_lookup_query_done(s);
            handout_note_probe(s, true, NULL);
            handout_server_ready(s);
            continue;
        case SSCAN_NO_XACT_BLOCKS:
            /* As PgBouncer: the open transaction dies with its server. */
            objects_client_fail(c, "08P01",
                                "transaction blocks not allowed in statement pooling mode");
            handout_activate(pool);
            return;
        case SSCAN_RELEASE: {
            handout_release_server(s);
            /* A client that already sent its next request competes for a server again. */
            if (c && c->state == CL_ACTIVE && !c->server && c->conn.buf &&
                c->conn.buf->pos < c->conn.buf->end)
                client_pump(c);
            continue;
        }
        }
        if ((!s->conn.may_read || !can_read) && !progressed)
            break;
        if ((!s->conn.may_read || !can_read) && (!s->conn.buf || s->conn.scan == s->conn.buf->end))
            break;
    }
    if (s->state == SV_JUSTFREE)
        return;
    /* Unsure whether a failed COPY read the client's Syncs: ask the server itself. */
    struct client *linked = s->client;
    if (linked && s->internal_pending == 0 && owed_probe_due(&s->owed) &&
        linked->conn.body_left == 0 &&
        !(linked->conn.buf && linked->conn.buf->pos < linked->conn.scan)) {
        static const uint8_t empty_query[] = {WIRE_FE_QUERY, 0, 0, 0, 5, 0};
        if (!server_send_raw(s, empty_query, sizeof(empty_query))) {
            server_close(s, "could not send to server");
            return;
        }
        (void)owed_note_probe(&s->owed);
    }
    /* Answers drained the owed queue: the client's held-back requests may go on. */
    struct client *waiting = s->client;
    if (waiting && waiting->owed_wait && owed_has_room(&s->owed)) {
        waiting->owed_wait = false;
        client_pump(waiting);
        if (s->state == SV_JUSTFREE)
            return;
    }
    conn_release_if_empty(p, &s->conn);
}

void server_io_cb(int fd, unsigned what, void *arg)
{
    (void)fd;
    struct server *s = arg;
    if (s->state == SV_JUSTFREE)
        return;
    what = conn_note_edges(&s->conn, what);
    if (s->state == SV_LOGIN) {
        login_event(s, what);
        return;
    }
    /* The server can take more of its client's bytes. */
    if ((what & NET_IO_WRITABLE) && s->client && s->client->conn.buf &&
        s->client->conn.buf->pos < s->client->conn.scan) {
        client_pump(s->client);
        if (s->state == SV_JUSTFREE)
            return;
    }
    if (what & NET_IO_READABLE)
        server_pump(s);
}
