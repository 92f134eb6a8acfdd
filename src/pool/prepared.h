/* Protocol-level prepared statements in transaction mode. A client's named statement may
 * land on any server, so statements are renamed: every distinct Parse body (query text and
 * parameter types) gets one pooler-wide name "pgw_<secret>_<id>", each server remembers which
 * of them it has prepared, and Parse/Bind/Describe/Close are rewritten in the client's buffer.
 * A Bind or Describe for a statement the server lacks gets the stored Parse injected in
 * front of it; the injected ParseComplete is swallowed on the way back.
 *
 * Session mode passes a new Parse through under the client's own name (as PostgreSQL shows
 * it, and SQL-level EXECUTE finds it) but still remembers its body, because a RELOAD or SET
 * may switch the pool's mode while the client is connected: the client then meets servers
 * that never saw its statements. A statement is rewritten whenever the client's server is
 * not the one that holds it under the client's name (client_stmt.own_server), in either
 * mode, so both directions of a switch keep every statement working.
 *
 * The secret is random per process, so another client cannot guess a statement's name from
 * its id (it can still read names in pg_prepared_statements: SQL-level PREPARE and
 * DEALLOCATE make the pooler re-create its statements before use, see server_stmts). A
 * server keeps at most max_prepared_statements of them; the least recently used is closed
 * to make room. */
#ifndef PGWARDEN_POOL_PREPARED_H
#define PGWARDEN_POOL_PREPARED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* "pgw_" + 16 hex digits + "_" + up to 20 digits + NUL; below PostgreSQL's NAMEDATALEN. */
#define STMT_NAME_MAX 48

struct prepared_stmt {
    struct prepared_stmt *next; /* borrowed: hash chain */
    uint64_t id;
    uint32_t hash;
    uint32_t refs;
    uint8_t name_len;
    char name[STMT_NAME_MAX]; /* "pgw_<secret>_<id>" */
    size_t body_len;          /* bytes of the Parse body after the statement name */
    uint8_t body[];
};

struct client_stmt {
    struct client_stmt *next;   /* owned: the client's list */
    struct prepared_stmt *stmt; /* owned reference */
    uint32_t seq;               /* tells this binding from a later one of the same name */
    bool confirmed;             /* the server answered its Parse with ParseComplete: a Parse of
                                   the same name now fails, as on PostgreSQL */
    /* Session pooling: the id of the server its Parse went to as the client sent it, which
     * holds it under the client's own name; 0 when it lives under the pooler's name. On any
     * other server (after a switch of pool mode) it is renamed like the others. */
    uint64_t own_server;
    /* the client's statement name, its first 63 bytes (PostgreSQL keys a statement by
     * them) */
    char name[];
};

struct stmt_registry {
    struct prepared_stmt **buckets; /* owned */
    size_t n_buckets;
    uint64_t next_id;
    size_t count;
    char secret[17]; /* 16 random hex digits, the same for every statement of the process */
};

/* False on out of memory or when no random secret can be drawn. */
bool prepared_registry_init(struct stmt_registry *r);
/* The server-side name of statement id; returns its length. */
size_t prepared_registry_name(const struct stmt_registry *r, uint64_t id, char out[STMT_NAME_MAX]);
void prepared_registry_destroy(struct stmt_registry *r);
/* True when name is one the pooler gives its statements ("pgw_<secret>_..."): a client may
 * know it only by reading pg_prepared_statements, and must not use it. */
bool prepared_registry_owns_name(const struct stmt_registry *r, const char *name);
/* The shared statement for a Parse body (query\0 + types), with a reference taken. */
struct prepared_stmt *prepared_registry_get(struct stmt_registry *r, const uint8_t *body,
                                            size_t len);
void prepared_stmt_unref(struct stmt_registry *r, struct prepared_stmt *st);

/* The client's statement called name (names alike in their first 63 bytes are one, as on
 * PostgreSQL), or NULL. */
struct client_stmt *prepared_client_find(struct client_stmt *list, const char *name);
/* Binds name to st in the client's list (replacing an older binding), unconfirmed, under the
 * pooler's name (own_server 0) and with a new seq; takes over the reference. NULL on out of memory
 * (the reference is then dropped). */
struct client_stmt *prepared_client_set(struct stmt_registry *r, struct client_stmt **list,
                                        const char *name, struct prepared_stmt *st);
