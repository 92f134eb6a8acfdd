/* Client side: TLS (SSLRequest or PostgreSQL 17's direct TLS), startup packet,
 * authentication (trust, plain, md5, SCRAM-SHA-256, cert, peer; per auth_hba_file), the welcome,
 * and the client→server data path. */
#include "pool/client.h"

#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "admin/console.h"
#include "common/log.h"
#include "common/utf8.h"
#include "net/sock.h"
#include "net/tls.h"
#include "pool/auth_lookup.h"
#include "pool/batch.h"
#include "pool/cancel.h"
#include "pool/conn.h"
#include "pool/control.h"
#include "pool/handout.h"
#include "pool/objects.h"
#include "pool/server.h"
#include "pool/states.h"
#include "proto/md5_auth.h"
#include "proto/password.h"
#include "proto/scram.h"
#include "proto/sql_effects.h"
#include "proto/startup_options.h"

enum login_step {
    STEP_STARTUP,       /* first: a new login (calloc) starts here */
    STEP_TLS_HANDSHAKE, /* TLS agreed (or direct TLS): the handshake runs, nothing is sent */
    STEP_PASSWORD,      /* md5 or cleartext PasswordMessage due */
    STEP_SASL_INITIAL,  /* SASLInitialResponse due */
    STEP_SASL_RESPONSE, /* SASLResponse (client-final) due */
    STEP_LOOKUP,        /* waiting for auth_query's answer (auth_lookup.c); nothing is due */
};

struct client_login {
    char *user;     /* owned */
    char *database; /* owned */
    char *secret;   /* owned copy; NULL when the user is unknown (the exchange still runs) */
    enum login_step step;
    enum hba_method method;     /* what this client must pass (auth_type, or its HBA line) */
    struct auth_lookup *lookup; /* owned by auth_lookup.c; set while STEP_LOOKUP */
    bool looked_up;             /* the secret came from auth_query: the user is known */
    bool lookup_ran;            /* auth_query answered (whatever it said) */
    bool lookup_found;          /* its answer named the user, with a secret or without */
    uint8_t salt[MD5_AUTH_SALT_LEN];
    struct scram_server scram;
    enum console_access peer_access; /* console access granted by the peer's identity alone */
    bool tls_direct; /* TLS began without an SSLRequest (PostgreSQL 17): ALPN is required */
    bool ssl_asked;  /* an SSLRequest was answered: a second one is refused (PostgreSQL) */
    bool gss_asked;  /* likewise a GSSENCRequest (one of each is libpq's prefer/prefer) */
    /* Startup parameters whose names have no slot yet, as name and value (owned pairs): they
     * get one only once the client has authenticated, so that nobody uses the slots up
     * without a password. */
    char **deferred;
    uint32_t n_deferred;
};

enum scan_result {
    SCAN_OK,
    SCAN_NEED_FLUSH,     /* a rewrite needs the bytes before it sent first */
    SCAN_OVERFLOW,       /* a rewrite did not fit the buffer sized for it: a pooler bug */
    SCAN_NO_MEMORY,      /* a message to rewrite could not be, for want of memory */
    SCAN_TERMINATE,      /* the client sent Terminate (not forwarded) */
    SCAN_BAD,            /* framing error */
    SCAN_BAD_TYPE,       /* not a frontend message type */
    SCAN_MALFORMED,      /* a message whose contents the pooler must read is malformed */
    SCAN_BLOCKED,        /* the server's owed queue is full: wait for its answers */
    SCAN_RESERVED,       /* the client named a statement of the pooler's own */
    SCAN_SERVER_FAILED,  /* sending to the server failed */
    SCAN_PQEXEC,         /* a simple Query while disable_pqexec is on */
    SCAN_TOO_MANY_STMTS, /* a named Parse past max_client_prepared_statements */
    SCAN_RESULT_COUNT,
};

/* How a scan result that ends the client is reported to it (NULL: not an ending). */
static const struct {
    const char *sqlstate;
    const char *message;
} SCAN_FAILURES[SCAN_RESULT_COUNT] = {
    [SCAN_BAD] = {"08P01", "invalid message length"},
    [SCAN_BAD_TYPE] = {"08P01", "invalid frontend message type"},
    [SCAN_OVERFLOW] = {"XX000", "internal error: a rewritten prepared statement message did "
                                "not fit its buffer"},
    [SCAN_NO_MEMORY] = {"53200", "out of memory"},
    [SCAN_MALFORMED] = {"08P01", "malformed Parse, Bind, Describe or Close message"},
    [SCAN_SERVER_FAILED] = {"08006", "server connection failed"},
    [SCAN_PQEXEC] = {"08P01", "PQexec disallowed"}, /* PgBouncer's words */
    [SCAN_RESERVED] = {"42501", "statement names beginning with pgw_ and the pooler's secret "
                                "are reserved for the pooler"},
    [SCAN_TOO_MANY_STMTS] = {"54000", "too many prepared statements for one client "
                                      "(max_client_prepared_statements): close or deallocate "
                                      "some before preparing more"},
};

static void session_free(struct client *c);
static void login_free(struct client *c);

void client_login_free(struct client *c)
{
    login_free(c);
    session_free(c);
}

static void login_free(struct client *c)
{
    struct client_login *l = c->login;
    if (!l)
        return;
    auth_lookup_cancel(l->lookup);
    free(l->user);
    free(l->database);
    if (l->secret) {
        OPENSSL_cleanse(l->secret, strlen(l->secret));
        free(l->secret);
    }
    scram_server_clear(&l->scram);
    for (uint32_t i = 0; i < 2 * l->n_deferred; i++)
        free(l->deferred[i]);
    free(l->deferred);
    free(l);
    c->login = NULL;
}

static bool name_listed(const char *list, const char *name)
{
    size_t n = strlen(name);
    const char *p = list;
    while (p && *p) {
        while (*p == ' ' || *p == ',')
            p++;
        const char *e = p;
        while (*e && *e != ',')
            e++;
        const char *t = e;
        while (t > p && t[-1] == ' ')
            t--;
        if ((size_t)(t - p) == n && strncasecmp(p, name, n) == 0)
            return true;
        p = e;
    }
    return false;
}

/* ---- the session: user, startup parameters, what the client's statements did ---- */

/* Pending entries that are not an enum sql_effect_kind. */
#define PENDING_PARSE 0x40 /* the client's named Parse: ParseComplete confirms its binding */
#define PENDING_NONE  0xff

/* Something the client sent whose effect waits for the server's answer: a SET, RESET, DISCARD
 * or DEALLOCATE statement (confirmed by its CommandComplete) or a named Parse (by its
 * ParseComplete). Requests are counted as they go out (Query, FunctionCall, Sync) and as
 * their ReadyForQuery comes back: what is still pending when its request's ReadyForQuery
 * arrives was skipped or failed. */
struct pending {
    uint32_t group;     /* the request whose ReadyForQuery ends it */
    uint8_t kind;       /* enum sql_effect_kind, PENDING_PARSE or PENDING_NONE */
    uint8_t tag;        /* enum sql_tag of the CommandComplete that confirms an effect */
    int16_t param;      /* the parameter's slot, -1 when the pooler keeps none for it */
    uint32_t seq;       /* PENDING_PARSE: which binding of the name (client_stmt.seq) */
    struct pstr *value; /* owned: SET's value, as SQL text */
    char *name;         /* owned: the statement of a DEALLOCATE or a Parse */
};

/* A SET or RESET that succeeded, applied when its transaction commits (PostgreSQL undoes it
 * when the transaction rolls back). */
struct staged {
    uint8_t kind; /* SQL_EFFECT_SET, SQL_EFFECT_SET_DEFAULT or SQL_EFFECT_RESET_ALL */
    int16_t param;
    struct pstr *value; /* owned */
};

struct startup_value {
    int16_t param;
    struct pstr *value; /* owned */
};

struct client_session {
    struct startup_value *startup; /* owned: from the startup packet and its options */
    uint32_t n_startup;
    struct pending *pending; /* owned, oldest first */
    uint32_t n_pending;
    uint32_t cap_pending;
    struct staged *staged; /* owned */
    uint32_t n_staged;
    uint32_t cap_staged;
    uint32_t sent;                  /* requests forwarded */
    uint32_t answered;              /* ReadyForQuery messages that answered them */
    struct pending *unnamed_stmt;   /* owned: the effect of the unnamed statement, or NULL */
    struct pending *unnamed_portal; /* owned: the same of the unnamed portal */
    bool xact_failed; /* an error or a ROLLBACK since the transaction of the staged changes began */
    bool resync;      /* the client's values differ from its server's: SET them before its next
                         request */
    char user[];      /* the login user */
};

/* Most statements followed per client at once; more (an endless pipeline of SETs) are not. */
#define MAX_PENDING 256

/* items, with room for one more after its n of *cap elements (of size bytes): the same array,
 * or a larger one (*cap grown). NULL on out of memory, items then unchanged. */
static void *room_for_one(void *items, uint32_t n, uint32_t *cap, size_t size)
{
    if (n < *cap)
        return items;
    uint32_t more = *cap ? *cap * 2 : 4;
    void *grown = realloc(items, (size_t)more * size);
    if (grown)
        *cap = more;
    return grown;
}

static void pending_clear(struct pending *e)
{
    params_unref(e->value);
    free(e->name);
    memset(e, 0, sizeof(*e));
    e->kind = PENDING_NONE;
}

/* dst becomes a copy of src (its own references); false on out of memory (dst cleared). */
static bool pending_copy(struct pending *dst, const struct pending *src)
{
    pending_clear(dst);
    *dst = *src;
    dst->value = params_ref(src->value);
    dst->name = src->name ? strdup(src->name) : NULL;
    if (src->name && !dst->name) {
        pending_clear(dst);
        return false;
    }
    return true;
}

/* The client's session, made when its startup packet names its user. False on out of
 * memory. */
static bool session_new(struct client *c, const char *user)
{
    size_t n = strlen(user) + 1;
    c->session = calloc(1, sizeof(*c->session) + n);
    if (c->session)
        memcpy(c->session->user, user, n);
    return c->session != NULL;
}

/* Clears and frees *e, which may be NULL. */
static void pending_drop(struct pending **e)
{
    if (*e) {
        pending_clear(*e);
        free(*e);
        *e = NULL;
    }
}

static void drop_staged(struct client_session *ss)
{
    for (uint32_t i = 0; i < ss->n_staged; i++)
        params_unref(ss->staged[i].value);
    ss->n_staged = 0;
}

static void session_free(struct client *c)
{
    struct client_session *ss = c->session;
    if (!ss)
        return;
    for (uint32_t i = 0; i < ss->n_startup; i++)
        params_unref(ss->startup[i].value);
    free(ss->startup);
    for (uint32_t i = 0; i < ss->n_pending; i++)
        pending_clear(&ss->pending[i]);
    free(ss->pending);
    drop_staged(ss);
    free(ss->staged);
    pending_drop(&ss->unnamed_stmt);
    pending_drop(&ss->unnamed_portal);
    free(ss);
    c->session = NULL;
}

static void mark_param(int param, bool in_use[PARAM_COUNT])
{
    if (param >= 0 && param < PARAM_COUNT)
        in_use[param] = true;
}

void client_params_in_use(const struct client *c, bool in_use[PARAM_COUNT])
{
    for (int i = 0; i < PARAM_COUNT; i++)
        if (c->params[i])
            in_use[i] = true;
    const struct client_session *ss = c->session;
    if (!ss)
        return;
    for (uint32_t i = 0; i < ss->n_startup; i++)
        mark_param(ss->startup[i].param, in_use);
    /* A SET waiting for its CommandComplete, or staged until COMMIT, names its slot too. */
    for (uint32_t i = 0; i < ss->n_pending; i++)
        mark_param(ss->pending[i].param, in_use);
    for (uint32_t i = 0; i < ss->n_staged; i++)
        mark_param(ss->staged[i].param, in_use);
    if (ss->unnamed_stmt)
        mark_param(ss->unnamed_stmt->param, in_use);
    if (ss->unnamed_portal)
        mark_param(ss->unnamed_portal->param, in_use);
}

const char *client_user_name(const struct client *c)
{
    if (c->session)
        return c->session->user;
    if (c->pool)
        return c->pool->user_name;
    return c->login && c->login->user ? c->login->user : "";
}

const char *client_database_name(const struct client *c)
{
    if (c->pool)
        return c->pool->db_name;
    return c->login && c->login->database ? c->login->database : "";
}

/* The client's startup value of a parameter, or NULL. */
static struct pstr *startup_value(const struct client *c, int param)
{
    const struct client_session *ss = c->session;
    for (uint32_t i = 0; ss && i < ss->n_startup; i++)
        if (ss->startup[i].param == param)
            return ss->startup[i].value;
    return NULL;
}

/* Records a startup value (a later one for the same parameter replaces it) and makes it the
 * client's current value. False on out of memory. */
static bool set_startup_value(struct client *c, int param, const char *value)
{
    struct client_session *ss = c->session;
    struct pstr *v = params_intern(value);
    if (!ss || !v) {
        params_unref(v);
        return false;
    }
    params_assign(&c->params[param], v);
    for (uint32_t i = 0; i < ss->n_startup; i++) {
        if (ss->startup[i].param == param) {
            params_unref(ss->startup[i].value);
            ss->startup[i].value = v;
            return true;
        }
    }
    struct startup_value *grown = realloc(ss->startup, (ss->n_startup + 1) * sizeof(*grown));
    if (!grown) {
        params_unref(v);
        return false;
    }
    ss->startup = grown;
    ss->startup[ss->n_startup++] = (struct startup_value){(int16_t)param, v};
    return true;
}

bool client_sync_server_params(struct client *c, struct server *s)
{
    if (c->session)
        c->session->resync = false;
    const struct pstr *const *want = (const struct pstr *const *)c->params;
    const struct pstr *const *have = (const struct pstr *const *)s->params;
    size_t need = params_set_len(want, have);
    if (need <= 1)
        return true;
    char *sql = malloc(need);
    if (!sql)
        return false;
    bool ok = true;
    if (params_build_set(want, have, sql, need) > 0) {
        log_debug("pool", "client %llu: varcache_apply: %s", (unsigned long long)c->id, sql);
        ok = server_send_internal_query(s, sql);
        /* The server now holds the client's values. Those it reports come back in
         * ParameterStatus (or do not, when the server's spelling means the same: see
         * take_canonical). */
        for (int i = 0; ok && i < PARAM_COUNT; i++)
            if (!params_reported(i))
                params_assign(&s->params[i], c->params[i]);
    }
    free(sql);
    return ok;
}

/* The pooler's SET is done: where the client's value and the server's of a reported
 * parameter still differ, the server did not report a change, so its value is the client's in
 * its own spelling ("ISO" is "ISO, MDY"). The client takes it, and the next comparison finds
 * them equal (PgBouncer's varcache_set_canonical). */
static void take_canonical(struct client *c, struct server *s)
{
    for (int i = 0; i < PARAM_COUNT; i++) {
        if (!params_reported(i) || !s->params[i] || c->params[i] == s->params[i])
            continue;
        log_debug("pool",
                  "client %llu: varcache_set_canonical: setting %s to its canonical version "
                  "%s -> %s",
                  (unsigned long long)c->id, params_name(i), c->params[i] ? c->params[i]->str : "",
                  s->params[i]->str);
        params_assign(&c->params[i], s->params[i]);
    }
}

/* A parameter's value for the client after RESET or SET ... TO DEFAULT: its startup value,
 * as PostgreSQL has it; without one, the server's default. The server itself went back to
 * its own login value. */
