/* Object lifecycle and the state machine of clients, servers and pools: creation, the two
 * change_state functions, linking, releasing, and freeing after the loop turn. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/rand.h>

#include "admin/console.h"
#include "common/log.h"
#include "net/sendq.h"
#include "pool/pool.h"

static const char *const CLIENT_STATE_NAMES[CL_STATE_COUNT] = {
    [CL_FREE] = "free",     [CL_LOGIN] = "login",     [CL_WAITING_LOGIN] = "waiting_login",
    [CL_ACTIVE] = "active", [CL_WAITING] = "waiting", [CL_JUSTFREE] = "justfree",
};

static const char *const SERVER_STATE_NAMES[SV_STATE_COUNT] = {
    [SV_FREE] = "free",         [SV_LOGIN] = "login",   [SV_IDLE] = "idle",
    [SV_TESTED] = "tested",     [SV_ACTIVE] = "active", [SV_BEING_CANCELED] = "being_canceled",
    [SV_JUSTFREE] = "justfree",
};

/* Legal moves: [from][to]. */
static const bool CLIENT_MOVES[CL_STATE_COUNT][CL_STATE_COUNT] = {
    [CL_FREE] = {[CL_LOGIN] = true},
    [CL_LOGIN] = {[CL_WAITING_LOGIN] = true, [CL_ACTIVE] = true, [CL_JUSTFREE] = true},
    [CL_WAITING_LOGIN] = {[CL_ACTIVE] = true, [CL_JUSTFREE] = true},
    [CL_ACTIVE] = {[CL_WAITING] = true, [CL_JUSTFREE] = true},
    [CL_WAITING] = {[CL_ACTIVE] = true, [CL_JUSTFREE] = true},
    [CL_JUSTFREE] = {[CL_FREE] = true},
};

static const bool SERVER_MOVES[SV_STATE_COUNT][SV_STATE_COUNT] = {
    [SV_FREE] = {[SV_LOGIN] = true},
    [SV_LOGIN] = {[SV_IDLE] = true, [SV_TESTED] = true, [SV_JUSTFREE] = true},
    [SV_IDLE] = {[SV_ACTIVE] = true, [SV_TESTED] = true, [SV_JUSTFREE] = true},
    [SV_TESTED] = {[SV_IDLE] = true, [SV_JUSTFREE] = true},
    [SV_ACTIVE] =
        {[SV_IDLE] = true, [SV_TESTED] = true, [SV_BEING_CANCELED] = true, [SV_JUSTFREE] = true},
    [SV_BEING_CANCELED] = {[SV_IDLE] = true, [SV_TESTED] = true, [SV_JUSTFREE] = true},
    [SV_JUSTFREE] = {[SV_FREE] = true},
};

const char *client_state_name(enum client_state st)
{
    return st < CL_STATE_COUNT ? CLIENT_STATE_NAMES[st] : "?";
}

const char *server_state_name(enum server_state st)
{
    return st < SV_STATE_COUNT ? SERVER_STATE_NAMES[st] : "?";
}

static struct plist *client_list_for(struct client *c, enum client_state st)
{
    switch (st) {
    case CL_LOGIN:
        return &c->pooler->login_clients;
    case CL_WAITING_LOGIN:
        return &c->pool->waiting_login_clients;
    case CL_ACTIVE:
        return &c->pool->active_clients;
    case CL_WAITING:
        return &c->pool->waiting_clients;
    case CL_JUSTFREE:
        return &c->pooler->justfree_clients;
    case CL_FREE:
    case CL_STATE_COUNT:
        break;
    }
    return NULL;
}

void client_change_state(struct client *c, enum client_state next)
{
    enum client_state prev = (enum client_state)c->state;
    log_trace("pool", "client %llu going from %s to %s", (unsigned long long)c->id,
              client_state_name(prev), client_state_name(next));
    if (!CLIENT_MOVES[prev][next])
        log_error("pool", "client %llu: illegal state change %s -> %s", (unsigned long long)c->id,
                  client_state_name(prev), client_state_name(next));
    if (prev != CL_FREE)
        plist_remove(&c->node);
    c->state = (uint8_t)next;
    c->state_us = pooler_now(c->pooler);
    struct plist *list = client_list_for(c, next);
    if (list)
        plist_append(list, &c->node);
}

