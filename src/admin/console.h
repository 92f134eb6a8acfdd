/* The admin console: the virtual databases "pgbouncer" and "pgwarden", reached with any
 * PostgreSQL client over the simple query protocol. PgBouncer's SHOW commands and columns
 * (so existing exporters keep working) plus PAUSE, RESUME, RELOAD and SHUTDOWN for
 * admin_users. stats_users may only SHOW. */
#ifndef PGWARDEN_ADMIN_CONSOLE_H
#define PGWARDEN_ADMIN_CONSOLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pool/pool.h"

enum console_access {
    CONSOLE_DENIED,
    CONSOLE_STATS, /* stats_users: SHOW only */
    CONSOLE_ADMIN, /* admin_users: everything */
};

/* True for the console's database names. */
bool console_is_admin_db(const char *db);
enum console_access console_access_for(const struct pooler_config *cfg, const char *user);

/* Growable output of a console response (owned bytes). */
struct console_out {
    uint8_t *data; /* owned */
    size_t len;
    size_t cap;
    size_t sent; /* bytes already delivered (a large SHOW may need several sends) */
    bool failed; /* out of memory */
};
void console_out_free(struct console_out *o);

/* Appends the console's welcome (ParameterStatus set) to o. */
void console_welcome(struct console_out *o, const char *application_name);

/* Handles one simple Query (sql NUL-terminated) from a console client; appends the result
 * and ReadyForQuery to o. */
void console_handle_query(struct pooler *p, enum console_access access, const char *sql,
                          struct console_out *o);

/* ---- pooler actions the console triggers (implemented in pool/serve.c) ---- */
void pooler_pause(struct pooler *p);
void pooler_resume(struct pooler *p);
/* Returns false with the reason in err when the new configuration was refused. */
bool pooler_reload(struct pooler *p, char *err, size_t err_len);
void pooler_shutdown(struct pooler *p);

#endif
