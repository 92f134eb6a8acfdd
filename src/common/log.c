/* Log line formatting (text or JSON lines, control bytes always escaped), the syslog sink,
 * and password redaction. */
#include "common/log.h"

#include "common/timestamp.h"
#include "common/utf8.h"

#include <cjson/cJSON.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>

static enum log_level current_level = LOG_LEVEL_INFO;
static enum log_format current_format = LOG_FORMAT_TEXT;
static FILE *log_out;

static const char *const level_names[] = {
    [LOG_LEVEL_ERROR] = "error", [LOG_LEVEL_WARNING] = "warning", [LOG_LEVEL_INFO] = "info",
    [LOG_LEVEL_DEBUG] = "debug", [LOG_LEVEL_TRACE] = "trace",
};

/* ---- syslog ---- */

static void libc_open(const char *ident, int option, int facility)
{
    openlog(ident, option, facility);
}

static void libc_send(int priority, const char *line)
{
    syslog(priority, "%s", line);
}

static void libc_close(void)
{
    closelog();
}

static const struct log_syslog_ops libc_syslog = {libc_open, libc_send, libc_close};
static const struct log_syslog_ops *syslog_ops = &libc_syslog;

static bool syslog_on;
static bool syslog_opened;
static int syslog_facility = LOG_DAEMON;
/* openlog keeps the pointer it is given, so the ident lives here, not in a config that a
 * reload frees. */
static char syslog_ident[64] = "pgwarden";

/* PgBouncer sends info and more severe to syslog (its syslog level is fixed at info). */
#define SYSLOG_MAX_LEVEL LOG_LEVEL_INFO

static const int syslog_priorities[] = {
    [LOG_LEVEL_ERROR] = LOG_ERR,   [LOG_LEVEL_WARNING] = LOG_WARNING, [LOG_LEVEL_INFO] = LOG_INFO,
    [LOG_LEVEL_DEBUG] = LOG_DEBUG, [LOG_LEVEL_TRACE] = LOG_DEBUG,
};

static const struct {
    const char *name;
    int code;
} syslog_facilities[] = {
    {"auth", LOG_AUTH},     {"authpriv", LOG_AUTHPRIV}, {"daemon", LOG_DAEMON},
    {"user", LOG_USER},     {"local0", LOG_LOCAL0},     {"local1", LOG_LOCAL1},
    {"local2", LOG_LOCAL2}, {"local3", LOG_LOCAL3},     {"local4", LOG_LOCAL4},
    {"local5", LOG_LOCAL5}, {"local6", LOG_LOCAL6},     {"local7", LOG_LOCAL7},
};

bool log_syslog_facility_parse(const char *name, int *facility)
{
    for (size_t i = 0; i < sizeof(syslog_facilities) / sizeof(syslog_facilities[0]); i++) {
        if (name != NULL && strcmp(name, syslog_facilities[i].name) == 0) {
            *facility = syslog_facilities[i].code;
            return true;
        }
    }
    return false;
}

static void syslog_close(void)
{
    if (syslog_opened)
        syslog_ops->close();
    syslog_opened = false;
}

void log_configure_syslog(bool on, const char *ident, const char *facility)
{
    int code = LOG_DAEMON;
    (void)log_syslog_facility_parse(facility, &code);
    const char *name = ident != NULL && ident[0] != '\0' ? ident : "pgwarden";
    if (!on || code != syslog_facility || strncmp(name, syslog_ident, sizeof(syslog_ident)) != 0)
        syslog_close();
    syslog_on = on;
    syslog_facility = code;
    snprintf(syslog_ident, sizeof(syslog_ident), "%s", name);
}

bool log_syslog_enabled(void)
{
    return syslog_on;
}

void log_set_syslog_ops(const struct log_syslog_ops *ops)
{
    syslog_close();
    syslog_ops = ops != NULL ? ops : &libc_syslog;
}

/* Opened on the first line, as PgBouncer does: a reload that only turns syslog on costs
 * nothing until there is something to say. */
static void syslog_send(enum log_level level, const char *line)
{
    if (!syslog_on || level > SYSLOG_MAX_LEVEL)
        return;
    if (!syslog_opened) {
        syslog_ops->open(syslog_ident, LOG_PID, syslog_facility);
        syslog_opened = true;
    }
    syslog_ops->send(syslog_priorities[level], line);
}

/* ---- lines ---- */

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

#define MESSAGE_SIZE 2048 /* a formatted message is cut here */

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

/* Components are short fixed tags; they are escaped too so that nothing a caller passes can
 * break a text line. The results live in static buffers until the next call (one thread). */
static const char *text_component(const char *component)
{
    static char safe[256];
    escape_controls(component, safe, sizeof(safe));
    return safe;
}

static const char *text_message(const char *message)
{
    static char safe[ESCAPED_SIZE(MESSAGE_SIZE)];
    escape_controls(message, safe, sizeof(safe));
    return safe;
}

void log_write(enum log_level level, const char *component, const char *fmt, ...)
{
    if (!log_enabled(level))
        return;
    FILE *out = log_out ? log_out : stderr;
    char message[MESSAGE_SIZE];
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
        /* Messages quote clients' names, which may be invalid UTF-8: a log shipper would
         * reject the line. */
        char *text = utf8_make_valid(cJSON_PrintUnformatted(line));
        char *safe = text != NULL ? json_escape_del(text) : NULL;
        if (safe != NULL)
            fprintf(out, "%s\n", safe);
        if (safe != text)
            free(safe);
        free(text);
        cJSON_Delete(line);
    } else {
        fprintf(out, "%s %s %s: %s\n", ts, level_names[level], text_component(component),
                text_message(message));
    }
    fflush(out);
    /* syslog gets the text form whatever log_format says: it stamps time, ident and pid
     * itself, and its readers expect one plain line. */
    if (syslog_on && level <= SYSLOG_MAX_LEVEL) {
        char line[256 + ESCAPED_SIZE(sizeof(message)) + 2];
        snprintf(line, sizeof(line), "%s: %s", text_component(component), text_message(message));
        syslog_send(level, line);
    }
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