static struct plist *server_list_for(struct server *s, enum server_state st)
{
    struct pool *pool = s->pool;
    switch (st) {
    case SV_LOGIN:
        return &pool->login_servers;
    case SV_IDLE:
        return &pool->idle_servers;
    case SV_TESTED:
        return &pool->tested_servers;
    case SV_ACTIVE:
        return &pool->active_servers;
    case SV_BEING_CANCELED:
        return &pool->canceling_servers;
    case SV_JUSTFREE:
        return &pool->pooler->justfree_servers;
    case SV_FREE:
    case SV_STATE_COUNT:
        break;
    }
    return NULL;
}

void server_change_state(struct server *s, enum server_state next)
{
    enum server_state prev = (enum server_state)s->state;
    log_trace("pool", "server %llu going from %s to %s", (unsigned long long)s->id,
              server_state_name(prev), server_state_name(next));
    if (!SERVER_MOVES[prev][next])
        log_error("pool", "server %llu: illegal state change %s -> %s", (unsigned long long)s->id,
                  server_state_name(prev), server_state_name(next));
    if (prev != SV_FREE)
        plist_remove(&s->node);
    s->state = (uint8_t)next;
    s->state_us = pooler_now(s->pool->pooler);
    struct plist *list = server_list_for(s, next);
    if (!list)
        return;
    /* Idle servers are used most-recently-released first: their caches are warm and the
     * least used ones age out through server_idle_timeout. */
    if (next == SV_IDLE)
        plist_prepend(list, &s->node);
    else
        plist_append(list, &s->node);
}

/* ---- pools ---- */

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

void pool_apply_config(struct pool *pool)
{
    const struct pooler_config *cfg = pool->pooler->cfg;
    const struct pooler_db_config *db = pooler_config_find_db(cfg, pool->db_name);
    const struct pooler_user_config *u = pooler_config_find_user(cfg, pool->user_name);
    if (!db)
        return; /* removed from the config: keep serving with the old settings */

    const char *host = db->host ? db->host : "/var/run/postgresql";
    const char *server_db = db->dbname ? db->dbname : pool->db_name;
    const char *server_user = db->user ? db->user : pool->user_name;
    const char *password =
        db->user && db->password ? db->password : auth_file_lookup(&cfg->auth, server_user);
    bool target_changed = pool->host == NULL || strcmp(pool->host, host) != 0 ||
                          pool->port != db->port || strcmp(pool->server_db, server_db) != 0 ||
                          strcmp(pool->server_user, server_user) != 0;
    free(pool->host);
    free(pool->server_db);
    free(pool->server_user);
    if (pool->password) {
        memset(pool->password, 0, strlen(pool->password));
        free(pool->password);
    }
    pool->host = strdup(host);
    pool->port = db->port;
    pool->server_db = strdup(server_db);
    pool->server_user = strdup(server_user);
    pool->password = dup_or_null(password);
    for (int i = 0; i < pool->n_startup_extra; i++)
        free(pool->startup_extra[i]);
    pool->n_startup_extra = 0;
    const char *extras[][2] = {{"client_encoding", db->client_encoding},
                               {"datestyle", db->datestyle},
                               {"timezone", db->timezone},
                               {"application_name", db->application_name}};
    for (size_t i = 0; i < 4; i++) {
        if (extras[i][1] && pool->n_startup_extra + 2 <= 8) {
            pool->startup_extra[pool->n_startup_extra++] = strdup(extras[i][0]);
            pool->startup_extra[pool->n_startup_extra++] = strdup(extras[i][1]);
        }
    }
    free(pool->connect_query);
    pool->connect_query = dup_or_null(db->connect_query);

    int mode = cfg->pool_mode;
    if (db->pool_mode >= 0)
        mode = db->pool_mode;
    if (u && u->pool_mode >= 0)
        mode = u->pool_mode;
    pool->mode = (enum pool_mode)mode;
    int size = db->pool_size >= 0 ? db->pool_size : cfg->default_pool_size;
    if (u && u->pool_size >= 0)
        size = u->pool_size;
    if (size != pool->configured_size) {
        pool->pool_size = size;
        pool->configured_size = size;
    }
    pool->min_pool_size = db->min_pool_size >= 0 ? db->min_pool_size : cfg->min_pool_size;
    pool->reserve_pool = db->reserve_pool >= 0 ? db->reserve_pool : cfg->reserve_pool_size;
    pool->max_db_connections =
        db->max_db_connections >= 0 ? db->max_db_connections : cfg->max_db_connections;
    pool->max_user_connections =
        u && u->max_user_connections >= 0 ? u->max_user_connections : cfg->max_user_connections;
    if (target_changed) {
        pool->have_addr = false;
        struct plist *lists[] = {&pool->idle_servers, &pool->active_servers, &pool->tested_servers,
                                 &pool->login_servers, &pool->canceling_servers};
        for (size_t i = 0; i < sizeof(lists) / sizeof(lists[0]); i++)
            for (struct plist *n = lists[i]->next; n != lists[i]; n = n->next)
                plist_entry(n, struct server, node)->close_needed = true;
        pool->welcome_ready = false;
        free(pool->welcome);
        pool->welcome = NULL;
        pool->welcome_len = 0;
    }
}

