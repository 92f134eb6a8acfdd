/* Fixed-bucket latency histogram: log-spaced buckets (1-2-5 per decade, 10 us to 100 s, then
 * +Inf), a count and a sum. Observing is a few compares and three additions, with no
 * allocation, so the pool code can record every wait and transaction on the hot path; the
 * quantile estimate and the Prometheus rendering read the same buckets. Pure: no I/O. */
#ifndef PGWARDEN_MANAGER_HISTOGRAM_H
#define PGWARDEN_MANAGER_HISTOGRAM_H

#include <stddef.h>
#include <stdint.h>

/* 22 finite upper bounds plus the +Inf bucket. */
#define HISTOGRAM_BUCKETS 23

struct histogram {
    uint64_t counts[HISTOGRAM_BUCKETS]; /* per bucket (not cumulative) */
    uint64_t count;
    int64_t sum; /* same unit as the observations (microseconds in the pools) */
};

/* Upper bound of bucket i, inclusive (an observation v lands in the first bucket with
 * v <= bound); INT64_MAX for the last (+Inf) bucket. */
int64_t histogram_bound(size_t i);
/* The same bound in seconds as Prometheus writes it in `le` labels ("0.00001", ..., "+Inf"),
 * for observations in microseconds. Static strings. */
const char *histogram_bound_seconds_text(size_t i);

/* Negative values count as 0 (a clock that went backwards). */
void histogram_observe(struct histogram *h, int64_t value);
/* out = now - mark, bucket by bucket: the observations since mark was copied from now (for
 * quantiles over one stats period). */
void histogram_diff(const struct histogram *now, const struct histogram *mark,
                    struct histogram *out);
/* Estimated q-quantile (0 <= q <= 1) by linear interpolation inside the bucket that holds it,
 * as Prometheus's histogram_quantile does; a quantile in the +Inf bucket reports the largest
 * finite bound. Returns -1 when the histogram is empty. */
double histogram_quantile(const struct histogram *h, double q);

#endif