static void reset_param(struct client *c, struct server *s, int param)
{
    struct pstr *start = startup_value(c, param);
    if (params_reported(param)) {
        if (start)
            params_assign(&c->params[param], start); /* what the server reported is its own */
        return;
    }
    params_assign(&c->params[param], start);
    params_assign(&s->params[param], NULL);
}

static bool stage(struct client_session *ss, uint8_t kind, int param, struct pstr *value)
{
    struct staged *room = room_for_one(ss->staged, ss->n_staged, &ss->cap_staged, sizeof(*room));
    if (!room)
        return false;
    ss->staged = room;
    ss->staged[ss->n_staged++] = (struct staged){kind, (int16_t)param, params_ref(value)};
    return true;
}

/* The transaction of the staged changes committed: they hold now. */
static void commit_staged(struct client *c, struct server *s)
{
    struct client_session *ss = c->session;
    for (uint32_t i = 0; i < ss->n_staged; i++) {
        const struct staged *x = &ss->staged[i];
        if (x->kind == SQL_EFFECT_SET) {
            params_assign(&c->params[x->param], x->value);
            params_assign(&s->params[x->param], x->value);
        } else if (x->kind == SQL_EFFECT_SET_DEFAULT) {
            reset_param(c, s, x->param);
        } else {
            for (int p = 0; p < PARAM_COUNT; p++)
                if (params_name(p)[0])
                    reset_param(c, s, p);
        }
    }
    drop_staged(ss);
    for (int p = 0; p < PARAM_COUNT; p++)
        if (c->params[p] != s->params[p])
            ss->resync = true;
}

/* A pending entry was answered, or will never be. A named Parse that failed or was skipped
 * keeps its binding, unconfirmed: the name may be prepared again (PostgreSQL has no such
 * statement), and meanwhile a Bind to it prepares it (more lenient than PostgreSQL, which a
 * driver that misses a skipped Parse needs: psycopg 3.1 in a pipeline after an error).
 * A Parse passed through in session mode that failed loses its binding instead: the server
 * may hold an earlier statement under that name (a second Parse of a name fails), and after a
 * switch of pool mode the body remembered must never stand in for the one that ran. */
static void pending_done(struct client *c, struct pending *e, bool confirmed)
{
    if (e->kind == PENDING_PARSE) {
        struct client_stmt *cs = prepared_client_find(c->stmts, e->name);
        if (cs && cs->seq == e->seq && confirmed)
            cs->confirmed = true;
        else if (cs && cs->seq == e->seq && cs->own_server)
            prepared_client_remove(&c->pooler->stmts, &c->stmts, e->name);
    }
    pending_clear(e);
}

/* Removes pending entry i. */
static void pending_remove(struct client *c, uint32_t i, bool confirmed)
{
    struct client_session *ss = c->session;
    pending_done(c, &ss->pending[i], confirmed);
    memmove(ss->pending + i, ss->pending + i + 1, (ss->n_pending - i - 1) * sizeof(*ss->pending));
    ss->n_pending--;
}

static bool pending_push(struct client *c, const struct pending *e)
{
    struct client_session *ss = c->session;
    if (!ss || ss->n_pending >= MAX_PENDING)
        return false;
    struct pending *room =
        room_for_one(ss->pending, ss->n_pending, &ss->cap_pending, sizeof(*room));
    if (!room)
        return false;
    ss->pending = room;
    struct pending *slot = &ss->pending[ss->n_pending];
    slot->kind = PENDING_NONE;
    slot->value = NULL;
    slot->name = NULL;
    if (!pending_copy(slot, e))
        return false;
    ss->n_pending++;
    return true;
}

/* The first pending entry of the request being answered now that a ParseComplete (parse) or
 * a CommandComplete with an effect's tag (!parse) would answer, or -1. */
static int pending_first(const struct client_session *ss, bool parse)
{
    for (uint32_t i = 0; i < ss->n_pending; i++) {
        const struct pending *e = &ss->pending[i];
        if ((e->kind == PENDING_PARSE) != parse)
            continue;
        return e->group == ss->answered + 1 ? (int)i : -1;
    }
    return -1;
}

/* A statement's effect as a pending entry (not yet confirmed). */
static void effect_entry(const struct sql_effect *e, uint32_t group, struct pending *out)
{
    memset(out, 0, sizeof(*out));
    out->group = group;
    out->kind = (uint8_t)e->kind;
    out->tag = (uint8_t)e->tag;
    out->param = -1;
    if (e->kind == SQL_EFFECT_SET || e->kind == SQL_EFFECT_SET_DEFAULT) {
        int p = params_lookup(e->name);
        out->param = (int16_t)p;
        /* A parameter the server reports is followed through its reports; of the others,
         * those the pooler keeps (someone's startup value) through the statement. */
        if (p >= 0 && e->kind == SQL_EFFECT_SET && !params_reported(p))
            out->value = params_intern_sql(e->value, e->value_len);
    }
    if (e->kind == SQL_EFFECT_DEALLOCATE)
        out->name = strdup(e->name); /* NULL on out of memory: then no effect */
}

struct scan_ctx {
    struct client *c;
    uint32_t group;
    struct pending *first; /* a Parse: its one statement goes here */
};

static void on_effect(void *arg, const struct sql_effect *e)
{
    struct scan_ctx *x = arg;
    struct pending entry;
    effect_entry(e, x->group, &entry);
    if (x->first) {
        if (x->first->kind == PENDING_NONE)
            *x->first = entry;
        else
            pending_clear(&entry);
        return;
    }
    if (!pending_push(x->c, &entry))
        log_debug("pool", "client %llu: statement effect not followed (too many pending)",
                  (unsigned long long)x->c->id);
    pending_clear(&entry);
}

/* SQL text of the client's, in a Query (out NULL: its statements are pushed) or a Parse (out:
 * its statement's effect). */
static void scan_sql(struct client *c, const uint8_t *text, uint32_t len, uint32_t group,
                     struct pending *out)
{
    const struct pstr *scs = c->params[PARAM_STANDARD_CONFORMING_STRINGS];
    struct scan_ctx x = {c, group, out};
    const char *t = (const char *)text;
    size_t n = strnlen(t, len); /* the text ends at its NUL */
    sql_effects_scan(t, n, scs && !strcmp(scs->str, "off"), on_effect, &x);
}

/* A message the client's scan forwards to its server: a transaction may start; requests are
 * counted; SQL text, the unnamed statement and portal, and Execute are followed. body holds
 * have bytes of the len of the message. */
static void note_client_message(struct client *c, uint8_t type, const uint8_t *body, uint32_t have,
                                uint32_t len)
{
    /* In session pooling the server stays: a transaction starts with the first message
     * after the last one ended (client_end_transaction). */
    if (!c->request_us)
        c->request_us = pooler_now(c->pooler);
    struct client_session *ss = c->session;
    if (!ss)
        return;
    bool whole = have >= len;
    switch (type) {
    case WIRE_FE_QUERY:
        ss->sent++;
        if (whole && len > 0)
            scan_sql(c, body, len, ss->sent, NULL);
        return;
    case WIRE_FE_FUNCTION_CALL:
    case WIRE_FE_SYNC:
        ss->sent++;
        return;
    case WIRE_FE_PARSE: {
        if (have < 1 || body[0] != 0)
            return; /* a named statement's SET is not followed */
        pending_drop(&ss->unnamed_stmt);
        struct pending e = {.kind = PENDING_NONE};
        if (whole && len > 1)
            scan_sql(c, body + 1, len - 1, 0, &e);
        if (e.kind != PENDING_NONE && (ss->unnamed_stmt = malloc(sizeof(e))) != NULL)
            *ss->unnamed_stmt = e; /* the references move */
        else
            pending_clear(&e);
        return;
    }
    case WIRE_FE_BIND:
        if (have < 2 || body[0] != 0)
            return;
        pending_drop(&ss->unnamed_portal);
        if (body[1] == 0 && ss->unnamed_stmt &&
            (ss->unnamed_portal = malloc(sizeof(*ss->unnamed_portal))) != NULL) {
            ss->unnamed_portal->kind = PENDING_NONE;
            ss->unnamed_portal->value = NULL;
            ss->unnamed_portal->name = NULL;
            if (!pending_copy(ss->unnamed_portal, ss->unnamed_stmt))
                pending_drop(&ss->unnamed_portal);
        }
        return;
    case WIRE_FE_EXECUTE:
        if (have >= 1 && body[0] == 0 && ss->unnamed_portal) {
            ss->unnamed_portal->group = ss->sent + 1;
            (void)pending_push(c, ss->unnamed_portal); /* copies it */
        }
        return;
    default:
        return;
    }
}

/* A CommandComplete of the client's own: the effect it confirms. */
static void effect_confirmed(struct client *c, enum sql_tag tag)
{
    struct client_session *ss = c->session;
    int i = pending_first(ss, false);
    if (i < 0)
        return; /* a statement the scan did not see (a named statement's, say) */
    struct pending *e = &ss->pending[i];
    if (e->tag != tag) {
        /* The answers and the statements the scan found disagree: believe none of them. */
        log_debug("pool", "client %llu: statement effects out of step; not followed",
                  (unsigned long long)c->id);
        for (uint32_t k = ss->n_pending; k-- > 0;)
            if (ss->pending[k].kind != PENDING_PARSE)
                pending_remove(c, k, false);
        return;
    }
    struct stmt_registry *reg = &c->pooler->stmts;
    switch ((enum sql_effect_kind)e->kind) {
    case SQL_EFFECT_SET:
        if (e->value && e->param >= 0)
            (void)stage(ss, SQL_EFFECT_SET, e->param, e->value);
        break;
    case SQL_EFFECT_SET_DEFAULT:
        if (e->param >= 0)
            (void)stage(ss, SQL_EFFECT_SET_DEFAULT, e->param, NULL);
        break;
    case SQL_EFFECT_DISCARD_ALL:
        prepared_client_free_all(reg, &c->stmts);
        (void)stage(ss, SQL_EFFECT_RESET_ALL, -1, NULL);
        break;
    case SQL_EFFECT_RESET_ALL:
        (void)stage(ss, SQL_EFFECT_RESET_ALL, -1, NULL);
        break;
    case SQL_EFFECT_DEALLOCATE:
        if (e->name)
            prepared_client_remove(reg, &c->stmts, e->name);
        break;
    case SQL_EFFECT_DEALLOCATE_ALL:
        prepared_client_free_all(reg, &c->stmts);
        break;
    case SQL_EFFECT_SET_OTHER:
        break;
    }
    pending_remove(c, (uint32_t)i, true);
}

void client_end_transaction(struct client *c)
{
    if (!c->request_us)
        return;
    struct pool *pool = c->pool;
    int64_t took = pooler_now(c->pooler) - c->request_us;
    c->xacts++;
    c->hold_us += took;
    pool->stats.xact_count++;
    pool->stats.xact_time_us += took;
    histogram_observe(&pool->stats.xact_hist, took);
    c->request_us = 0;
}

/* The ReadyForQuery of the client's request: what it left pending will never be answered;
 * at the end of a transaction, its staged changes hold or are undone, and the transaction is
 * counted (in session pooling too, where the server stays). */
static void request_answered(struct client *c, struct server *s, uint8_t status)
{
    struct client_session *ss = c->session;
    ss->answered++;
    bool idle = owed_is_idle(&s->owed);
    if (idle)
        ss->answered = ss->sent; /* nothing else is owed: a miscount (COPY) ends here */
    for (uint32_t k = ss->n_pending; k-- > 0;)
        if (idle || (int32_t)(ss->pending[k].group - ss->answered) <= 0)
            pending_remove(c, k, false);
    if (status != WIRE_XACT_IDLE)
        return;
    client_end_transaction(c);
    if (!ss->xact_failed)
        commit_staged(c, s);
    drop_staged(ss);
    ss->xact_failed = false;
}

/* The client's server was taken back (its transaction rolled back): nothing it sent is
 * pending any more, and what it changed in the transaction is undone. */
static void forget_requests(struct client *c)
{
    struct client_session *ss = c->session;
    if (!ss)
        return;
    for (uint32_t k = ss->n_pending; k-- > 0;)
        pending_remove(c, k, false);
    drop_staged(ss);
    ss->answered = ss->sent;
    ss->xact_failed = false;
}

void client_note_server_message(struct server *s, bool ours, uint8_t type, const uint8_t *body,
                                uint32_t len)
{
    struct client *c = s->client;
    if (type == WIRE_BE_COMMAND_COMPLETE && !c && body) {
        /* The reset query (DISCARD ALL, RESET ALL) on a released server: it is back at its
         * login values, of those it does not report too. */
        enum sql_tag tag = sql_effects_tag_of((const char *)body, len);
        if (tag == SQL_TAG_DISCARD_ALL || tag == SQL_TAG_RESET)
            for (int p = 0; p < PARAM_COUNT; p++)
                if (!params_reported(p))
                    params_assign(&s->params[p], NULL);
        return;
    }
    if (!c || !c->session)
        return;
    struct client_session *ss = c->session;
    switch (type) {
    case WIRE_BE_PARAMETER_STATUS: {
        const char *name, *value;
        int id;
        if (!body || !wire_parse_parameter_status(body, len, &name, &value) ||
            (id = params_lookup(name)) < 0)
            return;
        /* The client's own SET, a ROLLBACK, or the pooler's SET (in the server's spelling of
         * the client's value): the client has the server's value from now on. */
        params_set(&c->params[id], value);
        return;
    }
    case WIRE_BE_COMMAND_COMPLETE: {
        if (!ours || !body)
            return;
        enum sql_tag tag = sql_effects_tag_of((const char *)body, len);
        if (tag != SQL_TAG_NONE)
            effect_confirmed(c, tag);
        else if (len >= 8 && !memcmp(body, "ROLLBACK", 8))
            ss->xact_failed = true;
        return;
    }
    case WIRE_BE_PARSE_COMPLETE: {
        int i = ours ? pending_first(ss, true) : -1;
        if (i >= 0)
            pending_remove(c, (uint32_t)i, true);
        return;
    }
    case WIRE_BE_ERROR:
        if (ours)
            ss->xact_failed = true;
        return;
    case WIRE_BE_READY_FOR_QUERY:
        if (ours && body && len >= 1)
            request_answered(c, s, body[0]);
        else if (!ours && s->internal_pending == 1)
            take_canonical(c, s); /* the end of the pooler's last query: its SET */
        return;
    default:
        return;
    }
}

/* ---- welcome ---- */

static void finish_login_with(struct client *c, const uint8_t *prefix, size_t prefix_len);
static bool take_deferred_params(struct client *c);

void client_finish_login(struct client *c)
{
    finish_login_with(c, NULL, 0);
}

/* Sends prefix (AuthenticationOk when called from auth_done), the welcome, BackendKeyData
 * and ReadyForQuery in one send. */
/* Ends a welcome built in b (over out, owned: freed here) with BackendKeyData and
 * ReadyForQuery, sends it and makes the client active: what it pipelined after its login is
 * forwarded from here on. */
static void send_welcome(struct client *c, struct wire_buf *b, uint8_t *out)
{
    wire_build_backend_key(b, c->cancel_pid, c->cancel_key);
    wire_build_ready(b, WIRE_XACT_IDLE);
    bool ok = !b->overflow && client_send_raw(c, out, b->len);
    free(out);
    if (!ok) {
        objects_client_close(c, "could not send welcome");
        return;
    }
    if (c->conn.buf) {
        if (c->conn.buf->pos == c->conn.buf->end)
            c->conn.buf->pos = c->conn.buf->end = 0;
        c->conn.scan = c->conn.buf->pos;
    }
    states_client_change(c, CL_ACTIVE);
    client_pump(c);
}