void pool_init_lists(struct pool *pool)
{
    plist_init(&pool->waiting_login_clients);
    plist_init(&pool->active_clients);
    plist_init(&pool->waiting_clients);
    plist_init(&pool->login_servers);
    plist_init(&pool->idle_servers);
    plist_init(&pool->tested_servers);
    plist_init(&pool->active_servers);
    plist_init(&pool->canceling_servers);
}

struct pool *pool_get(struct pooler *p, const struct pooler_db_config *db, const char *db_name,
                      const char *user)
{
    (void)db;
    for (struct plist *n = p->pools.next; n != &p->pools; n = n->next) {
        struct pool *pool = plist_entry(n, struct pool, node);
        if (!strcmp(pool->db_name, db_name) && !strcmp(pool->user_name, user))
            return pool;
    }
    struct pool *pool = calloc(1, sizeof(*pool));
    if (!pool)
        return NULL;
    pool->pooler = p;
    pool->db_name = strdup(db_name);
    pool->user_name = strdup(user);
    pool->server_db = strdup("");
    pool->server_user = strdup("");
    if (!pool->db_name || !pool->user_name || !pool->server_db || !pool->server_user) {
        pool_free(pool);
        return NULL;
    }
    pool_init_lists(pool);
    pool_apply_config(pool);
    if (!pool->host) {
        pool_free(pool);
        return NULL;
    }
    plist_append(&p->pools, &pool->node);
    log_debug("pool", "new pool %s/%s (%s mode, size %d)", db_name, user,
              pool_mode_name(pool->mode), pool->pool_size);
    return pool;
}

void pool_free(struct pool *pool)
{
    free(pool->db_name);
    free(pool->user_name);
    free(pool->host);
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
        pstr_unref(pool->defaults[i]);
    memset(pool->scram_client_key, 0, sizeof(pool->scram_client_key));
    free(pool);
}

int pool_db_server_count(struct pooler *p, const char *db_name)
{
    int n = 0;
    for (struct plist *it = p->pools.next; it != &p->pools; it = it->next) {
        struct pool *pool = plist_entry(it, struct pool, node);
        if (!strcmp(pool->db_name, db_name))
            n += pool->n_servers;
    }
    return n;
}

int pool_user_server_count(struct pooler *p, const char *user)
{
    int n = 0;
    for (struct plist *it = p->pools.next; it != &p->pools; it = it->next) {
        struct pool *pool = plist_entry(it, struct pool, node);
        if (!strcmp(pool->user_name, user))
            n += pool->n_servers;
    }
    return n;
}

/* ---- clients ---- */

struct client *client_new(struct pooler *p, int fd, const struct net_addr *addr)
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
    client_change_state(c, CL_LOGIN);
    /* Read before registering: the client usually sent its first packet (SSLRequest or
     * StartupMessage) before we accepted, so answering now saves a loop turn and a wake-up
     * per connection. Registering afterwards is safe with edge triggering: epoll reports
     * whatever is ready at the time of the registration. */
    c->conn.may_read = true;
    client_pump(c);
    /* Refused already: freed with the other closed clients. */
    if (c->state == CL_JUSTFREE)
        return c;
    pconn_release_if_empty(p, &c->conn); /* nothing arrived yet: hold no buffer meanwhile */
    /* Read interest only: registering for writes too would report the new socket writable at
     * once, a wake-up and loop turn for nothing on every connection; partial sends ask for
     * the writable edge (client_want_writable). */
    c->conn.io = net_io_new(p->loop, fd, c->conn.want_write ? NET_IO_EDGE_RW : NET_IO_EDGE_READ,
                            client_io_cb, c);
    if (!c->conn.io)
        client_close(c, "cannot watch the socket");
    return c;
}

