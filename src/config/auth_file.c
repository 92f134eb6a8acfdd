/* PgBouncer auth_file (userlist.txt) loader (see auth_file.h). Lines are parsed one by one
 * into a growing array, which is then sorted by user name for binary-search lookups; a user
 * listed twice keeps its last secret. Secrets are wiped from every buffer that held them. */
#include "config/auth_file.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "config/ini.h"
#include "proto/md5_auth.h"
#include "proto/scram.h"

enum auth_file_secret_kind auth_file_secret_kind(const char *secret)
{
    if (secret == NULL || secret[0] == '\0')
        return AUTH_SECRET_NONE;
    if (md5_auth_is_secret(secret))
        return AUTH_SECRET_MD5;
    if (scram_is_secret(secret))
        return AUTH_SECRET_SCRAM;
    return AUTH_SECRET_PLAIN;
}

const char *auth_file_secret_kind_name(enum auth_file_secret_kind kind)
{
    switch (kind) {
    case AUTH_SECRET_NONE:
        return "none";
    case AUTH_SECRET_PLAIN:
        return "plain";
    case AUTH_SECRET_MD5:
        return "md5";
    case AUTH_SECRET_SCRAM:
        return "scram";
    }
    return "unknown";
}

/* An entry while loading: seq orders duplicates so that the last one wins after sorting. */
struct pending {
    char *user;   /* owned */
    char *secret; /* owned */
    size_t seq;
};

struct loader {
    struct pending *items; /* owned */
    size_t count;
    size_t cap;
    const char *name; /* borrowed: file name for messages */
    char *err;        /* borrowed */
    size_t err_len;
};

static void wipe_free(char *s)
{
    if (s != NULL) {
        OPENSSL_cleanse(s, strlen(s));
        free(s);
    }
}

