/* Fixed-bucket histogram: bucket bounds, observation, difference and quantile estimate. */
#include "manager/histogram.h"

/* 1-2-5 steps keep the relative error of an interpolated quantile within a factor of 2.5
 * while the bounds stay round numbers a person reads easily in `le` labels. */
static const int64_t BOUNDS[HISTOGRAM_BUCKETS] = {
    10,      20,      50,       100,      200,      500,       1000,      2000,
    5000,    10000,   20000,    50000,    100000,   200000,    500000,    1000000,
    2000000, 5000000, 10000000, 20000000, 50000000, 100000000, INT64_MAX,
};

static const char *const BOUND_TEXT[HISTOGRAM_BUCKETS] = {
    "1e-05", "2e-05", "5e-05", "0.0001", "0.0002", "0.0005", "0.001", "0.002",
    "0.005", "0.01",  "0.02",  "0.05",   "0.1",    "0.2",    "0.5",   "1",
    "2",     "5",     "10",    "20",     "50",     "100",    "+Inf",
};

int64_t histogram_bound(size_t i)
{
    return i < HISTOGRAM_BUCKETS ? BOUNDS[i] : INT64_MAX;
}

const char *histogram_bound_seconds_text(size_t i)
{
    return i < HISTOGRAM_BUCKETS ? BOUND_TEXT[i] : "+Inf";
}

void histogram_observe(struct histogram *h, int64_t value)
{
    if (value < 0)
        value = 0;
    size_t i = 0;
    /* Most observations are short: a linear scan from the small end stops early. */
    while (value > BOUNDS[i])
        i++;
    h->counts[i]++;
    h->count++;
    h->sum += value;
}

void histogram_diff(const struct histogram *now, const struct histogram *mark,
                    struct histogram *out)
{
    for (size_t i = 0; i < HISTOGRAM_BUCKETS; i++)
        out->counts[i] = now->counts[i] >= mark->counts[i] ? now->counts[i] - mark->counts[i] : 0;
    out->count = now->count >= mark->count ? now->count - mark->count : 0;
    out->sum = now->sum >= mark->sum ? now->sum - mark->sum : 0;
}

double histogram_quantile(const struct histogram *h, double q)
{
    if (h->count == 0)
        return -1.0;
    if (q < 0)
        q = 0;
    if (q > 1)
        q = 1;
    double rank = q * (double)h->count;
    uint64_t below = 0;
    for (size_t i = 0; i < HISTOGRAM_BUCKETS; i++) {
        uint64_t n = h->counts[i];
        if (n > 0 && (double)(below + n) >= rank) {
            if (i == HISTOGRAM_BUCKETS - 1)
                return (double)BOUNDS[HISTOGRAM_BUCKETS - 2];
            double lo = i == 0 ? 0.0 : (double)BOUNDS[i - 1];
            double hi = (double)BOUNDS[i];
            double inside = (rank - (double)below) / (double)n;
            if (inside < 0)
                inside = 0;
            return lo + (hi - lo) * inside;
        }
        below += n;
    }
    return (double)BOUNDS[HISTOGRAM_BUCKETS - 2];
}
