/* Units in option values: durations (300s, 5min, 250ms), sizes (8kB, 1MB) and percentages
 * (80%), parsed strictly with a one-sentence error, and durations formatted for people. */
#ifndef PGWARDEN_COMMON_UNITS_H
#define PGWARDEN_COMMON_UNITS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Parses a non-negative duration into microseconds. Units: us, ms, s (sec), min (m), h, d;
 * a bare number means seconds. Decimals ("1.5s") and sums of parts ("4m 12s", "1h30min")
 * are accepted so formatted output reads back. On failure returns false and writes a
 * sentence such as "'5x' is not a duration (use 300s, 5min, 250ms)" into err (may be NULL). */
bool units_parse_duration_us(const char *text, int64_t *out_us, char *err, size_t err_len)
    __attribute__((warn_unused_result));

/* Same, in milliseconds. A non-zero duration below 1 ms rounds up to 1 ms (never to 0,
 * which options treat specially); anything else is truncated to whole milliseconds. */
bool units_parse_duration_ms(const char *text, int64_t *out_ms, char *err, size_t err_len)
    __attribute__((warn_unused_result));

/* Parses a non-negative size into bytes. Units as PostgreSQL spells them, powers of 1024:
 * B, kB, MB, GB, TB (case-insensitive); a bare number means bytes. */
bool units_parse_size(const char *text, int64_t *out_bytes, char *err, size_t err_len)
    __attribute__((warn_unused_result));

/* Parses "80%" or "80" (decimals allowed) into a percentage checked to lie in 0-100. */
bool units_parse_percent(const char *text, double *out_pct, char *err, size_t err_len)
    __attribute__((warn_unused_result));

/* Formats a duration for people: "350ms" below a second, "42s" below a minute, otherwise
 * the two largest non-zero units ("4m 12s", "2h 5m", "3d 4h", "5m"). Negative values get a
 * leading '-'. Returns buf (always NUL-terminated when buf_len > 0). */
char *units_format_duration(int64_t ms, char *buf, size_t buf_len);

/* Formats a duration the way PostgreSQL settings take it, in the largest unit that divides
 * it exactly: "60s", "5min", "250ms", "1h", "2d". Returns buf. */
char *units_format_pg_duration(int64_t ms, char *buf, size_t buf_len);

/* Formats a size for people: "512 B", "8 kB", "1.5 MB". Returns buf. */
char *units_format_size(int64_t bytes, char *buf, size_t buf_len);

#endif