/* Two random words from the pooler's batch; false when the random source fails. */
static bool cancel_random_pair(struct pooler *p, uint32_t out[2])
{
    if (p->cancel_random_left < 2) {
        if (RAND_bytes((unsigned char *)p->cancel_random, sizeof(p->cancel_random)) != 1)
            return false;
        p->cancel_random_left = (int)(sizeof(p->cancel_random) / sizeof(p->cancel_random[0]));
    }
    out[0] = p->cancel_random[--p->cancel_random_left];
    out[1] = p->cancel_random[--p->cancel_random_left];
    /* A key handed out is never kept where a later dump or reuse could show it. */
    p->cancel_random[p->cancel_random_left] = 0;
    p->cancel_random[p->cancel_random_left + 1] = 0;
    return true;
}

void client_register_cancel(struct client *c)
{
    struct pooler *p = c->pooler;
    for (int tries = 0; tries < 8; tries++) {
        uint32_t r[2];
        if (!cancel_random_pair(p, r))
            break;
        c->cancel_pid = r[0];
        c->cancel_key = r[1];
        c->cancel_pid &= 0x7fffffff; /* some clients print it as a signed pid */
        if (c->cancel_pid == 0)
            continue;
        size_t b = c->cancel_pid & (p->cancel_buckets - 1);
        bool clash = false;
        for (struct client *o = p->cancel_table[b]; o; o = o->cancel_next)
            clash |= o->cancel_pid == c->cancel_pid;
        if (clash)
            continue;
        c->cancel_next = p->cancel_table[b];
        p->cancel_table[b] = c;
        c->in_cancel_table = true;
        return;
    }
    log_warning("pool", "client %llu: no cancel key (random source failed)",
                (unsigned long long)c->id);
}

static void client_unregister_cancel(struct client *c)
{
    if (!c->in_cancel_table)
        return;
    struct pooler *p = c->pooler;
    struct client **link = &p->cancel_table[c->cancel_pid & (p->cancel_buckets - 1)];
    while (*link && *link != c)
        link = &(*link)->cancel_next;
    if (*link)
        *link = c->cancel_next;
    c->in_cancel_table = false;
}

struct client *client_find_cancel(struct pooler *p, uint32_t pid, uint32_t key)
{
    for (struct client *c = p->cancel_table[pid & (p->cancel_buckets - 1)]; c; c = c->cancel_next)
        if (c->cancel_pid == pid)
            return ((c->cancel_key ^ key) == 0) ? c : NULL;
    return NULL;
}

void client_want_writable(struct client *c)
{
    c->conn.want_write = true; /* before the registration (first read): registered RW */
    net_io_want_write(c->conn.io);
}

bool client_send_raw(struct client *c, const void *data, size_t len)
{
    size_t off = 0;
    while (off < len) {
        size_t n = 0;
        enum net_io_result r = net_send(c->conn.fd, (const uint8_t *)data + off, len - off, &n);
        /* Pooler-generated messages are small and go to a socket whose send buffer is
         * empty or nearly so; a client that does not read them loses its connection. */
        if (r != NET_OK)
            return false;
        off += n;
    }
    return true;
}

void client_fail(struct client *c, const char *sqlstate, const char *fmt, ...)
{
    if (c->state == CL_JUSTFREE)
        return;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    uint8_t out[700];
    struct wire_buf b;
    wire_buf_init(&b, out, sizeof(out));
    wire_build_error(&b, "FATAL", sqlstate, msg);
    if (c->pooler->cfg->log_pooler_errors)
        log_info("pool", "client %llu: closing with error %s: %s", (unsigned long long)c->id,
                 sqlstate, msg);
    if (!b.overflow && !client_send_raw(c, out, b.len))
        log_debug("pool", "client %llu: error message not delivered", (unsigned long long)c->id);
    client_close(c, msg);
}

