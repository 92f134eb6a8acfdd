/* Lifetime of pools and clients: creation, applying the configuration to a pool, closing, and
 * freeing closed clients and servers after the loop turn (never inside their callbacks). */
#include "pool/objects.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "admin/console.h"
#include "common/log.h"
#include "net/tls.h"
#include "pool/cancel.h"
#include "pool/client.h"
#include "pool/conn.h"
#include "pool/control.h"
#include "pool/handout.h"
#include "pool/server.h"
#include "pool/states.h"
#include "proto/wire.h"

/* ---- pools ---- */

/* The strings objects_pool_apply_config copies from the config, built whole before any is swapped
 * in. */
struct pool_strings {
    char *host;
    char *host_names;
    char *server_db;
    char *server_user;
    char *password;
    char *connect_query;
    char *startup_extra[8];
    int n_startup_extra;
};

static void pool_strings_free(struct pool_strings *ps)
{
    free(ps->host);
    free(ps->host_names);
    free(ps->server_db);
    free(ps->server_user);
    if (ps->password) {
        memset(ps->password, 0, strlen(ps->password));
        free(ps->password);
    }
    free(ps->connect_query);
    for (int i = 0; i < ps->n_startup_extra; i++)
        free(ps->startup_extra[i]);
    memset(ps, 0, sizeof(*ps));
}

void objects_init_pooler_lists(struct pooler *p)
{
    plist_init(&p->pools);
    plist_init(&p->login_clients);
    plist_init(&p->justfree_clients);
    plist_init(&p->justfree_servers);
    plist_init(&p->cancel_reqs);
    plist_init(&p->flush_clients);
    plist_init(&p->flush_servers);
}

/* fn on every server of pool that is not yet JUSTFREE (fn must not move it between lists). */
static void each_server(struct pool *pool, void (*fn)(struct server *s))
{
    struct plist *lists[] = {&pool->idle_servers, &pool->active_servers, &pool->tested_servers,
                             &pool->login_servers, &pool->canceling_servers};
    for (size_t i = 0; i < sizeof(lists) / sizeof(lists[0]); i++)
        for (struct plist *n = lists[i]->next; n != lists[i]; n = n->next)
            fn(plist_entry(n, struct server, node));
}

