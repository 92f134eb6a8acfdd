/* Unit tests for what the HTTP API reads from a request before it touches the pooler
 * (api_parse_request, api_is_event_stream, api_events_since): the refusal order, the body's
 * flags, and since= read as a whole number from a whole key. tests/fuzz/fuzz_http_api.c
 * checks the same on any bytes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "http/api.h"

static void test_refusal_order(void **state)
{
    (void)state;
    struct api_request r;
    api_parse_request("/api/v1/nope", true, "[1]", NULL, &r);
    assert_int_equal(r.status, 400);
    api_parse_request("/api/v1/nope", true, "{}", NULL, &r);
    assert_int_equal(r.status, 404);
    assert_string_equal(r.action, "unknown");
    assert_null(r.route);
    api_parse_request("/api/v1/monitor", true, NULL, NULL, &r);
    assert_int_equal(r.status, 405);
    assert_string_equal(r.code, "bad_input");
    api_parse_request("/api/v1/kill-idle", true, "{\"execute\": true}", NULL, &r);
    assert_int_equal(r.status, 200);
    assert_null(r.code);
    assert_string_equal(r.action, "kill-idle");
    assert_true(r.execute && !r.dry_run && r.post);
    api_parse_request("/api/v1/auto-scale", true, "{\"dry_run\": 1}", NULL, &r);
    assert_false(r.dry_run); /* only the JSON true counts */
    api_parse_request(NULL, false, NULL, NULL, &r);
    assert_int_equal(r.status, 404);
}

static void test_since_from_query(void **state)
{
    (void)state;
    assert_int_equal(api_events_since(NULL), 0);
    assert_int_equal(api_events_since("since=42"), 42);
    assert_int_equal(api_events_since("follow&since=42&since=7"), 42);
    /* strtoull read these as UINT64_MAX (every event hidden) or from the wrong key. */
    assert_int_equal(api_events_since("since=-1"), 0);
    assert_int_equal(api_events_since("nosince=5"), 0);
    assert_int_equal(api_events_since("since= 5"), 0);
    assert_int_equal(api_events_since("since=5x"), 0);
    assert_int_equal(api_events_since("since"), 0);
    assert_true(api_events_since("since=99999999999999999999999") == UINT64_MAX);
    assert_true(api_events_since("since=18446744073709551615") == UINT64_MAX);
    assert_true(api_events_since("since=18446744073709551614") == UINT64_MAX - 1);
}

static void test_since_from_body(void **state)
{
    (void)state;
    struct api_request r;
    api_parse_request("/api/v1/events", false, NULL, "since=9", &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.since, 9);
    api_parse_request("/api/v1/events", false, "{\"since\": 3.7}", "since=9", &r);
    assert_int_equal(r.since, 3); /* the body wins; after 3.7 is after 3 */
    api_parse_request("/api/v1/events", false, "{\"since\": -4}", NULL, &r);
    assert_int_equal(r.since, 0);
    api_parse_request("/api/v1/events", false, "{\"since\": \"5\"}", NULL, &r);
    assert_int_equal(r.since, 0);
    api_parse_request("/api/v1/events", false, "{\"since\": 1e300}", NULL, &r);
    assert_true(r.since == UINT64_MAX);
}

static void test_event_stream(void **state)
{
    (void)state;
    assert_true(api_is_event_stream("/api/v1/events", "follow"));
    assert_true(api_is_event_stream("/api/v1/events", "since=3&follow=1"));
    assert_false(api_is_event_stream("/api/v1/events", "nofollow"));
    assert_false(api_is_event_stream("/api/v1/events", "followers=2"));
    assert_false(api_is_event_stream("/api/v1/events", NULL));
    assert_false(api_is_event_stream("/api/v1/monitor", "follow"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_refusal_order),
        cmocka_unit_test(test_since_from_query),
        cmocka_unit_test(test_since_from_body),
        cmocka_unit_test(test_event_stream),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
