/* pgbouncer.ini tokenizer (see ini.h for the syntax). Each file is read whole (size-capped),
 * split into lines in place, and entries are handed to the caller's callback; %include
 * recurses with a stack of real paths to detect loops. */
#include "config/ini.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CALLBACK_ERR_LEN 512

struct ini_parser {
    ini_entry_fn fn;
    void *ctx; /* borrowed */
    char *err; /* borrowed */
    size_t err_len;
    size_t total;                           /* bytes read so far over all files */
    char *section;                          /* owned; NULL before the first header */
    char *stack[INI_MAX_INCLUDE_DEPTH + 1]; /* owned real paths of files being parsed */
    int depth;                              /* entries used in stack */
};

static void set_errf(char *err, size_t err_len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_errf(char *err, size_t err_len, const char *fmt, ...)
{
    va_list ap;

    if (err == NULL || err_len == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, err_len, fmt, ap);
    va_end(ap);
}

static bool is_blank(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
}

/* Trims blanks on both sides in place; returns the new start. */
static char *trim(char *s)
{
    size_t n;

    while (is_blank(*s))
        s++;
    n = strlen(s);
    while (n > 0 && is_blank(s[n - 1]))
        s[--n] = '\0';
    return s;
}

/* What a non-regular file is, for the error message. */
static const char *file_kind(mode_t mode)
{
    if (S_ISDIR(mode))
        return "a directory";
    if (S_ISFIFO(mode))
        return "a FIFO";
    if (S_ISSOCK(mode))
        return "a socket";
    if (S_ISCHR(mode))
        return "a character device";
    if (S_ISBLK(mode))
        return "a block device";
    return "a special file";
}

bool ini_read_file(const char *path, size_t max_size, char **out, size_t *out_len, char *err,
                   size_t err_len)
{
    struct stat sb;
    char *buf = NULL;
    size_t len = 0;
    int flags;
    /* O_NONBLOCK because open() itself blocks on a FIFO until a writer appears, which would
     * hang a reload on the loop thread before the regular-file check below could refuse it.
     * O_NOCTTY so that naming a terminal cannot make it the controlling one. */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);

    *out = NULL;
    *out_len = 0;
    if (fd < 0) {
        set_errf(err, err_len, "%s: cannot open: %s", path, strerror(errno));
        return false;
    }
    if (fstat(fd, &sb) != 0) {
        set_errf(err, err_len, "%s: cannot stat: %s", path, strerror(errno));
        goto fail;
    }
    /* A FIFO or device could block or never end: only regular files are config files. */
    if (!S_ISREG(sb.st_mode)) {
        set_errf(err, err_len, "%s: not a regular file (%s)", path, file_kind(sb.st_mode));
        goto fail;
    }
    /* Reads of a regular file never block, but a file system that honours O_NONBLOCK (FUSE,
     * network mounts) could answer EAGAIN: read it as a plain blocking file. */
    flags = fcntl(fd, F_GETFL);
    if (flags < 0 || fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) != 0) {
        set_errf(err, err_len, "%s: cannot clear O_NONBLOCK: %s", path, strerror(errno));
        goto fail;
    }
    if ((unsigned long long)sb.st_size > max_size) {
        set_errf(err, err_len, "%s: file too large (more than %zu bytes)", path, max_size);
        goto fail;
    }
    buf = malloc((size_t)sb.st_size + 1);
    if (buf == NULL) {
        set_errf(err, err_len, "%s: out of memory", path);
        goto fail;
    }
    /* Read up to the size seen by fstat plus one byte, so a file that grows meanwhile is
     * noticed instead of silently truncated. */
    for (;;) {
        ssize_t n = read(fd, buf + len, (size_t)sb.st_size + 1 - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            set_errf(err, err_len, "%s: read error: %s", path, strerror(errno));
            goto fail;
        }
        if (n == 0)
            break;
        len += (size_t)n;
        if (len > (size_t)sb.st_size) {
            set_errf(err, err_len, "%s: file changed while being read", path);
            goto fail;
        }
    }
    close(fd);
    buf[len] = '\0';
    *out = buf;
    *out_len = len;
    return true;