/* The next ParameterStatus of the pool's welcome from *pos on (which it moves past it):
 * false at the end. */
static bool welcome_next(const struct pool *pool, size_t *pos, const char **name,
                         const char **value)
{
    while (*pos + WIRE_HEADER_LEN <= pool->welcome_len) {
        uint32_t len = wire_get_u32(pool->welcome + *pos + 1);
        const uint8_t *body = pool->welcome + *pos + WIRE_HEADER_LEN;
        *pos += 1 + len;
        if (wire_parse_parameter_status(body, len - 4, name, value))
            return true;
    }
    return false;
}

/* Whether the pool's welcome reports parameter name with this value. */
static bool welcome_reports(const struct pool *pool, const char *name, const char *value)
{
    const char *n, *v;
    for (size_t pos = 0; welcome_next(pool, &pos, &n, &v);)
        if (!strcmp(n, name))
            return !strcmp(v, value);
    return false;
}

/* The first of the client's startup values its servers could not take, or NULL. Each goes to
 * them in a SET, which a UTF8 server refuses when the text is not UTF-8: the client was ended
 * at its first query with a bare "server connection failed" and a server was closed. Told at
 * login instead, with the parameter's name. Single-byte encodings take any byte, SQL_ASCII
 * anything: only a UTF8 server is checked. */
static const char *unencodable_startup_value(const struct client *c)
{
    const struct client_session *ss = c->session;
    if (!ss || !welcome_reports(c->pool, "server_encoding", "UTF8"))
        return NULL;
    for (uint32_t i = 0; i < ss->n_startup; i++)
        if (!utf8_is_valid(ss->startup[i].value->str, ss->startup[i].value->len))
            return params_name(ss->startup[i].param);
    return NULL;
}

static void finish_login_with(struct client *c, const uint8_t *prefix, size_t prefix_len)
{
    struct pool *pool = c->pool;
    const char *unencodable = unencodable_startup_value(c);
    if (unencodable) {
        objects_client_fail(c, "22021",
                            "invalid byte sequence for encoding \"UTF8\" in startup parameter "
                            "\"%s\"",
                            unencodable);
        return;
    }
    size_t cap = pool->welcome_len + 64 + prefix_len;
    for (int i = 0; i < PARAM_COUNT; i++) {
        if (!c->params[i] && pool->defaults[i])
            c->params[i] = params_ref(pool->defaults[i]);
        if (c->params[i])
            cap += c->params[i]->len + strlen(params_name(i)) + 8;
    }
    uint8_t *out = malloc(cap);
    if (!out) {
        objects_client_fail(c, "53200", "out of memory");
        return;
    }
    struct wire_buf b;
    wire_buf_init(&b, out, cap);
    wire_put_bytes(&b, prefix, prefix_len);
    /* The pool's welcome, with the client's own values where it asked for them. The server
     * reports what the welcome names: parameters with a slot among them are followed through
     * its reports (and a slot given after the pool's first login takes its value here). */
    bool sent[PARAM_COUNT] = {false};
    const char *name, *value;
    for (size_t pos = 0; welcome_next(pool, &pos, &name, &value);) {
        int id = params_lookup(name);
        if (id >= 0) {
            params_mark_reported(id);
            if (!c->params[id])
                params_set(&c->params[id], value);
            if (c->params[id]) {
                value = c->params[id]->str;
                sent[id] = true;
            }
        }
        wire_build_parameter_status(&b, name, value);
    }
    for (int i = 0; i < PARAM_COUNT; i++)
        if (!sent[i] && c->params[i] && params_tracked(i))
            wire_build_parameter_status(&b, params_name(i), c->params[i]->str);
    send_welcome(c, &b, out);
}

void client_finish_replication_login(struct client *c, const uint8_t *params, size_t params_len)
{
    /* The server's ParameterStatus messages as they are: the walsender was started with this
     * client's settings, so its reports are the client's values. */
    size_t cap = params_len + 32;
    uint8_t *out = malloc(cap);
    if (!out) {
        objects_client_fail(c, "53200", "out of memory");
        return;
    }
    struct wire_buf b;
    wire_buf_init(&b, out, cap);
    wire_put_bytes(&b, params, params_len);
    send_welcome(c, &b, out);
}

void client_want_writable(struct client *c)
{
    c->conn.want_write = true; /* before the registration (first read): registered RW */
    net_io_want_write(c->conn.io);
}

bool client_send_raw(struct client *c, const void *data, size_t len)
{
    /* Inside the TLS handshake nothing can be sent: not in the clear, not encrypted yet. */
    if (c->login && c->login->step == STEP_TLS_HANDSHAKE)
        return false;
    return conn_send_all(&c->conn, data, len);
}

static void send_or_close(struct client *c, struct wire_buf *b)
{
    if (b->overflow || !client_send_raw(c, b->data, b->len))
        objects_client_close(c, "could not send to client");
}

/* Authentication succeeded (or trust): resolve the database, join the pool, greet. */
static void console_login(struct client *c, const uint8_t *sasl_final, size_t sasl_final_len)
{
    struct pooler *p = c->pooler;
    struct client_login *l = c->login;
    enum console_access access =
        l->peer_access != CONSOLE_DENIED ? l->peer_access : console_access_for(p->cfg, l->user);
    if (access == CONSOLE_DENIED || !p->admin_pool) {
        objects_client_fail(c, "28000", "not allowed to use the admin console");
        return;
    }
    /* Stats users count against the client limits, admins do not (PgBouncer); the console
     * stays open while the pooler shuts down. */
    const char *sqlstate;
    bool limited = access != CONSOLE_ADMIN &&
                   (p->run_state == POOLER_RUNNING || p->run_state == POOLER_PAUSED ||
                    p->run_state == POOLER_SUSPENDED);
    const char *refusal = limited ? objects_login_refusal(p->admin_pool, l->user, &sqlstate) : NULL;
    if (refusal) {
        objects_client_fail(c, sqlstate, "%s", refusal);
        return;
    }
    log_info("pool", "client %llu: admin console login user=%s (%s)", (unsigned long long)c->id,
             l->user, access == CONSOLE_ADMIN ? "admin" : "stats");
    c->console_access = (uint8_t)access;
    c->pool = p->admin_pool;
    p->admin_pool->n_clients++;
    login_free(c);
    struct console_out o;
    console_out_init(&o);
    uint8_t auth[SCRAM_OUT_MAX + 64];
    struct wire_buf b;
    wire_buf_init(&b, auth, sizeof(auth));
    if (sasl_final)
        wire_build_auth_sasl_final(&b, sasl_final, sasl_final_len);
    wire_build_auth_ok(&b);
    uint8_t tail[32];
    struct wire_buf t;
    wire_buf_init(&t, tail, sizeof(tail));
    wire_build_backend_key(&t, 0, 0);
    wire_build_ready(&t, WIRE_XACT_IDLE);
    console_welcome(&o, c->params[PARAM_APPLICATION_NAME] ? c->params[PARAM_APPLICATION_NAME]->str
                                                          : NULL);
    bool ok = !o.buf.overflow && !b.overflow && client_send_raw(c, auth, b.len) &&
              client_send_raw(c, o.buf.data, o.buf.len) && client_send_raw(c, tail, t.len);
    console_out_free(&o);
    if (!ok) {
        objects_client_close(c, "could not send to client");
        return;
    }
    states_client_change(c, CL_WAITING_LOGIN);
    states_client_change(c, CL_ACTIVE);
    if (c->conn.buf) {
        if (c->conn.buf->pos == c->conn.buf->end)
            c->conn.buf->pos = c->conn.buf->end = 0;
        c->conn.scan = c->conn.buf->pos;
    }
    client_pump(c);
}

static void auth_done(struct client *c, const uint8_t *sasl_final, size_t sasl_final_len)
{
    struct pooler *p = c->pooler;
    struct client_login *l = c->login;
    if (console_is_admin_db(l->database)) {
        console_login(c, sasl_final, sasl_final_len);
        return;
    }
    const struct pooler_db_config *db = pooler_config_find_db(p->cfg, l->database);
    if (!db) {
        objects_client_fail(c, "3D000", "no such database: %s", l->database);
        return;
    }
    if (!take_deferred_params(c))
        return;
    struct pool *pool = objects_pool_get(p, db, l->database, l->user);
    if (!pool) {
        objects_client_fail(c, "53200", "out of memory");
        return;
    }
    if (pool->db_disabled) {
        objects_client_fail(
            c, "57P03", "database \"%s\" is disabled (DISABLE on the admin console)", l->database);
        return;
    }
    const char *sqlstate;
    const char *refusal = objects_login_refusal(pool, l->user, &sqlstate);
    if (refusal) {
        objects_client_fail(c, sqlstate, "%s", refusal);
        return;
    }
    /* A secret auth_query found is the server's own: the pool logs in with it (md5) or with
     * the keys below (SCRAM), as it would with an auth_file entry. */
    if (l->looked_up && !pool->forced_user && l->secret &&
        (!pool->password || strcmp(pool->password, l->secret) != 0)) {
        char *copy = strdup(l->secret);
        if (copy) {
            if (pool->password) {
                OPENSSL_cleanse(pool->password, strlen(pool->password));
                free(pool->password);
            }
            pool->password = copy;
            pool->password_looked_up = true;
            objects_pool_forget_scram_keys(pool);
        }
    }
    /* SCRAM pass-through: the ClientKey recovered from this client logs us in to PostgreSQL
     * when the auth_file (or auth_query) holds the same SCRAM secret the server uses. */
    if (l->scram.have_client_key && pool->password && scram_is_secret(pool->password) &&
        l->secret && !strcmp(l->secret, pool->password)) {
        /* A login that failed without these keys (none yet, or ones from before the
         * password changed) says nothing about a login with them. */
        if (!pool->have_scram_keys ||
            CRYPTO_memcmp(pool->scram_client_key, l->scram.client_key, SCRAM_KEY_LEN) != 0)
            objects_pool_forget_login_failure(pool);
        memcpy(pool->scram_client_key, l->scram.client_key, SCRAM_KEY_LEN);
        memcpy(pool->scram_server_key, l->scram.secret.server_key, SCRAM_KEY_LEN);
        pool->have_scram_keys = true;
    }
    c->pool = pool;
    pool->n_clients++;
    pool->stats.clients_created++;
    if (p->cfg->log_connections) {
        char addr[64], tls[128] = "";
        net_addr_format(&c->addr, addr, sizeof(addr));
        if (c->conn.tls) /* PgBouncer's "tls=TLSv1.3/TLS_AES_256_GCM_SHA384/ECDH=X25519" */
            tls_describe(c->conn.tls, tls, sizeof(tls));
        log_info("pool", "client %llu %s login db=%s user=%s%s%s", (unsigned long long)c->id, addr,
                 l->database, l->user, tls[0] ? " tls=" : "", tls);
    }
    login_free(c);
    cancel_register_client(c);

    uint8_t out[SCRAM_OUT_MAX + 64];
    struct wire_buf b;
    wire_buf_init(&b, out, sizeof(out));
    if (sasl_final)
        wire_build_auth_sasl_final(&b, sasl_final, sasl_final_len);
    wire_build_auth_ok(&b);
    /* A replication client waits for a server of its own (handout_activate launches it) and
     * is greeted with that server's parameters (client_finish_replication_login). */
    if (pool->welcome_ready && c->replication == STARTUP_REPLICATION_NONE && !b.overflow) {
        /* One send for AuthenticationOk and the welcome: the pooled login path is short. */
        states_client_change(c, CL_WAITING_LOGIN);
        finish_login_with(c, out, b.len);
        return;
    }
    send_or_close(c, &b);
    if (c->state == CL_JUSTFREE)
        return;
    states_client_change(c, CL_WAITING_LOGIN);
    if (pool->retry_after_us > pooler_now(p) && pool->last_error && pool->n_servers == 0) {
        objects_client_fail(c, pool->last_sqlstate, "%s", pool->last_error);
        return;
    }
    handout_activate(pool);
}

static void auth_failed(struct client *c)
{
    objects_client_fail(c, "28P01", "password authentication failed for user \"%s\"",
                        c->login->user);
}

/* PgBouncer's words for a failed SCRAM exchange first, then PostgreSQL's. */
static void sasl_failed(struct client *c)
{
    objects_client_fail(
        c, "28P01", "SASL authentication failed: password authentication failed for user \"%s\"",
        c->login->user);
}

/* ---- TLS ---- */

/* The context a client's TLS uses: none over a unix socket (as PgBouncer and PostgreSQL), nor
 * when client_tls_sslmode = disable. */
static struct tls_context *client_tls_context(const struct client *c)
{
    return c->addr.family == AF_UNIX ? NULL : c->pooler->client_tls;
}

static void log_tls_failure(const struct client *c, const char *what, const char *why)
{
    char addr[64];
    net_addr_format(&c->addr, addr, sizeof(addr));
    log_warning("pool", "client %llu %s: %s: %s", (unsigned long long)c->id, addr, what, why);
}

/* Puts TLS on the client's socket; the handshake runs in login_pump. preread: what was read
 * of a direct-TLS ClientHello. False after closing the client. */
static bool start_tls(struct client *c, const uint8_t *preread, size_t preread_len, bool direct)
{
    char err[256];
    c->conn.tls = tls_conn_new(c->pooler->client_tls, c->conn.fd, NULL, preread, preread_len, err,
                               sizeof(err));
    if (!c->conn.tls) {
        log_tls_failure(c, "cannot start TLS", err);
        objects_client_close(c, "cannot start TLS");
        return false;
    }
    c->login->step = STEP_TLS_HANDSHAKE;
    c->login->tls_direct = direct;
    return true;
}

/* Advances the handshake; true once it is done and the startup packet may be read (over TLS).
 * False while it waits for an edge, or after closing the client (state JUSTFREE). A failure
 * is logged, never answered: nothing can be sent in the clear once TLS was agreed. */
static bool client_tls_handshake(struct client *c)
{
    switch (tls_handshake(c->conn.tls)) {
    case TLS_IO_DONE:
        break;
    case TLS_IO_WANT_READ:
        c->conn.may_read = false; /* the socket is drained: the next readable edge resumes */
        return false;
    case TLS_IO_WANT_WRITE:
        client_want_writable(c); /* client_io_cb pumps a login on any edge */
        return false;
    case TLS_IO_EOF:
    case TLS_IO_ERROR:
        log_tls_failure(c, "TLS handshake failed", tls_error(c->conn.tls));
        objects_client_close(c, "TLS handshake failed");
        return false;
    }
    /* Direct TLS is told from a plain connection by ALPN alone (PostgreSQL 17's rule). */
    if (c->login->tls_direct && !tls_alpn_selected(c->conn.tls)) {
        conn_tls_book_failure(&c->conn, &c->pooler->tls_client_counts, TLS_FAILURE_PROTOCOL);
        log_tls_failure(c, "direct TLS refused", "the client did not offer ALPN \"postgresql\"");
        objects_client_close(c, "direct TLS without ALPN");
        return false;
    }
    conn_tls_book_ok(&c->conn, &c->pooler->tls_client_counts);
    char desc[128];
    tls_describe(c->conn.tls, desc, sizeof(desc));
    log_debug("pool", "client %llu: TLS established%s: %s", (unsigned long long)c->id,
              c->login->tls_direct ? " (direct)" : "", desc);
    c->login->step = STEP_STARTUP;
    /* Its startup packet often came with the handshake's last records: that edge is spent. */
    c->conn.may_read = true;
    return true;
}

/* Answers an SSLRequest or GSSENCRequest: 'S' and TLS when a context is there (TCP only),
 * else 'N'. extra: bytes that followed the request in the buffer. */
