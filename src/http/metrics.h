/* /metrics: the Prometheus text exposition (format 0.0.4) of the running pooler, rendered
 * from one table of metrics (name, type, help, getter) over the process and every pool
 * (labels database and user). docs/METRICS.md describes each metric. */
#ifndef PGWARDEN_HTTP_METRICS_H
#define PGWARDEN_HTTP_METRICS_H

#include <stdbool.h>
#include <stddef.h>

struct pooler;
struct evbuffer;

#define METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/* Appends the whole exposition to out in one pass (about 9 kB per pool). Returns false when
 * memory ran out; out may then hold part of it. */
__attribute__((warn_unused_result)) bool metrics_render(const struct pooler *p,
                                                        struct evbuffer *out);

/* The same exposition a slice at a time, so a large one never holds the event loop for long:
 * begin takes every pool's values (one consistent moment); each step appends about budget
 * bytes (whole lines). With a slot (the caller's, NULL at first), renders that overlap share
 * one copy of the values when they began within a second of each other; the slot is empty
 * again once the last of them is freed. */
struct metrics_render;
struct metrics_views;
enum metrics_step {
    METRICS_MORE,   /* call again (in a later loop turn) */
    METRICS_DONE,   /* the exposition is complete */
    METRICS_FAILED, /* out of memory */
};
struct metrics_render *metrics_render_begin(const struct pooler *p, struct metrics_views **slot);
enum metrics_step metrics_render_step(struct metrics_render *r, struct evbuffer *out,
                                      size_t budget);
void metrics_render_free(struct metrics_render *r);

#endif
