/* Strict parsers and human formatters for the units that option values carry. Numbers are
 * read by hand rather than with strtod so "inf", "0x10", "1e3" and signs are rejected. */
#include "common/units.h"

#include <ctype.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

struct unit {
    const char *name;
    double factor;
};

/* Durations in microseconds. Longer spellings first is not needed: units match whole words. */
static const struct unit duration_units[] = {
    {"us", 1.0},      {"ms", 1e3},       {"s", 1e6},        {"sec", 1e6},     {"secs", 1e6},
    {"second", 1e6},  {"seconds", 1e6},  {"m", 60e6},       {"min", 60e6},    {"mins", 60e6},
    {"minute", 60e6}, {"minutes", 60e6}, {"h", 3600e6},     {"hour", 3600e6}, {"hours", 3600e6},
    {"d", 86400e6},   {"day", 86400e6},  {"days", 86400e6},
};

static const struct unit size_units[] = {
    {"b", 1.0},
    {"kb", 1024.0},
    {"mb", 1024.0 * 1024.0},
    {"gb", 1024.0 * 1024.0 * 1024.0},
    {"tb", 1024.0 * 1024.0 * 1024.0 * 1024.0},
};

/* Largest value accepted, kept well inside int64 so later arithmetic cannot overflow. */
#define UNITS_MAX_VALUE 4.0e18

static void set_err(char *err, size_t err_len, const char *fmt, const char *text)
{
    if (err != NULL && err_len > 0)
        snprintf(err, err_len, fmt, text);
}

/* Reads digits with at most one '.', at least one digit. Advances *p on success. */
static bool read_number(const char **p, double *out)
{
    const char *s = *p;
    double value = 0.0;
    double scale = 0.0;
    int digits = 0;
    while (isdigit((unsigned char)*s) || (*s == '.' && scale == 0.0)) {
        if (*s == '.') {
            scale = 1.0;
        } else {
            if (scale != 0.0) {
                scale /= 10.0;
                value += (*s - '0') * scale;
            } else {
                value = value * 10.0 + (*s - '0');
            }
            digits++;
        }
        s++;
        if (value > UNITS_MAX_VALUE)
            return false;
    }
    if (digits == 0)
        return false;
    *p = s;
    *out = value;
    return true;
}

static const struct unit *find_unit(const struct unit *units, size_t n, const char *word,
                                    size_t len, bool ignore_case)
{
    for (size_t i = 0; i < n; i++) {
        if (strlen(units[i].name) != len)
            continue;
        int cmp =
            ignore_case ? strncasecmp(units[i].name, word, len) : strncmp(units[i].name, word, len);
        if (cmp == 0)
            return &units[i];
    }
    return NULL;
}

static bool is_blank(const char *s)
{
    return s == NULL || s[strspn(s, " \t")] == '\0';
}

bool units_parse_duration_us(const char *text, int64_t *out_us, char *err, size_t err_len)
{
    static const char bad[] = "'%s' is not a duration (use 300s, 5min, 250ms)";
    if (is_blank(text)) {
        set_err(err, err_len, bad, text ? text : "");
        return false;
    }
    const char *p = text;
    double total = 0.0;
    int parts = 0;
    bool bare = false;
    for (;;) {
        p += strspn(p, " \t");
        if (*p == '\0')
            break;
        double value;
        if (bare || !read_number(&p, &value)) {
            set_err(err, err_len, bad, text);
            return false;
        }
        p += strspn(p, " \t");
        const char *word = p;
        while (isalpha((unsigned char)*p))
            p++;
        size_t len = (size_t)(p - word);
        if (len == 0) {
            /* A bare number means seconds, but only on its own ("5" not "1h 5"). */
            if (parts > 0) {
                set_err(err, err_len, bad, text);
                return false;
            }
            bare = true;
            total += value * 1e6;
        } else {
            const struct unit *u =
                find_unit(duration_units, sizeof(duration_units) / sizeof(duration_units[0]), word,
                          len, false);
            if (u == NULL) {
                set_err(err, err_len, bad, text);
                return false;
            }
            total += value * u->factor;
        }
        parts++;
        if (total > UNITS_MAX_VALUE) {
            set_err(err, err_len, "'%s' is too long a duration", text);
            return false;
        }
    }
    *out_us = (int64_t)llround(total);
    return true;
}

bool units_parse_duration_ms(const char *text, int64_t *out_ms, char *err, size_t err_len)
{
    int64_t us;
    if (!units_parse_duration_us(text, &us, err, err_len))
        return false;
    *out_ms = (us > 0 && us < 1000) ? 1 : us / 1000;
    return true;
}

