/* Log line formatting (text or JSON lines) and password redaction. */
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
        if (text != NULL) {
            fprintf(out, "%s\n", text);
            free(text);
        }
        cJSON_Delete(line);
    } else {
        fprintf(out, "%s %s %s: %s\n", ts, level_names[level], component, message);
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