bool objects_pool_apply_config(struct pool *pool)
{
    const struct pooler_config *cfg = pool->pooler->cfg;
    const struct pooler_db_config *db = pooler_config_find_db(cfg, pool->db_name);
    const struct pooler_user_config *u = pooler_config_find_user(cfg, pool->user_name);
    if (!db) {
        /* Removed from the config: its clients keep being served with the old settings, but
         * nothing keeps servers open for it any more; the janitor frees the pool once its
         * last client and server are gone. */
        pool->min_pool_size = 0;
        return true;
    }

    const char *host = db->host ? db->host : "/var/run/postgresql";
    const char *server_db = db->dbname ? db->dbname : pool->db_name;
    /* auth_user's pool logs in as auth_user even where the database forces another user. */
    bool forced = db->user && !pool->auth_lookup;
    const char *server_user = forced ? db->user : pool->user_name;
    /* An empty password= is no password: auth_file's is used, as when the key is absent. */
    const char *password = forced && db->password && db->password[0]
                               ? db->password
                               : auth_file_lookup(&cfg->auth, server_user);
    /* A user auth_file does not list keeps the secret auth_query found for it (else the
     * pool's next login would have none until a client logged in again). */
    bool keep_looked_up = !password && pool->password_looked_up && pool->password &&
                          pool->server_user && !strcmp(pool->server_user, server_user);
    if (keep_looked_up)
        password = pool->password;
    /* Copies first, swapped in only when every one was made: out of memory leaves the pool
     * as it was (a new pool is then not created), never with a NULL where a string is due. */
    struct pool_strings next = {0};
    bool ok = (next.host = strdup(host)) && (next.host_names = strdup(host)) &&
              (next.server_db = strdup(server_db)) && (next.server_user = strdup(server_user)) &&
              (!password || (next.password = strdup(password))) &&
              (pool->auth_lookup || !db->connect_query ||
               (next.connect_query = strdup(db->connect_query))); /* never on auth_user's pool */
    const char *extras[][2] = {{"client_encoding", db->client_encoding},
                               {"datestyle", db->datestyle},
                               {"timezone", db->timezone},
                               {"application_name", db->application_name}};
    for (size_t i = 0; ok && i < 4; i++) {
        if (extras[i][1] && next.n_startup_extra + 2 <= 8) {
            ok = (next.startup_extra[next.n_startup_extra++] = strdup(extras[i][0])) &&
                 (next.startup_extra[next.n_startup_extra++] = strdup(extras[i][1]));
        }
    }
    if (!ok) {
        pool_strings_free(&next);
        log_error("pool", "out of memory applying the configuration of %s/%s: kept as it was",
                  pool->db_name, pool->user_name);
        return false;
    }
    /* SCRAM pass-through keys were recovered under the old secret: with a new one they
     * would fail every server login until a client logged in again. */
    if ((pool->password == NULL) != (password == NULL) ||
        (password && strcmp(pool->password, password) != 0))
        objects_pool_forget_scram_keys(pool);
    bool target_changed = pool->host == NULL || strcmp(pool->host, host) != 0 ||
                          pool->port != db->port || strcmp(pool->server_db, server_db) != 0 ||
                          strcmp(pool->server_user, server_user) != 0;
    struct pool_strings old = {
        .host = pool->host,
        .host_names = pool->host_names,
        .server_db = pool->server_db,
        .server_user = pool->server_user,
        .password = pool->password,
        .connect_query = pool->connect_query,
        .n_startup_extra = pool->n_startup_extra,
    };
    memcpy(old.startup_extra, pool->startup_extra, sizeof(old.startup_extra));
    pool_strings_free(&old);
    pool->host = next.host;
    pool->host_names = next.host_names;
    pool->port = db->port;
    /* host=a,b,c: PgBouncer's host list (the config checked that no entry is empty). */
    pool->n_hosts = 0;
    for (char *save = NULL, *h = strtok_r(pool->host_names, ",", &save);
         h && pool->n_hosts < POOL_MAX_HOSTS; h = strtok_r(NULL, ",", &save))
        pool->hosts[pool->n_hosts++] = (struct pool_host){.name = h};
    if (pool->next_host >= pool->n_hosts)
        pool->next_host = 0;
    pool->host_round_robin = !db->load_balance_disable;
    pool->server_db = next.server_db;
    pool->server_user = next.server_user;
    pool->password = next.password;
    pool->password_looked_up = keep_looked_up;
    pool->connect_query = next.connect_query;
    memcpy(pool->startup_extra, next.startup_extra, sizeof(pool->startup_extra));
    pool->n_startup_extra = next.n_startup_extra;

    /* A [users] setting beats the database's, which beats [pgbouncer] (PgBouncer's order).
     * The user is the pool's: for a forced-user database, the forced user's entry applies,
     * never the entry of whoever logged in. */
    int mode = cfg->pool_mode;
    if (db->pool_mode >= 0)
        mode = db->pool_mode;
    if (u && u->pool_mode >= 0)
        mode = u->pool_mode;
    /* Only a session pool resets a server when its client leaves: a server a session client
     * holds (or left with a cancel in flight) may carry that client's SETs, prepared
     * statements and temporary tables, which a transaction or statement pool would hand to
     * the next client. Such a server is closed when released instead. */
    if (pool->mode == POOL_MODE_SESSION && mode != POOL_MODE_SESSION && !pool->is_admin) {
        struct plist *held[] = {&pool->active_servers, &pool->canceling_servers};
        for (size_t i = 0; i < sizeof(held) / sizeof(held[0]); i++)
            for (struct plist *n = held[i]->next; n != held[i]; n = n->next)
                plist_entry(n, struct server, node)->close_needed = true;
    }
    pool->mode = (enum pool_mode)mode;
    int size = db->pool_size >= 0 ? db->pool_size : cfg->default_pool_size;
    if (u && u->pool_size >= 0)
        size = u->pool_size;
    if (size != pool->configured_size) {
        /* Under a queue no server is ever idle for the janitor: the ones over the new size
         * close as they are released (handout_over_limit). */
        if (size < pool->pool_size)
            pool->limits_lowered = true;
        pool->pool_size = size;
        pool->configured_size = size;
    }
    pool->min_pool_size = db->min_pool_size >= 0 ? db->min_pool_size : cfg->min_pool_size;
    pool->reserve_pool = db->reserve_pool >= 0 ? db->reserve_pool : cfg->reserve_pool_size;
    if (u && u->reserve_pool_size >= 0)
        pool->reserve_pool = u->reserve_pool_size;
    /* 0 in an entry means "no setting here" for these limits, as in PgBouncer. */
    int max_db = db->max_db_connections > 0 ? db->max_db_connections : cfg->max_db_connections;
    int max_user =
        u && u->max_user_connections > 0 ? u->max_user_connections : cfg->max_user_connections;
    if ((max_db > 0 && (pool->max_db_connections == 0 || max_db < pool->max_db_connections)) ||
        (max_user > 0 &&
         (pool->max_user_connections == 0 || max_user < pool->max_user_connections)))
        pool->limits_lowered = true;
    pool->max_db_connections = max_db;
    pool->max_user_connections = max_user;
    int64_t lifetime_ms =
        db->server_lifetime_ms >= 0 ? db->server_lifetime_ms : cfg->server_lifetime_ms;
    if (lifetime_ms != pool->server_lifetime_ms) {
        /* PgBouncer compares each server's age with the lifetime in force: servers opened
         * under the old one are given the new one (a lowered lifetime replaces them soon). */
        pool->server_lifetime_ms = lifetime_ms;
        each_server(pool, server_apply_lifetime);
    }
    pool->forced_user = forced && !strcmp(db->user, pool->user_name);
    pool->query_timeout_ms =
        u && u->query_timeout_ms > 0 ? u->query_timeout_ms : cfg->query_timeout_ms;
    pool->idle_transaction_timeout_ms = u && u->idle_transaction_timeout_ms > 0
                                            ? u->idle_transaction_timeout_ms
                                            : cfg->idle_transaction_timeout_ms;
    pool->client_idle_timeout_ms = u && u->client_idle_timeout_ms > 0 ? u->client_idle_timeout_ms
                                                                      : cfg->client_idle_timeout_ms;
    pool->transaction_timeout_ms = u && u->transaction_timeout_ms > 0 ? u->transaction_timeout_ms
                                                                      : cfg->transaction_timeout_ms;
    if (target_changed) {
        objects_pool_mark_servers_obsolete(pool);
        /* A login that failed against the old target says nothing about the new one. */
        objects_pool_forget_login_failure(pool);
        pool->welcome_ready = false;
        free(pool->welcome);
        pool->welcome = NULL;
        pool->welcome_len = 0;
    }
    return true;
}

