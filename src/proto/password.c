/* PasswordMessage checks (see password.h), out of client.c's login so that they can be fuzzed
 * and unit tested on their own. */
#include "proto/password.h"

#include <string.h>

#include <openssl/crypto.h>

#include "config/auth_file.h"
#include "proto/scram.h"

/* A cleartext password against each kind of stored secret, in constant time where the secret
 * is compared directly. */
static enum password_verdict check_cleartext(const char *secret, const char *user,
                                             const char *password)
{
    switch (auth_file_secret_kind(secret)) {
    case AUTH_SECRET_NONE:
        return PASSWORD_WRONG;
    case AUTH_SECRET_PLAIN: {
        size_t a = strlen(secret), b = strlen(password);
        return a == b && CRYPTO_memcmp(secret, password, a) == 0 ? PASSWORD_OK : PASSWORD_WRONG;
    }
    case AUTH_SECRET_MD5: {
        char built[MD5_AUTH_BUF_SIZE];
        if (!md5_auth_build_secret(password, user, built))
            return PASSWORD_WRONG;
        return CRYPTO_memcmp(built, secret, MD5_AUTH_SECRET_LEN) == 0 ? PASSWORD_OK
                                                                      : PASSWORD_WRONG;
    }
    case AUTH_SECRET_SCRAM:
        /* PBKDF2 on the loop thread: a user's repeat login with the same password is
         * served from scram.c's cache of the last one that verified. */
        return scram_verify_plain(user, secret, password) ? PASSWORD_OK : PASSWORD_WRONG;
    }
    return PASSWORD_WRONG;
}

enum password_verdict password_check(const uint8_t *body, size_t len,
                                     enum password_challenge challenge, const char *secret,
                                     const char *user, const uint8_t salt[MD5_AUTH_SALT_LEN])
{
    /* One string and its NUL, nothing after: PostgreSQL refuses anything else. */
    if (len == 0 || body[len - 1] != 0 || memchr(body, 0, len) != body + len - 1)
        return PASSWORD_MALFORMED;
    if (!secret)
        return PASSWORD_WRONG;
    const char *answer = (const char *)body;
    if (challenge == PASSWORD_CHALLENGE_MD5)
        return md5_auth_verify(secret, user, salt, answer, len - 1) == MD5_AUTH_OK ? PASSWORD_OK
                                                                                   : PASSWORD_WRONG;
    return check_cleartext(secret, user, answer);
}
