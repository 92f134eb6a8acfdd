/* libFuzzer target for PasswordMessage checks (proto/password): md5 and cleartext answers
 * against plaintext, md5 and SCRAM secrets.
 *
 * Input: a flags byte (bit 0: md5 challenge; bits 1-2: the secret's kind: none, plaintext,
 * md5, SCRAM), then the password the secret is made from and the body of the client's
 * PasswordMessage, split at the first 0xff; the user name is fixed. The harness makes the
 * secret itself (SCRAM with 2 iterations, so no input can ask for a slow PBKDF2) and knows
 * the one right answer, so besides "no crash, no leak, no UB" it checks: the verdict is
 * malformed exactly when the body is not one NUL-terminated string, and OK exactly when the
 * body is the right answer (the md5 response for the salt, or the password itself). */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto/password.h"
#include "proto/scram.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char USER[] = "fuzz_user";
static const uint8_t SALT[MD5_AUTH_SALT_LEN] = {0x5a, 0x01, 0xff, 0x00};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 4096)
        return 0;
    uint8_t flags = data[0];
    const uint8_t *rest = data + 1, *cut = memchr(rest, 0xff, size - 1);
    size_t pw_len = cut ? (size_t)(cut - rest) : size - 1;
    const uint8_t *body = cut ? cut + 1 : rest + size - 1;
    size_t body_len = (size_t)(data + size - body);

    char *password = malloc(pw_len + 1);
    if (!password)
        return 0;
    memcpy(password, rest, pw_len);
    password[pw_len] = 0;
    bool pw_is_text = strlen(password) == pw_len && pw_len > 0;

    enum password_challenge how = flags & 1 ? PASSWORD_CHALLENGE_MD5 : PASSWORD_CHALLENGE_CLEARTEXT;
    int kind = (flags >> 1) & 3; /* 0 none, 1 plaintext, 2 md5, 3 SCRAM */
    char secret[SCRAM_SECRET_MAX > MD5_AUTH_BUF_SIZE ? SCRAM_SECRET_MAX : MD5_AUTH_BUF_SIZE];
    const char *secret_arg = NULL;
    bool made = pw_is_text;
    if (kind == 1 && made) {
        /* A plaintext secret that looks like an md5 or SCRAM secret is taken as one. */
        made =
            pw_len < sizeof(secret) && !md5_auth_is_secret(password) && !scram_is_secret(password);
        if (made)
            memcpy(secret, password, pw_len + 1);
    } else if (kind == 2 && made) {
        made = md5_auth_build_secret(password, USER, secret);
    } else if (kind == 3 && made) {
        struct scram_secret s;
        static const uint8_t scram_salt[16] = {1, 2, 3};
        made =
            scram_secret_from_password_with_salt(password, scram_salt, sizeof(scram_salt), 2, &s) &&
            scram_secret_format(&s, secret, sizeof(secret));
    }
    if (kind != 0 && made)
        secret_arg = secret;

    enum password_verdict v = password_check(body, body_len, how, secret_arg, USER, SALT);

    bool framed =
        body_len > 0 && body[body_len - 1] == 0 && memchr(body, 0, body_len) == body + body_len - 1;
    if ((v == PASSWORD_MALFORMED) != !framed)
        abort();
    if (framed && secret_arg) {
        bool right;
        if (how == PASSWORD_CHALLENGE_MD5) {
            char expected[MD5_AUTH_BUF_SIZE];
            /* A SCRAM secret cannot check an md5 answer. */
            right = kind != 3 && md5_auth_build_response(password, USER, SALT, expected) &&
                    body_len == MD5_AUTH_SECRET_LEN + 1 &&
                    memcmp(body, expected, MD5_AUTH_SECRET_LEN) == 0;
        } else {
            right = body_len == pw_len + 1 && memcmp(body, password, pw_len) == 0;
        }
        if ((v == PASSWORD_OK) != right)
            abort();
    } else if (v == PASSWORD_OK) {
        abort(); /* no secret, no entry */
    }
    free(password);
    return 0;
}