static void mark_obsolete(struct server *s)
{
    s->close_needed = true;
}

void objects_pool_mark_servers_obsolete(struct pool *pool)
{
    each_server(pool, mark_obsolete);
}

void objects_pool_forget_scram_keys(struct pool *pool)
{
    OPENSSL_cleanse(pool->scram_client_key, sizeof(pool->scram_client_key));
    OPENSSL_cleanse(pool->scram_server_key, sizeof(pool->scram_server_key));
    pool->have_scram_keys = false;
}

void objects_pool_forget_login_failure(struct pool *pool)
{
    free(pool->last_error);
    pool->last_error = NULL;
    pool->retry_after_us = 0;
}

static struct pool *find_or_make(struct pooler *p, const struct pooler_db_config *db,
                                 const char *db_name, const char *user, bool auth_lookup)
{
    bool db_known = false;
    for (struct plist *n = p->pools.next; n != &p->pools; n = n->next) {
        struct pool *pool = plist_entry(n, struct pool, node);
        if (strcmp(pool->db_name, db_name))
            continue;
        db_known = true;
        if (pool->auth_lookup == auth_lookup && !strcmp(pool->user_name, user))
            return pool;
    }
    struct pool *pool = calloc(1, sizeof(*pool));
    if (!pool)
        return NULL;
    pool->pooler = p;
    pool->auth_lookup = auth_lookup;
    pool->db_name = strdup(db_name);
    pool->user_name = strdup(user);
    pool->server_db = strdup("");
    pool->server_user = strdup("");
    if (!pool->db_name || !pool->user_name || !pool->server_db || !pool->server_user) {
        objects_pool_free(pool);
        return NULL;
    }
    states_init_pool_lists(pool);
    if (!objects_pool_apply_config(pool) || !pool->host) {
        objects_pool_free(pool);
        return NULL;
    }
    control_apply(pool);
    plist_append(&p->pools, &pool->node);
    /* PgBouncer's line for a database that exists only through the "*" entry. */
    if (!db_known && !strcmp(db->name, "*"))
        log_info("pool", "registered new auto-database: %s", db_name);
    log_debug("pool", "new %spool %s/%s (%s mode, size %d)", auth_lookup ? "auth_query " : "",
              db_name, user, pooler_config_pool_mode_name(pool->mode), pool->pool_size);
    return pool;
}

