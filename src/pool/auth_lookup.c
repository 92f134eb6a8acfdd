/* auth_query lookups (see auth_lookup.h).
 *
 *   client login --auth_lookup_start--> request queued on objects_pool_get_auth(db, auth_user)
 *   idle server of that pool --Parse/Bind($1 = user)/Execute/Sync--> DataRows, ReadyForQuery
 *   --auth_lookup_judge--> client_auth_lookup_done(secret | no user | error)
 *
 * The pool is auth_user's own: no client is ever linked to its servers, so their sessions
 * carry only the database entry's settings. A request whose client left is finished
 * unheard; a server lost mid-query, or a pool whose logins fail, answers its requests with
 * the error at once rather than leaving clients to client_login_timeout. */
#include "pool/auth_lookup.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "common/log.h"
#include "config/auth_file.h"
#include "pool/client.h"
#include "pool/objects.h"
#include "pool/server.h"
#include "pool/states.h"
#include "proto/scram.h"
#include "proto/wire.h"

struct auth_lookup {
    struct plist node;     /* on pool->lookups */
    struct pool *pool;     /* borrowed */
    struct client *client; /* borrowed; NULL once the client left */
    struct server *server; /* borrowed: the server running the query, NULL while queued */
    char *user;            /* owned */
    char *query;           /* owned: the auth_query in force when the client came */
    int64_t since_us;      /* queued or sent at (pooler_now): the timeouts count from here */
    struct auth_lookup_answer answer;
    char error[256]; /* the server's ErrorResponse, "" when none */
};

/* ---- the answer (pure) ---- */

static uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

void auth_lookup_answer_row(struct auth_lookup_answer *a, const char *user, const uint8_t *body,
                            size_t len)
{
    if (++a->rows > 1)
        return; /* judged as two rows; the first secret stays */
    if (len < 2 || (body[0] << 8 | body[1]) != 2) {
        a->bad = true;
        return;
    }
    size_t at = 2;
    const uint8_t *col[2];
    uint32_t col_len[2];
    for (int i = 0; i < 2; i++) {
        if (len - at < 4) {
            a->bad = true;
            return;
        }
        col_len[i] = get_u32(body + at);
        at += 4;
        col[i] = NULL;
        if (col_len[i] == 0xFFFFFFFFu)
            continue; /* NULL */
        if (col_len[i] > len - at || col_len[i] > AUTH_FILE_MAX_SECRET_LEN ||
            memchr(body + at, '\0', col_len[i])) {
            a->bad = true;
            return;
        }
        col[i] = body + at;
        at += col_len[i];
    }
    if (at != len || !col[0] || col_len[0] != strlen(user) || memcmp(col[0], user, col_len[0])) {
        a->bad = true; /* another shape, or a row about someone else */
        return;
    }
    if (col[1] && !(a->secret = strndup((const char *)col[1], col_len[1])))
        a->bad = true;
}

enum auth_lookup_verdict auth_lookup_judge(const struct auth_lookup_answer *a, const char **why)
{
    if (a->bad) {
        *why = "auth_query must return one row of (user name, secret) for the user";
        return AUTH_LOOKUP_BAD_ANSWER;
    }
    if (a->rows == 0) {
        *why = "no such user";
        return AUTH_LOOKUP_NO_USER;
    }
    if (a->rows > 1) {
        *why = "auth_query returned more than one row";
        return AUTH_LOOKUP_BAD_ANSWER;
    }
    if (!a->secret || !a->secret[0]) {
        *why = "no password (NULL: expired or never set)";
        return AUTH_LOOKUP_NO_SECRET;
    }
    /* A secret that claims a kind must be one: a garbled SCRAM or md5 secret is never taken
     * for a plaintext password. */
    enum auth_file_secret_kind kind = auth_file_secret_kind(a->secret);
    if (kind == AUTH_SECRET_SCRAM) {
        struct scram_secret parsed;
        bool ok = scram_secret_parse(a->secret, &parsed);
        scram_secret_clear(&parsed);
        if (!ok) {
            *why = "auth_query returned a malformed SCRAM secret";
            return AUTH_LOOKUP_BAD_ANSWER;
        }
    } else if (kind != AUTH_SECRET_MD5 && !strncmp(a->secret, "md5", 3)) {
        *why = "auth_query returned a malformed md5 secret";
        return AUTH_LOOKUP_BAD_ANSWER;
    }
    *why = NULL;
    return AUTH_LOOKUP_SECRET;
}

void auth_lookup_answer_clear(struct auth_lookup_answer *a)
{
    if (a->secret) {
        OPENSSL_cleanse(a->secret, strlen(a->secret));
        free(a->secret);
    }
    memset(a, 0, sizeof(*a));
}

/* ---- requests ---- */