void client_close(struct client *c, const char *reason)
{
    if (c->state == CL_JUSTFREE)
        return;
    struct pooler *p = c->pooler;
    if (p->cfg->log_disconnections && c->state != CL_LOGIN) {
        char addr[64];
        net_addr_format(&c->addr, addr, sizeof(addr));
        log_info("pool", "client %llu %s %s/%s: closing: %s", (unsigned long long)c->id, addr,
                 c->pool ? c->pool->db_name : "-", c->pool ? c->pool->user_name : "-", reason);
    }
    struct server *s = c->server;
    if (s) {
        /* A server is only reused when the protocol says it is idle outside a transaction
         * and holds nothing unsent or unread; anything else would hand an open transaction
         * or stray results to the next client. */
        /* Half a message already forwarded (body_left) leaves the server mid-message. */
        bool unsent = (c->conn.buf && c->conn.buf->pos < c->conn.scan) || c->conn.body_left > 0;
        server_drop_undelivered_result(s);
        if (!unsent && server_is_clean(s) &&
            !(s->conn.buf && s->conn.buf->pos < s->conn.buf->end)) {
            pool_release_server(s);
        } else {
            c->server = NULL;
            s->client = NULL;
            server_close(s, "client disconnected while the server was busy");
        }
        c->server = NULL;
    }
    client_unregister_cancel(c);
    client_login_free(c);
    if (c->console) {
        console_out_free(c->console);
        free(c->console);
        c->console = NULL;
    }
    client_stmts_free(&p->stmts, &c->stmts);
    pconn_drop_buffer(p, &c->conn);
    for (int i = 0; i < PARAM_COUNT; i++) {
        pstr_unref(c->params[i]);
        c->params[i] = NULL;
    }
    if (c->pool) {
        c->pool->n_clients--;
        c->pool->stats.clients_closed++;
    }
    p->n_clients--;
    client_change_state(c, CL_JUSTFREE);
    pooler_schedule_reap(p);
}

/* ---- servers: releasing and handing out ---- */

static bool server_needs_check(struct server *s, int64_t now)
{
    const struct pooler_config *cfg = s->pool->pooler->cfg;
    return cfg->server_check_delay_ms > 0 &&
           now - s->last_used_us > cfg->server_check_delay_ms * 1000;
}

static void link_client(struct client *c, struct server *s)
{
    int64_t now = pooler_now(c->pooler);
    server_change_state(s, SV_ACTIVE);
    if (c->state == CL_WAITING) {
        c->pool->stats.wait_time_us += now - c->state_us;
        c->pool->stats.wait_count++;
        histogram_observe(&c->pool->stats.wait_hist, now - c->state_us);
        client_change_state(c, CL_ACTIVE);
    }
    c->server = s;
    s->client = c;
    c->request_us = now;
    s->last_used_us = now;
    /* Bring the server's session parameters in line with the client's. */
    size_t need = params_set_len((const struct pstr *const *)c->params,
                                 (const struct pstr *const *)s->params);
    if (need > 1) {
        char *sql = malloc(need);
        if (sql && params_build_set((const struct pstr *const *)c->params,
                                    (const struct pstr *const *)s->params, sql, need) > 0) {
            if (!server_send_internal_query(s, sql)) {
                free(sql);
                c->server = NULL;
                s->client = NULL;
                server_close(s, "could not send SET");
                client_fail(c, "08006", "server connection failed");
                return;
            }
        }
        free(sql);
    }
}

void pool_request_server(struct client *c)
{
    struct pool *pool = c->pool;
    struct pooler *p = c->pooler;
    int64_t now = pooler_now(p);
    if (p->run_state == POOLER_RUNNING || p->run_state == POOLER_SHUTDOWN_CLIENTS) {
        struct plist *n;
        while ((n = plist_first(&pool->idle_servers)) != NULL) {
            struct server *s = plist_entry(n, struct server, node);
            if (server_needs_check(s, now)) {
                const char *q = p->cfg->server_check_query;
                server_change_state(s, SV_TESTED);
                if (!server_send_internal_query(s, q))
                    server_close(s, "check query could not be sent");
                continue;
            }
            if (plist_empty(&pool->waiting_clients) || c->state == CL_WAITING) {
                link_client(c, s);
                return;
            }
            break;
        }
    }
    if (c->state != CL_WAITING)
        client_change_state(c, CL_WAITING);
    if (pool->retry_after_us > now && pool->last_error && plist_empty(&pool->login_servers) &&
        pool->n_servers == 0) {
        client_fail(c, pool->last_sqlstate, "%s", pool->last_error);
        return;
    }
    pool_activate(pool);
}

static int pool_limit(struct pool *pool, int64_t now)
{
    int limit = pool->pool_size;
    struct plist *first = plist_first(&pool->waiting_clients);
    if (first && pool->reserve_pool > 0) {
        struct client *c = plist_entry(first, struct client, node);
        if (now - c->state_us >= pool->pooler->cfg->reserve_pool_timeout_ms * 1000)
            limit += pool->reserve_pool;
    }
    return limit;
}

