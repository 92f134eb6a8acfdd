/* What a client's SQL does to its session that the pooler must follow: SET, RESET, DISCARD ALL
 * and DEALLOCATE statements, found in the text of a simple Query or a Parse. A tokenizer as
 * PostgreSQL's (comments, '' E'' U&'' and dollar-quoted strings, quoted identifiers) splits
 * the text into statements at top-level semicolons; only a statement's first words and, for
 * SET, its value are read. Anything else is no effect.
 *
 * The scan says what each statement would do if it succeeds; the caller pairs it with the
 * statement's CommandComplete (sql_effects_tag_of) before believing it. Pure code: no I/O, no
 * allocation. */
#ifndef PGWARDEN_PROTO_SQL_EFFECTS_H
#define PGWARDEN_PROTO_SQL_EFFECTS_H

#include <stdbool.h>
#include <stddef.h>

/* PostgreSQL's NAMEDATALEN: longer names are not followed. */
#define SQL_NAME_MAX 64

enum sql_effect_kind {
    SQL_EFFECT_SET,         /* SET [SESSION] name TO|= value: name and value */
    SQL_EFFECT_SET_DEFAULT, /* SET [SESSION] name TO DEFAULT, RESET name: name */
    SQL_EFFECT_SET_OTHER,   /* a SET or RESET whose effect is not followed: LOCAL, TRANSACTION,
                               ROLE, SESSION AUTHORIZATION, a value that is not a plain list of
                               constants */
    SQL_EFFECT_RESET_ALL,
    SQL_EFFECT_DISCARD_ALL,
    SQL_EFFECT_DEALLOCATE, /* DEALLOCATE [PREPARE] name: name */
    SQL_EFFECT_DEALLOCATE_ALL,
};

/* The CommandComplete tags of those statements. */
enum sql_tag {
    SQL_TAG_NONE, /* any other tag */
    SQL_TAG_SET,
    SQL_TAG_RESET,
    SQL_TAG_DISCARD_ALL,
    SQL_TAG_DEALLOCATE,
    SQL_TAG_DEALLOCATE_ALL,
};

struct sql_effect {
    enum sql_effect_kind kind;
    enum sql_tag tag;        /* what the statement's CommandComplete says when it succeeds */
    char name[SQL_NAME_MAX]; /* parameter ("a.b" for a qualified one) or statement name: an
                                unquoted identifier lower-cased, a quoted one as written */
    const char *value;       /* SET: the value's SQL text (constants and commas), inside the
                                scanned text; NULL otherwise */
    size_t value_len;
};

/* Called for each statement with an effect, in order. */
typedef void (*sql_effect_fn)(void *ctx, const struct sql_effect *e);

/* Scans len bytes of SQL. backslash_escapes: standard_conforming_strings is off, so a backslash
 * escapes the next character in '' strings too. A text that ends inside a string, quoted
 * identifier or comment ends the scan there: its last statement has no effect. */
void sql_effects_scan(const char *text, size_t len, bool backslash_escapes, sql_effect_fn fn,
                      void *ctx);

/* The tag of a CommandComplete body (tag text, NUL included or not). */
enum sql_tag sql_effects_tag_of(const char *body, size_t len);

#endif