struct pool *objects_pool_get(struct pooler *p, const struct pooler_db_config *db,
                              const char *db_name, const char *user)
{
    /* A database with a forced user has one pool, keyed by that user (PgBouncer keys pools
     * by database and server user): its pool_size bounds the database's servers however many
     * client users share it. */
    if (db->user)
        user = db->user;
    return find_or_make(p, db, db_name, user, false);
}

struct pool *objects_pool_get_auth(struct pooler *p, const struct pooler_db_config *db,
                                   const char *db_name, const char *auth_user)
{
    return find_or_make(p, db, db_name, auth_user, true);
}

/* Clients of the pools of a database. */
static int db_client_count(const struct pooler *p, const char *db_name)
{
    int n = 0;
    for (const struct plist *it = p->pools.next; it != &p->pools; it = it->next) {
        const struct pool *pool = plist_entry(it, struct pool, node);
        if (!strcmp(pool->db_name, db_name))
            n += pool->n_clients;
    }
    return n;
}

/* Clients of pool that logged in as user: all of them in the user's own pool; in a pool
 * shared under a forced user (and the console's), each client says who it is. */
static int pool_clients_of_user(const struct pool *pool, const char *user)
{
    if (!pool->forced_user && !pool->is_admin)
        return strcmp(pool->user_name, user) ? 0 : pool->n_clients;
    int n = 0;
    const struct plist *lists[] = {&pool->active_clients, &pool->waiting_clients,
                                   &pool->waiting_login_clients};
    for (size_t i = 0; i < sizeof(lists) / sizeof(lists[0]); i++)
        for (const struct plist *m = lists[i]->next; m != lists[i]; m = m->next)
            n += !strcmp(client_user_name(plist_entry(m, struct client, node)), user);
    return n;
}

/* Clients (console ones included) that logged in as user. */
static int user_client_count(const struct pooler *p, const char *user)
{
    int n = p->admin_pool ? pool_clients_of_user(p->admin_pool, user) : 0;
    for (const struct plist *it = p->pools.next; it != &p->pools; it = it->next)
        n += pool_clients_of_user(plist_entry(it, struct pool, node), user);
    return n;
}

const char *objects_login_refusal(const struct pool *pool, const char *login_user,
                                  const char **sqlstate)
{
    const struct pooler *p = pool->pooler;
    const struct pooler_config *cfg = p->cfg;
    if (!pool->is_admin &&
        (p->run_state == POOLER_SHUTDOWN_SERVERS || p->run_state == POOLER_SHUTDOWN_CLIENTS)) {
        *sqlstate = "08P01";
        return "pooler is shutting down";
    }
    const struct pooler_db_config *db =
        pool->is_admin ? NULL : pooler_config_find_db(cfg, pool->db_name);
    int max = db && db->max_db_client_connections > 0 ? db->max_db_client_connections
                                                      : cfg->max_db_client_connections;
    int clients = pool->is_admin ? pool->n_clients : db_client_count(p, pool->db_name);
    if (max > 0 && clients >= max) {
        *sqlstate = "53300";
        return "client connections exceeded (max_db_client_connections)";
    }
    const struct pooler_user_config *u = pooler_config_find_user(cfg, login_user);
    max = u && u->max_user_client_connections > 0 ? u->max_user_client_connections
                                                  : cfg->max_user_client_connections;
    if (max > 0 && user_client_count(p, login_user) >= max) {
        *sqlstate = "53300";
        return "client connections exceeded (max_user_client_connections)";
    }
    return NULL;
}