static void answer_encryption_request(struct client *c, enum wire_startup_kind kind, size_t extra)
{
    bool *asked = kind == WIRE_STARTUP_SSL ? &c->login->ssl_asked : &c->login->gss_asked;
    /* Bytes sent before our answer would be read as if they came after the handshake
     * (CVE-2021-23214 class): refuse them. */
    if (extra > 0) {
        objects_client_fail(c, "08P01", "unexpected data after encryption request");
        return;
    }
    if (c->conn.tls) {
        objects_client_fail(c, "08P01", "encryption request inside an encrypted connection");
        return;
    }
    if (*asked) { /* PostgreSQL refuses a second one too: it could go on for ever */
        objects_client_fail(c, "08P01", "encryption requested twice");
        return;
    }
    *asked = true;
    if (kind == WIRE_STARTUP_SSL && client_tls_context(c)) {
        if (!client_send_raw(c, "S", 1))
            objects_client_close(c, "could not answer encryption request");
        else
            (void)start_tls(c, NULL, 0, false);
    } else if (!client_send_raw(c, "N", 1)) {
        objects_client_close(c, "could not answer encryption request");
    }
}

/* ---- startup ---- */

/* PostgreSQL's pg_clean_ascii (16 and later), which its application_name check applies: each
 * byte outside printable ASCII becomes "\xNN". The pooler gives a client's application_name
 * to its servers in a SET, whose text the server refuses when it is not valid in its encoding
 * (a Latin-1 name from a client): cleaned first, it is what the server would keep anyway, and
 * the client is told the value its servers hold. NULL on out of memory; freed by the
 * caller. */
static char *clean_ascii(const char *value)
{
    size_t n = strlen(value);
    char *out = malloc(4 * n + 1), *o = out;
    if (!out)
        return NULL;
    for (const unsigned char *v = (const unsigned char *)value; *v; v++) {
        if (*v < 32 || *v > 126)
            o += snprintf(o, 5, "\\x%02x", *v);
        else
            *o++ = (char)*v;
    }
    *o = '\0';
    return out;
}

/* One startup parameter (from the packet, or from "options" when in_options): the five and
 * track_extra_parameters are always taken, names in ignore_startup_parameters are dropped
 * (from "options" too, everything untracked when "options" itself is listed), and any other
 * is taken too, the pooler setting it on every server the client is given (a name new to the
 * pooler once the client has authenticated). False after failing the client. */
static bool take_param(struct client *c, const char *name, const char *value, bool in_options)
{
    const char *ignore = c->pooler->cfg->ignore_startup_parameters;
    int id = params_lookup(name);
    if (id < 0 || !params_tracked(id)) {
        if (name_listed(ignore, name) || (in_options && name_listed(ignore, "options"))) {
            log_debug("pool", "client %llu: ignoring startup parameter %.64s",
                      (unsigned long long)c->id, name);
            return true;
        }
    }
    if (id < 0 && !params_valid_name(name)) {
        objects_client_fail(c, "08P01", "invalid startup parameter name: %.64s", name);
        return false;
    }
    if (id < 0) {
        struct client_login *l = c->login;
        char **grown = realloc(l->deferred, 2 * (l->n_deferred + 1) * sizeof(*grown));
        if (grown)
            l->deferred = grown;
        char *n = grown ? strdup(name) : NULL, *v = n ? strdup(value) : NULL;
        if (!v) {
            free(n);
            objects_client_fail(c, "53200", "out of memory");
            return false;
        }
        l->deferred[2 * l->n_deferred] = n;
        l->deferred[2 * l->n_deferred + 1] = v;
        l->n_deferred++;
        return true;
    }
    char *clean = NULL;
    if (id == PARAM_APPLICATION_NAME && !(value = clean = clean_ascii(value))) {
        objects_client_fail(c, "53200", "out of memory");
        return false;
    }
    bool ok = set_startup_value(c, id, value);
    free(clean);
    if (!ok) {
        objects_client_fail(c, "53200", "out of memory");
        return false;
    }
    return true;
}

/* application_name_add_host: PgBouncer's "NAME - ADDRESS:PORT" ("app" for a client that sent
 * no name; "unix(PID@HOST):PORT" over the unix socket), set once at the start, so the server's
 * pg_stat_activity tells where a session comes from. False after failing the client. */
static bool add_host_to_application_name(struct client *c)
{
    char where[160];
    if (c->addr.family == AF_UNIX) {
        pid_t pid = 0;
        char host[64] = "";
        (void)net_peer_pid(c->conn.fd, &pid);
        if (gethostname(host, sizeof(host) - 1) != 0)
            snprintf(host, sizeof(host), "somehost");
        snprintf(where, sizeof(where), "unix(%ld@%s):%d", (long)pid, host,
                 c->pooler->cfg->listen_port);
    } else {
        net_addr_format(&c->addr, where, sizeof(where));
    }
    const struct pstr *own = startup_value(c, PARAM_APPLICATION_NAME);
    char name[400];
    /* Cut to fit, as PgBouncer's: the name is ASCII (clean_ascii), so never inside a
     * character. */
    snprintf(name, sizeof(name), "%s - %s", own ? own->str : "app", where);
    if (!set_startup_value(c, PARAM_APPLICATION_NAME, name)) {
        objects_client_fail(c, "53200", "out of memory");
        return false;
    }
    return true;
}

/* The client authenticated: its parameters without a slot get one. False after failing it. */
static bool take_deferred_params(struct client *c)
{
    struct client_login *l = c->login;
    for (uint32_t i = 0; i < l->n_deferred; i++) {
        const char *name = l->deferred[2 * i], *value = l->deferred[2 * i + 1];
        int id = params_register(name);
        if (id < 0 && params_valid_name(name)) {
            /* Every slot is taken: those of names no client, server or pool holds a value for
             * any more (the clients that brought them left) make room. */
            bool in_use[PARAM_COUNT] = {false};
            objects_params_in_use(c->pooler, in_use);
            int freed = params_recycle(in_use);
            if (freed > 0)
                log_debug("pool", "client %llu: %d parameter slots no value refers to recycled",
                          (unsigned long long)c->id, freed);
            id = params_register(name);
        }
        if (id < 0) {
            objects_client_fail(
                c, "53400",
                "too many different startup parameters in use (pgwarden follows %d; "
                "ignore_startup_parameters can drop some): %.64s",
                PARAM_COUNT, name);
            return false;
        }
        if (!set_startup_value(c, id, value)) {
            objects_client_fail(c, "53200", "out of memory");
            return false;
        }
    }
    return true;
}

struct options_ctx {
    struct client *c;
    bool failed; /* the client was failed */
};

static bool take_option(void *arg, const char *name, const char *value)
{
    struct options_ctx *x = arg;
    if (!strcmp(name, "user") || !strcmp(name, "database") || !strcmp(name, "options") ||
        !strcmp(name, "replication") || !strncmp(name, "_pq_.", 5)) {
        objects_client_fail(x->c, "08P01", "unsupported startup parameter in options: %.64s", name);
        x->failed = true;
        return false;
    }
    if (!take_param(x->c, name, value, true)) {
        x->failed = true;
        return false;
    }
    return true;
}

/* The "options" startup parameter's settings (libpq's PGOPTIONS). False after failing the
 * client. */
static bool take_options(struct client *c, const char *options)
{
    size_t n = strlen(options) + 1; /* an unescaped word is never longer */
    char *scratch = malloc(n);
    if (!scratch) {
        objects_client_fail(c, "53200", "out of memory");
        return false;
    }
    struct options_ctx x = {c, false};
    enum startup_options_result r = startup_options_parse(options, scratch, n, take_option, &x);
    free(scratch);
    if (x.failed)
        return false;
    if (r != STARTUP_OPTIONS_OK) {
        objects_client_fail(c, "08P01", "%s", startup_options_error(r));
        return false;
    }
    return true;
}

/* ---- which method, and identities proven by the connection ---- */

/* The method each global auth_type stands for (auth_type = hba asks auth_hba_file). */
static const enum hba_method GLOBAL_METHOD[] = {
    [POOLER_AUTH_TRUST] = HBA_TRUST, [POOLER_AUTH_PLAIN] = HBA_PASSWORD,
    [POOLER_AUTH_MD5] = HBA_MD5,     [POOLER_AUTH_SCRAM] = HBA_SCRAM,
    [POOLER_AUTH_CERT] = HBA_CERT,   [POOLER_AUTH_PEER] = HBA_PEER,
};

/* What c must pass to log in as user to database; *rule is the HBA line that decided (NULL
 * without auth_type = hba, or when no line matched: then the answer is reject). The rule is
 * borrowed from the running config: use it before returning to the loop. */
static enum hba_method login_method(const struct client *c, const char *database, const char *user,
                                    const struct hba_rule **rule)
{
    const struct pooler_config *cfg = c->pooler->cfg;
    *rule = NULL;
    if (cfg->auth_type != POOLER_AUTH_HBA)
        return GLOBAL_METHOD[cfg->auth_type];
    struct hba_request req = {
        .unix_socket = c->addr.family == AF_UNIX,
        .tls = c->conn.tls != NULL,
        .family = c->addr.family,
        .addr = c->addr.ip,
        .database = database,
        .user = user,
        /* Physical replication matches only lines whose database is "replication"; a
         * logical walsender is a connection to its database (PostgreSQL's rule). */
        .replication = c->replication == STARTUP_REPLICATION_PHYSICAL,
    };
    return hba_decide(&cfg->hba, &req, rule);
}

/* PgBouncer's rule for methods that check no password: with an auth_file, only the users it
 * lists may log in (the console goes by admin_users and stats_users instead). */
static bool user_known(const struct client *c, const char *database, const char *user)
{
    const struct pooler_config *cfg = c->pooler->cfg;
    return !cfg->auth_file || !cfg->auth_file[0] || console_is_admin_db(database) ||
           auth_file_lists(&cfg->auth, user) || c->login->lookup_found;
}

/* cert: the verified client certificate's common name; peer: the unix socket peer's Unix
 * user. Either must be user itself, or map to it through the line's map= (auth_ident_file). */
static bool identity_proven(const struct client *c, enum hba_method method,
                            const struct hba_rule *rule, const char *user)
{
    const struct pooler_config *cfg = c->pooler->cfg;
    char name[256];
    const char *who = NULL;
    if (method == HBA_CERT) {
        if (c->conn.tls && tls_peer_cn(c->conn.tls, name, sizeof(name)))
            who = name;
    } else {
        uid_t uid;
        struct passwd pw, *found = NULL;
        char pwbuf[1024];
        if (c->addr.family == AF_UNIX && net_peer_uid(c->conn.fd, &uid) &&
            getpwuid_r(uid, &pw, pwbuf, sizeof(pwbuf), &found) == 0 && found &&
            (size_t)snprintf(name, sizeof(name), "%s", found->pw_name) < sizeof(name))
            who = name;
    }
    bool ok = hba_identity_ok(&cfg->ident, rule ? rule->map : NULL, who, user);
    if (!ok)
        log_info("pool", "client %llu: %s identity %s%s%s does not allow user %s%s%s",
                 (unsigned long long)c->id, hba_method_name(method), who ? "\"" : "",
                 who ? who : "(none)", who ? "\"" : "", user,
                 rule && rule->map ? " through map " : "", rule && rule->map ? rule->map : "");
    return ok;
}

/* The [databases] entry whose auth_user, auth_query and auth_dbname override the global ones
 * for c. The console has none: like PgBouncer's admin database it takes only the [pgbouncer]
 * values (a "*" entry does not reach it). */
static const struct pooler_db_config *auth_entry(const struct client *c)
{
    if (console_is_admin_db(c->login->database))
        return NULL;
    return pooler_config_find_db(c->pooler->cfg, c->login->database);
}

/* Each setting: the database's when it has one, else the global (PgBouncer's precedence). */
static const char *lookup_user(const struct client *c)
{
    const struct pooler_db_config *db = auth_entry(c);
    return db && db->auth_user && db->auth_user[0] ? db->auth_user : c->pooler->cfg->auth_user;
}

static const char *lookup_query(const struct client *c)
{
    const struct pooler_db_config *db = auth_entry(c);
    return db && db->auth_query && db->auth_query[0] ? db->auth_query : c->pooler->cfg->auth_query;
}

/* The [databases] entry auth_query runs in: the client's database entry's auth_dbname=,
 * else the global auth_dbname, else the client's database itself (PgBouncer's order). */
static const char *lookup_database(const struct client *c)
{
    const struct pooler_config *cfg = c->pooler->cfg;
    const struct pooler_db_config *db = auth_entry(c);
    if (db && db->auth_dbname && db->auth_dbname[0])
        return db->auth_dbname;
    if (cfg->auth_dbname[0])
        return cfg->auth_dbname;
    return c->login->database;
}

/* Asks the client for what its method needs (or lets it in: trust, cert, peer), once its
 * secret is known (from auth_file, or auth_query's answer). */
static void begin_auth(struct client *c)
{
    struct client_login *l = c->login;
    const char *database = l->database, *user = l->user;
    /* Decided again: after a lookup the config may have been reloaded meanwhile. */
    const struct hba_rule *rule = NULL;
    l->method = login_method(c, database, user, &rule);
    uint8_t out[1024];
    struct wire_buf b;
    wire_buf_init(&b, out, sizeof(out));
    switch (l->method) {
    case HBA_TRUST:
        /* PgBouncer's rule: with an auth_file, trust still lets in only the users it lists
         * (with any secret, or none). The console goes by admin_users and stats_users. */
        /* A user auth_query did not find is "no such user", PgBouncer's words: trust has no
         * password exchange whose failure could hide that the user is unknown. */
        if (!user_known(c, database, user)) {
            objects_client_fail(c, "28000", "%s",
                                l->lookup_ran ? "no such user" : "\"trust\" authentication failed");
            return;
        }
        auth_done(c, NULL, 0);
        return;
    case HBA_CERT:
    case HBA_PEER:
        /* The connection itself proves who the client is; no password is asked. */
        if (!user_known(c, database, user) || !identity_proven(c, l->method, rule, user)) {
            objects_client_fail(c, "28000", "%s authentication failed for user \"%s\"",
                                l->method == HBA_CERT ? "certificate" : "peer", user);
            return;
        }
        auth_done(c, NULL, 0);
        return;
    case HBA_REJECT:
        /* A rejecting line (or none matching) is not announced: the client is asked for an
         * md5 password like anyone and fails exactly as a wrong password does. */
    case HBA_MD5:
        /* A SCRAM secret cannot check an md5 answer: that user logs in with SCRAM instead
         * (PgBouncer). */
        if (l->secret && auth_file_secret_kind(l->secret) == AUTH_SECRET_SCRAM) {
            wire_build_auth_sasl(&b, SCRAM_MECHANISM);
            l->step = STEP_SASL_INITIAL;
            break;
        }
        if (!md5_auth_make_salt(l->salt)) {
            objects_client_fail(c, "XX000", "could not generate a salt");
            return;
        }
        wire_build_auth_md5(&b, l->salt);
        l->step = STEP_PASSWORD;
        break;
    case HBA_PASSWORD:
        wire_build_auth_cleartext(&b);
        l->step = STEP_PASSWORD;
        break;
    case HBA_SCRAM:
        wire_build_auth_sasl(&b, SCRAM_MECHANISM);
        l->step = STEP_SASL_INITIAL;
        break;
    }
    send_or_close(c, &b);
}

/* auth_user is set (the database's or the global), the user is not in auth_file, and its
 * method checks who it is: its secret comes from auth_query. Not for a database the config
 * does not have (the user stays unknown and fails like a wrong password, as the database
 * does not exist either); the console counts as one. */