static bool pool_may_launch(struct pool *pool, int64_t now)
{
    struct pooler *p = pool->pooler;
    if (p->run_state == POOLER_SHUTDOWN_SERVERS)
        return false;
    if (now < pool->retry_after_us)
        return false;
    if (pool->n_servers >= pool_limit(pool, now))
        return false;
    if (pool->max_db_connections > 0 &&
        pool_db_server_count(p, pool->db_name) >= pool->max_db_connections)
        return false;
    if (pool->max_user_connections > 0 &&
        pool_user_server_count(p, pool->user_name) >= pool->max_user_connections)
        return false;
    return true;
}

void pool_activate(struct pool *pool)
{
    struct pooler *p = pool->pooler;
    /* PAUSE and the SIGINT shutdown hand out no servers: clients queue until RESUME. */
    if (p->run_state == POOLER_PAUSED || p->run_state == POOLER_SHUTDOWN_SERVERS)
        return;
    int64_t now = pooler_now(p);
    for (;;) {
        struct plist *cn = plist_first(&pool->waiting_clients);
        if (!cn)
            break;
        struct plist *sn = plist_first(&pool->idle_servers);
        if (!sn)
            break;
        struct server *s = plist_entry(sn, struct server, node);
        if (server_needs_check(s, now)) {
            server_change_state(s, SV_TESTED);
            if (!server_send_internal_query(s, p->cfg->server_check_query))
                server_close(s, "check query could not be sent");
            continue;
        }
        struct client *c = plist_entry(cn, struct client, node);
        link_client(c, s);
        if (c->server == s)
            client_pump(c);
    }
    /* Launch servers for clients that wait, counting logins already under way. A full pool
     * (the steady state under load) returns before counting anything. */
    if (plist_empty(&pool->waiting_clients) && plist_empty(&pool->waiting_login_clients))
        return;
    if (!pool_may_launch(pool, now))
        return;
    size_t want = plist_count(&pool->waiting_clients);
    if (!pool->welcome_ready && !plist_empty(&pool->waiting_login_clients))
        want++;
    size_t launching = plist_count(&pool->login_servers) + plist_count(&pool->tested_servers);
    while (want > launching && pool_may_launch(pool, now)) {
        if (!server_launch(pool)) {
            pool_fail_waiters(pool); /* e.g. the unix socket is not there */
            break;
        }
        launching++;
    }
}

void pool_fail_waiters(struct pool *pool)
{
    if (pool->n_servers > 0 || !pool->last_error)
        return;
    struct plist *n;
    while ((n = plist_first(&pool->waiting_login_clients)) != NULL)
        client_fail(plist_entry(n, struct client, node), pool->last_sqlstate, "%s",
                    pool->last_error);
    while ((n = plist_first(&pool->waiting_clients)) != NULL)
        client_fail(plist_entry(n, struct client, node), pool->last_sqlstate, "%s",
                    pool->last_error);
}

bool pool_probe_server(struct server *s)
{
    struct pooler *p = s->pool->pooler;
    server_change_state(s, SV_TESTED);
    s->probe_start_us = pooler_now(p);
    if (server_send_internal_query(s, p->cfg->server_check_query))
        return true;
    pool_note_probe(s, false, "probe could not be sent");
    server_close(s, "health probe could not be sent");
    return false;
}

void pool_note_probe(struct server *s, bool ok, const char *error)
{
    if (!s->probe_start_us)
        return;
    struct pool_probes *pr = &s->pool->probes;
    int64_t now = pooler_now(s->pool->pooler);
    pr->latency_ms[pr->next] = (float)(now - s->probe_start_us) / 1000.0f;
    pr->ok[pr->next] = ok;
    pr->next = (pr->next + 1) % POOL_PROBE_KEEP;
    if (pr->n < POOL_PROBE_KEEP)
        pr->n++;
    pr->total++;
    pr->last_us = now;
    if (!ok) {
        pr->failed++;
        snprintf(pr->last_error, sizeof(pr->last_error), "%s", error ? error : "failed");
    }
    s->probe_start_us = 0;
}

void pool_server_ready(struct server *s)
{
    struct pool *pool = s->pool;
    int64_t now = pooler_now(pool->pooler);
    if (s->close_needed || (s->expire_us && now >= s->expire_us)) {
        server_close(s, s->close_needed ? "configuration changed" : "server_lifetime reached");
        pool_activate(pool);
        return;
    }
    s->last_used_us = now;
    server_change_state(s, SV_IDLE);
    if (pool->welcome_ready) {
        struct plist *n;
        while ((n = plist_first(&pool->waiting_login_clients)) != NULL)
            client_finish_login(plist_entry(n, struct client, node));
    }
    pool_activate(pool);
}