void objects_pool_free(struct pool *pool)
{
    free(pool->db_name);
    free(pool->user_name);
    free(pool->host);
    free(pool->host_names);
    free(pool->server_db);
    free(pool->server_user);
    if (pool->password) {
        memset(pool->password, 0, strlen(pool->password));
        free(pool->password);
    }
    for (int i = 0; i < pool->n_startup_extra; i++)
        free(pool->startup_extra[i]);
    free(pool->connect_query);
    free(pool->welcome);
    free(pool->last_error);
    for (int i = 0; i < PARAM_COUNT; i++)
        params_unref(pool->defaults[i]);
    memset(pool->scram_client_key, 0, sizeof(pool->scram_client_key));
    free(pool);
}

/* ---- clients ---- */

struct client *objects_client_new(struct pooler *p, int fd, const struct net_addr *addr)
{
    struct client *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->pooler = p;
    c->conn.fd = fd;
    c->id = ++p->next_id;
    c->addr = *addr;
    c->connect_us = c->active_us = pooler_now(p);
    plist_init(&c->flush_node);
    plist_init(&c->node);
    p->n_clients++;
    states_client_change(c, CL_LOGIN);
    /* Read before registering: the client usually sent its first packet (SSLRequest or
     * StartupMessage) before we accepted, so answering now saves a loop turn and a wake-up
     * per connection. Registering afterwards is safe with edge triggering: epoll reports
     * whatever is ready at the time of the registration. */
    c->conn.may_read = true;
    client_pump(c);
    /* Refused already: freed with the other closed clients. */
    if (c->state == CL_JUSTFREE)
        return c;
    conn_release_if_empty(p, &c->conn); /* nothing arrived yet: hold no buffer meanwhile */
    /* Read interest only: registering for writes too would report the new socket writable at
     * once, a wake-up and loop turn for nothing on every connection; partial sends ask for
     * the writable edge (client_want_writable). */
    c->conn.io = net_io_new(p->loop, fd, c->conn.want_write ? NET_IO_EDGE_RW : NET_IO_EDGE_READ,
                            client_io_cb, c);
    if (!c->conn.io)
        objects_client_fail(c, "53200", "out of memory: cannot watch the socket");
    return c;
}

struct client *objects_client_find(struct pooler *p, uint64_t id)
{
    for (struct plist *n = p->pools.next; n != &p->pools; n = n->next) {
        struct pool *pool = plist_entry(n, struct pool, node);
        struct plist *lists[] = {&pool->active_clients, &pool->waiting_clients,
                                 &pool->waiting_login_clients};
        for (size_t i = 0; i < sizeof(lists) / sizeof(lists[0]); i++)
            for (struct plist *m = lists[i]->next; m != lists[i]; m = m->next) {
                struct client *c = plist_entry(m, struct client, node);
                if (c->id == id)
                    return c;
            }
    }
    return NULL;
}

static void mark_values(struct pstr *const values[PARAM_COUNT], bool in_use[PARAM_COUNT])
{
    for (int i = 0; i < PARAM_COUNT; i++)
        if (values[i])
            in_use[i] = true;
}

static void mark_clients(const struct plist *list, bool in_use[PARAM_COUNT])
{
    for (const struct plist *m = list->next; m != list; m = m->next)
        client_params_in_use(plist_entry(m, struct client, node), in_use);
}

static void mark_servers(const struct plist *list, bool in_use[PARAM_COUNT])
{
    for (const struct plist *m = list->next; m != list; m = m->next)
        mark_values(plist_entry(m, struct server, node)->params, in_use);
}

static void mark_pool(const struct pool *pool, bool in_use[PARAM_COUNT])
{
    mark_values(pool->defaults, in_use);
    mark_clients(&pool->waiting_login_clients, in_use);
    mark_clients(&pool->active_clients, in_use);
    mark_clients(&pool->waiting_clients, in_use);
    mark_servers(&pool->login_servers, in_use);
    mark_servers(&pool->idle_servers, in_use);
    mark_servers(&pool->tested_servers, in_use);
    mark_servers(&pool->active_servers, in_use);
    mark_servers(&pool->canceling_servers, in_use);
}

void objects_params_in_use(const struct pooler *p, bool in_use[PARAM_COUNT])
{
    /* Closed objects too: they hold their values until the end of the loop turn. */
    mark_clients(&p->login_clients, in_use);
    mark_clients(&p->justfree_clients, in_use);
    mark_servers(&p->justfree_servers, in_use);
    for (const struct plist *n = p->pools.next; n != &p->pools; n = n->next)
        mark_pool(plist_entry(n, struct pool, node), in_use);
    if (p->admin_pool)
        mark_pool(p->admin_pool, in_use);
}

