/* health-check probes: opens N fresh connections in parallel, times the connect and a
 * SELECT 1 on each, and records failures with their SQLSTATE and class. */
#ifndef PGWARDEN_INSPECT_PROBE_H
#define PGWARDEN_INSPECT_PROBE_H

#include <stddef.h>

#include "manager/health.h"

/* Fills probes[0..n). Each probe gives up after timeout_ms (connect + query). Never fails as
 * a whole: every outcome is a probe result. */
void probe_run(const char *conninfo, size_t n, int timeout_ms, struct health_probe *probes);

#endif
