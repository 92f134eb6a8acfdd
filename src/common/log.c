/* Log line formatting (text or JSON lines, control bytes always escaped) and password
 * redaction. */
#include "common/log.h"

#include "common/timestamp.h"

#include <cjson/cJSON.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

static enum log_level current_level = LOG_LEVEL_INFO;
static enum log_format current_format = LOG_FORMAT_TEXT;
static FILE *log_out;

static const char *const level_names[] = {
    [LOG_LEVEL_ERROR] = "error", [LOG_LEVEL_WARNING] = "warning", [LOG_LEVEL_INFO] = "info",
    [LOG_LEVEL_DEBUG] = "debug", [LOG_LEVEL_TRACE] = "trace",
};

void log_configure(enum log_level level, enum log_format format, FILE *out)
{
    current_level = level;
    current_format = format;
    log_out = out;
}

enum log_level log_get_level(void)
{
    return current_level;
}

bool log_enabled(enum log_level level)
{
    return level <= current_level;
}

/*
 * Copies in to out (out_size bytes, always NUL-terminated) with every control byte (below
 * 0x20, and 0x7f) written as \n, \r, \t or \xNN. Messages carry client-supplied strings
 * (user and database names, application_name, error texts) before any authentication: a raw
 * newline in one would let a client forge whole log lines, and escape sequences could drive
 * the terminal of whoever reads the log. A string without control bytes is copied unchanged.
 * Backslashes are not doubled, so that ordinary lines stay byte-identical; "\n" in a line
 * can thus be either escaped or literal, but it never starts a new line. Output that does not
 * fit is cut before the escape that would overflow; ESCAPED_SIZE(n) bytes always suffice for
 * an input of n bytes.
 */
#define ESCAPED_SIZE(n) (4 * (n) + 1)

static void escape_controls(const char *in, char *out, size_t out_size)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;

    for (; *in != '\0'; in++) {
        unsigned char c = (unsigned char)*in;
        char esc[4];
        size_t n = 0;

        if (c >= 0x20 && c != 0x7f) {
            esc[n++] = (char)c;
        } else {
            esc[n++] = '\\';
            if (c == '\n') {
                esc[n++] = 'n';
            } else if (c == '\r') {
                esc[n++] = 'r';
            } else if (c == '\t') {
                esc[n++] = 't';
            } else {
                esc[n++] = 'x';
                esc[n++] = hex[c >> 4];
                esc[n++] = hex[c & 0xf];
            }
        }
        if (o + n >= out_size)
            break;
        memcpy(out + o, esc, n);
        o += n;
    }
    out[o] = '\0';
}

/* cJSON escapes bytes below 0x20 but writes DEL raw: write it as \u007f as well, so a JSON
 * line holds no control byte at all. DEL can only occur inside a string value, where the
 * escape means the same character. Returns json itself when it holds no DEL, else a new
 * string (owned by the caller, who still frees json too), or NULL when out of memory. */
static char *json_escape_del(char *json)
{
    size_t n_del = 0, len = 0;
    char *out, *o;

    for (; json[len] != '\0'; len++)
        n_del += json[len] == 0x7f;
    if (n_del == 0)
        return json;
    out = malloc(len + 5 * n_del + 1);
    if (out == NULL)
        return NULL;
    o = out;
    for (const char *p = json; *p != '\0'; p++) {
        if (*p == 0x7f) {
            memcpy(o, "\\u007f", 6);
            o += 6;
        } else {
            *o++ = *p;
        }
    }
    *o = '\0';
    return out;
}