/* Ends req: unlinks it, tells its client (if still there) and frees it. error: the lookup
 * could not be made (no verdict). An ErrorResponse to the query beats both: the server's
 * words go to the log alone, and the client, who has not authenticated, hears
 * AUTH_LOOKUP_QUERY_FAILED (PgBouncer's bare "bouncer config error"). */
static void finish(struct auth_lookup *req, const char *error)
{
    plist_remove(&req->node);
    if (req->server)
        req->server->lookup = NULL;
    struct client *c = req->client;
    enum auth_lookup_verdict v = AUTH_LOOKUP_BAD_ANSWER;
    if (req->error[0]) {
        v = AUTH_LOOKUP_QUERY_FAILED;
        error = NULL;
        /* logged even when the client left: the query is broken for every login */
        log_warning("pool", "auth_query for user %s in %s failed: %s", req->user,
                    req->pool->db_name, req->error);
    } else if (!error) {
        const char *why;
        v = auth_lookup_judge(&req->answer, &why);
        if (c && why)
            log_warning("pool", "auth_query for user %s in %s: %s", req->user, req->pool->db_name,
                        why);
    } else if (c) { /* nobody waits for a request that ends unsent: nothing to say */
        log_warning("pool", "auth_query for user %s in %s failed: %s", req->user,
                    req->pool->db_name, error);
    }
    if (c)
        client_auth_lookup_done(c, v, v == AUTH_LOOKUP_SECRET ? req->answer.secret : NULL, error);
    auth_lookup_answer_clear(&req->answer);
    free(req->user);
    free(req->query);
    free(req);
}

/* Parse, Bind ($1 = the user, as text), Execute, Sync: the user name is never pasted into
 * SQL. */
static bool send_query(struct server *s, const char *query, const char *user)
{
    size_t need = strlen(query) + strlen(user) + 64;
    uint8_t *buf = malloc(need);
    if (!buf)
        return false;
    struct wire_buf b;
    wire_buf_init(&b, buf, need);
    size_t m = wire_msg_begin(&b, WIRE_FE_PARSE);
    wire_put_cstr(&b, "");
    wire_put_cstr(&b, query);
    wire_put_u16(&b, 0);
    wire_msg_end(&b, m);
    m = wire_msg_begin(&b, WIRE_FE_BIND);
    wire_put_cstr(&b, "");
    wire_put_cstr(&b, "");
    wire_put_u16(&b, 0);
    wire_put_u16(&b, 1);
    wire_put_u32(&b, (uint32_t)strlen(user));
    wire_put_bytes(&b, user, strlen(user));
    wire_put_u16(&b, 0);
    wire_msg_end(&b, m);
    m = wire_msg_begin(&b, WIRE_FE_EXECUTE);
    wire_put_cstr(&b, "");
    wire_put_u32(&b, 0);
    wire_msg_end(&b, m);
    m = wire_msg_begin(&b, WIRE_FE_SYNC);
    wire_msg_end(&b, m);
    bool ok = !b.overflow && server_send_raw(s, buf, b.len);
    free(buf);
    if (ok)
        s->internal_pending++;
    return ok;
}

/* Fails every request of pool that waits for a server. */
static void fail_queued(struct pool *pool, const char *why)
{
    struct plist *n, *next;
    for (n = pool->lookups.next; n != &pool->lookups; n = next) {
        next = n->next;
        struct auth_lookup *req = plist_entry(n, struct auth_lookup, node);
        if (!req->server)
            finish(req, why);
    }
}

void auth_lookup_pump(struct pool *pool)
{
    struct pooler *p = pool->pooler;
    size_t queued = 0;
    for (struct plist *n = pool->lookups.next; n != &pool->lookups;) {
        struct auth_lookup *req = plist_entry(n, struct auth_lookup, node);
        n = n->next;
        if (req->server)
            continue;
        struct plist *idle = plist_first(&pool->idle_servers);
        if (!idle) {
            queued++;
            continue;
        }
        struct server *s = plist_entry(idle, struct server, node);
        if (s->close_needed) {
            server_close(s, "database configuration changed");
            n = pool->lookups.next; /* start over: the list is unchanged, the servers not */
            continue;
        }
        if (!server_idle_alive(s)) {
            n = pool->lookups.next;
            continue;
        }
        states_server_change(s, SV_TESTED);
        s->lookup = req;
        req->server = s;
        req->since_us = pooler_now(p);
        if (!send_query(s, req->query, req->user)) {
            server_close(s, "auth_query could not be sent"); /* fails req (server_gone) */
            n = pool->lookups.next;
        }
    }
    if (queued == 0)
        return;
    /* A pool whose logins fail answers at once with the error, as it does clients. */
    int64_t now = pooler_now(p);
    if (pool->last_error && pool->n_servers == 0 && now < pool->retry_after_us) {
        fail_queued(pool, pool->last_error);
        return;
    }
    size_t launching = plist_count(&pool->login_servers) + plist_count(&pool->tested_servers);
    while (launching < queued && pool->n_servers < pool->pool_size && now >= pool->retry_after_us) {
        if (!server_launch(pool)) {
            fail_queued(pool, pool->last_error ? pool->last_error : "cannot connect");
            return;
        }
        launching++;
    }
}