static void fail_with(struct client *c, const char *reason, const char *sqlstate, const char *msg);
static void log_closing(struct client *c, const char *reason);
static void close_logged(struct client *c);

/* The two entry points below: the message formatted, the log's reason the message itself
 * when none is given. */
static void vfail(struct client *c, const char *reason, const char *sqlstate, const char *fmt,
                  va_list ap)
{
    if (c->state == CL_JUSTFREE)
        return;
    char msg[512];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    fail_with(c, reason ? reason : msg, sqlstate, msg);
}

void objects_client_fail(struct client *c, const char *sqlstate, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfail(c, NULL, sqlstate, fmt, ap);
    va_end(ap);
}

void objects_client_fail_reason(struct client *c, const char *reason, const char *sqlstate,
                                const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfail(c, reason, sqlstate, fmt, ap);
    va_end(ap);
}

/* Sends msg as a FATAL error (unless the client is inside a message) and closes the client;
 * the log says reason. */
static void fail_with(struct client *c, const char *reason, const char *sqlstate, const char *msg)
{
    if (c->output_torn || (c->server && server_mid_message(c->server))) {
        /* Inside a server message the client has partly received, an ErrorResponse would be
         * read as that message's bytes: the connection just ends (the client sees it cut). */
        log_info("pool",
                 "client %llu: closing without an error message (it is inside a "
                 "result message): %s %s",
                 (unsigned long long)c->id, sqlstate, msg);
        objects_client_close(c, reason);
        return;
    }
    uint8_t out[700];
    struct wire_buf b;
    wire_buf_init(&b, out, sizeof(out));
    wire_build_error(&b, "FATAL", sqlstate, msg);
    if (c->pooler->cfg->log_pooler_errors)
        log_info("pool", "client %llu: closing with error %s: %s", (unsigned long long)c->id,
                 sqlstate, msg);
    /* Logged before the error is sent: whoever reads the log once the client has its error
     * (PgBouncer's test suite) finds the line. */
    log_closing(c, reason);
    if (!b.overflow && !client_send_raw(c, out, b.len))
        log_debug("pool", "client %llu: error message not delivered", (unsigned long long)c->id);
    close_logged(c);
}

/* PgBouncer's "closing because" line (log_disconnections). Logins that fail are logged too:
 * an operator looking for why a client was refused finds the reason next to who asked. */
static void log_closing(struct client *c, const char *reason)
{
    struct pooler *p = c->pooler;
    if (!p->cfg->log_disconnections || !reason)
        return;
    char addr[64];
    net_addr_format(&c->addr, addr, sizeof(addr));
    const char *db = client_database_name(c), *user = client_user_name(c);
    log_info("pool", "client %llu %s %s/%s: closing because: %s (age=%llds)",
             (unsigned long long)c->id, addr, *db ? db : "-", *user ? user : "-", reason,
             (long long)((pooler_now(p) - c->connect_us) / 1000000));
}

void objects_client_close(struct client *c, const char *reason)
{
    if (c->state == CL_JUSTFREE)
        return;
    log_closing(c, reason);
    close_logged(c);
}

/* objects_client_close after its log line. */
static void close_logged(struct client *c)
{
    struct pooler *p = c->pooler;
    struct server *s = c->server;
    struct pool *reopen = NULL;
    if (s && s->replication != STARTUP_REPLICATION_NONE) {
        /* Its walsender served no one else and never will (PgBouncer's words). The pool may
         * launch for its waiters once this client is off the lists. */
        c->server = NULL;
        s->client = NULL;
        server_close(s, "replication client was closed");
        reopen = s->pool;
        s = NULL;
    }
    if (s) {
        /* A server is only reused when the protocol says it is idle outside a transaction
         * and holds nothing unsent or unread; anything else would hand an open transaction
         * or stray results to the next client. */
        /* Half a message already forwarded (body_left) leaves the server mid-message. */
        bool unsent = (c->conn.buf && c->conn.buf->pos < c->conn.scan) || c->conn.body_left > 0;
        server_drop_undelivered_result(s);
        if (!unsent && server_is_clean(s) &&
            !(s->conn.buf && s->conn.buf->pos < s->conn.buf->end)) {
            handout_release_server(s);
        } else {
            c->server = NULL;
            s->client = NULL;
            server_close(s, "client disconnected while the server was busy");
        }
        c->server = NULL;
    }
    cancel_unregister_client(c);
    client_login_free(c);
    if (c->console) {
        console_out_free(c->console);
        free(c->console);
        c->console = NULL;
    }
    free(c->console_wait_db);
    c->console_wait_db = NULL;
    prepared_client_free_all(&p->stmts, &c->stmts);
    conn_drop_buffer(p, &c->conn);
    for (int i = 0; i < PARAM_COUNT; i++) {
        params_unref(c->params[i]);
        c->params[i] = NULL;
    }
    if (c->pool) {
        c->pool->n_clients--;
        c->pool->stats.clients_closed++;
    }
    free(c->repl_options);
    c->repl_options = NULL;
    p->n_clients--;
    states_client_change(c, CL_JUSTFREE);
    objects_schedule_reap(p);
    if (reopen)
        handout_activate(reopen);
}