bool units_parse_size(const char *text, int64_t *out_bytes, char *err, size_t err_len)
{
    static const char bad[] = "'%s' is not a size (use 8kB, 1MB, 512 for bytes)";
    if (is_blank(text)) {
        set_err(err, err_len, bad, text ? text : "");
        return false;
    }
    const char *p = text + strspn(text, " \t");
    double value;
    if (!read_number(&p, &value)) {
        set_err(err, err_len, bad, text);
        return false;
    }
    p += strspn(p, " \t");
    const char *word = p;
    while (isalpha((unsigned char)*p))
        p++;
    size_t len = (size_t)(p - word);
    p += strspn(p, " \t");
    if (*p != '\0') {
        set_err(err, err_len, bad, text);
        return false;
    }
    double factor = 1.0;
    if (len > 0) {
        const struct unit *u =
            find_unit(size_units, sizeof(size_units) / sizeof(size_units[0]), word, len, true);
        if (u == NULL) {
            set_err(err, err_len, bad, text);
            return false;
        }
        factor = u->factor;
    }
    double bytes = value * factor;
    if (bytes > UNITS_MAX_VALUE) {
        set_err(err, err_len, "'%s' is too large a size", text);
        return false;
    }
    *out_bytes = (int64_t)llround(bytes);
    return true;
}

bool units_parse_percent(const char *text, double *out_pct, char *err, size_t err_len)
{
    static const char bad[] = "'%s' is not a percentage (use 80%% or 80)";
    if (is_blank(text)) {
        set_err(err, err_len, bad, text ? text : "");
        return false;
    }
    const char *p = text + strspn(text, " \t");
    double value;
    if (!read_number(&p, &value)) {
        set_err(err, err_len, bad, text);
        return false;
    }
    p += strspn(p, " \t");
    if (*p == '%')
        p++;
    p += strspn(p, " \t");
    if (*p != '\0') {
        set_err(err, err_len, bad, text);
        return false;
    }
    if (value > 100.0) {
        set_err(err, err_len, "'%s' is outside 0-100%%", text);
        return false;
    }
    *out_pct = value;
    return true;
}

char *units_format_duration(int64_t ms, char *buf, size_t buf_len)
{
    if (buf_len == 0)
        return buf;
    const char *sign = "";
    uint64_t v;
    if (ms < 0) {
        sign = "-";
        v = (uint64_t)(-(ms + 1)) + 1; /* safe for INT64_MIN */
    } else {
        v = (uint64_t)ms;
    }
    if (v < 1000) {
        snprintf(buf, buf_len, "%s%" PRIu64 "ms", sign, v);
        return buf;
    }
    uint64_t s = v / 1000;
    if (s < 60) {
        snprintf(buf, buf_len, "%s%" PRIu64 "s", sign, s);
        return buf;
    }
    static const struct {
        const char *name;
        uint64_t secs;
    } parts[] = {{"d", 86400}, {"h", 3600}, {"m", 60}, {"s", 1}};
    size_t first = 0;
    while (s < parts[first].secs)
        first++;
    uint64_t big = s / parts[first].secs;
    uint64_t small = (s % parts[first].secs) / parts[first + 1].secs;
    if (small > 0)
        snprintf(buf, buf_len, "%s%" PRIu64 "%s %" PRIu64 "%s", sign, big, parts[first].name, small,
                 parts[first + 1].name);
    else
        snprintf(buf, buf_len, "%s%" PRIu64 "%s", sign, big, parts[first].name);
    return buf;
}

char *units_format_pg_duration(int64_t ms, char *buf, size_t buf_len)
{
    static const struct {
        const char *name;
        int64_t ms;
    } units[] = {{"d", 86400000}, {"h", 3600000}, {"min", 60000}, {"s", 1000}};
    if (buf_len == 0)
        return buf;
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (ms != 0 && ms % units[i].ms == 0) {
            snprintf(buf, buf_len, "%" PRId64 "%s", ms / units[i].ms, units[i].name);
            return buf;
        }
    }
    snprintf(buf, buf_len, "%" PRId64 "ms", ms);
    return buf;
}

char *units_format_size(int64_t bytes, char *buf, size_t buf_len)
{
    static const char *const names[] = {"B", "kB", "MB", "GB", "TB"};
    if (buf_len == 0)
        return buf;
    double v = (double)bytes;
    size_t i = 0;
    while (i + 1 < sizeof(names) / sizeof(names[0]) && fabs(v) >= 1024.0) {
        v /= 1024.0;
        i++;
    }
    if (i == 0 || v == floor(v))
        snprintf(buf, buf_len, "%.0f %s", v, names[i]);
    else
        snprintf(buf, buf_len, "%.1f %s", v, names[i]);
    return buf;
}