static bool lookup_needed(const struct client *c)
{
    const struct pooler_config *cfg = c->pooler->cfg;
    const struct client_login *l = c->login;
    return lookup_user(c)[0] && l->method != HBA_REJECT && !auth_file_lists(&cfg->auth, l->user) &&
           (console_is_admin_db(l->database) || pooler_config_find_db(cfg, l->database));
}

/* Starts the lookup, or refuses a configuration that cannot make it with PgBouncer's log
 * line and its "bouncer config error" to the client. */
static void start_lookup(struct client *c)
{
    struct client_login *l = c->login;
    const char *where = lookup_database(c);
    if (console_is_admin_db(where)) {
        log_error("pool", "client %llu: cannot use the reserved \"%s\" database as an auth_dbname",
                  (unsigned long long)c->id, where);
        objects_client_fail(c, "08P01", "bouncer config error");
        return;
    }
    if (!pooler_config_find_db(c->pooler->cfg, where)) {
        log_error("pool", "client %llu: authentication database \"%s\" is not configured",
                  (unsigned long long)c->id, where);
        objects_client_fail(c, "08P01", "bouncer config error");
        return;
    }
    if (control_db_disabled(c->pooler, where)) {
        objects_client_fail(c, "08P01", "authentication database \"%s\" is disabled", where);
        return;
    }
    l->step = STEP_LOOKUP;
    if (!auth_lookup_start(c, where, lookup_user(c), lookup_query(c), l->user, &l->lookup))
        objects_client_fail(c, "53200", "out of memory");
    /* the answer (maybe already given) goes on in client_auth_lookup_done */
}

void client_auth_lookup_done(struct client *c, enum auth_lookup_verdict verdict, const char *secret,
                             const char *error)
{
    struct client_login *l = c->login;
    l->lookup = NULL;
    l->lookup_ran = true;
    if (error) {
        objects_client_fail(c, "08006", "authentication lookup failed: %s", error);
        return;
    }
    if (verdict == AUTH_LOOKUP_QUERY_FAILED) {
        objects_client_fail(c, "08P01", "bouncer config error");
        return;
    }
    /* No user, an expired one, or an answer that makes no sense: the exchange runs without a
     * secret and fails like a wrong password. */
    if (verdict == AUTH_LOOKUP_SECRET && !(l->secret = strdup(secret))) {
        objects_client_fail(c, "53200", "out of memory");
        return;
    }
    l->looked_up = verdict == AUTH_LOOKUP_SECRET;
    /* A row without a secret is a user all the same: trust, which checks no password, lets
     * it in (PgBouncer); a password exchange fails for want of a secret. */
    l->lookup_found = l->looked_up || verdict == AUTH_LOOKUP_NO_SECRET;
    begin_auth(c);
}

static void handle_startup(struct client *c, const uint8_t *pkt, size_t len, size_t extra)
{
    struct pooler *p = c->pooler;
    const struct pooler_config *cfg = p->cfg;
    struct wire_startup *st = malloc(sizeof(*st));
    if (!st) {
        objects_client_fail(c, "53200", "out of memory");
        return;
    }
    enum wire_startup_kind kind = wire_parse_startup(pkt, len, st);
    uint8_t out[1024];
    struct wire_buf b;
    wire_buf_init(&b, out, sizeof(out));
    switch (kind) {
    case WIRE_STARTUP_SSL:
    case WIRE_STARTUP_GSSENC:
        answer_encryption_request(c, kind, extra);
        goto out;
    case WIRE_STARTUP_CANCEL:
        cancel_handle_request(p, st->cancel_pid, st->cancel_key, st->cancel_key_len);
        objects_client_close(c, "cancel request handled");
        goto out;
    case WIRE_STARTUP_BAD_VERSION:
        objects_client_fail(c, "0A000", "unsupported frontend protocol %u.%u: server supports 3.0",
                            WIRE_PROTOCOL_MAJOR(st->version), WIRE_PROTOCOL_MINOR(st->version));
        goto out;
    case WIRE_STARTUP_MALFORMED:
        objects_client_fail(c, "08P01", "invalid startup packet layout");
        goto out;
    case WIRE_STARTUP_MESSAGE:
        break;
    }
    /* client_tls_sslmode require and up: TCP clients must use TLS (unix sockets need not). */
    struct tls_context *tls = client_tls_context(c);
    if (!c->conn.tls && tls && tls_context_sslmode(tls) >= TLS_REQUIRE) {
        /* Counted as a protocol failure: the client spoke the protocol without TLS. */
        conn_tls_book_failure(&c->conn, &p->tls_client_counts, TLS_FAILURE_PROTOCOL);
        objects_client_fail(c, "08P01", "SSL required");
        goto out;
    }

    const char *user = wire_startup_get(st, "user");
    const char *database = wire_startup_get(st, "database");
    if (!user || !user[0]) {
        objects_client_fail(c, "28000", "no PostgreSQL user name specified in startup packet");
        goto out;
    }
    if (!database || !database[0])
        database = user;
    if (strlen(user) > 63 || strlen(database) > 63) {
        objects_client_fail(c, "08P01", "user or database name longer than 63 bytes");
        goto out;
    }
    if (!session_new(c, user)) {
        objects_client_fail(c, "53200", "out of memory");
        goto out;
    }
    /* A replication client gets a server of its own, opened with its own startup packet:
     * its "options" go there verbatim, any switch included (CREATE SUBSCRIPTION sends
     * settings that are not reported, which SET could not carry over), as PgBouncer does. */
    const char *repl = wire_startup_get(st, "replication");
    enum startup_replication rk =
        repl ? startup_options_replication_parse(repl) : STARTUP_REPLICATION_NONE;
    if (rk == STARTUP_REPLICATION_INVALID) {
        objects_client_fail(c, "22023", "invalid value for parameter \"replication\": \"%.64s\"",
                            repl);
        goto out;
    }
    if (rk != STARTUP_REPLICATION_NONE && console_is_admin_db(database)) {
        objects_client_fail(c, "08P01",
                            "replication connections to the admin console are not supported");
        goto out;
    }
    c->replication = (uint8_t)rk;
    /* Settings in "options" first: parameters of the packet itself override them, as in
     * PostgreSQL. */
    const char *options = wire_startup_get(st, "options");
    if (rk != STARTUP_REPLICATION_NONE) {
        if (options && options[0] && !(c->repl_options = strdup(options))) {
            objects_client_fail(c, "53200", "out of memory");
            goto out;
        }
    } else if (options && options[0] && !take_options(c, options)) {
        goto out;
    }
    const char *unsupported[WIRE_MAX_STARTUP_PARAMS];
    size_t n_unsupported = 0;
    for (size_t i = 0; i < st->n_params; i++) {
        const char *k = st->params[i].key, *v = st->params[i].value;
        if (!strcmp(k, "user") || !strcmp(k, "database") || !strcmp(k, "options")) {
            continue;
        } else if (!strncmp(k, "_pq_.", 5)) {
            unsupported[n_unsupported++] = k;
        } else if (!strcmp(k, "replication")) {
            continue; /* read above */
        } else if (!take_param(c, k, v, false)) {
            goto out;
        }
    }
    if (WIRE_PROTOCOL_MINOR(st->version) > 0 || n_unsupported > 0) {
        wire_build_negotiate_protocol(&b, WIRE_PROTOCOL_3_0, unsupported, n_unsupported);
        if (b.overflow) { /* the names alone would not fit: refused, with a reason */
            objects_client_fail(c, "08P01",
                                "too many protocol options (_pq_.*) in the startup packet");
            goto out;
        }
        if (!client_send_raw(c, out, b.len)) {
            objects_client_close(c, "could not negotiate protocol");
            goto out;
        }
        wire_buf_init(&b, out, sizeof(out));
    }
    /* The console stays open while the pooler shuts down (PgBouncer keeps its unix socket
     * for it). */
    if ((p->run_state == POOLER_SHUTDOWN_CLIENTS || p->run_state == POOLER_SHUTDOWN_SERVERS) &&
        !console_is_admin_db(database)) {
        objects_client_fail(c, "57P01", "pgwarden is shutting down");
        goto out;
    }
    if (p->n_clients > cfg->max_client_conn) {
        objects_client_fail(c, "53300", "no more connections allowed (max_client_conn)");
        goto out;
    }
    if (cfg->application_name_add_host && !add_host_to_application_name(c))
        goto out;
    struct client_login *l = c->login;
    l->user = strdup(user);
    l->database = strdup(database);
    if (!l->user || !l->database) {
        objects_client_fail(c, "53200", "out of memory");
        goto out;
    }
    /* The console user "pgbouncer" over the unix socket, run by the pooler's own Unix user,
     * needs no password (PgBouncer's rule): the operator is already that user. */
    if (console_is_admin_db(database)) {
        uid_t peer;
        bool same_uid =
            c->addr.family == AF_UNIX && net_peer_uid(c->conn.fd, &peer) && peer == geteuid();
        l->peer_access = console_peer_access(user, same_uid);
        if (l->peer_access != CONSOLE_DENIED) {
            free(st);
            auth_done(c, NULL, 0);
            return;
        }
    }
    const struct hba_rule *rule = NULL;
    l->method = login_method(c, database, user, &rule);
    if (l->method != HBA_TRUST && l->method != HBA_REJECT) {
        const char *secret = auth_file_lookup(&cfg->auth, user);
        if (secret && !(l->secret = strdup(secret))) {
            objects_client_fail(c, "53200", "out of memory");
            goto out;
        }
    }
    free(st);
    if (lookup_needed(c)) {
        start_lookup(c);
        return;
    }
    begin_auth(c);
    return;
    send_or_close(c, &b);
out:
    free(st);
}

/* ---- password messages ---- */

static void handle_auth_message(struct client *c, const uint8_t *body, size_t len)
{
    struct client_login *l = c->login;
    uint8_t out[SCRAM_OUT_MAX + 64];
    char scram_out[SCRAM_OUT_MAX];
    size_t scram_len = 0;
    char err[256];
    struct wire_buf b;
    wire_buf_init(&b, out, sizeof(out));

    switch (l->step) {
    case STEP_STARTUP:
    case STEP_TLS_HANDSHAKE:
    case STEP_LOOKUP:
        break;
    case STEP_PASSWORD: {
        enum password_challenge challenge = l->method == HBA_MD5 || l->method == HBA_REJECT
                                                ? PASSWORD_CHALLENGE_MD5
                                                : PASSWORD_CHALLENGE_CLEARTEXT;
        switch (password_check(body, len, challenge, l->secret, l->user, l->salt)) {
        case PASSWORD_MALFORMED:
            objects_client_fail(c, "08P01", "invalid password packet");
            return;
        case PASSWORD_WRONG:
            auth_failed(c);
            return;
        case PASSWORD_OK:
            auth_done(c, NULL, 0);
            return;
        }
        return;
    }
    case STEP_SASL_INITIAL: {
        const char *mech;
        const uint8_t *data;
        size_t dlen;
        if (!wire_parse_sasl_initial(body, len, &mech, &data, &dlen) || !data) {
            objects_client_fail(c, "08P01", "invalid SASLInitialResponse");
            return;
        }
        if (strcmp(mech, SCRAM_MECHANISM) != 0) {
            objects_client_fail(c, "08P01",
                                "client selected an invalid SASL authentication mechanism");
            return;
        }
        enum scram_result r = SCRAM_BAD_SECRET;
        if (l->secret && auth_file_secret_kind(l->secret) != AUTH_SECRET_MD5)
            r = scram_server_start(&l->scram, l->secret, (const char *)data, dlen, scram_out,
                                   sizeof(scram_out), &scram_len, err, sizeof(err));
        if (r == SCRAM_BAD_SECRET) {
            /* Unknown user, or a secret SCRAM cannot use: run the exchange to its end and
             * fail there, exactly like a wrong password. */
            scram_server_clear(&l->scram);
            r = scram_server_start_doomed(&l->scram, l->user, (const char *)data, dlen, scram_out,
                                          sizeof(scram_out), &scram_len, err, sizeof(err));
        }
        if (r != SCRAM_OK) {
            objects_client_fail(c, "08P01", "invalid SCRAM exchange: %s", err);
            return;
        }
        wire_build_auth_sasl_continue(&b, scram_out, scram_len);
        l->step = STEP_SASL_RESPONSE;
        send_or_close(c, &b);
        return;
    }
    case STEP_SASL_RESPONSE: {
        enum scram_result r = scram_server_finish(&l->scram, (const char *)body, len, scram_out,
                                                  sizeof(scram_out), &scram_len, err, sizeof(err));
        if (r == SCRAM_AUTH_FAILED) {
            sasl_failed(c);
            return;
        }
        if (r != SCRAM_OK) {
            objects_client_fail(c, "08P01", "invalid SCRAM exchange: %s", err);
            return;
        }
        auth_done(c, (const uint8_t *)scram_out, scram_len);
        return;
    }
    }
    objects_client_fail(c, "08P01", "unexpected authentication message");
}

/* Reads and handles startup-phase packets until the client is logged in or must wait. */
static void login_pump(struct client *c)
{
    struct pooler *p = c->pooler;
    if (!c->login && !(c->login = calloc(1, sizeof(*c->login)))) {
        objects_client_fail(c, "53200", "out of memory");
        return;
    }
    for (;;) {
        if (c->login->step == STEP_TLS_HANDSHAKE && !client_tls_handshake(c)) {
            if (c->state != CL_LOGIN)
                return;
            break; /* an edge resumes it */
        }
        if (c->conn.may_read) {
            enum fill_result r = conn_fill(p, &c->conn);
            if (r == FILL_EOF || r == FILL_ERROR) {
                objects_client_close(c, "client closed the connection during login");
                return;
            }
            if (r == FILL_NO_MEMORY) {
                objects_client_fail(c, "53200", "out of memory");
                return;
            }
        }
        struct iobuf *b = c->conn.buf;
        if (!b)
            return;
        size_t avail = b->end - b->pos;
        const uint8_t *d = b->data + b->pos;
        size_t used;
        if (c->login->step == STEP_STARTUP) {
            /* PostgreSQL 17's direct TLS: a ClientHello instead of a startup packet. */
            if (!c->conn.tls && tls_looks_like_client_hello(d, avail) && client_tls_context(c)) {
                bool started = start_tls(c, d, avail, true);
                b->pos = b->end = 0; /* handed over as the TLS stream's first bytes */
                c->conn.scan = 0;
                if (!started)
                    return;
                continue;
            }
            uint32_t len;
            if (!wire_startup_length(d, avail, &len)) {
                if (c->conn.may_read)
                    continue;
                break;
            }
            if (len < WIRE_STARTUP_HEADER_LEN || len > WIRE_MAX_STARTUP_LEN || len > p->bufs.size) {
                objects_client_fail(c, "08P01", "invalid startup packet length");
                return;
            }
            if (avail < len) {
                if (c->conn.may_read)
                    continue;
                break;
            }
            used = len;
            b->pos += (uint32_t)used;
            handle_startup(c, d, len, avail - len);
        } else {
            uint8_t type;
            uint32_t blen;
            enum wire_header_result h =
                wire_parse_header(d, avail, p->bufs.size - WIRE_HEADER_LEN, &type, &blen);
            if (h == WIRE_HEADER_BAD_LENGTH) {
                objects_client_fail(c, "08P01", "invalid password packet length");
                return;
            }
            if (h == WIRE_HEADER_INCOMPLETE || avail - WIRE_HEADER_LEN < blen) {
                if (c->conn.may_read)
                    continue;
                break;
            }
            if (type != WIRE_FE_PASSWORD) {
                objects_client_fail(c, "08P01",
                                    "expected a password response, got message type 0x%02x", type);
                return;
            }
            b->pos += WIRE_HEADER_LEN + blen;
            handle_auth_message(c, d + WIRE_HEADER_LEN, blen);
        }
        /* Past authentication the client belongs to auth_done/client_finish_login, which
         * may already have moved or released the buffer. */
        if (c->state != CL_LOGIN)
            return;
        if (b->pos == b->end) {
            b->pos = b->end = 0;
            c->conn.scan = 0;
        }
    }
    conn_release_if_empty(p, &c->conn);
}

