/* /metrics: the Prometheus text exposition (format 0.0.4) of the running pooler, rendered
 * from one table of metrics (name, type, help, getter) over the process and every pool
 * (labels database and user). docs/METRICS.md describes each metric. */
#ifndef PGWARDEN_HTTP_METRICS_H
#define PGWARDEN_HTTP_METRICS_H

#include <stdbool.h>

struct pooler;
struct evbuffer;

#define METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/* Appends the whole exposition to out in one pass (about 9 kB per pool). Returns false when
 * memory ran out; out may then hold part of it. */
__attribute__((warn_unused_result)) bool metrics_render(const struct pooler *p,
                                                        struct evbuffer *out);

#endif