static bool line_error(struct loader *ld, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static bool line_error(struct loader *ld, int line, const char *fmt, ...)
{
    char reason[256];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(reason, sizeof(reason), fmt, ap);
    va_end(ap);
    if (ld->err != NULL && ld->err_len > 0)
        snprintf(ld->err, ld->err_len, "%s:%d: %s", ld->name, line, reason);
    return false;
}

/* Reads a "quoted" string at *p (which points at the opening quote) up to eol; "" is a
 * literal quote. On success *out is an owned copy and *p points after the closing quote. */
static bool read_quoted(const char **p, const char *eol, size_t max_len, char **out, bool *too_long)
{
    const char *s = *p + 1;
    size_t n = 0;
    char *buf;

    *too_long = false;
    /* First pass: find the end and the unescaped length. */
    for (const char *q = s;; q++) {
        if (q >= eol)
            return false;
        if (*q == '"') {
            if (q + 1 < eol && q[1] == '"') {
                q++;
                n++;
                continue;
            }
            break;
        }
        n++;
    }
    if (n > max_len) {
        *too_long = true;
        return false;
    }
    buf = malloc(n + 1);
    if (buf == NULL)
        return false;
    n = 0;
    for (;;) {
        if (*s == '"') {
            if (s + 1 < eol && s[1] == '"') {
                buf[n++] = '"';
                s += 2;
                continue;
            }
            break;
        }
        buf[n++] = *s++;
    }
    buf[n] = '\0';
    *p = s + 1;
    *out = buf;
    return true;
}

/* CR is no blank here: it ends a line (see find_eol). */
static const char *skip_blanks(const char *p, const char *eol)
{
    while (p < eol && (*p == ' ' || *p == '\t' || *p == '\v' || *p == '\f'))
        p++;
    return p;
}

static bool add_entry(struct loader *ld, char *user, char *secret)
{
    if (ld->count == ld->cap) {
        size_t cap = ld->cap ? ld->cap * 2 : 16;
        struct pending *items = realloc(ld->items, cap * sizeof(*items));
        if (items == NULL)
            return false;
        ld->items = items;
        ld->cap = cap;
    }
    ld->items[ld->count].user = user;
    ld->items[ld->count].secret = secret;
    ld->items[ld->count].seq = ld->count;
    ld->count++;
    return true;
}

static bool parse_line(struct loader *ld, const char *p, const char *eol, int line)
{
    char *user = NULL, *secret = NULL;
    bool too_long;

    p = skip_blanks(p, eol);
    if (p == eol || *p == ';' || *p == '#')
        return true;
    if (*p != '"')
        return line_error(ld, line, "expected a quoted user name (\"user\" \"secret\")");
    if (!read_quoted(&p, eol, AUTH_FILE_MAX_USER_LEN, &user, &too_long))
        return line_error(ld, line,
                          too_long ? "user name too long (more than %d bytes)"
                                   : "unterminated quoted user name",
                          AUTH_FILE_MAX_USER_LEN);
    if (user[0] == '\0') {
        free(user);
        return line_error(ld, line, "empty user name");
    }
    p = skip_blanks(p, eol);
    if (p == eol || *p != '"') {
        free(user);
        return line_error(ld, line, "expected a quoted secret after the user name");
    }
    if (!read_quoted(&p, eol, AUTH_FILE_MAX_SECRET_LEN, &secret, &too_long)) {
        free(user);
        /* Never quote the secret itself: only say what is wrong with it. */
        return line_error(ld, line,
                          too_long ? "secret too long (more than %d bytes)"
                                   : "unterminated quoted secret",
                          AUTH_FILE_MAX_SECRET_LEN);
    }
    /* PgBouncer ignores the rest of the line; accept what its files really contain (more
     * quoted fields, comments) and reject anything else, which is more likely a typo. */
    for (;;) {
        char *extra = NULL;

        p = skip_blanks(p, eol);
        if (p == eol || *p == ';' || *p == '#')
            break;
        if (*p != '"' || !read_quoted(&p, eol, SIZE_MAX, &extra, &too_long)) {
            free(user);
            wipe_free(secret);
            return line_error(ld, line, "unexpected text after the secret");
        }
        wipe_free(extra);
    }
    if (!add_entry(ld, user, secret)) {
        free(user);
        wipe_free(secret);
        return line_error(ld, line, "out of memory");
    }
    return true;
}

/* The end of the line starting at p: the first CR or LF, or end. Files written on Windows
 * (CRLF) and on old Macs or by some editors and tools (CR alone) must load every line; with
 * LF as the only separator a CR-only file was one long line, and as the fields after the
 * second are ignored, only its first user was loaded. */
static const char *find_eol(const char *p, const char *end)
{
    while (p < end && *p != '\n' && *p != '\r')
        p++;
    return p;
}

/* Steps over the line ending at eol (LF, CR or CRLF: one line either way). */
static const char *skip_eol(const char *eol, const char *end)
{
    if (eol < end && *eol == '\r' && eol + 1 < end && eol[1] == '\n')
        return eol + 2;
    return eol + 1;
}

static int cmp_pending(const void *a, const void *b)
{
    const struct pending *x = a, *y = b;
    int c = strcmp(x->user, y->user);

    if (c != 0)
        return c;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static void loader_free(struct loader *ld)
{
    for (size_t i = 0; i < ld->count; i++) {
        free(ld->items[i].user);
        wipe_free(ld->items[i].secret);
    }
    free(ld->items);
    ld->items = NULL;
    ld->count = ld->cap = 0;
}

/* Sorts, keeps the last of each run of equal users, and moves everything into out. */
static bool finish(struct loader *ld, struct auth_file *out)
{
    size_t n = 0;

    if (ld->count == 0)
        return true;
    qsort(ld->items, ld->count, sizeof(*ld->items), cmp_pending);
    out->entries = calloc(ld->count, sizeof(*out->entries));
    if (out->entries == NULL)
        return false;
    for (size_t i = 0; i < ld->count; i++) {
        struct pending *it = &ld->items[i];

        if (i + 1 < ld->count && strcmp(it->user, ld->items[i + 1].user) == 0) {
            free(it->user);
            wipe_free(it->secret);
            continue;
        }
        out->entries[n].user = it->user;
        out->entries[n].secret = it->secret;
        n++;
    }
    out->count = n;
    free(ld->items);
    ld->items = NULL;
    ld->count = ld->cap = 0;
    return true;
}

bool auth_file_parse(const char *text, size_t len, const char *name, struct auth_file *out,
                     char *err, size_t err_len)
{
    struct loader ld = {
        .name = name != NULL ? name : "<auth_file>", .err = err, .err_len = err_len};
    const char *p = text, *end = text + len;
    int line = 0;

    out->entries = NULL;
    out->count = 0;
    if (len > AUTH_FILE_MAX_SIZE) {
        if (err != NULL && err_len > 0)
            snprintf(err, err_len, "%s: file too large (more than %u bytes)", ld.name,
                     AUTH_FILE_MAX_SIZE);
        return false;
    }
    while (p < end) {
        const char *eol = find_eol(p, end);

        line++;
        if (memchr(p, '\0', (size_t)(eol - p)) != NULL) {
            line_error(&ld, line, "NUL byte in line");
            goto fail;
        }
        if (!parse_line(&ld, p, eol, line))
            goto fail;
        p = skip_eol(eol, end);
    }
    if (!finish(&ld, out)) {
        if (err != NULL && err_len > 0)
            snprintf(err, err_len, "%s: out of memory", ld.name);
        goto fail;
    }
    return true;
fail:
    loader_free(&ld);
    return false;
}

bool auth_file_load(const char *path, struct auth_file *out, char *err, size_t err_len)
{
    char *buf = NULL;
    size_t len = 0;
    bool ok;

    out->entries = NULL;
    out->count = 0;
    if (!ini_read_file(path, AUTH_FILE_MAX_SIZE, &buf, &len, err, err_len))
        return false;
    ok = auth_file_parse(buf, len, path, out, err, err_len);
    OPENSSL_cleanse(buf, len);
    free(buf);
    return ok;
}

/* The entry of user, or NULL. O(log n). */
static const struct auth_entry *find_entry(const struct auth_file *af, const char *user)
{
    size_t lo = 0, hi;

    if (af == NULL || user == NULL)
        return NULL;
    hi = af->count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(user, af->entries[mid].user);

        if (c == 0)
            return &af->entries[mid];
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

const char *auth_file_lookup(const struct auth_file *af, const char *user)
{
    const struct auth_entry *e = find_entry(af, user);
    /* An empty secret is no secret: returning it would let md5 and SCRAM logins succeed with
     * an empty password, and the server login send one. */
    return e && e->secret[0] != '\0' ? e->secret : NULL;
}

bool auth_file_lists(const struct auth_file *af, const char *user)
{
    return find_entry(af, user) != NULL;
}

void auth_file_free(struct auth_file *af)
{
    if (af == NULL)
        return;
    for (size_t i = 0; i < af->count; i++) {
        free(af->entries[i].user);
        wipe_free(af->entries[i].secret);
    }
    free(af->entries);
    af->entries = NULL;
    af->count = 0;
}
