/* Clocks and the one ISO 8601 format of timestamps in logs and JSON output. */
#ifndef PGWARDEN_COMMON_TIMESTAMP_H
#define PGWARDEN_COMMON_TIMESTAMP_H

#include <stddef.h>
#include <stdint.h>

/* Wall clock, milliseconds since the Unix epoch. */
int64_t timestamp_now_ms(void);
/* Monotonic clock in milliseconds (with fractions), for durations. */
double timestamp_monotonic_ms(void);
/* Writes "2026-01-01T00:00:00.000Z" (UTC) for an epoch-milliseconds time; returns buf. */
char *timestamp_format_iso(int64_t epoch_ms, char *buf, size_t len);

#endif
