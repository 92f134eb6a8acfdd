/* PgBouncer's auth_file (userlist.txt): one `"user" "secret"` per line (lines end with LF,
 * CRLF or CR), `""` for a quote inside a quoted string, `;` or `#` comment lines. Loaded into
 * an owned, sorted table. */
#ifndef PGWARDEN_CONFIG_AUTH_FILE_H
#define PGWARDEN_CONFIG_AUTH_FILE_H

#include <stdbool.h>
#include <stddef.h>

/* Limits: a longer file, user or secret is a load error (never truncated). */
#define AUTH_FILE_MAX_SIZE       (16u * 1024u * 1024u)
#define AUTH_FILE_MAX_USER_LEN   1024
#define AUTH_FILE_MAX_SECRET_LEN 8192

enum auth_file_secret_kind {
    AUTH_SECRET_NONE,  /* empty or NULL: no password; never authenticates by password */
    AUTH_SECRET_PLAIN, /* a plaintext password */
    AUTH_SECRET_MD5,   /* "md5" + 32 lowercase hex digits */
    AUTH_SECRET_SCRAM, /* starts with "SCRAM-SHA-256$" (validated when used) */
};

enum auth_file_secret_kind auth_file_secret_kind(const char *secret);
/* "none", "plain", "md5", "scram" (for logs and SHOW output: never the secret itself). */
const char *auth_file_secret_kind_name(enum auth_file_secret_kind kind);

struct auth_entry {
    char *user;   /* owned */
    char *secret; /* owned; wiped before it is freed */
};

struct auth_file {
    struct auth_entry *entries; /* owned; sorted by user (strcmp), unique users */
    size_t count;
};

/* Loads path into out (which need not be initialised; on failure it is left empty). Only a
 * regular file is read (a FIFO or device is refused without blocking). A line that is not
 * blank, a comment or an entry fails the whole load, so no user is dropped silently: errors
 * read "path:line: reason" and never contain a secret. A user listed twice keeps the last
 * secret, as in PgBouncer. After the second quoted field, the rest of a line may hold only
 * whitespace, a comment or more quoted fields (PgBouncer ignores them too). */
__attribute__((warn_unused_result)) bool auth_file_load(const char *path, struct auth_file *out,
                                                        char *err, size_t err_len);

/* Same from memory (len bytes, NULs rejected); name is used in error messages. */
__attribute__((warn_unused_result)) bool auth_file_parse(const char *text, size_t len,
                                                         const char *name, struct auth_file *out,
                                                         char *err, size_t err_len);

/* The secret for user, or NULL when the user is not listed or its secret is empty (`"u" ""`
 * allows no password login, as if the user were not listed). Borrowed: valid until
 * auth_file_free. O(log n). */
const char *auth_file_lookup(const struct auth_file *af, const char *user);
/* Whether user has a line, even one with an empty secret (auth_type = trust lets exactly the
 * listed users in). O(log n). */
bool auth_file_lists(const struct auth_file *af, const char *user);

/* Wipes the secrets, frees everything, leaves af empty (safe to call twice). */
void auth_file_free(struct auth_file *af);

#endif
