/* Unit tests for PasswordMessage checks: the framing every answer must have, md5 answers
 * against plaintext and md5 secrets (a SCRAM secret cannot check one), and cleartext passwords
 * against plaintext, md5 and SCRAM secrets. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "proto/password.h"
#include "proto/scram.h"

/* md5("pencil" + "user") and md5(that hex + 01 02 03 04), as in test_md5_auth.c. */
#define MD5_SECRET   "md520c46e3762c864548e296b33c3406aa9"
#define MD5_RESPONSE "md54376eb6913b38f9aaff38dc7cf19ca76"

static const uint8_t salt[MD5_AUTH_SALT_LEN] = {1, 2, 3, 4};

static enum password_verdict check(const char *answer, enum password_challenge how,
                                   const char *secret)
{
    return password_check((const uint8_t *)answer, strlen(answer) + 1, how, secret, "user", salt);
}

/* A stored SCRAM secret for password (16 iterations, a salt of salt_byte and zeros). */
static void scram_text(const char *password, uint8_t salt_byte, char text[SCRAM_SECRET_MAX])
{
    struct scram_secret s;
    uint8_t scram_salt[16] = {salt_byte};
    assert_true(
        scram_secret_from_password_with_salt(password, scram_salt, sizeof(scram_salt), 16, &s));
    assert_true(scram_secret_format(&s, text, SCRAM_SECRET_MAX));
}

static void test_framing(void **state)
{
    (void)state;
    static const uint8_t empty[1] = {0};
    static const uint8_t unterminated[3] = {'a', 'b', 'c'};
    static const uint8_t two_strings[4] = {'a', 0, 'b', 0};
    static const uint8_t trailing[3] = {'a', 0, 'x'};
    enum password_challenge how = PASSWORD_CHALLENGE_CLEARTEXT;
    assert_int_equal(password_check(empty, 0, how, "pencil", "user", salt), PASSWORD_MALFORMED);
    assert_int_equal(password_check(unterminated, 3, how, "abc", "user", salt), PASSWORD_MALFORMED);
    assert_int_equal(password_check(two_strings, 4, how, "a", "user", salt), PASSWORD_MALFORMED);
    assert_int_equal(password_check(trailing, 3, how, "a", "user", salt), PASSWORD_MALFORMED);
    /* The empty password is a well-formed answer, and wrong for a user with a password. */
    assert_int_equal(password_check(empty, 1, how, "pencil", "user", salt), PASSWORD_WRONG);
    /* No secret: wrong, but only after the framing check. */
    assert_int_equal(password_check(empty, 0, how, NULL, "user", salt), PASSWORD_MALFORMED);
    assert_int_equal(check("pencil", how, NULL), PASSWORD_WRONG);
}

static void test_md5_answers(void **state)
{
    (void)state;
    enum password_challenge how = PASSWORD_CHALLENGE_MD5;
    assert_int_equal(check(MD5_RESPONSE, how, "pencil"), PASSWORD_OK);
    assert_int_equal(check(MD5_RESPONSE, how, MD5_SECRET), PASSWORD_OK);
    assert_int_equal(check(MD5_RESPONSE, how, "pencil2"), PASSWORD_WRONG);
    assert_int_equal(check("pencil", how, "pencil"), PASSWORD_WRONG); /* cleartext is no answer */
    char text[SCRAM_SECRET_MAX];
    scram_text("pencil", 9, text);
    assert_int_equal(check(MD5_RESPONSE, how, text), PASSWORD_WRONG);
}

static void test_cleartext_against_each_secret(void **state)
{
    (void)state;
    enum password_challenge how = PASSWORD_CHALLENGE_CLEARTEXT;
    assert_int_equal(check("pencil", how, "pencil"), PASSWORD_OK);
    assert_int_equal(check("pencil", how, "pencil "), PASSWORD_WRONG);
    assert_int_equal(check("pencil", how, MD5_SECRET), PASSWORD_OK);
    assert_int_equal(check("Pencil", how, MD5_SECRET), PASSWORD_WRONG);
    /* An md5 secret's text given as the password is not the password. */
    assert_int_equal(check(MD5_SECRET, how, MD5_SECRET), PASSWORD_WRONG);
    char text[SCRAM_SECRET_MAX];
    scram_text("pencil", 7, text);
    assert_int_equal(check("pencil", how, text), PASSWORD_OK);
    assert_int_equal(check("pencil", how, text), PASSWORD_OK); /* the remembered one */
    assert_int_equal(check("pencils", how, text), PASSWORD_WRONG);
    assert_int_equal(check("pencil", how, ""), PASSWORD_WRONG);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_framing),
        cmocka_unit_test(test_md5_answers),
        cmocka_unit_test(test_cleartext_against_each_secret),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