void prepared_client_remove(struct stmt_registry *r, struct client_stmt **list, const char *name);
/* How many statements the client has bound. */
size_t prepared_client_count(const struct client_stmt *list);
void prepared_client_free_all(struct stmt_registry *r, struct client_stmt **list);

/* Which statements a server has prepared, with when each was last used (small sets bounded by
 * max_prepared_statements, linear search). */
struct server_stmt {
    uint64_t id;
    uint64_t last_use; /* server_stmts.clock when last added or used */
    /* false after SQL-level PREPARE or DEALLOCATE ran on the server: a client may have
     * dropped or replaced it under its name (names are readable in pg_prepared_statements),
     * so it is re-created, Close first, before its next use. */
    bool verified;
};
struct server_stmts {
    struct server_stmt *e; /* owned */
    uint32_t n;
    uint32_t cap;
    uint64_t clock;
    /* SQL-level PREPARE or DEALLOCATE ran on this server: any statement name may be taken,
     * so every Parse the pooler sends is preceded by a Close of the same name. */
    bool suspect;
};
/* The entry of id, or NULL. */
struct server_stmt *prepared_server_find(struct server_stmts *s, uint64_t id);
/* Marks an entry used now. */
void prepared_server_touch(struct server_stmts *s, struct server_stmt *e);
/* Records id as prepared by the pooler's own Parse (verified). False on out of memory. */
bool prepared_server_prepared(struct server_stmts *s, uint64_t id);
/* A Close of id that the server skipped, or a Parse replacing a statement it held that it
 * skipped: the statement stays (or is back). Whether it is the pooler's own is not known, so
 * it is recorded unverified and re-created before its next use. False on out of memory. */
bool prepared_server_add(struct server_stmts *s, uint64_t id);
void prepared_server_remove(struct server_stmts *s, uint64_t id);
/* The least recently used statement to close before one more is prepared when the server
 * holds max or more (0 = none to close). */
uint64_t prepared_server_victim(const struct server_stmts *s, uint32_t max);
/* The statements to close, least recently used first, so that one more fits within max
 * (after max_prepared_statements was lowered, more than one); at most cap of them go to out.
 * Returns how many. */
uint32_t prepared_server_victims(const struct server_stmts *s, uint32_t max, uint64_t *out,
                                 uint32_t cap);
/* SQL-level PREPARE or DEALLOCATE ran: every statement must be re-created before use. */
void prepared_server_distrust(struct server_stmts *s);
void prepared_server_free_all(struct server_stmts *s);

/* The unnamed statement (a Parse with an empty name) is never renamed, and PostgreSQL keeps
 * it past the end of the transaction: it lives until the next unnamed Parse or simple Query
 * on that connection. In transaction or statement pooling (and in session pooling without a
 * reset query) a server passes from client to client, so a client's Bind or Describe of ""
 * sent without its own Parse would run the statement another client left there, SQL text
 * and literals included. The unnamed portal cannot cross: protocol portals are never
 * holdable, and a server changes hands only between transactions.
 *
 * Each server remembers which client may have left an unnamed statement on it: the last one
 * that sent it a Parse that may be unnamed. When a different client sends that server its
 * first message that is not ignored outside COPY (the server is idle then, so nothing can
 * skip it), the pooler puts Close('S', "") in front and swallows its CloseComplete. The
 * server then holds no unnamed statement of anyone else, and answers that client exactly as
 * its own connection would: 26000 for a Bind or Describe of "" without a Parse. A client
 * that gets back the server it used keeps its statement (as on PostgreSQL), and a client
 * that Parses first pays one 7-byte message in the same round trip, only when the server
 * last served another client that used the unnamed statement.
 *
 * Deciding per Bind instead would need to know whether an earlier Parse of "" in the
 * pipeline ran (a Parse skipped after an error leaves the old statement in place), which is
 * known only once the server answers. */
struct unnamed_stmt {
    uint64_t client; /* id of the client that may have left one, 0 = nobody may have */
};
/* Whether a Close('S', "") must go to the server ahead of a message of this type from
 * client. The caller then sends it and calls prepared_unnamed_closed. */
bool prepared_unnamed_foreign(const struct unnamed_stmt *u, uint64_t client, uint8_t type);
void prepared_unnamed_closed(struct unnamed_stmt *u);
/* A message of client goes to the server; body holds have bytes of it. A Parse whose name
 * may be empty marks the statement the client's. */
void prepared_unnamed_note(struct unnamed_stmt *u, uint64_t client, uint8_t type,
                           const uint8_t *body, uint32_t have);

#endif
