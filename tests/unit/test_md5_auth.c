/* Unit tests for md5 password authentication: known vectors (computed independently with
 * Python's hashlib), verification from plaintext and stored secrets, wrong lengths, salts. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "proto/md5_auth.h"

/* md5("pencil" + "user") and md5(that hex + 01 02 03 04). */
#define SECRET   "md520c46e3762c864548e296b33c3406aa9"
#define RESPONSE "md54376eb6913b38f9aaff38dc7cf19ca76"

static const uint8_t salt[MD5_AUTH_SALT_LEN] = {1, 2, 3, 4};

static void test_build_secret_and_response(void **state)
{
    (void)state;
    char out[MD5_AUTH_BUF_SIZE];

    assert_true(md5_auth_build_secret("pencil", "user", out));
    assert_string_equal(out, SECRET);
    assert_true(md5_auth_build_response("pencil", "user", salt, out));
    assert_string_equal(out, RESPONSE);
    /* From the stored secret: the user name no longer matters. */
    assert_true(md5_auth_build_response(SECRET, "someone-else", salt, out));
    assert_string_equal(out, RESPONSE);
    assert_false(md5_auth_build_response("SCRAM-SHA-256$4096:x$y:z", "user", salt, out));
}

static void test_is_secret(void **state)
{
    (void)state;
    assert_true(md5_auth_is_secret(SECRET));
    assert_false(md5_auth_is_secret(NULL));
    assert_false(md5_auth_is_secret(""));
    assert_false(md5_auth_is_secret("md5"));
    assert_false(md5_auth_is_secret("md520c46e3762c864548e296b33c3406aa"));   /* 34 */
    assert_false(md5_auth_is_secret("md520c46e3762c864548e296b33c3406aa99")); /* 36 */
    assert_false(md5_auth_is_secret("md520C46E3762C864548E296B33C3406AA9"));  /* uppercase */
    assert_false(md5_auth_is_secret("md520c46e3762c864548e296b33c3406aag"));
    assert_false(md5_auth_is_secret("MD520c46e3762c864548e296b33c3406aa9"));
}

static void test_verify(void **state)
{
    (void)state;
    assert_int_equal(md5_auth_verify("pencil", "user", salt, RESPONSE, strlen(RESPONSE)),
                     MD5_AUTH_OK);
    assert_int_equal(md5_auth_verify(SECRET, "user", salt, RESPONSE, strlen(RESPONSE)),
                     MD5_AUTH_OK);
    /* Wrong password, wrong user (plaintext), wrong salt. */
    assert_int_equal(md5_auth_verify("pencil2", "user", salt, RESPONSE, strlen(RESPONSE)),
                     MD5_AUTH_MISMATCH);
    assert_int_equal(md5_auth_verify("pencil", "user2", salt, RESPONSE, strlen(RESPONSE)),
                     MD5_AUTH_MISMATCH);
    const uint8_t salt2[4] = {1, 2, 3, 5};
    assert_int_equal(md5_auth_verify(SECRET, "user", salt2, RESPONSE, strlen(RESPONSE)),
                     MD5_AUTH_MISMATCH);
    /* A SCRAM secret cannot check an md5 response. */
    assert_int_equal(
        md5_auth_verify("SCRAM-SHA-256$4096:abc$def:ghi", "user", salt, RESPONSE, strlen(RESPONSE)),
        MD5_AUTH_UNSUPPORTED_SECRET);
    assert_int_equal(md5_auth_verify(NULL, "user", salt, RESPONSE, strlen(RESPONSE)),
                     MD5_AUTH_MISMATCH);
}

static void test_verify_wrong_lengths(void **state)
{
    (void)state;
    char buf[64];

    /* Truncated, with trailing NUL counted, with extra bytes, empty, and a plaintext
     * password sent where a hash belongs. */
    assert_int_equal(md5_auth_verify(SECRET, "user", salt, RESPONSE, 34), MD5_AUTH_MISMATCH);
    assert_int_equal(md5_auth_verify(SECRET, "user", salt, RESPONSE, 36), MD5_AUTH_MISMATCH);
    memcpy(buf, RESPONSE, 35);
    buf[35] = 'x';
    assert_int_equal(md5_auth_verify(SECRET, "user", salt, buf, 36), MD5_AUTH_MISMATCH);
    assert_int_equal(md5_auth_verify(SECRET, "user", salt, "", 0), MD5_AUTH_MISMATCH);
    assert_int_equal(md5_auth_verify("pencil", "user", salt, "pencil", 6), MD5_AUTH_MISMATCH);
    /* Uppercase hex is not what PostgreSQL sends: rejected. */
    assert_int_equal(
        md5_auth_verify(SECRET, "user", salt, "MD54376EB6913B38F9AAFF38DC7CF19CA76", 35),
        MD5_AUTH_MISMATCH);
}

static void test_long_passwords(void **state)
{
    (void)state;
    /* pgbouncer#1215 crashed on passwords >= 1024 bytes; try 1 KB, 10 KB and 1 MB. */
    size_t sizes[] = {1024, 10 * 1024, 1024 * 1024};

    for (size_t i = 0; i < 3; i++) {
        char *pw = malloc(sizes[i] + 1);
        char resp[MD5_AUTH_BUF_SIZE];

        assert_non_null(pw);
        memset(pw, 'p', sizes[i]);
        pw[sizes[i]] = '\0';
        assert_true(md5_auth_build_response(pw, "user", salt, resp));
        assert_int_equal(md5_auth_verify(pw, "user", salt, resp, strlen(resp)), MD5_AUTH_OK);
        /* A 1 MB "response" is just a mismatch. */
        assert_int_equal(md5_auth_verify(SECRET, "user", salt, pw, sizes[i]), MD5_AUTH_MISMATCH);
        free(pw);
    }
}

static void test_make_salt(void **state)
{
    (void)state;
    uint8_t a[MD5_AUTH_SALT_LEN], b[MD5_AUTH_SALT_LEN];
    int same = 0;

    /* Fresh salts: 8 draws of 32 random bits all equal would be a broken RNG. */
    assert_true(md5_auth_make_salt(a));
    for (int i = 0; i < 8; i++) {
        assert_true(md5_auth_make_salt(b));
        same += memcmp(a, b, sizeof(a)) == 0;
    }
    assert_true(same < 8);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_build_secret_and_response),
        cmocka_unit_test(test_is_secret),
        cmocka_unit_test(test_verify),
        cmocka_unit_test(test_verify_wrong_lengths),
        cmocka_unit_test(test_long_passwords),
        cmocka_unit_test(test_make_salt),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
