/* Replies of the admin console: result sets (RowDescription + DataRow + CommandComplete) with
 * PgBouncer's column types, errors and notices, appended to a console_out. Column specs are
 * "name" (text), "name:i" (int4), "name:q" (int8) or "name:n" (numeric), the letters
 * PgBouncer's own tables use, so typed clients and exporters parse pgwarden's tables as they
 * parse PgBouncer's. */
#ifndef PGWARDEN_ADMIN_REPLY_H
#define PGWARDEN_ADMIN_REPLY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "admin/console.h"

#define REPLY_MAX_COLS 64
/* The number of column specs in a static array. */
#define REPLY_COLS(specs) ((int)(sizeof(specs) / sizeof((specs)[0])))

enum reply_type {
    REPLY_TEXT,
    REPLY_INT4,
    REPLY_INT8,
    REPLY_NUMERIC,
};

struct reply {
    struct console_out *o;
    int ncols;
    enum reply_type types[REPLY_MAX_COLS];
    size_t row_at; /* where the current DataRow starts */
    int row_cols;  /* values written to it so far */
    size_t rows;
};

/* Starts a result set with n columns (at most REPLY_MAX_COLS). */
void reply_begin(struct reply *r, struct console_out *o, const char *const *specs, int n);
void reply_row(struct reply *r);
/* One value of the current row; NULL is SQL NULL. The row ends after its last column. */
void reply_text(struct reply *r, const char *v);
void reply_int(struct reply *r, int64_t v);
/* A fractional value with the given decimals (numeric columns). */
void reply_double(struct reply *r, double v, int decimals);
/* CommandComplete with tag ("SHOW", or the command's name). */
void reply_end(struct reply *r, const char *tag);

void reply_complete(struct console_out *o, const char *tag);
void reply_error(struct console_out *o, const char *sqlstate, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* A NOTICE with a message and a detail (SHOW HELP). */
void reply_notice_detail(struct console_out *o, const char *message, const char *detail);

/* A time in microseconds since the epoch as the console prints it ("2026-11-29 22:30:00
 * UTC"); "" for 0 (never). */
void reply_format_time(int64_t us, char *out, size_t len);

#endif