void pool_release_server(struct server *s)
{
    struct client *c = s->client;
    struct pool *pool = s->pool;
    struct pooler *p = pool->pooler;
    int64_t now = pooler_now(p);
    if (c) {
        if (c->request_us) {
            c->xacts++;
            pool->stats.xact_count++;
            pool->stats.xact_time_us += now - c->request_us;
            histogram_observe(&pool->stats.xact_hist, now - c->request_us);
            c->request_us = 0;
        }
        c->server = NULL;
        s->client = NULL;
    }
    s->last_used_us = now;
    bool reset = pool->mode == POOL_MODE_SESSION || p->cfg->server_reset_query_always;
    if (s->cancels_in_flight > 0) {
        /* A cancel aimed at this client's query may still land; nobody else may get the
         * server until it has. */
        server_change_state(s, SV_BEING_CANCELED);
        return;
    }
    if (s->close_needed || (s->expire_us && now >= s->expire_us)) {
        server_close(s, s->close_needed ? "configuration changed" : "server_lifetime reached");
        pool_activate(pool);
        return;
    }
    if (reset && p->cfg->server_reset_query[0]) {
        /* DISCARD ALL drops prepared statements too: forget what the server had. */
        server_stmts_free(&s->stmts);
        server_change_state(s, SV_TESTED);
        if (!server_send_internal_query(s, p->cfg->server_reset_query))
            server_close(s, "reset query could not be sent");
        return;
    }
    server_change_state(s, SV_IDLE);
    pool_activate(pool);
}

/* ---- freeing after the loop turn ---- */

static void reap_cb(void *arg)
{
    pooler_reap(arg);
}

/* Deferred sends. Each send wakes a process (a PostgreSQL backend, a client), which on a
 * busy machine preempts the pooler on return from send(); sending in the middle of an epoll
 * batch therefore left the rest of the batch (other clients' requests, other servers'
 * results) waiting in the run queue. Reading every ready socket first and sending afterwards,
 * all in the same loop turn, cut the pooler's and the servers' CPU per transaction
 * (docs/BENCHMARKS.md, "Tried"). Finished results go first: sending one releases its server,
 * which may go at once to a waiting client whose request is then sent in the same turn. */
struct batched_send {
    struct pconn *src;
    int64_t *counter;
};

static void batched_send_done(void *tag, ssize_t result, void *arg)
{
    (void)arg;
    struct batched_send *bs = tag;
    /* Failures are left to the pumps below: their own send() sees the same EAGAIN or error
     * and takes the usual path (wait for writability, or close). */
    if (result > 0)
        pconn_sent(bs->src, (size_t)result, bs->counter);
}

static void submit_batch(struct pooler *p)
{
    if (!net_sendq_submit(p->sendq, batched_send_done, NULL))
        log_warning("serve", "io_uring refused a batch of sends; sending with one send() per "
                             "message from now on");
}

static void batch_one(struct pooler *p, struct batched_send *slots, unsigned *used,
                      struct pconn *src, int dst_fd, int64_t *counter)
{
    struct iobuf *b = src->buf;
    if (!b || b->pos >= src->scan)
        return;
    if (*used == POOLER_SEND_BATCH) {
        submit_batch(p);
        *used = 0;
    }
    struct batched_send *bs = &slots[*used];
    bs->src = src;
    bs->counter = counter;
    if (net_sendq_add(p->sendq, dst_fd, b->data + b->pos, src->scan - b->pos, bs))
        (*used)++;
}

static bool has_two(const struct plist *h)
{
    return !plist_empty(h) && h->next->next != h;
}

/* Hands every deferred send of this turn to the kernel in one system call; the pumps that
 * follow then find their bytes gone and only do the bookkeeping (releases, next reads). */
