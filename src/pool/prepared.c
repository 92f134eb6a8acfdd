/* Shared prepared-statement registry, per-client names, per-server sets and the queue of
 * expected ParseComplete/CloseComplete answers. */
#include "pool/prepared.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

bool stmt_registry_init(struct stmt_registry *r)
{
    r->n_buckets = 1024;
    r->buckets = calloc(r->n_buckets, sizeof(*r->buckets));
    r->next_id = 0;
    r->count = 0;
    return r->buckets != NULL;
}

void stmt_registry_destroy(struct stmt_registry *r)
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

static uint32_t hash_bytes(const uint8_t *p, size_t len)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 16777619u;
    }
    return h;
}

struct prepared_stmt *stmt_registry_get(struct stmt_registry *r, const uint8_t *body, size_t len)
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
    st->name_len =
        (uint8_t)snprintf(st->name, sizeof(st->name), "PGW_%llu", (unsigned long long)st->id);
    st->body_len = len;
    memcpy(st->body, body, len);
    st->next = *bucket;
    *bucket = st;
    r->count++;
    return st;
}

void stmt_unref(struct stmt_registry *r, struct prepared_stmt *st)
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

struct client_stmt *client_stmt_find(struct client_stmt *list, const char *name)
{
    for (; list; list = list->next)
        if (!strcmp(list->name, name))
            return list;
    return NULL;
}

bool client_stmt_set(struct stmt_registry *r, struct client_stmt **list, const char *name,
                     struct prepared_stmt *st)
{
    struct client_stmt *cs = client_stmt_find(*list, name);
    if (cs) {
        stmt_unref(r, cs->stmt);
        cs->stmt = st;
        return true;
    }
    size_t n = strlen(name);
    cs = malloc(sizeof(*cs) + n + 1);
    if (!cs) {
        stmt_unref(r, st);
        return false;
    }
    memcpy(cs->name, name, n + 1);
    cs->stmt = st;
    cs->next = *list;
    *list = cs;
    return true;
}

void client_stmt_remove(struct stmt_registry *r, struct client_stmt **list, const char *name)
{
    for (struct client_stmt **link = list; *link; link = &(*link)->next) {
        if (!strcmp((*link)->name, name)) {
            struct client_stmt *cs = *link;
            *link = cs->next;
            stmt_unref(r, cs->stmt);
            free(cs);
            return;
        }
    }
}

void client_stmts_free(struct stmt_registry *r, struct client_stmt **list)
{
    while (*list) {
        struct client_stmt *cs = *list;
        *list = cs->next;
        stmt_unref(r, cs->stmt);
        free(cs);
    }
}

bool server_stmts_has(const struct server_stmts *s, uint64_t id)
{
    for (uint32_t i = 0; i < s->n; i++)
        if (s->ids[i] == id)
            return true;
    return false;
}

bool server_stmts_add(struct server_stmts *s, uint64_t id)
{
    if (server_stmts_has(s, id))
        return true;
    if (s->n == s->cap) {
        uint32_t cap = s->cap ? s->cap * 2 : 8;
        uint64_t *ids = realloc(s->ids, cap * sizeof(*ids));
        if (!ids)
            return false;
        s->ids = ids;
        s->cap = cap;
    }
    s->ids[s->n++] = id;
    return true;
}

void server_stmts_remove(struct server_stmts *s, uint64_t id)
{
    for (uint32_t i = 0; i < s->n; i++) {
        if (s->ids[i] == id) {
            s->ids[i] = s->ids[--s->n];
            return;
        }
    }
}

void server_stmts_free(struct server_stmts *s)
{
    free(s->ids);
    s->ids = NULL;
    s->n = s->cap = 0;
}