fail:
    free(buf);
    close(fd);
    return false;
}

static bool parse_buffer(struct ini_parser *p, char *text, size_t len, const char *file);

bool ini_relative_path(const char *referrer, const char *name, char *out, size_t out_len)
{
    const char *slash = strrchr(referrer, '/');
    int n;
    if (name[0] == '/' || slash == NULL)
        n = snprintf(out, out_len, "%s", name);
    else
        n = snprintf(out, out_len, "%.*s/%s", slash == referrer ? 0 : (int)(slash - referrer),
                     referrer, name);
    if (n < 0 || (size_t)n >= out_len)
        return false;
    if (name[0] != '/' && slash != NULL && access(out, F_OK) != 0 && access(name, F_OK) == 0)
        snprintf(out, out_len, "%s", name);
    return true;
}

static bool do_include(struct ini_parser *p, const char *file, int line, const char *target)
{
    char *real = NULL, *buf = NULL;
    size_t len = 0;
    bool ok = false;
    char rerr[PATH_MAX + 128], path[PATH_MAX];

    if (!ini_relative_path(file, target, path, sizeof(path))) {
        set_errf(p->err, p->err_len, "%s:%d: %%include file name too long", file, line);
        goto done;
    }
    /* depth counts the top-level file, so it is also the nesting level of the new file. */
    if (p->depth > INI_MAX_INCLUDE_DEPTH) {
        set_errf(p->err, p->err_len, "%s:%d: %%include nested too deeply (more than %d levels)",
                 file, line, INI_MAX_INCLUDE_DEPTH);
        goto done;
    }
    real = realpath(path, NULL);
    if (real == NULL) {
        set_errf(p->err, p->err_len, "%s:%d: cannot open included file \"%s\": %s", file, line,
                 path, strerror(errno));
        goto done;
    }
    for (int i = 0; i < p->depth; i++) {
        if (p->stack[i] != NULL && strcmp(p->stack[i], real) == 0) {
            set_errf(p->err, p->err_len, "%s:%d: %%include loop: \"%s\" is already being read",
                     file, line, path);
            goto done;
        }
    }
    if (!ini_read_file(path, INI_MAX_FILE_SIZE, &buf, &len, rerr, sizeof(rerr))) {
        set_errf(p->err, p->err_len, "%s:%d: cannot include: %s", file, line, rerr);
        goto done;
    }
    if (len > INI_MAX_TOTAL_SIZE - p->total) {
        set_errf(p->err, p->err_len,
                 "%s:%d: configuration too large (more than %u bytes in all "
                 "included files)",
                 file, line, INI_MAX_TOTAL_SIZE);
        goto done;
    }
    p->total += len;
    p->stack[p->depth++] = real;
    real = NULL;
    ok = parse_buffer(p, buf, len, path);
    free(p->stack[--p->depth]);
    p->stack[p->depth] = NULL;
done:
    free(real);
    free(buf);
    return ok;
}

