/* A client's PasswordMessage checked against the secret auth_file or auth_query holds for the
 * user: the answer to an md5 challenge, or a cleartext password (auth_type plain, an HBA
 * "password" line), against a plaintext, md5 or SCRAM secret. No I/O; the one state is
 * scram.c's cache of the cleartext password that last verified against a SCRAM secret. */
#ifndef PGWARDEN_PROTO_PASSWORD_H
#define PGWARDEN_PROTO_PASSWORD_H

#include <stddef.h>
#include <stdint.h>

#include "proto/md5_auth.h"

enum password_challenge {
    PASSWORD_CHALLENGE_MD5,       /* AuthenticationMD5Password with a salt was sent */
    PASSWORD_CHALLENGE_CLEARTEXT, /* AuthenticationCleartextPassword was sent */
};

enum password_verdict {
    PASSWORD_OK,
    PASSWORD_WRONG,     /* a well-formed answer that does not match (or no secret to match) */
    PASSWORD_MALFORMED, /* not one NUL-terminated string filling the body: a protocol error */
};

/* Checks a PasswordMessage body of len bytes. secret may be NULL (a user with no secret:
 * any answer is wrong, after the same framing check). salt is used for the md5 challenge
 * only. An md5 answer cannot be checked against a SCRAM secret: wrong. */
enum password_verdict password_check(const uint8_t *body, size_t len,
                                     enum password_challenge challenge, const char *secret,
                                     const char *user, const uint8_t salt[MD5_AUTH_SALT_LEN]);

#endif
