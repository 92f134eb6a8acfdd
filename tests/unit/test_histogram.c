/* Unit tests for manager/histogram: bucket placement, bounds, difference and quantiles. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "manager/histogram.h"

static void test_bounds_are_increasing_and_match_their_text(void **state)
{
    (void)state;
    for (size_t i = 0; i + 1 < HISTOGRAM_BUCKETS; i++) {
        assert_true(histogram_bound(i) < histogram_bound(i + 1));
        /* The `le` text is the bound in seconds for microsecond observations. */
        if (i + 1 < HISTOGRAM_BUCKETS) {
            double secs = strtod(histogram_bound_seconds_text(i), NULL);
            assert_true(fabs(secs * 1e6 - (double)histogram_bound(i)) < 1e-6);
        }
    }
    assert_int_equal(histogram_bound(HISTOGRAM_BUCKETS - 1), INT64_MAX);
    assert_string_equal(histogram_bound_seconds_text(HISTOGRAM_BUCKETS - 1), "+Inf");
    assert_int_equal(histogram_bound(HISTOGRAM_BUCKETS + 5), INT64_MAX);
}

static void test_observe_places_values_by_inclusive_upper_bound(void **state)
{
    (void)state;
    struct histogram h;
    memset(&h, 0, sizeof(h));
    histogram_observe(&h, 0);
    histogram_observe(&h, 10);        /* on the bound: first bucket */
    histogram_observe(&h, 11);        /* just above: second */
    histogram_observe(&h, -5);        /* clock went backwards: counts as 0 */
    histogram_observe(&h, 999999999); /* beyond 100 s: +Inf */
    assert_int_equal(h.counts[0], 3);
    assert_int_equal(h.counts[1], 1);
    assert_int_equal(h.counts[HISTOGRAM_BUCKETS - 1], 1);
    assert_int_equal(h.count, 5);
    assert_int_equal(h.sum, 10 + 11 + 999999999);
}

static void test_quantiles_interpolate_inside_the_bucket(void **state)
{
    (void)state;
    struct histogram h;
    memset(&h, 0, sizeof(h));
    assert_true(histogram_quantile(&h, 0.5) == -1.0);
    /* 100 observations in (1000, 2000] us: the median sits in the middle of that bucket. */
    for (int i = 0; i < 100; i++)
        histogram_observe(&h, 1500);
    double p50 = histogram_quantile(&h, 0.5);
    assert_true(p50 > 1000.0 && p50 <= 2000.0);
    assert_true(fabs(p50 - 1500.0) < 1e-9);
    /* Add 5 slow ones in (50, 100] ms: p95 stays in the fast bucket, p99 lands in the slow. */
    for (int i = 0; i < 5; i++)
        histogram_observe(&h, 80000);
    double p95 = histogram_quantile(&h, 0.95);
    double p99 = histogram_quantile(&h, 0.99);
    assert_true(p95 <= 2000.0);
    assert_true(p99 > 50000.0 && p99 <= 100000.0);
    assert_true(histogram_quantile(&h, 1.0) <= 100000.0);
    assert_true(histogram_quantile(&h, 0.0) >= 0.0);
    /* Out-of-range q is clamped. */
    assert_true(histogram_quantile(&h, 7.0) == histogram_quantile(&h, 1.0));
}

static void test_quantile_in_the_inf_bucket_reports_the_largest_finite_bound(void **state)
{
    (void)state;
    struct histogram h;
    memset(&h, 0, sizeof(h));
    histogram_observe(&h, INT64_MAX / 2);
    assert_true(histogram_quantile(&h, 0.99) == (double)histogram_bound(HISTOGRAM_BUCKETS - 2));
}

static void test_diff_gives_the_observations_since_the_mark(void **state)
{
    (void)state;
    struct histogram now, mark, d;
    memset(&now, 0, sizeof(now));
    histogram_observe(&now, 5);
    histogram_observe(&now, 300);
    mark = now;
    histogram_observe(&now, 300);
    histogram_observe(&now, 7000000);
    histogram_diff(&now, &mark, &d);
    assert_int_equal(d.count, 2);
    assert_int_equal(d.sum, 300 + 7000000);
    assert_int_equal(d.counts[0], 0);
    uint64_t total = 0;
    for (size_t i = 0; i < HISTOGRAM_BUCKETS; i++)
        total += d.counts[i];
    assert_int_equal(total, 2);
    /* A mark newer than now (a reset) never yields negative counts. */
    histogram_diff(&mark, &now, &d);
    assert_int_equal(d.count, 0);
    assert_int_equal(d.sum, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bounds_are_increasing_and_match_their_text),
        cmocka_unit_test(test_observe_places_values_by_inclusive_upper_bound),
        cmocka_unit_test(test_quantiles_interpolate_inside_the_bucket),
        cmocka_unit_test(test_quantile_in_the_inf_bucket_reports_the_largest_finite_bound),
        cmocka_unit_test(test_diff_gives_the_observations_since_the_mark),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
