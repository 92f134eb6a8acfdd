/* Protocol-level prepared statements in transaction mode. A client's named statement may
 * land on any server, so statements are renamed: every distinct Parse body (query text and
 * parameter types) gets one pooler-wide name "PGW_<id>", each server remembers which of them
 * it has prepared, and Parse/Bind/Describe/Close are rewritten in the client's buffer.
 * A Bind or Describe for a statement the server lacks gets the stored Parse injected in
 * front of it; the injected ParseComplete is swallowed on the way back. Session mode never
 * rewrites anything. */
#ifndef PGWARDEN_POOL_PREPARED_H
#define PGWARDEN_POOL_PREPARED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct prepared_stmt {
    struct prepared_stmt *next; /* borrowed: hash chain */
    uint64_t id;
    uint32_t hash;
    uint32_t refs;
    uint8_t name_len;
    char name[24];   /* "PGW_<id>" */
    size_t body_len; /* bytes of the Parse body after the statement name */
    uint8_t body[];
};

struct client_stmt {
    struct client_stmt *next;   /* owned: the client's list */
    struct prepared_stmt *stmt; /* owned reference */
    char name[];                /* the client's statement name */
};

struct stmt_registry {
    struct prepared_stmt **buckets; /* owned */
    size_t n_buckets;
    uint64_t next_id;
    size_t count;
};

bool stmt_registry_init(struct stmt_registry *r);
void stmt_registry_destroy(struct stmt_registry *r);
/* The shared statement for a Parse body (query\0 + types), with a reference taken. */
struct prepared_stmt *stmt_registry_get(struct stmt_registry *r, const uint8_t *body, size_t len);
void stmt_unref(struct stmt_registry *r, struct prepared_stmt *st);

/* The client's statement called name, or NULL. */
struct client_stmt *client_stmt_find(struct client_stmt *list, const char *name);
/* Binds name to st in the client's list (replacing an older binding); takes over the
 * reference. False on out of memory (the reference is then dropped). */
bool client_stmt_set(struct stmt_registry *r, struct client_stmt **list, const char *name,
                     struct prepared_stmt *st);
void client_stmt_remove(struct stmt_registry *r, struct client_stmt **list, const char *name);
void client_stmts_free(struct stmt_registry *r, struct client_stmt **list);

/* Which statements a server has prepared (ids; small sets, linear search). */
struct server_stmts {
    uint64_t *ids; /* owned */
    uint32_t n;
    uint32_t cap;
    /* SQL-level PREPARE or DEALLOCATE ran on this server: a client may have dropped or
     * replaced a pooler statement under its name, so each is re-created with a Close first. */
    bool suspect;
};
bool server_stmts_has(const struct server_stmts *s, uint64_t id);
bool server_stmts_add(struct server_stmts *s, uint64_t id);
void server_stmts_remove(struct server_stmts *s, uint64_t id);
void server_stmts_free(struct server_stmts *s);

#endif
