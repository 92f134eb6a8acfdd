/* pgbouncer.ini tokenizer: [section] headers, `key = value` lines, `;`/`#` comments and
 * `%include path`, with "file:line: reason" errors that stay correct through includes.
 * Also the libpq-style `key=value key2='quoted'` parser used by [databases] entries. */
#ifndef PGWARDEN_CONFIG_INI_H
#define PGWARDEN_CONFIG_INI_H

/*
 * Syntax, as PgBouncer reads it:
 * - Leading and trailing whitespace of every line is ignored; blank lines are skipped.
 * - A line whose first non-blank character is ';' or '#' is a comment. There are no inline
 *   comments: `key = a ; b` has the value "a ; b".
 * - `[name]` starts a section (name trimmed, non-empty); only whitespace may follow ']'.
 * - `key = value`: key is everything before the first '=' (trimmed, non-empty, no spaces);
 *   value is everything after it, trimmed, kept raw: it may contain '=', spaces and quotes,
 *   and surrounding double quotes are NOT stripped. Entries before any section are an error.
 * - `%include path`: path (rest of the line, trimmed) is found as ini_relative_path says,
 *   the including file being the referrer. Entries of the included file are reported with its own
 * file and line. Errors: a missing or unreadable file, a file that is not a regular file (a FIFO, a
 * device), an include loop, nesting deeper than INI_MAX_INCLUDE_DEPTH.
 * - Limits: each file at most INI_MAX_FILE_SIZE bytes, all files of one parse together at
 *   most INI_MAX_TOTAL_SIZE, each line at most INI_MAX_LINE_LEN bytes, no NUL bytes.
 */

#include <stdbool.h>
#include <stddef.h>

#define INI_MAX_FILE_SIZE     (16u * 1024u * 1024u)
#define INI_MAX_TOTAL_SIZE    (64u * 1024u * 1024u)
#define INI_MAX_LINE_LEN      (64u * 1024u)
#define INI_MAX_INCLUDE_DEPTH 10

/* Where a file named in referrer (a config file, an HBA file) is: an absolute name as it is;
 * a relative one in referrer's directory, unless no such file is there and there is one
 * relative to the working directory (PgBouncer's rule, so its configurations keep working).
 * False when the result does not fit in out. */
bool ini_relative_path(const char *referrer, const char *name, char *out, size_t out_len);

/* Called once per entry, in file order (includes inline). All strings are borrowed and valid
 * only during the call. Return false with a reason in err to stop the parse; the parser
 * prefixes it with "file:line: ". */
typedef bool (*ini_entry_fn)(void *ctx, const char *section, const char *key, const char *value,
                             const char *file, int line, char *err, size_t err_len);

/* Returns false with "file:line: reason" in err on the first syntax error or when fn returns
 * false. */
__attribute__((warn_unused_result)) bool ini_parse_file(const char *path, ini_entry_fn fn,
                                                        void *ctx, char *err, size_t err_len);
__attribute__((warn_unused_result)) bool ini_parse_string(const char *text, const char *name,
                                                          ini_entry_fn fn, void *ctx, char *err,
                                                          size_t err_len);

/* Reads a whole regular file of at most max_size bytes into *out (NUL-terminated, owned by
 * the caller: free()), its length in *out_len. Anything else (a FIFO, socket, device or
 * directory) is refused at once: opening never blocks. Errors read "path: reason". Shared by
 * the config loaders so that every file gets the same size cap, checks and error wording. */
__attribute__((warn_unused_result)) bool ini_read_file(const char *path, size_t max_size,
                                                       char **out, size_t *out_len, char *err,
                                                       size_t err_len);

/* Called once per key=value pair of a connection string; strings borrowed for the call. */
typedef bool (*ini_connstr_fn)(void *ctx, const char *key, const char *value, char *err,
                               size_t err_len);

/* Parses a libpq-style connection string: pairs `key = value` separated by whitespace;
 * unquoted values end at whitespace, `'quoted values'` may contain spaces; inside both, a
 * backslash escapes the next character (`\'`, `\\`). Errors (a missing '=', an empty key, an
 * unterminated quote) name the key but never echo a value (it may be a password). */
__attribute__((warn_unused_result)) bool ini_parse_connstr(const char *text, ini_connstr_fn fn,
                                                           void *ctx, char *err, size_t err_len);

#endif
