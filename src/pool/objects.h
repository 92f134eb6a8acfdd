/* Lifetime of pools and clients: creation, config (re)application, closing, and freeing
 * after the loop turn. */
#ifndef PGWARDEN_POOL_OBJECTS_H
#define PGWARDEN_POOL_OBJECTS_H

#include "pool/pool.h"

struct pool *objects_pool_get(struct pooler *p, const struct pooler_db_config *db,
                              const char *db_name, const char *user);
/* auth_user's own pool in db_name, apart from the pool clients logging in as auth_user use
 * (auth_lookup.c runs auth_query on its servers). */
struct pool *objects_pool_get_auth(struct pooler *p, const struct pooler_db_config *db,
                                   const char *db_name, const char *auth_user);
/* Applies (possibly new) config values to an existing pool; marks servers close_needed when
 * the connection target changed. False when out of memory: the error is logged and the pool
 * keeps the settings it had (a reload then leaves it on the old ones). */
bool objects_pool_apply_config(struct pool *pool);
/* Marks every server of pool close_needed: each is closed when next released or taken idle
 * (RECONNECT, a changed connection target, changed server TLS settings). */
void objects_pool_mark_servers_obsolete(struct pool *pool);
/* Forgets the SCRAM pass-through keys a client's login left (the secret they were recovered
 * under changed). */
void objects_pool_forget_scram_keys(struct pool *pool);
/* Forgets the pool's cached failed login (server_login_retry's wait and the fast-fail
 * message): after a login went through, or once the settings it failed with changed. */
void objects_pool_forget_login_failure(struct pool *pool);
/* Empties the lists of a pooler being set up (serve, and the session fuzzer's harness). */
void objects_init_pooler_lists(struct pooler *p);
void objects_pool_free(struct pool *pool);
/* Why a client that authenticated as login_user for pool (the admin pool for a console login)
 * may not log in now, or NULL; *sqlstate is set with a reason. Refused: a login to a database
 * while the pooler shuts down (SHUTDOWN WAIT_FOR_SERVERS / WAIT_FOR_CLIENTS, SIGINT,
 * SIGTERM: the unix socket stays open for the console), and a client beyond
 * max_db_client_connections (clients of the database, or of the console) or
 * max_user_client_connections (clients that logged in as login_user, console ones included).
 * Who is exempt (PgBouncer: admin users on the console) is the caller's to decide. Called
 * before the client is counted in pool. The returned string is static. */
const char *objects_login_refusal(const struct pool *pool, const char *login_user,
                                  const char **sqlstate);

struct client *objects_client_new(struct pooler *p, int fd, const struct net_addr *addr);
/* The logged-in client with this id (as SHOW CLIENTS prints it) in any pool, or NULL. */
struct client *objects_client_find(struct pooler *p, uint64_t id);
/* Marks in in_use every parameter slot a value refers to: of a client (its session and its
 * statements' pending effects), a server or a pool, in any state (params_recycle). */
void objects_params_in_use(const struct pooler *p, bool in_use[PARAM_COUNT]);
/* Sends an ErrorResponse (best effort) and closes. */
void objects_client_fail(struct client *c, const char *sqlstate, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The same, with the log's "closing because" saying reason instead of the message (PgBouncer's
 * words in the log, the whole story for the client). */
void objects_client_fail_reason(struct client *c, const char *reason, const char *sqlstate,
                                const char *fmt, ...) __attribute__((format(printf, 4, 5)));
/* Closes the connection; its server is released when clean, closed otherwise. */
void objects_client_close(struct client *c, const char *reason);

/* Closed clients and servers (JUSTFREE) are freed by objects_reap after the loop turn. */
void objects_schedule_reap(struct pooler *p);
void objects_reap(struct pooler *p);

/* Teardown: every client is closed (pooled ones told 57P01), every server closed, the
 * closed objects, cancel requests, pools and the console pool freed. The loop and the
 * pooler's own buffers stay for the caller. */
void objects_close_all(struct pooler *p);

#endif
