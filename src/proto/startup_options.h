/* The "options" startup parameter, as libpq sends PGOPTIONS: command-line switches for the
 * backend, separated by white space, where a backslash makes the next character part of the
 * word (PostgreSQL's pg_split_opts). Only settings are accepted, as PgBouncer does:
 * "-c name=value", "-cname=value" and "--name=value"; a '-' in the name reads as '_'
 * (PostgreSQL's ParseLongOption). Pure code: no I/O, no allocation. */
#ifndef PGWARDEN_PROTO_STARTUP_OPTIONS_H
#define PGWARDEN_PROTO_STARTUP_OPTIONS_H

#include <stdbool.h>
#include <stddef.h>

enum startup_options_result {
    STARTUP_OPTIONS_OK,
    STARTUP_OPTIONS_UNSUPPORTED, /* a switch other than -c / --, or a setting without '=' */
    STARTUP_OPTIONS_TOO_LONG,    /* a word longer than the caller's scratch buffer */
    STARTUP_OPTIONS_STOPPED,     /* the callback returned false */
};

/* One setting: name and value point into the caller's scratch buffer and are valid only
 * during the call. Returns false to stop the parse. */
typedef bool (*startup_option_fn)(void *ctx, const char *name, const char *value);

/* Calls fn for every setting in options, in order. scratch (scratch_len bytes) holds one
 * unescaped word at a time; a word must fit in it with its NUL. */
enum startup_options_result startup_options_parse(const char *options, char *scratch,
                                                  size_t scratch_len, startup_option_fn fn,
                                                  void *ctx);

/* PgBouncer's words for STARTUP_OPTIONS_UNSUPPORTED and STARTUP_OPTIONS_TOO_LONG. */
const char *startup_options_error(enum startup_options_result r);

/* The "replication" startup parameter, read as PostgreSQL reads it: "database" asks for a
 * logical walsender (SQL allowed), a true boolean (on, true, yes, 1, and their unambiguous
 * prefixes, any case) for a physical one, a false boolean for none. */
enum startup_replication {
    STARTUP_REPLICATION_NONE,
    STARTUP_REPLICATION_LOGICAL,
    STARTUP_REPLICATION_PHYSICAL,
    STARTUP_REPLICATION_INVALID, /* neither "database" nor a boolean */
};

enum startup_replication startup_options_replication_parse(const char *value);
/* The value that asks PostgreSQL for this kind ("database", "true"); NULL for NONE. */
const char *startup_options_replication_value(enum startup_replication kind);
/* SHOW CLIENTS / SHOW SERVERS' replication column: none, logical, physical. */
const char *startup_options_replication_name(enum startup_replication kind);

#endif
