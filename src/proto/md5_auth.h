/* PostgreSQL md5 password authentication: the stored secret "md5" + md5hex(password + user),
 * the client response "md5" + md5hex(md5hex(password + user) + salt), and a random salt.
 * Pure functions (OpenSSL EVP for MD5, RAND_bytes for salts); no I/O, no logging. */
#ifndef PGWARDEN_PROTO_MD5_AUTH_H
#define PGWARDEN_PROTO_MD5_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MD5_AUTH_SALT_LEN 4
/* "md5" followed by 32 lowercase hex digits: both the stored secret and the client response. */
#define MD5_AUTH_SECRET_LEN 35
/* Buffer size for a secret or response with its terminating NUL. */
#define MD5_AUTH_BUF_SIZE (MD5_AUTH_SECRET_LEN + 1)

enum md5_auth_result {
    MD5_AUTH_OK,                 /* the response matches the secret */
    MD5_AUTH_MISMATCH,           /* well-formed or not, the response does not match: auth fails */
    MD5_AUTH_UNSUPPORTED_SECRET, /* a SCRAM secret cannot verify an md5 response */
    MD5_AUTH_ERROR,              /* OpenSSL failed (e.g. MD5 unavailable in FIPS mode) */
};

/* Fills salt with 4 bytes from RAND_bytes. Use a fresh salt per authentication attempt: a
 * reused salt makes an observed response replayable. */
__attribute__((warn_unused_result)) bool md5_auth_make_salt(uint8_t salt[MD5_AUTH_SALT_LEN]);

/* True when secret is "md5" + 32 lowercase hex digits (what CREATE ROLE stores). */
bool md5_auth_is_secret(const char *secret);

/* Writes the stored secret "md5" + md5hex(password + user) into out (NUL-terminated). */
__attribute__((warn_unused_result)) bool
md5_auth_build_secret(const char *password, const char *user, char out[MD5_AUTH_BUF_SIZE]);

/* Writes the response a client sends for salt: from a plaintext password, or directly from a
 * stored md5 secret (so the pooler can log in to PostgreSQL with the userlist's md5 secret).
 * Fails for SCRAM secrets. out is NUL-terminated, MD5_AUTH_SECRET_LEN chars. */
__attribute__((warn_unused_result)) bool
md5_auth_build_response(const char *secret_or_password, const char *user,
                        const uint8_t salt[MD5_AUTH_SALT_LEN], char out[MD5_AUTH_BUF_SIZE]);

/* Checks a client's PasswordMessage payload (response, response_len bytes, without the
 * trailing NUL; any bytes, any length) against a plaintext password or a stored md5 secret.
 * The comparison is constant-time. A secret that looks like an md5 secret is treated as one,
 * as PostgreSQL and PgBouncer do. */
enum md5_auth_result md5_auth_verify(const char *secret_or_password, const char *user,
                                     const uint8_t salt[MD5_AUTH_SALT_LEN], const char *response,
                                     size_t response_len);

#endif
