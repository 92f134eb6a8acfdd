/* PostgreSQL md5 password authentication (see md5_auth.h). MD5 goes through EVP so the build
 * stays free of OpenSSL 3 deprecation warnings. */
#include "proto/md5_auth.h"

#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#define MD5_HEX_LEN 32

/* md5hex(a + b) into out (32 hex digits + NUL). Two parts avoid concatenating secrets into a
 * temporary buffer that would then need wiping. */
static bool md5_hex2(const void *a, size_t a_len, const void *b, size_t b_len,
                     char out[MD5_HEX_LEN + 1])
{
    static const char hex[] = "0123456789abcdef";
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int digest_len = 0;
    bool ok = false;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();

    if (ctx == NULL)
        return false;
    if (EVP_DigestInit_ex(ctx, EVP_md5(), NULL) != 1 || EVP_DigestUpdate(ctx, a, a_len) != 1 ||
        EVP_DigestUpdate(ctx, b, b_len) != 1 || EVP_DigestFinal_ex(ctx, digest, &digest_len) != 1 ||
        digest_len != 16)
        goto done;
    for (unsigned int i = 0; i < 16; i++) {
        out[2 * i] = hex[digest[i] >> 4];
        out[2 * i + 1] = hex[digest[i] & 0xf];
    }
    out[MD5_HEX_LEN] = '\0';
    ok = true;
done:
    EVP_MD_CTX_free(ctx);
    OPENSSL_cleanse(digest, sizeof(digest));
    return ok;
}

bool md5_auth_make_salt(uint8_t salt[MD5_AUTH_SALT_LEN])
{
    return RAND_bytes(salt, MD5_AUTH_SALT_LEN) == 1;
}

bool md5_auth_is_secret(const char *secret)
{
    if (secret == NULL || strncmp(secret, "md5", 3) != 0 || strlen(secret) != MD5_AUTH_SECRET_LEN)
        return false;
    for (size_t i = 3; i < MD5_AUTH_SECRET_LEN; i++) {
        char c = secret[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
            return false;
    }
    return true;
}

bool md5_auth_build_secret(const char *password, const char *user, char out[MD5_AUTH_BUF_SIZE])
{
    if (password == NULL || user == NULL)
        return false;
    memcpy(out, "md5", 3);
    return md5_hex2(password, strlen(password), user, strlen(user), out + 3);
}

bool md5_auth_build_response(const char *secret_or_password, const char *user,
                             const uint8_t salt[MD5_AUTH_SALT_LEN], char out[MD5_AUTH_BUF_SIZE])
{
    char stored[MD5_AUTH_BUF_SIZE];
    bool ok;

    if (secret_or_password == NULL || user == NULL)
        return false;
    if (strncmp(secret_or_password, "SCRAM-SHA-256$", 14) == 0)
        return false;
    if (md5_auth_is_secret(secret_or_password))
        memcpy(stored, secret_or_password, MD5_AUTH_BUF_SIZE);
    else if (!md5_auth_build_secret(secret_or_password, user, stored))
        return false;
    memcpy(out, "md5", 3);
    /* The salt is mixed with the hex digits after "md5", not with the prefix. */
    ok = md5_hex2(stored + 3, MD5_HEX_LEN, salt, MD5_AUTH_SALT_LEN, out + 3);
    OPENSSL_cleanse(stored, sizeof(stored));
    return ok;
}

enum md5_auth_result md5_auth_verify(const char *secret_or_password, const char *user,
                                     const uint8_t salt[MD5_AUTH_SALT_LEN], const char *response,
                                     size_t response_len)
{
    char expected[MD5_AUTH_BUF_SIZE];
    enum md5_auth_result result;

    if (secret_or_password == NULL || user == NULL || response == NULL)
        return MD5_AUTH_MISMATCH;
    if (strncmp(secret_or_password, "SCRAM-SHA-256$", 14) == 0)
        return MD5_AUTH_UNSUPPORTED_SECRET;
    if (!md5_auth_build_response(secret_or_password, user, salt, expected))
        return MD5_AUTH_ERROR;
    /* The length is public (always 35 for a real client); only the content is compared in
     * constant time. */
    if (response_len == MD5_AUTH_SECRET_LEN &&
        CRYPTO_memcmp(expected, response, MD5_AUTH_SECRET_LEN) == 0)
        result = MD5_AUTH_OK;
    else
        result = MD5_AUTH_MISMATCH;
    OPENSSL_cleanse(expected, sizeof(expected));
    return result;
}