/* ---- prepared statements in transaction mode (see prepared.h) ---- */

enum rewrite_result {
    RW_PASS,       /* forward the message as it is */
    RW_DONE,       /* replaced in the buffer; scan and body_left updated */
    RW_NEED_MORE,  /* wait for more bytes of the message */
    RW_NEED_FLUSH, /* no room: send the bytes before the message first */
    /* The replacement overflowed the buffer sized for it, or a message would need offsets
     * past 32 bits: neither can happen (sizes are computed ahead, max_packet_size stops a
     * message at 2 GB), so it ends the client as an internal error. A message longer than
     * pkt_buf is no reason: the client's buffer grows for it (await_whole_message). */
    RW_OVERFLOW,
    RW_NO_MEMORY,
    RW_BAD,         /* malformed: the client is ended with a protocol error */
    RW_RESERVED,    /* names one of the pooler's statements: the client is ended */
    RW_SEND_FAILED, /* the replacement had to go straight to the server and could not */
    /* A new named statement past max_client_prepared_statements in transaction or statement
     * mode: the pooler keeps the query text of each, so one client's memory (and the time to
     * look its names up) would grow without bound. The client is ended rather than its Parse
     * refused in the stream: the answers it expects come from the server. */
    RW_TOO_MANY_STMTS,
};

/* Replaces old_len bytes at offset m of the client's buffer by new_len bytes; *placed is how
 * many bytes of the replacement are in the buffer from m on (to be forwarded like the rest).
 * A buffer full of pipelined messages (or holding one long Parse) may leave no room for a
 * longer replacement of its first message: everything before it is sent already, so the
 * buffer grows by what is missing; only when that allocation fails does the replacement go
 * straight to the server (which a large one may not fit), the old bytes dropped, *placed 0. */
static enum rewrite_result replace_bytes(struct client *c, struct server *s, uint32_t *m,
                                         uint32_t old_len, const uint8_t *repl, uint32_t new_len,
                                         uint32_t *placed)
{
    struct pconn *cn = &c->conn;
    struct iobuf *b = cn->buf;
    uint32_t cap = b->cap;
    if (new_len > old_len && b->end + (new_len - old_len) > cap) {
        if (b->pos > 0) {
            uint32_t shift = b->pos;
            memmove(b->data, b->data + shift, b->end - shift);
            b->end -= shift;
            b->pos = 0;
            cn->scan -= shift;
            *m -= shift;
        }
        if (b->end + (new_len - old_len) > cap && *m > b->pos)
            return RW_NEED_FLUSH;
        if (b->end + (new_len - old_len) > cap &&
            (uint64_t)b->end + (new_len - old_len) <= UINT32_MAX &&
            iobuf_grow(&cn->buf, b->end + (new_len - old_len)))
            b = cn->buf;
        if (b->end + (new_len - old_len) > b->cap) {
            if (!server_send_raw(s, repl, new_len))
                return RW_SEND_FAILED;
            c->pool->stats.bytes_received += new_len;
            b->pos += old_len;
            *m = b->pos;
            *placed = 0;
            return RW_DONE;
        }
    }
    memmove(b->data + *m + new_len, b->data + *m + old_len, b->end - (*m + old_len));
    memcpy(b->data + *m, repl, new_len);
    b->end = b->end + new_len - old_len;
    *placed = new_len;
    return RW_DONE;
}

static void put_parse(struct wire_buf *w, const struct prepared_stmt *st)
{
    size_t m = wire_msg_begin(w, WIRE_FE_PARSE);
    wire_put_bytes(w, st->name, (size_t)st->name_len + 1);
    wire_put_bytes(w, st->body, st->body_len);
    wire_msg_end(w, m);
}

static void put_close_stmt(struct wire_buf *w, const char *name)
{
    size_t m = wire_msg_begin(w, WIRE_FE_CLOSE);
    wire_put_u8(w, 'S');
    wire_put_cstr(w, name);
    wire_msg_end(w, m);
}

/* Most statements closed ahead of one message when the server holds too many (after
 * max_prepared_statements was lowered, the rest go with the next new statements). */
#define PLAN_MAX_EVICT 16
/* What one rewritten message can queue must fit the room the owed model keeps free. */
_Static_assert(1 + PLAN_MAX_EVICT + 2 + 1 <= OWED_RESERVE, "OWED_RESERVE too small for a rewrite");
/* What the pooler sends on s ahead of (or instead of) a client's message so that statement
 * st is prepared there, as it is. */
struct stmt_plan {
    bool parse;       /* send st's Parse */
    bool close_first; /* ... after a Close of its name: the server may hold something under it */
    bool kept;        /* the server holds st already: the Close and Parse re-create it */
    uint32_t n_evict; /* close these least recently used statements first */
    uint64_t evict[PLAN_MAX_EVICT];
};

/* for_client_parse: the client's own Parse, always sent (its answer is the client's). */
static void plan_statement(const struct client *c, struct server *s, const struct prepared_stmt *st,
                           bool for_client_parse, struct stmt_plan *plan)
{
    memset(plan, 0, sizeof(*plan));
    struct server_stmt *e = prepared_server_find(&s->stmts, st->id);
    if (e && e->verified && !for_client_parse) {
        prepared_server_touch(&s->stmts, e);
        return;
    }
    plan->parse = true;
    plan->close_first = e != NULL || s->stmts.suspect;
    plan->kept = e != NULL;
    if (!e) {
        int max = c->pooler->cfg->max_prepared_statements;
        plan->n_evict = prepared_server_victims(&s->stmts, max > 0 ? (uint32_t)max : 1, plan->evict,
                                                PLAN_MAX_EVICT);
    }
}

/* Bytes put_plan writes at most. */
static size_t plan_bytes(const struct stmt_plan *plan, const struct prepared_stmt *st)
{
    size_t close = WIRE_HEADER_LEN + 1 + STMT_NAME_MAX;
    size_t n = (plan->n_evict + (plan->close_first ? 1 : 0)) * close;
    if (plan->parse)
        n += WIRE_HEADER_LEN + STMT_NAME_MAX + st->body_len;
    return n;
}

static void put_plan(const struct client *c, struct wire_buf *w, const struct prepared_stmt *st,
                     const struct stmt_plan *plan)
{
    for (uint32_t i = 0; i < plan->n_evict; i++) {
        char name[STMT_NAME_MAX];
        prepared_registry_name(&c->pooler->stmts, plan->evict[i], name);
        put_close_stmt(w, name);
    }
    if (plan->close_first)
        put_close_stmt(w, st->name);
    if (plan->parse)
        put_parse(w, st);
}

/* Records what put_plan placed in s's owed model and statement set, in the order placed.
 * parse_flags: OWED_SWALLOW when the Parse is the pooler's, 0 when it is the client's. */
static void note_plan(struct server *s, const struct prepared_stmt *st,
                      const struct stmt_plan *plan, uint8_t parse_flags)
{
    for (uint32_t i = 0; i < plan->n_evict; i++) {
        server_note_frontend(s, WIRE_FE_CLOSE, OWED_SWALLOW, plan->evict[i]);
        prepared_server_remove(&s->stmts, plan->evict[i]);
    }
    if (plan->close_first)
        server_note_frontend(s, WIRE_FE_CLOSE, OWED_SWALLOW, 0);
    if (!plan->parse)
        return;
    /* Re-creating a statement the server holds prepares nothing new. */
    if (!plan->kept)
        s->pool->stats.server_parse_count++;
    server_note_frontend(s, WIRE_FE_PARSE, parse_flags | (plan->kept ? OWED_KEPT : 0), st->id);
    if (!prepared_server_prepared(&s->stmts, st->id))
        s->close_needed = true;
}

/* Whether a complete Parse, Describe or Close body is well formed: PostgreSQL would reject
 * it, and the pooler must not guess at names it cannot read. */
static bool body_well_formed(uint8_t type, const uint8_t *body, uint32_t len)
{
    if (type == WIRE_FE_PARSE) {
        const uint8_t *z1 = memchr(body, 0, len);
        const uint8_t *z2 = z1 ? memchr(z1 + 1, 0, len - (size_t)(z1 + 1 - body)) : NULL;
        if (!z2)
            return false;
        size_t rest = len - (size_t)(z2 + 1 - body);
        if (rest < 2)
            return false;
        size_t n_types = (size_t)z2[1] << 8 | z2[2];
        return rest == 2 + 4 * n_types;
    }
    /* Describe and Close: 'S' or 'P', then one NUL-terminated name filling the message. */
    if (len < 2 || (body[0] != 'S' && body[0] != 'P'))
        return false;
    return memchr(body + 1, 0, len - 1) == body + len - 1;
}

/* The client's Parse of a name it has prepared already must fail with 42P05, as on
 * PostgreSQL, whatever else is in the pipeline. The server is made to say so itself: a Parse
 * of that name (an empty query, its answer swallowed) goes first, then the client's own Parse
 * as it is, which the server refuses and then skips to Sync. The server is closed when it is
 * released, since it now holds a statement under the client's name. */
static enum rewrite_result refuse_name_reuse(struct client *c, struct server *s, uint32_t m,
                                             uint32_t total)
{
    const char *name = (const char *)c->conn.buf->data + m + WIRE_HEADER_LEN;
    log_info("pool", "client %llu: prepared statement '%.64s' was already prepared",
             (unsigned long long)c->id, name);
    /* The Parse of that name: an empty query, no parameter types (a rare path: malloc). */
    size_t name_len = strlen(name);
    size_t cap = WIRE_HEADER_LEN + name_len + 4;
    uint8_t *msg = malloc(cap);
    if (!msg)
        return RW_NO_MEMORY;
    struct wire_buf w;
    wire_buf_init(&w, msg, cap);
    size_t mm = wire_msg_begin(&w, WIRE_FE_PARSE);
    wire_put_bytes(&w, name, name_len + 1);
    wire_put_u8(&w, 0);
    wire_put_u8(&w, 0);
    wire_put_u8(&w, 0);
    wire_msg_end(&w, mm);
    uint32_t placed = 0;
    enum rewrite_result r =
        w.overflow ? RW_OVERFLOW : replace_bytes(c, s, &m, 0, msg, (uint32_t)w.len, &placed);
    free(msg);
    if (r != RW_DONE)
        return r;
    server_note_frontend(s, WIRE_FE_PARSE, OWED_SWALLOW, 0);
    server_note_frontend(s, WIRE_FE_PARSE, 0, 0);
    s->close_needed = true;
    c->conn.scan = m + placed + total;
    c->conn.body_left = 0;
    return RW_DONE;
}

/* A new binding of the client's, confirmed by its ParseComplete (client_note_server_message).
 * False when its answer will not be followed. */
static bool note_named_parse(struct client *c, const struct client_stmt *cs)
{
    if (!c->session)
        return false;
    struct pending e = {.group = c->session->sent + 1,
                        .kind = PENDING_PARSE,
                        .param = -1,
                        .seq = cs->seq,
                        .name = (char *)cs->name};
    return pending_push(c, &e); /* copies the name */
}

/* Whether s holds cs under the client's own name: its Parse went there as sent, in session
 * mode. Its messages then pass as they are, whatever the pool's mode is now. */
static bool holds_own_name(const struct server *s, const struct client_stmt *cs)
{
    return cs->own_server != 0 && cs->own_server == s->id;
}

/* Session mode: the client's named Parse goes to its server as it is (the statement keeps the
 * client's name there), and its body is remembered for the servers the client may meet after
 * a switch of pool mode. Takes over cname and the reference to st.
 *
 * The binding must only ever name the body the server holds under that name, or a server met
 * after a switch would run other SQL than the client's own server did. So a Parse of a name
 * whose earlier Parse on this server is still unanswered is not remembered (the server
 * refuses the second when the first succeeds), and neither is one whose answer will not be
 * followed: such a statement is missing after a switch, never wrong. */
static enum rewrite_result pass_session_parse(struct client *c, struct server *s, char *cname,
                                              struct prepared_stmt *st)
{
    struct stmt_registry *reg = &c->pooler->stmts;
    const struct client_stmt *bound = prepared_client_find(c->stmts, cname);
    if (bound && holds_own_name(s, bound)) { /* unconfirmed: in flight */
        prepared_stmt_unref(reg, st);
        free(cname);
        return RW_PASS;
    }
    struct client_stmt *cs = prepared_client_set(reg, &c->stmts, cname, st);
    if (!cs) {
        free(cname);
        return RW_NO_MEMORY;
    }
    cs->own_server = s->id;
    if (!note_named_parse(c, cs))
        prepared_client_remove(reg, &c->stmts, cname);
    free(cname);
    return RW_PASS;
}

/* A message to rewrite whose bytes have not all arrived, starting at offset m of the client's
 * buffer. One larger than the buffer (a long query in a named Parse; PgBouncer takes them
 * too) is given a larger buffer for itself once what precedes it is sent and the buffer is
 * full: doubling each time, so memory follows the bytes received, never a length the client
 * merely claims (max_packet_size bounds the length). */
static enum rewrite_result await_whole_message(struct client *c, uint32_t m, uint64_t total)
{
    struct pconn *cn = &c->conn;
    struct iobuf *b = cn->buf;
    if (m + total <= b->cap || b->end < b->cap)
        return RW_NEED_MORE; /* it fits once read, or reading goes on first */
    if (m > b->pos)
        return RW_NEED_FLUSH; /* send what precedes it; conn_fill then slides it to the front */
    if (b->pos > 0)
        return RW_NEED_MORE; /* conn_fill slides the message to the front */
    uint64_t want = (uint64_t)b->cap * 2;
    if (want > total)
        want = total;
    if (want > UINT32_MAX)
        return RW_OVERFLOW;
    if (!iobuf_grow(&cn->buf, (uint32_t)want))
        return RW_NO_MEMORY;
    return RW_NEED_MORE;
}