/* ---- freeing after the loop turn ---- */

static void reap_cb(void *arg)
{
    objects_reap(arg);
}

void objects_schedule_reap(struct pooler *p)
{
    if (!p->reaper) {
        p->reaper = net_timer_new(p->loop, reap_cb, p);
        if (!p->reaper)
            return;
    }
    if (!p->reap_scheduled) {
        p->reap_scheduled = true;
        net_timer_activate(p->reaper);
    }
}

void objects_reap(struct pooler *p)
{
    struct plist *n;
    p->reap_scheduled = false;
    cancel_reqs_expire(p, 0); /* frees finished cancel connections only */
    while ((n = plist_first(&p->justfree_clients)) != NULL) {
        struct client *c = plist_entry(n, struct client, node);
        states_client_change(c, CL_FREE);
        plist_remove(&c->flush_node); /* closed before its deferred send ran */
        net_io_free(c->conn.io);
        conn_tls_book_close(&c->conn, &p->tls_client_counts);
        tls_conn_free(c->conn.tls); /* its close_notify needs the socket */
        close(c->conn.fd);
        free(c);
    }
    while ((n = plist_first(&p->justfree_servers)) != NULL) {
        struct server *s = plist_entry(n, struct server, node);
        states_server_change(s, SV_FREE);
        plist_remove(&s->flush_node); /* closed before its deferred send ran */
        net_io_free(s->conn.io);
        conn_tls_book_close(&s->conn, &p->tls_server_counts);
        tls_conn_free(s->conn.tls);
        if (s->conn.fd >= 0)
            close(s->conn.fd);
        free(s);
    }
}

void objects_close_all(struct pooler *p)
{
    control_free(p);
    struct plist *n;
    while ((n = plist_first(&p->login_clients)) != NULL)
        objects_client_close(plist_entry(n, struct client, node), "shutdown");
    if (p->admin_pool) {
        while ((n = plist_first(&p->admin_pool->active_clients)) != NULL)
            objects_client_close(plist_entry(n, struct client, node), "shutdown");
    }
    for (n = p->pools.next; n != &p->pools; n = n->next) {
        struct pool *pool = plist_entry(n, struct pool, node);
        struct plist *lists[] = {&pool->active_clients, &pool->waiting_clients,
                                 &pool->waiting_login_clients};
        for (size_t i = 0; i < 3; i++) {
            struct plist *m;
            while ((m = plist_first(lists[i])) != NULL)
                objects_client_fail(plist_entry(m, struct client, node), "57P01",
                                    "pgwarden is shutting down");
        }
        struct plist *slists[] = {&pool->idle_servers, &pool->active_servers, &pool->tested_servers,
                                  &pool->login_servers, &pool->canceling_servers};
        for (size_t i = 0; i < 5; i++) {
            struct plist *m;
            while ((m = plist_first(slists[i])) != NULL)
                server_close(plist_entry(m, struct server, node), "shutdown");
        }
    }
    objects_reap(p);
    cancel_reqs_free_all(p);
    while ((n = plist_first(&p->pools)) != NULL) {
        plist_remove(n);
        objects_pool_free(plist_entry(n, struct pool, node));
    }
    if (p->admin_pool) {
        objects_pool_free(p->admin_pool);
        p->admin_pool = NULL;
    }
}