static bool handle_line(struct ini_parser *p, char *s, const char *file, int line)
{
    char *eq, *key, *value;
    char cberr[CALLBACK_ERR_LEN];

    s = trim(s);
    if (*s == '\0' || *s == ';' || *s == '#')
        return true;

    if (*s == '[') {
        char *close = strchr(s, ']');
        char *name;

        if (close == NULL || close[1] != '\0') {
            set_errf(p->err, p->err_len, "%s:%d: malformed section header (expected [name])", file,
                     line);
            return false;
        }
        *close = '\0';
        name = trim(s + 1);
        if (*name == '\0' || strchr(name, '[') != NULL) {
            set_errf(p->err, p->err_len, "%s:%d: invalid section name", file, line);
            return false;
        }
        free(p->section);
        p->section = strdup(name);
        if (p->section == NULL) {
            set_errf(p->err, p->err_len, "%s:%d: out of memory", file, line);
            return false;
        }
        return true;
    }

    if (*s == '%') {
        if (strncmp(s, "%include", 8) == 0 && (s[8] == '\0' || is_blank(s[8]))) {
            char *target = trim(s + 8);
            if (*target == '\0') {
                set_errf(p->err, p->err_len, "%s:%d: %%include without a file name", file, line);
                return false;
            }
            return do_include(p, file, line, target);
        }
        set_errf(p->err, p->err_len, "%s:%d: unknown directive (only %%include is known)", file,
                 line);
        return false;
    }

    /* Never echo the line: a malformed line may well hold a password. */
    eq = strchr(s, '=');
    if (eq == NULL) {
        set_errf(p->err, p->err_len,
                 "%s:%d: syntax error (expected key = value, [section], %%include or a comment)",
                 file, line);
        return false;
    }
    *eq = '\0';
    key = trim(s);
    value = trim(eq + 1);
    if (*key == '\0') {
        set_errf(p->err, p->err_len, "%s:%d: missing key before '='", file, line);
        return false;
    }
    for (const char *k = key; *k != '\0'; k++) {
        if (is_blank(*k)) {
            set_errf(p->err, p->err_len, "%s:%d: a key cannot contain whitespace", file, line);
            return false;
        }
    }
    if (p->section == NULL) {
        set_errf(p->err, p->err_len, "%s:%d: key outside of any [section]", file, line);
        return false;
    }
    cberr[0] = '\0';
    if (!p->fn(p->ctx, p->section, key, value, file, line, cberr, sizeof(cberr))) {
        set_errf(p->err, p->err_len, "%s:%d: %s", file, line,
                 cberr[0] != '\0' ? cberr : "rejected");
        return false;
    }
    return true;
}

/* Splits text (len bytes, NUL at text[len], modified in place) into lines. */
static bool parse_buffer(struct ini_parser *p, char *text, size_t len, const char *file)
{
    char *s = text, *end = text + len;
    int line = 0;

    while (s < end) {
        char *nl = memchr(s, '\n', (size_t)(end - s));
        char *eol = nl != NULL ? nl : end;

        line++;
        if ((size_t)(eol - s) > INI_MAX_LINE_LEN) {
            set_errf(p->err, p->err_len, "%s:%d: line too long (more than %u bytes)", file, line,
                     INI_MAX_LINE_LEN);
            return false;
        }
        if (memchr(s, '\0', (size_t)(eol - s)) != NULL) {
            set_errf(p->err, p->err_len, "%s:%d: NUL byte in line", file, line);
            return false;
        }
        *eol = '\0';
        if (!handle_line(p, s, file, line))
            return false;
        s = eol + 1;
    }
    return true;
}

static void parser_free(struct ini_parser *p)
{
    free(p->section);
    for (int i = 0; i < p->depth; i++)
        free(p->stack[i]);
}

bool ini_parse_file(const char *path, ini_entry_fn fn, void *ctx, char *err, size_t err_len)
{
    struct ini_parser p = {.fn = fn, .ctx = ctx, .err = err, .err_len = err_len};
    char *buf = NULL;
    size_t len = 0;
    bool ok;

    if (!ini_read_file(path, INI_MAX_FILE_SIZE, &buf, &len, err, err_len))
        return false;
    p.total = len;
    p.stack[0] = realpath(path, NULL);
    if (p.stack[0] == NULL) {
        set_errf(err, err_len, "%s: %s", path, strerror(errno));
        free(buf);
        return false;
    }
    p.depth = 1;
    ok = parse_buffer(&p, buf, len, path);
    parser_free(&p);
    free(buf);
    return ok;
}