void log_write(enum log_level level, const char *component, const char *fmt, ...)
{
    if (!log_enabled(level))
        return;
    FILE *out = log_out ? log_out : stderr;
    char message[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof(message), fmt, ap);
    va_end(ap);

    char ts[40];
    timestamp_format_iso(timestamp_now_ms(), ts, sizeof(ts));
    if (current_format == LOG_FORMAT_JSON) {
        cJSON *line = cJSON_CreateObject();
        cJSON_AddStringToObject(line, "ts", ts);
        cJSON_AddStringToObject(line, "level", level_names[level]);
        cJSON_AddStringToObject(line, "component", component);
        cJSON_AddStringToObject(line, "msg", message);
        char *text = cJSON_PrintUnformatted(line);
        char *safe = text != NULL ? json_escape_del(text) : NULL;
        if (safe != NULL)
            fprintf(out, "%s\n", safe);
        if (safe != text)
            free(safe);
        free(text);
        cJSON_Delete(line);
    } else {
        /* Components are short fixed tags; they are escaped too so that nothing a caller
         * passes can break a text line. */
        char safe_component[256];
        char safe_message[ESCAPED_SIZE(sizeof(message))];
        escape_controls(component, safe_component, sizeof(safe_component));
        escape_controls(message, safe_message, sizeof(safe_message));
        fprintf(out, "%s %s %s: %s\n", ts, level_names[level], safe_component, safe_message);
    }
    fflush(out);
}

/* Redacts "password=..." values in key=value strings. A value ends at unquoted white space;
 * a quoted value ends at the matching unescaped quote. */
static void redact_keyvalue(const char *in, char *out, size_t out_len)
{
    size_t o = 0;
    const char *p = in;
    while (*p && o + 1 < out_len) {
        if ((p == in || p[-1] == ' ' || p[-1] == '\t') && strncmp(p, "password", 8) == 0) {
            const char *q = p + 8;
            while (*q == ' ')
                q++;
            if (*q == '=') {
                q++;
                while (*q == ' ')
                    q++;
                o += (size_t)snprintf(out + o, out_len - o, "password=***");
                if (o >= out_len)
                    break;
                if (*q == '\'') {
                    q++;
                    while (*q && *q != '\'') {
                        if (*q == '\\' && q[1])
                            q++;
                        q++;
                    }
                    if (*q == '\'')
                        q++;
                } else {
                    while (*q && *q != ' ' && *q != '\t')
                        q++;
                }
                p = q;
                continue;
            }
        }
        out[o++] = *p++;
    }
    out[o < out_len ? o : out_len - 1] = '\0';
}

/* Redacts the password of "scheme://user:password@host" and any "password=" query option. */
static void redact_uri(const char *in, char *out, size_t out_len)
{
    const char *scheme_end = strstr(in, "://");
    const char *authority = scheme_end + 3;
    const char *at = NULL;
    for (const char *c = authority; *c && *c != '/' && *c != '?'; c++) {
        if (*c == '@')
            at = c;
    }
    const char *colon = NULL;
    if (at != NULL) {
        for (const char *c = authority; c < at; c++) {
            if (*c == ':') {
                colon = c;
                break;
            }
        }
    }
    char tmp[4096];
    if (colon != NULL)
        snprintf(tmp, sizeof(tmp), "%.*s:***%s", (int)(colon - in), in, at);
    else
        snprintf(tmp, sizeof(tmp), "%s", in);

    /* Query-string password=... */
    size_t o = 0;
    const char *p = tmp;
    while (*p && o + 1 < out_len) {
        if (p > tmp && (p[-1] == '?' || p[-1] == '&') && strncmp(p, "password=", 9) == 0) {
            o += (size_t)snprintf(out + o, out_len - o, "password=***");
            if (o >= out_len)
                break;
            p += 9;
            while (*p && *p != '&')
                p++;
            continue;
        }
        out[o++] = *p++;
    }
    out[o < out_len ? o : out_len - 1] = '\0';
}

void log_redact_conninfo(const char *conninfo, char *out, size_t out_len)
{
    if (out_len == 0)
        return;
    if (conninfo == NULL) {
        out[0] = '\0';
        return;
    }
    if (strncmp(conninfo, "postgres://", 11) == 0 || strncmp(conninfo, "postgresql://", 13) == 0)
        redact_uri(conninfo, out, out_len);
    else
        redact_keyvalue(conninfo, out, out_len);
}