static enum rewrite_result rewrite_message(struct client *c, struct server *s, uint8_t type,
                                           uint32_t len)
{
    struct pconn *cn = &c->conn;
    struct iobuf *b = cn->buf;
    struct pooler *p = c->pooler;
    uint32_t m = cn->scan;
    uint32_t avail = b->end - m;
    uint64_t total = (uint64_t)WIRE_HEADER_LEN + len;
    const uint8_t *body = b->data + m + WIRE_HEADER_LEN;
    uint32_t have_body = avail - WIRE_HEADER_LEN;
    if (have_body > len)
        have_body = len;

    if (type == WIRE_FE_BIND) {
        /* Only the two leading names matter; parameters stream through untouched. Names not
         * found in a pkt_buf's worth are looked for again only once the buffer is full or the
         * message whole: looking through everything received at each arrival would be
         * quadratic in a long name sent in small pieces, and stall the pooler. */
        if (have_body < len && have_body > p->bufs.size && b->end < b->cap)
            return RW_NEED_MORE;
        const uint8_t *z1 = memchr(body, 0, have_body);
        const uint8_t *z2 = z1 ? memchr(z1 + 1, 0, have_body - (size_t)(z1 + 1 - body)) : NULL;
        if (!z2) {
            if (have_body == len)
                return RW_BAD; /* the whole message is here and has no two names */
            return await_whole_message(c, m, total);
        }
        const char *portal = (const char *)body;
        const char *name = (const char *)z1 + 1;
        if (!name[0])
            return RW_PASS;
        struct client_stmt *cs = prepared_client_find(c->stmts, name);
        if (!cs)
            return prepared_registry_owns_name(&p->stmts, name) ? RW_RESERVED : RW_PASS;
        if (holds_own_name(s, cs))
            return RW_PASS;
        struct prepared_stmt *st = cs->stmt;
        size_t portal_len = strlen(portal), name_len = strlen(name);
        uint32_t prefix_old = (uint32_t)(WIRE_HEADER_LEN + portal_len + 1 + name_len + 1);
        struct stmt_plan plan;
        plan_statement(c, s, st, false, &plan);
        size_t repl_cap = plan_bytes(&plan, st) + WIRE_HEADER_LEN + portal_len + STMT_NAME_MAX + 2;
        uint8_t small[512];
        uint8_t *repl = repl_cap <= sizeof(small) ? small : malloc(repl_cap);
        if (!repl)
            return RW_NO_MEMORY;
        struct wire_buf w;
        wire_buf_init(&w, repl, repl_cap);
        put_plan(c, &w, st, &plan);
        wire_put_u8(&w, WIRE_FE_BIND);
        wire_put_u32(&w, (uint32_t)(len + 4 - name_len + st->name_len));
        wire_put_bytes(&w, portal, portal_len + 1);
        wire_put_bytes(&w, st->name, (size_t)st->name_len + 1);
        uint32_t placed = 0;
        enum rewrite_result r =
            w.overflow ? RW_OVERFLOW
                       : replace_bytes(c, s, &m, prefix_old, repl, (uint32_t)w.len, &placed);
        if (repl != small)
            free(repl);
        if (r != RW_DONE)
            return r;
        note_plan(s, st, &plan, OWED_SWALLOW);
        server_note_frontend(s, WIRE_FE_BIND, 0, 0);
        s->pool->stats.bind_count++;
        cn->scan = m + placed;
        cn->body_left = (uint32_t)(total - prefix_old);
        return RW_DONE;
    }

    if (len == 0)
        return RW_BAD; /* Parse, Describe and Close all have a body */
    /* The unnamed statement is never renamed, however long its query; with
     * max_prepared_statements = 0 no statement is, and outside session pooling a named one
     * marks the server to be cleared before it goes to another client (struct server). */
    if (type == WIRE_FE_PARSE && have_body >= 1 && body[0] == 0)
        return RW_PASS;
    if (have_body == 0)
        return RW_NEED_MORE; /* the first body byte decides (named or not) */
    if (type == WIRE_FE_PARSE && p->cfg->max_prepared_statements <= 0) {
        if (s->pool->mode != POOL_MODE_SESSION)
            s->named_stmts_client = c->id;
        return RW_PASS;
    }
    /* Parse, Describe and Close are rewritten whole. */
    if (avail < total)
        return await_whole_message(c, m, total);
    if (!body_well_formed(type, body, len))
        return RW_BAD;
    if (type == WIRE_FE_PARSE) {
        const char *name = (const char *)body;
        const struct client_stmt *bound = prepared_client_find(c->stmts, name);
        if (bound && bound->confirmed)
            return holds_own_name(s, bound) ? RW_PASS /* the server refuses it itself */
                                            : refuse_name_reuse(c, s, m, (uint32_t)total);
        int most = p->cfg->max_client_prepared_statements;
        if (!bound && most > 0 && prepared_client_count(c->stmts) >= (size_t)most) {
            /* Session mode needs nothing remembered to work: the statement only goes
             * missing after a switch of pool mode (26000 then, as for one never prepared). */
            if (s->pool->mode == POOL_MODE_SESSION)
                return RW_PASS;
            log_info("pool", "client %llu: more than %d prepared statements",
                     (unsigned long long)c->id, most);
            return RW_TOO_MANY_STMTS;
        }
        const uint8_t *rest = (const uint8_t *)memchr(body, 0, len) + 1;
        size_t rest_len = len - (size_t)(rest - body);
        char *cname = strdup(name); /* the name's bytes are about to be replaced */
        struct prepared_stmt *st = cname ? prepared_registry_get(&p->stmts, rest, rest_len) : NULL;
        if (!st) {
            free(cname);
            return RW_NO_MEMORY;
        }
        if (s->pool->mode == POOL_MODE_SESSION)
            return pass_session_parse(c, s, cname, st);
        /* Sent even when the server already has it (re-created, Close first) so the
         * client gets exactly one ParseComplete for its Parse, in order. */
        struct stmt_plan plan;
        plan_statement(c, s, st, true, &plan);
        size_t repl_cap = plan_bytes(&plan, st);
        uint8_t *repl = malloc(repl_cap);
        if (!repl) {
            prepared_stmt_unref(&p->stmts, st);
            free(cname);
            return RW_NO_MEMORY;
        }
        struct wire_buf w;
        wire_buf_init(&w, repl, repl_cap);
        put_plan(c, &w, st, &plan);
        uint32_t placed = 0;
        enum rewrite_result r =
            w.overflow ? RW_OVERFLOW
                       : replace_bytes(c, s, &m, (uint32_t)total, repl, (uint32_t)w.len, &placed);
        free(repl);
        if (r != RW_DONE) {
            prepared_stmt_unref(&p->stmts, st);
            free(cname);
            return r;
        }
        cn->scan = m + placed;
        cn->body_left = 0;
        s->pool->stats.client_parse_count++;
        note_plan(s, st, &plan, 0);
        /* After note_plan: this may drop the last reference to the client's old statement,
         * never to st. Once the server's ParseComplete confirms the binding, the name cannot
         * be prepared again (refuse_name_reuse). */
        struct client_stmt *cs = prepared_client_set(&p->stmts, &c->stmts, cname, st);
        if (!cs)
            s->close_needed = true;
        else
            (void)note_named_parse(c, cs); /* unfollowed, it stays unconfirmed: lenient */
        free(cname);
        return RW_DONE;
    }
    if (body[0] != 'S' || body[1] == 0)
        return RW_PASS; /* a portal, or the unnamed statement */
    const char *name = (const char *)body + 1;
    struct client_stmt *cs = prepared_client_find(c->stmts, name);
    if (!cs)
        return prepared_registry_owns_name(&p->stmts, name) ? RW_RESERVED : RW_PASS;
    if (holds_own_name(s, cs)) {
        if (type == WIRE_FE_CLOSE)
            prepared_client_remove(&p->stmts, &c->stmts, name); /* the server closes it */
        return RW_PASS;
    }
    struct prepared_stmt *st = cs->stmt;
    struct stmt_plan plan = {0};
    if (type == WIRE_FE_DESCRIBE)
        plan_statement(c, s, st, false, &plan);
    size_t repl_cap = plan_bytes(&plan, st) + WIRE_HEADER_LEN + STMT_NAME_MAX + 2;
    uint8_t small[512];
    uint8_t *repl = repl_cap <= sizeof(small) ? small : malloc(repl_cap);
    if (!repl)
        return RW_NO_MEMORY;
    struct wire_buf w;
    wire_buf_init(&w, repl, repl_cap);
    if (type == WIRE_FE_DESCRIBE) {
        put_plan(c, &w, st, &plan);
        size_t mm = wire_msg_begin(&w, WIRE_FE_DESCRIBE);
        wire_put_u8(&w, 'S');
        wire_put_bytes(&w, st->name, (size_t)st->name_len + 1);
        wire_msg_end(&w, mm);
    } else {
        /* The server keeps the statement for other clients; closing a name that does not
         * exist still answers CloseComplete, which the client expects. */
        char none[STMT_NAME_MAX];
        prepared_registry_name(&p->stmts, 0, none); /* ids start at 1: never a statement */
        put_close_stmt(&w, none);
    }
    char *cname = type == WIRE_FE_CLOSE ? strdup(name) : NULL;
    enum rewrite_result r;
    uint32_t placed = 0;
    if (type == WIRE_FE_CLOSE && !cname)
        r = RW_NO_MEMORY;
    else if (w.overflow)
        r = RW_OVERFLOW;
    else
        r = replace_bytes(c, s, &m, (uint32_t)total, repl, (uint32_t)w.len, &placed);
    if (repl != small)
        free(repl);
    if (r != RW_DONE) {
        free(cname);
        return r;
    }
    cn->scan = m + placed;
    cn->body_left = 0;
    if (type == WIRE_FE_CLOSE) {
        prepared_client_remove(&p->stmts, &c->stmts, cname);
        free(cname);
    } else {
        note_plan(s, st, &plan, OWED_SWALLOW);
    }
    server_note_frontend(s, type, 0, 0);
    return RW_DONE;
}

/* Sends Close('S', "") ahead of the message at the scan point, its answer swallowed (see
 * struct unnamed_stmt in prepared.h). */
static enum rewrite_result close_foreign_unnamed(struct client *c, struct server *s)
{
    uint8_t msg[WIRE_HEADER_LEN + 2];
    struct wire_buf w;
    wire_buf_init(&w, msg, sizeof(msg));
    put_close_stmt(&w, "");
    uint32_t m = c->conn.scan, placed = 0;
    enum rewrite_result r =
        w.overflow ? RW_OVERFLOW : replace_bytes(c, s, &m, 0, msg, (uint32_t)w.len, &placed);
    if (r != RW_DONE)
        return r;
    server_note_frontend(s, WIRE_FE_CLOSE, OWED_SWALLOW, 0);
    prepared_unnamed_closed(&s->unnamed);
    c->conn.scan = m + placed;
    return RW_DONE;
}

/* ---- forwarding ---- */

static enum scan_result scan_result_of(enum rewrite_result r)
{
    switch (r) {
    case RW_PASS:
    case RW_DONE:
    case RW_NEED_MORE:
        break;
    case RW_NEED_FLUSH:
        return SCAN_NEED_FLUSH;
    case RW_OVERFLOW:
        return SCAN_OVERFLOW;
    case RW_NO_MEMORY:
        return SCAN_NO_MEMORY;
    case RW_BAD:
        return SCAN_MALFORMED;
    case RW_RESERVED:
        return SCAN_RESERVED;
    case RW_SEND_FAILED:
        return SCAN_SERVER_FAILED;
    case RW_TOO_MANY_STMTS:
        return SCAN_TOO_MANY_STMTS;
    }
    return SCAN_OK;
}

static enum scan_result client_scan(struct client *c, struct server *s)
{
    struct pconn *cn = &c->conn;
    uint32_t max = (uint32_t)c->pooler->cfg->max_packet_size;
    for (;;) {
        struct iobuf *b = cn->buf; /* each turn: a rewrite may have grown (moved) it */
        if (cn->scan >= b->end)
            break;
        if (cn->body_left) {
            uint32_t n = b->end - cn->scan;
            if (n > cn->body_left)
                n = cn->body_left;
            cn->scan += n;
            cn->body_left -= n;
            continue;
        }
        uint8_t type;
        uint32_t len;
        enum wire_header_result h =
            wire_parse_header(b->data + cn->scan, b->end - cn->scan, max, &type, &len);
        if (h == WIRE_HEADER_INCOMPLETE)
            break;
        if (h == WIRE_HEADER_BAD_LENGTH)
            return SCAN_BAD;
        if (type == WIRE_FE_TERMINATE)
            return SCAN_TERMINATE;
        /* Simple Query runs several statements from one string, which SQL injection relies
         * on; with it refused, only the extended protocol's single statements pass. */
        if (type == WIRE_FE_QUERY && c->pooler->cfg->disable_pqexec)
            return SCAN_PQEXEC;
        if (owed_msg_of(type) == OWED_NOT_ALLOWED)
            return SCAN_BAD_TYPE; /* e.g. a second StartupMessage: never forwarded */
        if (s->replication != STARTUP_REPLICATION_NONE) {
            /* Its own walsender: replication commands, CopyData status updates and CopyDone
             * pass as they are. Nothing is rewritten and nothing is counted as owed (the
             * server is never released, see server_scan). */
            cn->scan += WIRE_HEADER_LEN;
            cn->body_left = len;
            continue;
        }
        if (!owed_has_room(&s->owed)) {
            /* The server owes answers for as many messages as the pooler keeps count of:
             * forward nothing more until they arrive (the server's answers resume us). */
            c->owed_wait = true;
            return SCAN_BLOCKED;
        }
        /* Another client may have left the unnamed statement on this server: close it
         * before this client's first message, then look at that message again. */
        enum rewrite_result r = RW_PASS;
        if (prepared_unnamed_foreign(&s->unnamed, c->id, type))
            r = close_foreign_unnamed(c, s);
        if (r == RW_PASS) {
            const uint8_t *body = b->data + cn->scan + WIRE_HEADER_LEN;
            uint32_t have = b->end - cn->scan - WIRE_HEADER_LEN;
            prepared_unnamed_note(&s->unnamed, c->id, type, body, have < len ? have : len);
            /* Before a rewrite changes it (looking again at a message a rewrite waits for
             * changes nothing). */
            note_client_message(c, type, body, have, len);
            /* In session mode too while statements are tracked: see prepared.h. */
            if ((s->pool->mode != POOL_MODE_SESSION || c->stmts ||
                 c->pooler->cfg->max_prepared_statements > 0) &&
                (type == WIRE_FE_PARSE || type == WIRE_FE_BIND || type == WIRE_FE_DESCRIBE ||
                 type == WIRE_FE_CLOSE))
                r = rewrite_message(c, s, type, len);
        }
        if (r == RW_DONE)
            continue; /* the rewrite counted what it placed */
        if (r != RW_PASS)
            return scan_result_of(r);
        server_note_frontend(s, type, 0, 0);
        cn->scan += WIRE_HEADER_LEN;
        cn->body_left = len;
    }
    return SCAN_OK;
}

/* Sends what is left of a console response. False when the client is gone. */
static bool console_flush(struct client *c)
{
    struct console_out *o = c->console;
    while (o && o->sent < o->buf.len) {
        size_t n = 0;
        enum flush_result r = conn_send(&c->conn, o->buf.data + o->sent, o->buf.len - o->sent, &n);
        o->sent += n;
        if (r == FLUSH_PARTIAL) {
            client_want_writable(c);
            return true; /* the writable edge resumes it */
        }
        if (r == FLUSH_ERROR) {
            objects_client_close(c, "could not send to client");
            return false;
        }
    }
    if (o) {
        console_out_free(o);
        free(o);
        c->console = NULL;
    }
    return true;
}

