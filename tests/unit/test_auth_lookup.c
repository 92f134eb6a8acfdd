/* Unit tests for pool/auth_lookup's answer judging: what one auth_query result means. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "pool/auth_lookup.h"

/* A DataRow body of two text columns (NULL when a value is NULL). */
static size_t row(uint8_t *out, const char *a, const char *b)
{
    size_t n = 0;
    out[n++] = 0;
    out[n++] = 2;
    const char *cols[2] = {a, b};
    for (int i = 0; i < 2; i++) {
        uint32_t len = cols[i] ? (uint32_t)strlen(cols[i]) : 0xFFFFFFFFu;
        out[n++] = (uint8_t)(len >> 24);
        out[n++] = (uint8_t)(len >> 16);
        out[n++] = (uint8_t)(len >> 8);
        out[n++] = (uint8_t)len;
        if (cols[i]) {
            memcpy(out + n, cols[i], strlen(cols[i]));
            n += strlen(cols[i]);
        }
    }
    return n;
}

static enum auth_lookup_verdict judge(const char *a, const char *b, int rows)
{
    struct auth_lookup_answer ans = {0};
    uint8_t buf[512];
    for (int i = 0; i < rows; i++)
        auth_lookup_answer_row(&ans, "alice", buf, row(buf, a, b));
    const char *why;
    enum auth_lookup_verdict v = auth_lookup_judge(&ans, &why);
    auth_lookup_answer_clear(&ans);
    return v;
}

static void test_verdicts(void **state)
{
    (void)state;
    assert_int_equal(judge("alice",
                           "md5"
                           "0123456789abcdef0123456789abcdef",
                           1),
                     AUTH_LOOKUP_SECRET);
    assert_int_equal(judge("alice", "plain-pw", 1), AUTH_LOOKUP_SECRET);
    assert_int_equal(judge("alice", "x", 0), AUTH_LOOKUP_NO_USER);
    assert_int_equal(judge("alice", NULL, 1), AUTH_LOOKUP_NO_SECRET); /* expired */
    assert_int_equal(judge("alice", "", 1), AUTH_LOOKUP_NO_SECRET);
    assert_int_equal(judge("alice", "pw", 2), AUTH_LOOKUP_BAD_ANSWER);
    assert_int_equal(judge("bob", "pw", 1), AUTH_LOOKUP_BAD_ANSWER); /* someone else */
    assert_int_equal(judge(NULL, "pw", 1), AUTH_LOOKUP_BAD_ANSWER);
    assert_int_equal(judge("alice", "SCRAM-SHA-256$junk", 1), AUTH_LOOKUP_BAD_ANSWER);
    assert_int_equal(judge("alice", "md5short", 1), AUTH_LOOKUP_BAD_ANSWER);
}

static void test_malformed_rows(void **state)
{
    (void)state;
    struct auth_lookup_answer a = {0};
    const uint8_t one_col[] = {0, 1, 0, 0, 0, 5, 'a', 'l', 'i', 'c', 'e'};
    auth_lookup_answer_row(&a, "alice", one_col, sizeof(one_col));
    const char *why;
    assert_int_equal(auth_lookup_judge(&a, &why), AUTH_LOOKUP_BAD_ANSWER);
    auth_lookup_answer_clear(&a);
    const uint8_t short_len[] = {0, 2, 0, 0, 0, 99, 'a'};
    auth_lookup_answer_row(&a, "alice", short_len, sizeof(short_len));
    assert_int_equal(auth_lookup_judge(&a, &why), AUTH_LOOKUP_BAD_ANSWER);
    auth_lookup_answer_clear(&a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_verdicts),
        cmocka_unit_test(test_malformed_rows),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
