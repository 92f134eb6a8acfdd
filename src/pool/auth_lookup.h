/* auth_user + auth_query: a client whose user auth_file does not list gets its secret from
 * the database, looked up over auth_user's own pool (objects_pool_get_auth) without blocking the
 * loop. The client waits in login meanwhile; the answer (a secret, or none) then authenticates it
 * exactly as an auth_file entry would. Nothing is cached: every such login asks again, so a
 * changed or expired password counts at once. */
#ifndef PGWARDEN_POOL_AUTH_LOOKUP_H
#define PGWARDEN_POOL_AUTH_LOOKUP_H

#include <stddef.h>
#include <stdint.h>

#include "pool/pool.h"

/* What one auth_query answer means (pure: auth_lookup_judge), or that the query failed. */
enum auth_lookup_verdict {
    AUTH_LOOKUP_SECRET,      /* exactly one row naming the user, with a usable secret */
    AUTH_LOOKUP_NO_USER,     /* no row: the login fails */
    AUTH_LOOKUP_NO_SECRET,   /* the user's row with a NULL or empty secret (expired, or none
                                set): a password login fails, trust lets the user in */
    AUTH_LOOKUP_BAD_ANSWER,  /* rows of another shape, two rows, a garbled secret: fails too */
    AUTH_LOOKUP_QUERY_FAILED /* the server answered the query with an error: logged with the
                                server's words; the client, not authenticated yet, hears only
                                PgBouncer's "bouncer config error" */
};

/* The answer collected so far: rows are fed one DataRow body at a time. */
struct auth_lookup_answer {
    unsigned rows;
    bool bad;     /* a row of the wrong shape */
    char *secret; /* owned (wiped when freed): the first row's secret, NULL = NULL */
};

/* Feeds one DataRow body: the row must have two columns, the first equal to user. */
void auth_lookup_answer_row(struct auth_lookup_answer *a, const char *user, const uint8_t *body,
                            size_t len);
/* The verdict once the query is over; why (static text) says what was wrong. */
enum auth_lookup_verdict auth_lookup_judge(const struct auth_lookup_answer *a, const char **why);
void auth_lookup_answer_clear(struct auth_lookup_answer *a);

/* Starts looking up user's secret for client c: query runs as auth_user in the database
 * db_name (a [databases] entry). The answer comes back through client_auth_lookup_done
 * (client.h), never from inside this call. False: out of memory. */
__attribute__((warn_unused_result)) bool auth_lookup_start(struct client *c, const char *db_name,
                                                           const char *auth_user, const char *query,
                                                           const char *user,
                                                           struct auth_lookup **out);
/* The client is gone: its request is forgotten (a query running for it finishes unheard). */
void auth_lookup_cancel(struct auth_lookup *req);

/* Hooks of the server side (server.c, handout.c). */
void auth_lookup_pump(struct pool *pool); /* a server of pool became idle */
void auth_lookup_on_row(struct server *s, const uint8_t *body, size_t len);
void auth_lookup_on_error(struct server *s, const uint8_t *body, size_t len);
void auth_lookup_query_done(struct server *s); /* its ReadyForQuery arrived */
void auth_lookup_server_gone(struct server *s, const char *why);
void auth_lookup_login_failed(struct pool *pool, const char *why);
/* The janitor's pass over an auth_query pool: lookups that waited or ran too long fail. */
void auth_lookup_expire(struct pool *pool, int64_t now);

#endif