/* Admin console: whole simple-query messages, one response each. */
static void console_pump(struct client *c)
{
    struct pooler *p = c->pooler;
    while (!c->console) {
        if (c->conn.may_read) {
            enum fill_result r = conn_fill(p, &c->conn);
            if (r == FILL_EOF || r == FILL_ERROR) {
                objects_client_close(c, "console client closed the connection");
                return;
            }
            if (r == FILL_NO_MEMORY) {
                objects_client_fail(c, "53200", "out of memory");
                return;
            }
        }
        if (c->console_wait != CONSOLE_WAIT_NONE)
            break; /* a PAUSE or WAIT_CLOSE is not answered yet: the rest waits with it */
        struct iobuf *b = c->conn.buf;
        if (!b || b->pos == b->end)
            break;
        uint8_t type;
        uint32_t len;
        enum wire_header_result h = wire_parse_header(b->data + b->pos, b->end - b->pos,
                                                      p->bufs.size - WIRE_HEADER_LEN, &type, &len);
        if (h == WIRE_HEADER_BAD_LENGTH) {
            objects_client_fail(c, "08P01", "invalid message length");
            return;
        }
        if (h == WIRE_HEADER_INCOMPLETE || b->end - b->pos - WIRE_HEADER_LEN < len) {
            if (c->conn.may_read)
                continue;
            break;
        }
        const uint8_t *body = b->data + b->pos + WIRE_HEADER_LEN;
        if (type == WIRE_FE_TERMINATE) {
            objects_client_close(c, "client sent Terminate");
            return;
        }
        c->console = malloc(sizeof(*c->console));
        if (!c->console) {
            objects_client_fail(c, "53200", "out of memory");
            return;
        }
        console_out_init(c->console);
        if (type == WIRE_FE_QUERY) {
            /* A console command is a transaction and a query of "pgbouncer" (PgBouncer). */
            c->pool->stats.xact_count++;
            c->pool->stats.query_count++;
        }
        if (console_handle_message(p, (enum console_access)c->console_access, type, body, len,
                                   &c->console_skipping, c->console) != CONSOLE_ANSWERED) {
            objects_client_fail(c, "08P01", "invalid message on the admin console");
            return;
        }
        b->pos += WIRE_HEADER_LEN + len;
        if (b->pos == b->end)
            b->pos = b->end = 0;
        c->conn.scan = b->pos;
        if (c->console->buf.overflow) {
            objects_client_fail(c, "53200", "out of memory");
            return;
        }
        if (c->console->wait != CONSOLE_WAIT_NONE) {
            c->console_wait = c->console->wait;
            c->console_wait_db = c->console->wait_db[0] ? strdup(c->console->wait_db) : NULL;
            if (c->console->wait_db[0] && !c->console_wait_db) {
                objects_client_fail(c, "53200", "out of memory");
                return;
            }
        }
        if (!console_flush(c) || c->state == CL_JUSTFREE)
            return;
    }
    if (c->state == CL_ACTIVE)
        conn_release_if_empty(p, &c->conn);
}

void client_console_finish_waits(struct pooler *p)
{
    if (!p->admin_pool)
        return;
    struct plist *n, *tmp;
    plist_for_each_safe(n, tmp, &p->admin_pool->active_clients)
    {
        struct client *c = plist_entry(n, struct client, node);
        enum console_wait wait = (enum console_wait)c->console_wait;
        if (wait == CONSOLE_WAIT_NONE || c->console ||
            !console_wait_over(p, wait, c->console_wait_db))
            continue;
        c->console = malloc(sizeof(*c->console));
        if (!c->console) {
            objects_client_fail(c, "53200", "out of memory");
            continue;
        }
        console_out_init(c->console);
        console_wait_finish(wait, c->console);
        c->console_wait = CONSOLE_WAIT_NONE;
        free(c->console_wait_db);
        c->console_wait_db = NULL;
        if (c->console->buf.overflow) {
            objects_client_fail(c, "53200", "out of memory");
            continue;
        }
        if (console_flush(c) && c->state != CL_JUSTFREE)
            console_pump(c); /* what it sent meanwhile */
    }
}

/* ---- the manager's reclaim steps ---- */

bool client_is_quiet(const struct client *c)
{
    if (c->state != CL_ACTIVE || c->reclaimed || c->conn.body_left ||
        (c->conn.buf && c->conn.buf->pos < c->conn.buf->end))
        return false;
    const struct server *s = c->server;
    return !s || (s->state == SV_ACTIVE && !server_owes_answers(s) && !s->conn.body_left &&
                  !(s->conn.buf && s->conn.buf->pos < s->conn.buf->end));
}

enum client_notice_result client_send_notice(struct client *c, const char *message)
{
    if (!client_is_quiet(c))
        return CLIENT_NOTICE_BUSY;
    uint8_t out[600];
    struct wire_buf b;
    wire_buf_init(&b, out, sizeof(out));
    wire_build_notice(&b, "WARNING", "01000", message);
    if (b.overflow)
        return CLIENT_NOTICE_BUSY;
    /* Quiet says nothing of the socket: a client that stopped reading after its last result
     * may have left it all but full. Sending then cut the notice short (the client read a
     * torn message) and closed the client, the harshest step for the gentlest. */
    if (!net_writable_now(c->conn.fd))
        return CLIENT_NOTICE_NO_ROOM;
    if (!client_send_raw(c, out, b.len)) {
        objects_client_close(c, "a notice could not be delivered");
        return CLIENT_NOTICE_CLOSED;
    }
    return CLIENT_NOTICE_SENT;
}

bool client_reclaim_server(struct client *c, const char *why)
{
    struct server *s = c->server;
    if (!s || !client_is_quiet(c) || s->xact == WIRE_XACT_IDLE)
        return false;
    /* A cancel this client sent may still land: the server goes to no one else before it
     * has (as at a release, BEING_CANCELED), so the next run reclaims it instead. */
    if (s->cancels_in_flight > 0)
        return false;
    struct pooler *p = c->pooler;
    struct pool *pool = s->pool;
    c->server = NULL;
    s->client = NULL;
    c->reclaimed = true;
    c->request_us = 0;
    forget_requests(c); /* rolled back: its SETs with it */
    s->last_used_us = pooler_now(p);
    if (s->cancel_unsettled) {
        /* A cancel whose fate is unknown may still land on it: closing it rolls back too. */
        log_info("pool", "client %llu: transaction ended by closing server %llu: %s",
                 (unsigned long long)c->id, (unsigned long long)s->id, why);
        server_close(s, "a cancel whose fate is unknown may still reach it");
        handout_activate(pool);
        return true;
    }
    log_info("pool",
             "client %llu: transaction rolled back and server %llu returned to the pool: %s",
             (unsigned long long)c->id, (unsigned long long)s->id, why);
    /* The server answers the pooler's own queries before anyone else gets it. */
    bool reset = pool->mode == POOL_MODE_SESSION || p->cfg->server_reset_query_always;
    if (reset && p->cfg->server_reset_query[0])
        prepared_server_free_all(&s->stmts); /* DISCARD ALL drops prepared statements too */
    states_server_change(s, SV_TESTED);
    if (!server_send_internal_query(s, "ROLLBACK") ||
        (reset && p->cfg->server_reset_query[0] &&
         !server_send_internal_query(s, p->cfg->server_reset_query))) {
        server_close(s, "rollback could not be sent");
        handout_activate(pool);
    }
    return true;
}

bool client_cancel_query(struct client *c)
{
    struct server *s = c->server;
    if (!s || !server_owes_answers(s))
        return false;
    return cancel_req_start(c->pooler, s);
}

/* A reclaimed client's next request: its messages are dropped up to the first Query,
 * FunctionCall or Sync, which is answered with an error and ReadyForQuery (outside a
 * transaction, as the server now is). False when the client was closed. */
static bool answer_reclaimed(struct client *c)
{
    struct iobuf *b = c->conn.buf;
    uint32_t max = (uint32_t)c->pooler->cfg->max_packet_size;
    while (b && b->pos < b->end && c->reclaimed) {
        uint32_t have = b->end - b->pos;
        if (c->discard_left) {
            uint32_t n = have < c->discard_left ? have : c->discard_left;
            b->pos += n;
            c->discard_left -= n;
            continue;
        }
        uint8_t type;
        uint32_t len;
        enum wire_header_result h = wire_parse_header(b->data + b->pos, have, max, &type, &len);
        if (h == WIRE_HEADER_BAD_LENGTH) {
            objects_client_fail(c, "08P01", "invalid message length");
            return false;
        }
        if (h == WIRE_HEADER_INCOMPLETE)
            break;
        if (type == WIRE_FE_TERMINATE) {
            objects_client_close(c, "client sent Terminate");
            return false;
        }
        enum owed_msg m = owed_msg_of(type);
        if (m == OWED_NOT_ALLOWED) {
            objects_client_fail(c, "08P01", "invalid frontend message type");
            return false;
        }
        uint64_t total = (uint64_t)WIRE_HEADER_LEN + len;
        if (total <= have) {
            b->pos += (uint32_t)total;
        } else {
            c->discard_left = (uint32_t)(total - have);
            b->pos = b->end;
        }
        if (m != OWED_QUERY && m != OWED_FUNCTION && m != OWED_SYNC)
            continue;
        if (c->discard_left)
            break; /* answered once the whole message is in */
        uint8_t out[700];
        struct wire_buf w;
        wire_buf_init(&w, out, sizeof(out));
        wire_build_error(&w, "ERROR", "25P03",
                         "pgwarden rolled back this transaction and returned its server to the "
                         "pool: it was held idle too long (leak_reclaim)");
        wire_build_ready(&w, WIRE_XACT_IDLE);
        c->reclaimed = false;
        if (w.overflow || !client_send_raw(c, out, w.len)) {
            objects_client_close(c, "could not deliver the reclaim error");
            return false;
        }
    }
    if (b) {
        c->conn.scan = b->pos; /* nothing is forwarded without a server */
        if (b->pos == b->end)
            b->pos = b->end = c->conn.scan = 0;
    }
    return true;
}

void client_pump(struct client *c)
{
    struct pooler *p = c->pooler;
    if (c->pool && c->pool->is_admin && c->state == CL_ACTIVE) {
        console_pump(c);
        return;
    }
    switch ((enum client_state)c->state) {
    case CL_LOGIN:
        login_pump(c);
        return;
    case CL_WAITING_LOGIN:
    case CL_WAITING:
        /* The request stays in the socket or buffer until a server is free; only a client
         * that went away is dealt with now. */
        if (c->conn.closing)
            objects_client_close(c, "client closed the connection while waiting");
        return;
    case CL_ACTIVE:
        break;
    case CL_FREE:
    case CL_JUSTFREE:
    case CL_STATE_COUNT:
        return;
    }
    if (c->owed_wait)
        return; /* the server's answers resume this client (server_pump) */
    /* Suspended: what is buffered still goes out, the socket waits (may_read stays set, so
     * RESUME picks up where this stopped). */
    bool can_read = !pooler_reads_suspended(p);
    int reads = 0; /* sbuf_loopcnt: spent, the client is woken again later in the turn */
    for (;;) {
        enum fill_result r = FILL_AGAIN;
        if (c->conn.may_read && can_read) {
            r = conn_fill(p, &c->conn);
            if (r == FILL_EOF || r == FILL_ERROR) {
                objects_client_close(c, r == FILL_EOF ? "client closed the connection"
                                                      : "client connection error");
                return;
            }
            if (r == FILL_NO_MEMORY) {
                objects_client_fail(c, "53200", "out of memory");
                return;
            }
            if (r == FILL_OK) {
                if (conn_read_budget_spent(&c->conn, &reads, p->cfg->sbuf_loopcnt))
                    can_read = false;
                c->active_us = pooler_now(p);
                /* A request starts when bytes arrive while its server owes nothing (in
                 * session pooling the server stays linked between queries). */
                if (!c->server || !server_owes_answers(c->server))
                    c->query_us = c->active_us;
            }
        }
        struct iobuf *b = c->conn.buf;
        if (b && c->reclaimed && !answer_reclaimed(c))
            return;
        if (!b || b->pos == b->end) {
            if (b && c->reclaimed && r == FILL_OK)
                continue;
            break;
        }
        if (!c->server) {
            uint8_t type;
            uint32_t len;
            enum wire_header_result h = wire_parse_header(
                b->data + b->pos, b->end - b->pos, (uint32_t)p->cfg->max_packet_size, &type, &len);
            if (h == WIRE_HEADER_BAD_LENGTH) {
                objects_client_fail(c, "08P01", "invalid message length");
                return;
            }
            if (h == WIRE_HEADER_INCOMPLETE) {
                if (c->conn.may_read && can_read)
                    continue;
                break;
            }
            if (type == WIRE_FE_TERMINATE) {
                objects_client_close(c, "client sent Terminate");
                return;
            }
            if (owed_msg_of(type) == OWED_NOT_ALLOWED) {
                objects_client_fail(c, "08P01", "invalid frontend message type");
                return;
            }
            /* Refused before it asks for a server (as PgBouncer): a busy pool would keep the
             * client waiting, and a server would be taken, for a message that never goes. */
            if (type == WIRE_FE_QUERY && p->cfg->disable_pqexec) {
                objects_client_fail(c, SCAN_FAILURES[SCAN_PQEXEC].sqlstate, "%s",
                                    SCAN_FAILURES[SCAN_PQEXEC].message);
                return;
            }
            handout_request_server(c);
            if (!c->server)
                return; /* waiting, or failed and closed */
        }
        struct server *s = c->server;
        /* Its own RESET or SET left the server with other values than the client's (its
         * startup ones): set them before its next request. */
        if (c->session && c->session->resync && !server_owes_answers(s) &&
            !client_sync_server_params(c, s)) {
            c->server = NULL;
            s->client = NULL;
            server_close(s, "could not send SET");
            objects_client_fail(c, "08006", "server connection failed");
            return;
        }
        uint32_t scan_before = c->conn.scan, cap_before = c->conn.buf->cap;
        int64_t sent_before = c->pool->stats.bytes_received;
        enum scan_result sr = client_scan(c, s);
        /* A complete request goes out at the end of the loop turn (batch_defer_send); the
         * bytes stay accounted in [pos, scan) of the client's buffer until then. */
        if (sr == SCAN_OK && !c->conn.send_now && c->conn.buf->pos < c->conn.scan &&
            batch_defer_send(c))
            return;
        switch (conn_flush(&c->conn, &s->conn, &c->pool->stats.bytes_received)) {
        case FLUSH_DONE:
            break;
        case FLUSH_PARTIAL:
            return; /* resumes when the server socket is writable */
        case FLUSH_ERROR:
            c->server = NULL;
            s->client = NULL;
            server_close(s, "send to server failed");
            objects_client_fail(c, "08006", "server connection failed");
            return;
        }
        if (sr == SCAN_TERMINATE) {
            objects_client_close(c, "client sent Terminate");
            return;
        }
        if (SCAN_FAILURES[sr].sqlstate) {
            objects_client_fail(c, SCAN_FAILURES[sr].sqlstate, "%s", SCAN_FAILURES[sr].message);
            return;
        }
        if (sr == SCAN_BLOCKED)
            return; /* what was counted went out; the rest waits for the server's answers */
        if (sr == SCAN_NEED_FLUSH)
            continue;
        if (!c->conn.may_read || !can_read)
            break;
        /* A full buffer that neither scanned, sent nor grew can never make progress: end
         * this client rather than spin on it. */
        if (r == FILL_FULL && c->conn.scan == scan_before &&
            c->pool->stats.bytes_received == sent_before && c->conn.buf &&
            c->conn.buf->cap == cap_before) {
            objects_client_fail(c, "08P01", "protocol error: a message could not be processed");
            return;
        }
    }
    if (c->state == CL_ACTIVE)
        conn_release_if_empty(p, &c->conn);
}

void client_io_cb(int fd, unsigned what, void *arg)
{
    (void)fd;
    struct client *c = arg;
    if (c->state == CL_JUSTFREE)
        return;
    what = conn_note_edges(&c->conn, what);
    if (c->state == CL_LOGIN) {
        client_pump(c); /* a TLS handshake may wait for either edge */
        return;
    }
    if ((what & NET_IO_WRITABLE) && c->console) {
        if (!console_flush(c) || c->state == CL_JUSTFREE)
            return;
        if (!c->console)
            client_pump(c); /* requests that waited behind a large response */
        return;
    }
    /* The client can take more of its server's output. */
    if ((what & NET_IO_WRITABLE) && c->server && c->server->conn.buf &&
        c->server->conn.buf->pos < c->server->conn.scan) {
        server_pump(c->server);
        if (c->state == CL_JUSTFREE)
            return;
    }
    if (what & NET_IO_READABLE)
        client_pump(c);
}
