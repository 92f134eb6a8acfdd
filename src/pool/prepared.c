/* Shared prepared-statement registry, per-client names and per-server LRU sets. */
#include "pool/prepared.h"

#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/wire.h"

bool prepared_registry_init(struct stmt_registry *r)
{
    r->n_buckets = 1024;
    r->buckets = calloc(r->n_buckets, sizeof(*r->buckets));
    r->next_id = 0;
    r->count = 0;
    uint8_t raw[8];
    if (!r->buckets || RAND_bytes(raw, sizeof(raw)) != 1) {
        free(r->buckets);
        r->buckets = NULL;
        return false;
    }
    for (size_t i = 0; i < sizeof(raw); i++)
        snprintf(r->secret + 2 * i, 3, "%02x", raw[i]);
    return true;
}

size_t prepared_registry_name(const struct stmt_registry *r, uint64_t id, char out[STMT_NAME_MAX])
{
    int n = snprintf(out, STMT_NAME_MAX, "pgw_%s_%llu", r->secret, (unsigned long long)id);
    return n < 0 ? 0 : (size_t)n;
}

void prepared_registry_destroy(struct stmt_registry *r)
{
    for (size_t i = 0; r->buckets && i < r->n_buckets; i++) {
        struct prepared_stmt *st = r->buckets[i];
        while (st) {
            struct prepared_stmt *next = st->next;
            free(st);
            st = next;
        }
    }
    free(r->buckets);
    r->buckets = NULL;
}

bool prepared_registry_owns_name(const struct stmt_registry *r, const char *name)
{
    size_t n = strlen(r->secret);
    return !strncmp(name, "pgw_", 4) && !strncmp(name + 4, r->secret, n) && name[4 + n] == '_';
}

static uint32_t hash_bytes(const uint8_t *p, size_t len)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 16777619u;
    }
    return h;
}

struct prepared_stmt *prepared_registry_get(struct stmt_registry *r, const uint8_t *body,
                                            size_t len)
{
    uint32_t h = hash_bytes(body, len);
    struct prepared_stmt **bucket = &r->buckets[h % r->n_buckets];
    for (struct prepared_stmt *st = *bucket; st; st = st->next) {
        if (st->hash == h && st->body_len == len && !memcmp(st->body, body, len)) {
            st->refs++;
            return st;
        }
    }
    struct prepared_stmt *st = malloc(sizeof(*st) + len);
    if (!st)
        return NULL;
    st->id = ++r->next_id;
    st->hash = h;
    st->refs = 1;
    st->name_len = (uint8_t)prepared_registry_name(r, st->id, st->name);
    st->body_len = len;
    memcpy(st->body, body, len);
    st->next = *bucket;
    *bucket = st;
    r->count++;
    return st;
}

void prepared_stmt_unref(struct stmt_registry *r, struct prepared_stmt *st)
{
    if (!st || --st->refs > 0)
        return;
    /* Servers may still hold it prepared under its name; ids are never reused, so a stale
     * id in a server's set can never match a new statement. */
    struct prepared_stmt **link = &r->buckets[st->hash % r->n_buckets];
    while (*link != st)
        link = &(*link)->next;
    *link = st->next;
    r->count--;
    free(st);
}

/* PostgreSQL keys prepared statements by the first NAMEDATALEN - 1 bytes of their name (a
 * longer name is cut there, silently): two names alike up to there are one statement, and a
 * client's Parse, Bind and Close must find each other as its own connection would. */
#define PG_NAME_BYTES 63

static bool same_name(const char *a, const char *b)
{
    return !strncmp(a, b, PG_NAME_BYTES);
}

struct client_stmt *prepared_client_find(struct client_stmt *list, const char *name)
{
    for (; list; list = list->next)
        if (same_name(list->name, name))
            return list;
    return NULL;
}

struct client_stmt *prepared_client_set(struct stmt_registry *r, struct client_stmt **list,
                                        const char *name, struct prepared_stmt *st)
{
    static uint32_t seq;
    struct client_stmt *cs = prepared_client_find(*list, name);
    if (!cs) {
        size_t n = strnlen(name, PG_NAME_BYTES);
        cs = malloc(sizeof(*cs) + n + 1);
        if (!cs) {
            prepared_stmt_unref(r, st);
            return NULL;
        }
        memcpy(cs->name, name, n);
        cs->name[n] = 0;
        cs->next = *list;
        *list = cs;
    } else {
        prepared_stmt_unref(r, cs->stmt);
    }
    cs->stmt = st;
    cs->seq = ++seq;
    cs->confirmed = false;
    cs->own_server = 0;
    return cs;
}

void prepared_client_remove(struct stmt_registry *r, struct client_stmt **list, const char *name)
{
    for (struct client_stmt **link = list; *link; link = &(*link)->next) {
        if (same_name((*link)->name, name)) {
            struct client_stmt *cs = *link;
            *link = cs->next;
            prepared_stmt_unref(r, cs->stmt);
            free(cs);
            return;
        }
    }
}