bool ini_parse_string(const char *text, const char *name, ini_entry_fn fn, void *ctx, char *err,
                      size_t err_len)
{
    /* A string has no real path: it takes a stack slot (NULL) so the depth limit is the same
     * as for a file, but it can never be part of a loop. */
    struct ini_parser p = {.fn = fn, .ctx = ctx, .err = err, .err_len = err_len, .depth = 1};
    size_t len = strlen(text);
    char *buf;
    bool ok;

    if (name == NULL)
        name = "<string>";
    if (len > INI_MAX_FILE_SIZE) {
        set_errf(err, err_len, "%s: too large (more than %u bytes)", name, INI_MAX_FILE_SIZE);
        return false;
    }
    buf = strdup(text);
    if (buf == NULL) {
        set_errf(err, err_len, "%s: out of memory", name);
        return false;
    }
    p.total = len;
    ok = parse_buffer(&p, buf, len, name);
    parser_free(&p);
    free(buf);
    return ok;
}

/* ---- libpq-style connection strings ---- */

/* Whether a key is safe to repeat in an error: a real keyword is short and plain. */
static bool echoable_key(const char *k)
{
    size_t n = 0;

    for (; k[n] != '\0'; n++) {
        if (n >= 32 || !(isalnum((unsigned char)k[n]) || k[n] == '_'))
            return false;
    }
    return n > 0;
}

bool ini_parse_connstr(const char *text, ini_connstr_fn fn, void *ctx, char *err, size_t err_len)
{
    char *buf, *cp;
    bool ok = false;
    char cberr[CALLBACK_ERR_LEN];

    if (text == NULL)
        text = "";
    buf = strdup(text);
    if (buf == NULL) {
        set_errf(err, err_len, "out of memory");
        return false;
    }
    /* The same algorithm as libpq's conninfo_parse(), so values mean what psql makes of them:
     * spaces are allowed around '=', and the value starts after them. */
    cp = buf;
    while (*cp != '\0') {
        char *key, *val, *out;

        if (isspace((unsigned char)*cp)) {
            cp++;
            continue;
        }
        key = cp;
        while (*cp != '\0' && *cp != '=' && !isspace((unsigned char)*cp))
            cp++;
        if (isspace((unsigned char)*cp)) {
            *cp++ = '\0';
            while (isspace((unsigned char)*cp))
                cp++;
        }
        if (*cp != '=') {
            *cp = '\0';
            if (echoable_key(key))
                set_errf(err, err_len, "missing \"=\" after \"%s\" in connection string", key);
            else
                set_errf(err, err_len, "missing \"=\" after a word in connection string");
            goto done;
        }
        *cp++ = '\0';
        if (*key == '\0') {
            set_errf(err, err_len, "empty key before \"=\" in connection string");
            goto done;
        }
        while (isspace((unsigned char)*cp))
            cp++;
        val = out = cp;
        if (*cp != '\'') {
            while (*cp != '\0') {
                if (isspace((unsigned char)*cp)) {
                    cp++;
                    break;
                }
                if (*cp == '\\') {
                    cp++;
                    if (*cp != '\0')
                        *out++ = *cp++;
                } else {
                    *out++ = *cp++;
                }
            }
        } else {
            cp++;
            for (;;) {
                if (*cp == '\0') {
                    set_errf(err, err_len,
                             "unterminated quoted value for \"%s\" in connection "
                             "string",
                             echoable_key(key) ? key : "?");
                    goto done;
                }
                if (*cp == '\\') {
                    cp++;
                    if (*cp != '\0')
                        *out++ = *cp++;
                    continue;
                }
                if (*cp == '\'') {
                    cp++;
                    break;
                }
                *out++ = *cp++;
            }
        }
        /* out never runs ahead of cp (escapes and quotes only shrink the value), so this
         * terminator lands on input that has already been consumed. */
        *out = '\0';
        cberr[0] = '\0';
        if (!fn(ctx, key, val, cberr, sizeof(cberr))) {
            set_errf(err, err_len, "%s", cberr[0] != '\0' ? cberr : "rejected");
            goto done;
        }
    }
    ok = true;
done:
    free(buf);
    return ok;
}
