/* Logging: human text lines (default) or JSON lines, to stderr or a file, and with syslog on
 * to syslog as well. Messages never contain secrets; callers pass connection strings through
 * log_redact_conninfo first. */
#ifndef PGWARDEN_COMMON_LOG_H
#define PGWARDEN_COMMON_LOG_H

#include <stdbool.h>
#include <stdio.h>

enum log_level {
    LOG_LEVEL_ERROR,
    LOG_LEVEL_WARNING,
    LOG_LEVEL_INFO,
    LOG_LEVEL_DEBUG,
    LOG_LEVEL_TRACE,
};

enum log_format {
    LOG_FORMAT_TEXT,
    LOG_FORMAT_JSON,
};

/* Process-wide settings; set at start-up and on reload (single-threaded). */
void log_configure(enum log_level level, enum log_format format, FILE *out /* borrowed */);
enum log_level log_get_level(void);

/* syslog (PgBouncer's syslog, syslog_ident, syslog_facility): with on, every line of level
 * info or more severe also goes to syslog as "component: message" (control bytes escaped as
 * in the text format; syslog adds time, ident and pid). Levels map as in PgBouncer: error to
 * LOG_ERR, warning to LOG_WARNING, info to LOG_INFO. A change of ident or facility closes the
 * connection to syslog and opens it again with the new ones (a reload). facility is a name
 * log_syslog_facility_parse accepts; an unknown one falls back to daemon, as in PgBouncer. */
void log_configure_syslog(bool on, const char *ident, const char *facility);
/* True while log_configure_syslog has it on. */
bool log_syslog_enabled(void);
/* auth, authpriv, daemon, user, local0 .. local7 (PgBouncer's list) to the LOG_* code. */
bool log_syslog_facility_parse(const char *name, int *facility);

/* The seam between the log and the C library's syslog, so that tests can see what would be
 * sent. Ident is owned by the log module and stays valid until the next close. */
struct log_syslog_ops {
    void (*open)(const char *ident, int option, int facility);
    void (*send)(int priority, const char *line);
    void (*close)(void);
};
/* NULL restores the C library's openlog, syslog and closelog. */
void log_set_syslog_ops(const struct log_syslog_ops *ops /* borrowed */);
bool log_enabled(enum log_level level);

/* One line per call. `component` is a short module tag ("pool", "inspect", "manager").
 * Control bytes in the message (client-supplied names may hold any) never reach the output
 * raw: the text format writes them as \n, \r, \t or \xNN, the JSON format as JSON escapes. */
void log_write(enum log_level level, const char *component, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define log_error(comp, ...)   log_write(LOG_LEVEL_ERROR, comp, __VA_ARGS__)
#define log_warning(comp, ...) log_write(LOG_LEVEL_WARNING, comp, __VA_ARGS__)
#define log_info(comp, ...)    log_write(LOG_LEVEL_INFO, comp, __VA_ARGS__)
#define log_debug(comp, ...)                                                                       \
    do {                                                                                           \
        if (log_enabled(LOG_LEVEL_DEBUG))                                                          \
            log_write(LOG_LEVEL_DEBUG, comp, __VA_ARGS__);                                         \
    } while (0)
#define log_trace(comp, ...)                                                                       \
    do {                                                                                           \
        if (log_enabled(LOG_LEVEL_TRACE))                                                          \
            log_write(LOG_LEVEL_TRACE, comp, __VA_ARGS__);                                         \
    } while (0)

/* Copies a libpq connection string or URI into out with any password replaced by "***".
 * Handles key=value ("password=secret", "password='a b'") and URI ("postgres://u:secret@h")
 * forms. */
void log_redact_conninfo(const char *conninfo, char *out, size_t out_len);

#endif