static void send_deferred_batch(struct pooler *p)
{
    /* A single send is cheaper as send() than as a one-entry batch (typical of connection
     * set-up traffic, where turns are small); the pump sends it. */
    bool servers = !plist_empty(&p->flush_servers), clients = !plist_empty(&p->flush_clients);
    if (!(servers && clients) && !has_two(&p->flush_servers) && !has_two(&p->flush_clients))
        return;
    struct batched_send slots[POOLER_SEND_BATCH];
    unsigned used = 0;
    for (struct plist *n = p->flush_servers.next; n != &p->flush_servers; n = n->next) {
        struct server *s = plist_entry(n, struct server, flush_node);
        if (s->state != SV_JUSTFREE && s->client)
            batch_one(p, slots, &used, &s->conn, s->client->conn.fd, &s->pool->stats.bytes_sent);
    }
    for (struct plist *n = p->flush_clients.next; n != &p->flush_clients; n = n->next) {
        struct client *c = plist_entry(n, struct client, flush_node);
        if (c->state != CL_JUSTFREE && c->server && c->server->state != SV_JUSTFREE)
            batch_one(p, slots, &used, &c->conn, c->server->conn.fd,
                      &c->pool->stats.bytes_received);
    }
    if (used > 0)
        submit_batch(p);
}

/* Waves: the pumps of one wave release servers to waiting clients, whose requests are
 * deferred again and go out in the next wave's batch. An object pumped for its own deferred
 * send sends directly (send_now), so a send that would block takes the usual writable-edge
 * path instead of coming back; after FLUSH_MAX_WAVES everything is sent directly. */
#define FLUSH_MAX_WAVES 8

static void flush_cb(void *arg)
{
    struct pooler *p = arg;
    struct plist *n;
    p->flushing = true;
    for (int wave = 0; !plist_empty(&p->flush_servers) || !plist_empty(&p->flush_clients); wave++) {
        bool last = wave + 1 >= FLUSH_MAX_WAVES;
        if (p->sendq)
            send_deferred_batch(p);
        struct plist servers, clients;
        plist_init(&servers);
        plist_init(&clients);
        plist_splice_tail(&servers, &p->flush_servers);
        plist_splice_tail(&clients, &p->flush_clients);
        while ((n = plist_first(&servers)) != NULL) {
            struct server *s = plist_entry(n, struct server, flush_node);
            plist_remove(n);
            /* Sends what the batch left, then acts on the ReadyForQuery; a closed server
             * returns at once. */
            s->conn.send_now = true;
            server_pump(s);
            s->conn.send_now = false;
        }
        while ((n = plist_first(&clients)) != NULL) {
            struct client *c = plist_entry(n, struct client, flush_node);
            plist_remove(n);
            c->conn.send_now = true;
            client_pump(c); /* a closed client (JUSTFREE) returns at once */
            c->conn.send_now = false;
        }
        if (last)
            p->flush_direct = true;
    }
    p->flush_direct = false;
    p->flushing = false;
}

static bool flusher_arm(struct pooler *p)
{
    if (!p->flusher) {
        p->flusher = net_timer_new(p->loop, flush_cb, p);
        if (!p->flusher)
            return false;
    }
    if (p->flush_direct)
        return false; /* the flusher gave up batching for this turn: send at once */
    if (!p->flushing && plist_empty(&p->flush_clients) && plist_empty(&p->flush_servers))
        net_timer_activate(p->flusher); /* after the callbacks already due in this turn */
    return true;
}

bool pooler_defer_send(struct client *c)
{
    if (!flusher_arm(c->pooler))
        return false;
    if (plist_empty(&c->flush_node))
        plist_append(&c->pooler->flush_clients, &c->flush_node);
    return true;
}

bool pooler_defer_result(struct server *s)
{
    struct pooler *p = s->pool->pooler;
    if (!flusher_arm(p))
        return false;
    if (plist_empty(&s->flush_node))
        plist_append(&p->flush_servers, &s->flush_node);
    return true;
}

void pooler_schedule_reap(struct pooler *p)
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

void pooler_reap(struct pooler *p)
{
    struct plist *n;
    p->reap_scheduled = false;
    cancel_reqs_expire(p, 0); /* frees finished cancel connections only */
    while ((n = plist_first(&p->justfree_clients)) != NULL) {
        struct client *c = plist_entry(n, struct client, node);
        client_change_state(c, CL_FREE);
        plist_remove(&c->flush_node); /* closed before its deferred send ran */
        net_io_free(c->conn.io);
        close(c->conn.fd);
        free(c);
    }
    while ((n = plist_first(&p->justfree_servers)) != NULL) {
        struct server *s = plist_entry(n, struct server, node);
        server_change_state(s, SV_FREE);
        plist_remove(&s->flush_node); /* closed before its deferred send ran */
        net_io_free(s->conn.io);
        if (s->conn.fd >= 0)
            close(s->conn.fd);
        free(s);
    }
}