size_t prepared_client_count(const struct client_stmt *list)
{
    size_t n = 0;
    for (; list; list = list->next)
        n++;
    return n;
}

void prepared_client_free_all(struct stmt_registry *r, struct client_stmt **list)
{
    while (*list) {
        struct client_stmt *cs = *list;
        *list = cs->next;
        prepared_stmt_unref(r, cs->stmt);
        free(cs);
    }
}

struct server_stmt *prepared_server_find(struct server_stmts *s, uint64_t id)
{
    for (uint32_t i = 0; i < s->n; i++)
        if (s->e[i].id == id)
            return &s->e[i];
    return NULL;
}

void prepared_server_touch(struct server_stmts *s, struct server_stmt *e)
{
    e->last_use = ++s->clock;
}

/* The entry of id, added when missing (unverified). */
static struct server_stmt *find_or_add(struct server_stmts *s, uint64_t id)
{
    struct server_stmt *e = prepared_server_find(s, id);
    if (e)
        return e;
    if (s->n == s->cap) {
        uint32_t cap = s->cap ? s->cap * 2 : 8;
        struct server_stmt *grown = realloc(s->e, cap * sizeof(*grown));
        if (!grown)
            return NULL;
        s->e = grown;
        s->cap = cap;
    }
    e = &s->e[s->n++];
    e->id = id;
    e->verified = false;
    return e;
}

static bool record(struct server_stmts *s, uint64_t id, bool verified)
{
    struct server_stmt *e = find_or_add(s, id);
    if (!e)
        return false;
    e->verified = verified;
    prepared_server_touch(s, e);
    return true;
}

bool prepared_server_prepared(struct server_stmts *s, uint64_t id)
{
    return record(s, id, true);
}

bool prepared_server_add(struct server_stmts *s, uint64_t id)
{
    return record(s, id, false);
}

void prepared_server_remove(struct server_stmts *s, uint64_t id)
{
    struct server_stmt *e = prepared_server_find(s, id);
    if (e)
        *e = s->e[--s->n];
}

uint64_t prepared_server_victim(const struct server_stmts *s, uint32_t max)
{
    if (s->n == 0 || s->n < max)
        return 0;
    const struct server_stmt *oldest = &s->e[0];
    for (uint32_t i = 1; i < s->n; i++)
        if (s->e[i].last_use < oldest->last_use)
            oldest = &s->e[i];
    return oldest->id;
}

static int by_last_use(const void *a, const void *b)
{
    const struct server_stmt *x = a, *y = b;
    return x->last_use < y->last_use ? -1 : x->last_use > y->last_use;
}

uint32_t prepared_server_victims(const struct server_stmts *s, uint32_t max, uint64_t *out,
                                 uint32_t cap)
{
    if (max == 0)
        max = 1;
    if (s->n < max || cap == 0)
        return 0;
    uint32_t want = s->n - max + 1;
    if (want > cap)
        want = cap;
    if (want == 1) {
        out[0] = prepared_server_victim(s, max);
        return 1;
    }
    struct server_stmt *sorted = malloc(s->n * sizeof(*sorted));
    if (!sorted) {
        out[0] = prepared_server_victim(s, max); /* one at a time, as before */
        return 1;
    }
    memcpy(sorted, s->e, s->n * sizeof(*sorted));
    qsort(sorted, s->n, sizeof(*sorted), by_last_use);
    for (uint32_t i = 0; i < want; i++)
        out[i] = sorted[i].id;
    free(sorted);
    return want;
}

void prepared_server_distrust(struct server_stmts *s)
{
    s->suspect = true;
    for (uint32_t i = 0; i < s->n; i++)
        s->e[i].verified = false;
}

void prepared_server_free_all(struct server_stmts *s)
{
    free(s->e);
    s->e = NULL;
    s->n = s->cap = 0;
}

bool prepared_unnamed_foreign(const struct unnamed_stmt *u, uint64_t client, uint8_t type)
{
    if (u->client == 0 || u->client == client)
        return false;
    /* Outside COPY these are ignored: the Close goes with the next message that is not, so
     * that it rides in front of real work and the server is still idle when it arrives. */
    return type != WIRE_FE_FLUSH && type != WIRE_FE_COPY_DATA && type != WIRE_FE_COPY_DONE &&
           type != WIRE_FE_COPY_FAIL;
}

void prepared_unnamed_closed(struct unnamed_stmt *u)
{
    u->client = 0;
}

void prepared_unnamed_note(struct unnamed_stmt *u, uint64_t client, uint8_t type,
                           const uint8_t *body, uint32_t have)
{
    /* Without the first body byte the name is unknown: assume it is empty (the cost of being
     * wrong is one Close for the next client). */
    if (type == WIRE_FE_PARSE && (have == 0 || body[0] == 0))
        u->client = client;
}
