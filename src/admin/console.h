/* The admin console: the virtual databases "pgbouncer" and "pgwarden", reached with any
 * PostgreSQL client over the simple query protocol. PgBouncer's SHOW commands and columns
 * (so existing exporters keep working) plus PAUSE, RESUME, RELOAD and SHUTDOWN for
 * admin_users. stats_users may only SHOW. Pooler-wide actions go through pool/serve.h (the
 * console declares nothing the pooler implements); KILL and KILL_CLIENT close objects with
 * objects_client_fail/server_close, everything else only reads the pool objects. */
#ifndef PGWARDEN_ADMIN_CONSOLE_H
#define PGWARDEN_ADMIN_CONSOLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto/wire.h"

struct pooler;
struct pooler_config;

enum console_access {
    CONSOLE_DENIED,
    CONSOLE_STATS, /* stats_users: SHOW only */
    CONSOLE_ADMIN, /* admin_users: everything */
};

/* True for the console's database names. */
bool console_is_admin_db(const char *db);
enum console_access console_access_for(const struct pooler_config *cfg, const char *user);
/* Access granted by who the peer is, without a password: user "pgbouncer" over the unix
 * socket from a process of the pooler's own Unix user is an admin (PgBouncer's rule). */
enum console_access console_peer_access(const char *user, bool same_uid_over_unix_socket);

/* Output of a console response: the messages, built with the wire builders into a buffer
 * that grows as needed (buf.data owned; buf.overflow: out of memory). */
/* Commands whose answer waits for the pooler (PgBouncer's PAUSE and WAIT_CLOSE return only
 * when done); the client's further input waits with it. */
enum console_wait {
    CONSOLE_WAIT_NONE,
    CONSOLE_WAIT_PAUSE, /* no server of the database (all: "") linked to a client */
    CONSOLE_WAIT_CLOSE, /* no server of the database marked to be closed */
};

struct console_out {
    struct wire_buf buf;
    size_t sent;      /* bytes already delivered (a large SHOW may need several sends) */
    uint8_t wait;     /* enum console_wait: the answer is completed by console_wait_finish */
    char wait_db[64]; /* the database waited for, "" = all */
};
/* Makes o empty; console_out_free releases its bytes. */
void console_out_init(struct console_out *o);
void console_out_free(struct console_out *o);

/* Appends the console's welcome (ParameterStatus set) to o. */
void console_welcome(struct console_out *o, const char *application_name);

/* Handles one message from a console client, appending the answer (if any) to o. The simple
 * query protocol is served; extended-protocol messages get one error and are discarded up to
 * their Sync, which answers ReadyForQuery, as PostgreSQL does after an error (*skipping is the
 * client's state between messages). Anything else is a protocol violation that ends the
 * client. */
enum console_verdict {
    CONSOLE_ANSWERED,
    CONSOLE_PROTOCOL_VIOLATION,
};
enum console_verdict console_handle_message(struct pooler *p, enum console_access access,
                                            uint8_t type, const uint8_t *body, uint32_t len,
                                            bool *skipping, struct console_out *o);

/* Whether a waiting command's condition holds now (db NULL = all databases). */
bool console_wait_over(const struct pooler *p, enum console_wait wait, const char *db);
/* Appends the waiting command's CommandComplete and ReadyForQuery to o. */
void console_wait_finish(enum console_wait wait, struct console_out *o);

/* Parses "SET key = value" (or "SET key TO value"; value bare or in single quotes with ''
 * for a quote; a trailing ';' allowed). False when sql is not that, or a part is too long. */
bool console_parse_set(const char *sql, char *key, size_t key_len, char *value, size_t value_len);

/* Handles one simple Query (sql NUL-terminated) from a console client; appends the result
 * and ReadyForQuery to o. */
void console_handle_query(struct pooler *p, enum console_access access, const char *sql,
                          struct console_out *o);

#endif