bool auth_lookup_start(struct client *c, const char *db_name, const char *auth_user,
                       const char *query, const char *user, struct auth_lookup **out)
{
    struct pooler *p = c->pooler;
    const struct pooler_db_config *db = pooler_config_find_db(p->cfg, db_name);
    struct auth_lookup *req = calloc(1, sizeof(*req));
    struct pool *pool = db ? objects_pool_get_auth(p, db, db_name, auth_user) : NULL;
    if (!req || !pool || !(req->user = strdup(user)) || !(req->query = strdup(query))) {
        if (req)
            free(req->user);
        free(req);
        return false;
    }
    req->pool = pool;
    req->client = c;
    req->since_us = pooler_now(p);
    plist_append(&pool->lookups, &req->node);
    *out = req;
    log_debug("pool", "client %llu: auth_query for user %s in %s as %s", (unsigned long long)c->id,
              user, db_name, auth_user);
    auth_lookup_pump(pool);
    return true;
}

void auth_lookup_cancel(struct auth_lookup *req)
{
    if (!req)
        return;
    req->client = NULL;
    if (!req->server)
        finish(req, "client left"); /* nobody to tell; never sent */
}

/* ---- server hooks ---- */

void auth_lookup_on_row(struct server *s, const uint8_t *body, size_t len)
{
    if (s->lookup)
        auth_lookup_answer_row(&s->lookup->answer, s->lookup->user, body, len);
}

void auth_lookup_on_error(struct server *s, const uint8_t *body, size_t len)
{
    struct wire_error e;
    /* For the log only (finish): the client is never told the server's words. */
    if (!s->lookup)
        return;
    if (!wire_parse_error(body, len, &e))
        snprintf(s->lookup->error, sizeof(s->lookup->error),
                 "the server answered a malformed ErrorResponse");
    else
        snprintf(s->lookup->error, sizeof(s->lookup->error), "the server answered %s%s%s",
                 e.sqlstate ? e.sqlstate : "", e.sqlstate ? " " : "",
                 e.message ? e.message : "error from server");
}

void auth_lookup_query_done(struct server *s)
{
    struct auth_lookup *req = s->lookup;
    if (!req)
        return;
    finish(req, NULL);
}

void auth_lookup_server_gone(struct server *s, const char *why)
{
    struct auth_lookup *req = s->lookup;
    if (!req)
        return;
    finish(req, why);
}

void auth_lookup_login_failed(struct pool *pool, const char *why)
{
    if (pool->auth_lookup && pool->n_servers == 0)
        fail_queued(pool, why);
}

/* PgBouncer runs auth_query on a server linked to the waiting client, so its janitor's
 * timeouts apply to it: query_wait_timeout while the lookup waits for a server, query_timeout
 * (auth_user's own, else the global) once it runs. Without query_timeout the running lookup
 * is still bounded by client_login_timeout: its client is gone by then, and the server that
 * is stuck in it would otherwise be held for as long as the query hangs. A timed-out server
 * is closed (its session is mid-query) and the lookup fails with the reason. */
void auth_lookup_expire(struct pool *pool, int64_t now)
{
    const struct pooler_config *cfg = pool->pooler->cfg;
    int64_t run_ms =
        pool->query_timeout_ms > 0 ? pool->query_timeout_ms : cfg->client_login_timeout_ms;
    const char *run_key = pool->query_timeout_ms > 0 ? "query_timeout" : "client_login_timeout";
    struct plist *n, *next;
    for (n = pool->lookups.next; n != &pool->lookups; n = next) {
        next = n->next;
        struct auth_lookup *req = plist_entry(n, struct auth_lookup, node);
        int64_t age_ms = (now - req->since_us) / 1000;
        char why[160];
        if (req->server && run_ms > 0 && age_ms > run_ms) {
            snprintf(why, sizeof(why), "auth_query ran longer than %s (%lld ms)", run_key,
                     (long long)run_ms);
            /* req ends first, so that the close owes it nothing; the close may end or start
             * other requests of this pool: start over. */
            struct server *s = req->server;
            finish(req, why);
            server_close(s, why);
            next = pool->lookups.next;
        } else if (!req->server && cfg->query_wait_timeout_ms > 0 &&
                   age_ms > cfg->query_wait_timeout_ms) {
            snprintf(why, sizeof(why),
                     "no server for auth_query within query_wait_timeout (%lld ms)",
                     (long long)cfg->query_wait_timeout_ms);
            finish(req, why);
        }
    }
}
