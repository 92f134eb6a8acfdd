/* SCRAM-SHA-256 for both sides of the pooler (see scram.h for the exchange and the formulas).
 * Every message is length-checked and scanned for NULs first, then parsed attribute by
 * attribute with a cursor that never reads past the end; a missing mandatory attribute is
 * always an error (CVE-2026-19888), never a success with a field left unset. Keys derived from
 * plaintext passwords are cached per process so that PBKDF2 stays off the hot path (see
 * "process keys and derivation caches"). */
#include "proto/scram.h"

#include "proto/md5_auth.h"

#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#define SCRAM_RAW_NONCE_LEN 18 /* as PostgreSQL: 24 base64 characters */
#define SECRET_PREFIX       "SCRAM-SHA-256$"
#define MAX_FIXED_NONCE_LEN 64 /* for the *_with_nonce test entry points */
#define MAX_CLIENT_USER_LEN 255

/* ------------------------------------------------------------------------------------------
 * small helpers
 * ------------------------------------------------------------------------------------------ */

static void set_err(char *err, size_t err_len, const char *msg)
{
    if (err != NULL && err_len > 0)
        snprintf(err, err_len, "%s", msg);
}

/* An output buffer that remembers overflow instead of writing past its end. */
struct outbuf {
    char *data; /* borrowed */
    size_t cap;
    size_t len;
    bool overflow;
};

static void out_mem(struct outbuf *o, const void *p, size_t n)
{
    if (o->overflow || n > o->cap - o->len) {
        o->overflow = true;
        return;
    }
    memcpy(o->data + o->len, p, n);
    o->len += n;
}

static void out_str(struct outbuf *o, const char *s)
{
    out_mem(o, s, strlen(s));
}

static void out_b64(struct outbuf *o, const uint8_t *p, size_t n)
{
    char tmp[SCRAM_OUT_MAX];

    if (!scram_base64_encode(p, n, tmp, sizeof(tmp))) {
        o->overflow = true;
        return;
    }
    out_str(o, tmp);
}

static char *dup_mem(const char *p, size_t n)
{
    char *s = malloc(n + 1);

    if (s != NULL) {
        memcpy(s, p, n);
        s[n] = '\0';
    }
    return s;
}

static void free_wiped(char *s)
{
    if (s != NULL) {
        OPENSSL_cleanse(s, strlen(s));
        free(s);
    }
}

/* Nonce characters per RFC 5802: printable ASCII except ','. */
static bool valid_nonce(const char *p, size_t n)
{
    if (n == 0)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c < 0x21 || c > 0x7e || c == ',')
            return false;
    }
    return true;
}

/* Common entry check for incoming messages: bounded length, no NUL bytes. */
static bool check_message(const char *msg, size_t len, char *err, size_t err_len)
{
    if (msg == NULL || len == 0) {
        set_err(err, err_len, "malformed SCRAM message (empty)");
        return false;
    }
    if (len > SCRAM_MAX_MESSAGE_LEN) {
        set_err(err, err_len, "malformed SCRAM message (too long)");
        return false;
    }
    if (memchr(msg, '\0', len) != NULL) {
        set_err(err, err_len, "malformed SCRAM message (NUL byte)");
        return false;
    }
    return true;
}

/* Parsing cursor over [p, end). */
struct cursor {
    const char *p;   /* borrowed */
    const char *end; /* borrowed */
};

/* Reads "<name>=<value>" up to the next ',' or the end, and consumes the ','. */
static bool read_attr(struct cursor *c, char name, const char **val, size_t *val_len)
{
    const char *comma;

    if (c->end - c->p < 2 || c->p[0] != name || c->p[1] != '=')
        return false;
    *val = c->p + 2;
    comma = memchr(*val, ',', (size_t)(c->end - *val));
    *val_len = (size_t)((comma != NULL ? comma : c->end) - *val);
    c->p = comma != NULL ? comma + 1 : c->end;
    /* "x=a," with nothing after the comma is malformed: an attribute must follow. */
    return comma == NULL || c->p < c->end;
}

/* Reads any attribute "<letter>=<value>"; used to skip optional extensions. */
static bool read_any_attr(struct cursor *c, char *name, const char **val, size_t *val_len)
{
    char n;

    if (c->end - c->p < 2)
        return false;
    n = c->p[0];
    if (!((n >= 'a' && n <= 'z') || (n >= 'A' && n <= 'Z')))
        return false;
    *name = n;
    return read_attr(c, n, val, val_len);
}

static bool at_end(const struct cursor *c)
{
    return c->p == c->end;
}

/* Decimal 1..max, digits only (no sign, no spaces), overflow-safe. */
static bool parse_iterations(const char *p, size_t n, long max, int *out)
{
    long v = 0;

    if (n == 0 || n > 10)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return false;
        v = v * 10 + (p[i] - '0');
        if (v > max)
            return false;
    }
    if (v < 1)
        return false;
    *out = (int)v;
    return true;
}

/* ------------------------------------------------------------------------------------------
 * crypto
 * ------------------------------------------------------------------------------------------ */

static bool hmac_sha256(const uint8_t *key, size_t key_len, const void *data, size_t len,
                        uint8_t out[SCRAM_KEY_LEN])
{
    unsigned int out_len = 0;

    if (key_len > INT_MAX)
        return false;
    if (HMAC(EVP_sha256(), key, (int)key_len, data, len, out, &out_len) == NULL)
        return false;
    return out_len == SCRAM_KEY_LEN;
}

static bool sha256(const uint8_t *data, size_t len, uint8_t out[SCRAM_KEY_LEN])
{
    unsigned int out_len = 0;

    if (EVP_Digest(data, len, out, &out_len, EVP_sha256(), NULL) != 1)
        return false;
    return out_len == SCRAM_KEY_LEN;
}

/* Counters for scram_cache_get_stats; only the loop thread calls in. */
static struct scram_cache_stats cache_stats;

/* SaltedPassword -> ClientKey, ServerKey. The one place PBKDF2 runs. */
static bool derive_keys(const char *password, const uint8_t *salt, size_t salt_len, int iterations,
                        uint8_t client_key[SCRAM_KEY_LEN], uint8_t server_key[SCRAM_KEY_LEN])
{
    uint8_t salted[SCRAM_KEY_LEN];
    size_t pw_len = strlen(password);
    bool ok;

    if (pw_len > INT_MAX || salt_len > INT_MAX || iterations < 1)
        return false;
    cache_stats.pbkdf2_runs++;
    ok = PKCS5_PBKDF2_HMAC(password, (int)pw_len, salt, (int)salt_len, iterations, EVP_sha256(),
                           SCRAM_KEY_LEN, salted) == 1 &&
         hmac_sha256(salted, SCRAM_KEY_LEN, "Client Key", 10, client_key) &&
         hmac_sha256(salted, SCRAM_KEY_LEN, "Server Key", 10, server_key);
    OPENSSL_cleanse(salted, sizeof(salted));
    return ok;
}

/* AuthMessage = client-first-bare "," server-first "," client-final-without-proof. Each part
 * is at most SCRAM_MAX_MESSAGE_LEN bytes (checked by the callers), so the buffer fits. */
#define AUTH_MESSAGE_CAP (3 * SCRAM_MAX_MESSAGE_LEN + 2)

static bool build_auth_message(const char *cfb, const char *sf, const char *cfwp, size_t cfwp_len,
                               char *buf, size_t *len)
{
    struct outbuf o = {.data = buf, .cap = AUTH_MESSAGE_CAP};

    out_str(&o, cfb);
    out_str(&o, ",");
    out_str(&o, sf);
    out_str(&o, ",");
    out_mem(&o, cfwp, cfwp_len);
    *len = o.len;
    return !o.overflow;
}

static bool random_nonce(char out[SCRAM_OUT_MAX])
{
    uint8_t raw[SCRAM_RAW_NONCE_LEN];

    if (RAND_bytes(raw, sizeof(raw)) != 1)
        return false;
    return scram_base64_encode(raw, sizeof(raw), out, SCRAM_OUT_MAX);
}

/* ------------------------------------------------------------------------------------------
 * base64
 * ------------------------------------------------------------------------------------------ */

static const char b64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

size_t scram_base64_encoded_len(size_t n)
{
    return (n + 2) / 3 * 4;
}

bool scram_base64_encode(const uint8_t *in, size_t len, char *out, size_t out_cap)
{
    size_t o = 0;

    if (len > (SIZE_MAX / 4) * 3 - 3 || out_cap <= scram_base64_encoded_len(len))
        return false;
    for (size_t i = 0; i < len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;
        size_t rem = len - i;

        if (rem > 1)
            v |= (uint32_t)in[i + 1] << 8;
        if (rem > 2)
            v |= in[i + 2];
        out[o++] = b64_alphabet[(v >> 18) & 63];
        out[o++] = b64_alphabet[(v >> 12) & 63];
        out[o++] = rem > 1 ? b64_alphabet[(v >> 6) & 63] : '=';
        out[o++] = rem > 2 ? b64_alphabet[v & 63] : '=';
    }
    out[o] = '\0';
    return true;
}

static int b64_value(char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

bool scram_base64_decode(const char *in, size_t len, uint8_t *out, size_t out_cap, size_t *out_len)
{
    size_t o = 0;

    if (len % 4 != 0)
        return false;
    for (size_t i = 0; i < len; i += 4) {
        bool last = i + 4 == len;
        int v[4];
        int pad = 0;

        for (int k = 0; k < 4; k++) {
            char c = in[i + k];
            if (c == '=' && last && k >= 2) {
                v[k] = 0;
                pad++;
                continue;
            }
            if (pad > 0) /* data after '=' */
                return false;
            v[k] = b64_value(c);
            if (v[k] < 0)
                return false;
        }
        uint32_t w =
            (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 | (uint32_t)v[3];
        size_t n = 3 - (size_t)pad;
        /* Unused bits must be zero so that every byte string has one encoding. */
        if ((pad == 1 && (w & 0xff) != 0) || (pad == 2 && (w & 0xffff) != 0))
            return false;
        if (n > out_cap - o)
            return false;
        out[o++] = (uint8_t)(w >> 16);
        if (n > 1)
            out[o++] = (uint8_t)(w >> 8);
        if (n > 2)
            out[o++] = (uint8_t)w;
    }
    *out_len = o;
    return true;
}

/* Decodes exactly want bytes. */
static bool b64_decode_exact(const char *in, size_t len, uint8_t *out, size_t want)
{
    uint8_t tmp[SCRAM_MAX_SALT_LEN > SCRAM_KEY_LEN ? SCRAM_MAX_SALT_LEN : SCRAM_KEY_LEN];
    size_t n = 0;
    bool ok;

    if (want > sizeof(tmp) || len != scram_base64_encoded_len(want))
        return false;
    ok = scram_base64_decode(in, len, tmp, sizeof(tmp), &n) && n == want;
    if (ok)
        memcpy(out, tmp, want);
    OPENSSL_cleanse(tmp, sizeof(tmp));
    return ok;
}

/* ------------------------------------------------------------------------------------------
 * secrets
 * ------------------------------------------------------------------------------------------ */

bool scram_is_secret(const char *text)
{
    return text != NULL && strncmp(text, SECRET_PREFIX, strlen(SECRET_PREFIX)) == 0;
}

bool scram_secret_parse(const char *text, struct scram_secret *out)
{
    const char *p, *colon, *dollar, *colon2;
    struct scram_secret s;
    size_t n;

    memset(&s, 0, sizeof(s));
    if (!scram_is_secret(text) || strlen(text) >= SCRAM_SECRET_MAX)
        return false;
    p = text + strlen(SECRET_PREFIX);
    colon = strchr(p, ':');
    if (colon == NULL || !parse_iterations(p, (size_t)(colon - p), INT_MAX, &s.iterations))
        return false;
    p = colon + 1;
    dollar = strchr(p, '$');
    if (dollar == NULL ||
        !scram_base64_decode(p, (size_t)(dollar - p), s.salt, sizeof(s.salt), &n) || n == 0)
        return false;
    s.salt_len = n;
    p = dollar + 1;
    colon2 = strchr(p, ':');
    if (colon2 == NULL || !b64_decode_exact(p, (size_t)(colon2 - p), s.stored_key, SCRAM_KEY_LEN))
        goto fail;
    p = colon2 + 1;
    if (!b64_decode_exact(p, strlen(p), s.server_key, SCRAM_KEY_LEN))
        goto fail;
    *out = s;
    OPENSSL_cleanse(&s, sizeof(s));
    return true;
fail:
    OPENSSL_cleanse(&s, sizeof(s));
    return false;
}

bool scram_secret_format(const struct scram_secret *secret, char *out, size_t out_cap)
{
    char iter[16];
    struct outbuf o = {.data = out, .cap = out_cap};

    if (out_cap == 0 || secret->iterations < 1 || secret->salt_len == 0 ||
        secret->salt_len > SCRAM_MAX_SALT_LEN)
        return false;
    snprintf(iter, sizeof(iter), "%d", secret->iterations);
    o.cap = out_cap - 1; /* room for the NUL */
    out_str(&o, SECRET_PREFIX);
    out_str(&o, iter);
    out_str(&o, ":");
    out_b64(&o, secret->salt, secret->salt_len);
    out_str(&o, "$");
    out_b64(&o, secret->stored_key, SCRAM_KEY_LEN);
    out_str(&o, ":");
    out_b64(&o, secret->server_key, SCRAM_KEY_LEN);
    if (o.overflow)
        return false;
    out[o.len] = '\0';
    return true;
}

/* Derives the secret for (password, salt, iterations) and, when client_key is not NULL, also
 * hands back the ClientKey (the client cache keeps it; a stored secret never does). */
static bool derive_secret(const char *password, const uint8_t *salt, size_t salt_len,
                          int iterations, struct scram_secret *out, uint8_t *client_key)
{
    uint8_t ck[SCRAM_KEY_LEN];
    bool ok;

    if (password == NULL || salt == NULL || salt_len == 0 || salt_len > SCRAM_MAX_SALT_LEN ||
        iterations < 1)
        return false;
    memset(out, 0, sizeof(*out));
    out->iterations = iterations;
    out->salt_len = salt_len;
    memcpy(out->salt, salt, salt_len);
    ok = derive_keys(password, salt, salt_len, iterations, ck, out->server_key) &&
         sha256(ck, SCRAM_KEY_LEN, out->stored_key);
    if (ok && client_key != NULL)
        memcpy(client_key, ck, SCRAM_KEY_LEN);
    OPENSSL_cleanse(ck, sizeof(ck));
    if (!ok)
        scram_secret_clear(out);
    return ok;
}

bool scram_secret_from_password_with_salt(const char *password, const uint8_t *salt,
                                          size_t salt_len, int iterations, struct scram_secret *out)
{
    return derive_secret(password, salt, salt_len, iterations, out, NULL);
}

bool scram_secret_from_password(const char *password, struct scram_secret *out)
{
    uint8_t salt[SCRAM_DEFAULT_SALT_LEN];

    if (RAND_bytes(salt, sizeof(salt)) != 1)
        return false;
    return scram_secret_from_password_with_salt(password, salt, sizeof(salt),
                                                SCRAM_DEFAULT_ITERATIONS, out);
}

void scram_secret_clear(struct scram_secret *secret)
{
    OPENSSL_cleanse(secret, sizeof(*secret));
}

/* ------------------------------------------------------------------------------------------
 * process keys and derivation caches
 *
 * Why the caches exist: PBKDF2 runs on the event loop thread. Deriving a fresh secret (new
 * random salt, 4096 rounds) on every SCRAM login of a plaintext auth_file user let a handful of
 * connections hammering one user stall every other client, and told an attacker which users
 * exist: a real user cost a PBKDF2 before the proof was even read, an unknown user (mock
 * secret) cost nothing. PostgreSQL keeps one salt per role; we keep one per plaintext password
 * for the life of the process, so only the first login for a password pays PBKDF2, and after
 * that a real user's exchange costs what an unknown user's does. On the client side a server
 * picks the salt, so we cache the keys per (password, salt, iterations): reconnecting to the
 * same PostgreSQL role costs one derivation, not one per connection.
 *
 *   server table  tag = HMAC(server_tag_key, password)
 *                 -> random salt, 4096 iterations, StoredKey, ServerKey
 *   client table  tag = HMAC(HMAC(client_tag_key, password), iterations | salt_len | salt)
 *                 -> same, plus the ClientKey to build proofs with
 *
 * An entry holds the tag and what was derived (what an auth_file SCRAM secret holds anyway),
 * never the password. The tag keys are random per process, so a tag says nothing outside it.
 *
 * A third table serves cleartext passwords (auth_type plain) checked against a stored SCRAM
 * secret, where the salt is the secret's and checking means one PBKDF2 per login. It keeps,
 * per user, the last password that verified, next to the secret it verified against:
 *
 *   plain table   tag = HMAC(plain_tag_key, user)
 *                 -> secret_tag = HMAC(plain_tag_key, user NUL secret text)
 *                    password_tag = HMAC(secret_tag, password)
 *
 * The same password against the same secret text is then two compares, in constant time. A
 * changed secret (reload, auth_query) does not match secret_tag: the entry is dropped and
 * PBKDF2 decides. Only passwords that verified are stored, so wrong ones always pay the full
 * check and can never push a user's entry out. Like the other tables it holds keyed hashes
 * of passwords: whoever can read the process's memory can test guesses at HMAC speed instead
 * of PBKDF2 speed, as with the derivation tables.
 *
 * Tables are fixed arrays with least-recently-used replacement; a miss costs one PBKDF2, as
 * every login did before. Only the loop thread calls in, so nothing is locked. The tables and
 * the keys are wiped at exit.
 * ------------------------------------------------------------------------------------------ */

/* Independent random keys per process: one for mock salts, one per cache table, so that no
 * value seen from outside (a mock salt) is ever computed with a key that tags passwords. */
static struct {
    uint8_t mock_salt[SCRAM_KEY_LEN];
    uint8_t server_tag[SCRAM_KEY_LEN];
    uint8_t client_tag[SCRAM_KEY_LEN];
    uint8_t plain_tag[SCRAM_KEY_LEN];
} process_keys;
static bool process_keys_ok;
static pthread_once_t process_keys_once = PTHREAD_ONCE_INIT;

struct cache_slot {
    bool used;
    uint64_t last_use;          /* cache_clock at the last hit, for LRU replacement */
    uint8_t tag[SCRAM_KEY_LEN]; /* keyed hash of the inputs, never the password */
    union {
        struct {                               /* server and client tables */
            struct scram_secret secret;        /* salt, iterations, StoredKey, ServerKey */
            uint8_t client_key[SCRAM_KEY_LEN]; /* client table only: the server side needs none */
        };
        struct {                                 /* plain table (tag: the user's) */
            uint8_t secret_tag[SCRAM_KEY_LEN];   /* the secret text the password verified against */
            uint8_t password_tag[SCRAM_KEY_LEN]; /* the password that verified */
        };
    };
};

static struct cache_slot server_cache[SCRAM_SERVER_CACHE_SLOTS];
static struct cache_slot client_cache[SCRAM_CLIENT_CACHE_SLOTS];
static struct cache_slot plain_cache[SCRAM_PLAIN_CACHE_SLOTS];
static uint64_t cache_clock;

static void wipe_at_exit(void)
{
    scram_cache_clear();
    OPENSSL_cleanse(&process_keys, sizeof(process_keys));
    process_keys_ok = false;
}

static void process_keys_init(void)
{
    process_keys_ok = RAND_bytes(process_keys.mock_salt, SCRAM_KEY_LEN) == 1 &&
                      RAND_bytes(process_keys.server_tag, SCRAM_KEY_LEN) == 1 &&
                      RAND_bytes(process_keys.client_tag, SCRAM_KEY_LEN) == 1 &&
                      RAND_bytes(process_keys.plain_tag, SCRAM_KEY_LEN) == 1;
    /* Failing to register only means the keys are not wiped at exit. */
    (void)atexit(wipe_at_exit);
}

static bool process_keys_ready(void)
{
    return pthread_once(&process_keys_once, process_keys_init) == 0 && process_keys_ok;
}

/* The slot holding tag, or NULL. */
static struct cache_slot *cache_lookup(struct cache_slot *table, size_t n,
                                       const uint8_t tag[SCRAM_KEY_LEN])
{
    for (size_t i = 0; i < n; i++) {
        struct cache_slot *s = &table[i];

        if (s->used && CRYPTO_memcmp(s->tag, tag, SCRAM_KEY_LEN) == 0) {
            s->last_use = ++cache_clock;
            return s;
        }
    }
    return NULL;
}

/* The slot to fill: a free one, else the least recently used one, wiped. */
static struct cache_slot *cache_victim(struct cache_slot *table, size_t n)
{
    struct cache_slot *victim = &table[0];

    for (size_t i = 1; i < n && victim->used; i++) {
        struct cache_slot *s = &table[i];

        if (!s->used || s->last_use < victim->last_use)
            victim = s;
    }
    OPENSSL_cleanse(victim, sizeof(*victim));
    return victim;
}

/* Returns the slot holding tag (*hit = true) or, on a miss, the slot to fill. */
static struct cache_slot *cache_find(struct cache_slot *table, size_t n,
                                     const uint8_t tag[SCRAM_KEY_LEN], bool *hit)
{
    struct cache_slot *s = cache_lookup(table, n, tag);

    *hit = s != NULL;
    return s ? s : cache_victim(table, n);
}

static void cache_fill(struct cache_slot *slot, const uint8_t tag[SCRAM_KEY_LEN])
{
    memcpy(slot->tag, tag, SCRAM_KEY_LEN);
    slot->last_use = ++cache_clock;
    slot->used = true;
}

/* The count of the secrets the pooler derives for plaintext passwords and unknown users. */
static int own_iterations = SCRAM_DEFAULT_ITERATIONS;

void scram_set_iterations(int iterations)
{
    own_iterations = iterations > 0 ? iterations : SCRAM_DEFAULT_ITERATIONS;
}

/* The secret for a plaintext password (server side): from the cache, or derived once with a
 * random salt and scram_iterations, exactly the shape of a mock secret. */
static bool plain_secret(const char *password, struct scram_secret *out)
{
    uint8_t tag[SCRAM_KEY_LEN], salt[SCRAM_DEFAULT_SALT_LEN];
    struct cache_slot *slot;
    bool hit = false, ok = true;

    if (!process_keys_ready() ||
        !hmac_sha256(process_keys.server_tag, SCRAM_KEY_LEN, password, strlen(password), tag))
        return false;
    slot = cache_find(server_cache, SCRAM_SERVER_CACHE_SLOTS, tag, &hit);
    if (hit && slot->secret.iterations == own_iterations) {
        cache_stats.server_hits++;
    } else {
        ok = RAND_bytes(salt, sizeof(salt)) == 1 &&
             derive_secret(password, salt, sizeof(salt), own_iterations, &slot->secret, NULL);
        if (ok)
            cache_fill(slot, tag);
    }
    if (ok)
        *out = slot->secret; /* a copy: the slot may be reused before this exchange ends */
    OPENSSL_cleanse(tag, sizeof(tag));
    return ok;
}

/* ClientKey and ServerKey for logging in with a password (client side), from the cache or
 * derived once per (password, salt, iterations). */
static bool client_keys(const char *password, const uint8_t *salt, size_t salt_len, int iterations,
                        uint8_t client_key[SCRAM_KEY_LEN], uint8_t server_key[SCRAM_KEY_LEN])
{
    /* iterations (4 bytes, big-endian) | salt_len (1 byte) | salt: fixed-width fields first,
     * so two different (salt, iterations) pairs never encode alike. */
    uint8_t params[4 + 1 + SCRAM_MAX_SALT_LEN];
    uint8_t pw_tag[SCRAM_KEY_LEN], tag[SCRAM_KEY_LEN];
    struct cache_slot *slot;
    bool hit = false, ok;

    if (salt_len == 0 || salt_len > SCRAM_MAX_SALT_LEN || iterations < 1 || !process_keys_ready())
        return false;
    params[0] = (uint8_t)((uint32_t)iterations >> 24);
    params[1] = (uint8_t)((uint32_t)iterations >> 16);
    params[2] = (uint8_t)((uint32_t)iterations >> 8);
    params[3] = (uint8_t)iterations;
    params[4] = (uint8_t)salt_len;
    memcpy(params + 5, salt, salt_len);
    ok = hmac_sha256(process_keys.client_tag, SCRAM_KEY_LEN, password, strlen(password), pw_tag) &&
         hmac_sha256(pw_tag, SCRAM_KEY_LEN, params, 5 + salt_len, tag);
    OPENSSL_cleanse(pw_tag, sizeof(pw_tag));
    if (!ok)
        return false;
    slot = cache_find(client_cache, SCRAM_CLIENT_CACHE_SLOTS, tag, &hit);
    if (hit) {
        cache_stats.client_hits++;
    } else {
        ok = derive_secret(password, salt, salt_len, iterations, &slot->secret, slot->client_key);
        if (ok)
            cache_fill(slot, tag);
    }
    if (ok) {
        memcpy(client_key, slot->client_key, SCRAM_KEY_LEN);
        memcpy(server_key, slot->secret.server_key, SCRAM_KEY_LEN);
    }
    OPENSSL_cleanse(tag, sizeof(tag));
    return ok;
}

/* The full check of a cleartext password against a stored secret: one PBKDF2 with the
 * secret's salt and iterations. */
static bool plain_matches(const char *password, const struct scram_secret *stored)
{
    struct scram_secret derived;
    bool ok = scram_secret_from_password_with_salt(password, stored->salt, stored->salt_len,
                                                   stored->iterations, &derived) &&
              CRYPTO_memcmp(stored->stored_key, derived.stored_key, SCRAM_KEY_LEN) == 0;
    scram_secret_clear(&derived);
    return ok;
}

bool scram_verify_plain(const char *user, const char *secret_text, const char *password)
{
    struct scram_secret stored;
    uint8_t user_tag[SCRAM_KEY_LEN], secret_tag[SCRAM_KEY_LEN], password_tag[SCRAM_KEY_LEN];
    size_t user_len = strlen(user), secret_len = strlen(secret_text);
    struct cache_slot *slot = NULL;
    bool ok;

    if (!scram_secret_parse(secret_text, &stored))
        return false;
    /* user NUL secret: the user tag hashes bytes without a NUL, so the two never collide */
    char *joined = malloc(user_len + 1 + secret_len);
    bool tagged = joined && process_keys_ready() &&
                  hmac_sha256(process_keys.plain_tag, SCRAM_KEY_LEN, user, user_len, user_tag);
    if (tagged) {
        memcpy(joined, user, user_len + 1);
        memcpy(joined + user_len + 1, secret_text, secret_len);
        tagged = hmac_sha256(process_keys.plain_tag, SCRAM_KEY_LEN, joined,
                             user_len + 1 + secret_len, secret_tag) &&
                 hmac_sha256(secret_tag, SCRAM_KEY_LEN, password, strlen(password), password_tag);
    }
    free(joined);
    if (tagged) {
        slot = cache_lookup(plain_cache, SCRAM_PLAIN_CACHE_SLOTS, user_tag);
        if (slot && CRYPTO_memcmp(slot->secret_tag, secret_tag, SCRAM_KEY_LEN) != 0) {
            /* The user's secret changed since: what verified then proves nothing now. */
            OPENSSL_cleanse(slot, sizeof(*slot));
            slot = NULL;
        }
    }
    if (slot && CRYPTO_memcmp(slot->password_tag, password_tag, SCRAM_KEY_LEN) == 0) {
        cache_stats.plain_hits++;
        ok = true;
    } else {
        /* Another password (or none remembered): PBKDF2 decides. Only a password that
         * verifies takes a slot (the user's own, else a free or the least recently used
         * one), so wrong passwords never evict anybody. */
        ok = plain_matches(password, &stored);
        if (ok && tagged) {
            if (!slot)
                slot = cache_victim(plain_cache, SCRAM_PLAIN_CACHE_SLOTS);
            memcpy(slot->secret_tag, secret_tag, SCRAM_KEY_LEN);
            memcpy(slot->password_tag, password_tag, SCRAM_KEY_LEN);
            cache_fill(slot, user_tag);
        }
    }
    scram_secret_clear(&stored);
    OPENSSL_cleanse(user_tag, sizeof(user_tag));
    OPENSSL_cleanse(secret_tag, sizeof(secret_tag));
    OPENSSL_cleanse(password_tag, sizeof(password_tag));
    return ok;
}

void scram_cache_get_stats(struct scram_cache_stats *out)
{
    *out = cache_stats;
}

void scram_cache_clear(void)
{
    OPENSSL_cleanse(server_cache, sizeof(server_cache));
    OPENSSL_cleanse(client_cache, sizeof(client_cache));
    OPENSSL_cleanse(plain_cache, sizeof(plain_cache));
}

/* ------------------------------------------------------------------------------------------
 * server side
 * ------------------------------------------------------------------------------------------ */

void scram_server_init(struct scram_server *st)
{
    memset(st, 0, sizeof(*st));
    st->phase = SCRAM_SERVER_INIT;
}

void scram_server_clear(struct scram_server *st)
{
    free_wiped(st->client_first_bare);
    free_wiped(st->server_first);
    free_wiped(st->nonce);
    OPENSSL_cleanse(st, sizeof(*st));
    scram_server_init(st);
}

static enum scram_result server_fail(struct scram_server *st, enum scram_result r, char *err,
                                     size_t err_len, const char *msg)
{
    st->phase = SCRAM_SERVER_FAILED;
    if (msg != NULL) /* NULL: err already says why */
        set_err(err, err_len, msg);
    return r;
}

/* Parses client-first, then builds and records server-first. The secret is already in st. */
static enum scram_result server_first_step(struct scram_server *st, const char *msg, size_t len,
                                           const char *server_nonce, char *out, size_t out_cap,
                                           size_t *out_len, char *err, size_t err_len)
{
    struct cursor c = {.p = msg, .end = msg + len};
    const char *val, *bare, *cnonce;
    size_t val_len, cnonce_len;
    char name;
    char iter[16];
    struct outbuf o = {.data = out, .cap = out_cap};

    /* gs2-header: gs2-cbind-flag "," [authzid] "," */
    if (c.p[0] == 'p')
        return server_fail(st, SCRAM_PROTOCOL_ERROR, err, err_len,
                           "SCRAM channel binding (p=) is not supported: the pooler offers only "
                           "SCRAM-SHA-256, not SCRAM-SHA-256-PLUS");
    if (c.p[0] != 'n' && c.p[0] != 'y')
        return server_fail(st, SCRAM_PROTOCOL_ERROR, err, err_len,
                           "malformed SCRAM message (invalid channel binding flag)");
    st->gs2_y = c.p[0] == 'y';
    if (len < 3 || c.p[1] != ',')
        return server_fail(st, SCRAM_PROTOCOL_ERROR, err, err_len,
                           "malformed SCRAM message (comma expected after channel binding flag)");
    if (c.p[2] == 'a')
        return server_fail(st, SCRAM_PROTOCOL_ERROR, err, err_len,
                           "SCRAM authorization identity (a=) is not supported");
    if (c.p[2] != ',')
        return server_fail(st, SCRAM_PROTOCOL_ERROR, err, err_len,
                           "malformed SCRAM message (comma expected after gs2 header)");
    c.p += 3;
    bare = c.p;

    if (c.p < c.end && c.p[0] == 'm')
        return server_fail(st, SCRAM_PROTOCOL_ERROR, err, err_len,
                           "SCRAM mandatory extensions (m=) are not supported");
    /* The user name is ignored (PostgreSQL uses the startup packet's user) but must be there. */
    if (!read_attr(&c, 'n', &val, &val_len))
        return server_fail(st, SCRAM_PROTOCOL_ERROR, err, err_len,
                           "malformed SCRAM message (user name attribute n= expected)");
    if (!read_attr(&c, 'r', &cnonce, &cnonce_len))
        return server_fail(st, SCRAM_PROTOCOL_ERROR, err, err_len,
                           "malformed SCRAM message (nonce attribute r= expected)");
    if (cnonce_len > SCRAM_MAX_NONCE_LEN)
        return server_fail(st, SCRAM_PROTOCOL_ERROR, err, err_len,
                           "malformed SCRAM message (nonce too long)");
    if (!valid_nonce(cnonce, cnonce_len))
        return server_fail(st, SCRAM_PROTOCOL_ERROR, err, err_len,
                           "malformed SCRAM message (invalid nonce)");
    /* Optional extensions after the nonce are allowed by RFC 5802 and ignored. */
    while (!at_end(&c)) {
        if (!read_any_attr(&c, &name, &val, &val_len))
            return server_fail(st, SCRAM_PROTOCOL_ERROR, err, err_len,
                               "malformed SCRAM message (invalid attribute in client-first)");
    }

    st->client_first_bare = dup_mem(bare, (size_t)(c.end - bare));
    st->nonce = malloc(cnonce_len + strlen(server_nonce) + 1);
    if (st->client_first_bare == NULL || st->nonce == NULL)
        return server_fail(st, SCRAM_INTERNAL_ERROR, err, err_len, "out of memory");
    memcpy(st->nonce, cnonce, cnonce_len);
    strcpy(st->nonce + cnonce_len, server_nonce);

    snprintf(iter, sizeof(iter), "%d", st->secret.iterations);
    out_str(&o, "r=");
    out_str(&o, st->nonce);
    out_str(&o, ",s=");
    out_b64(&o, st->secret.salt, st->secret.salt_len);
    out_str(&o, ",i=");
    out_str(&o, iter);
    if (o.overflow)
        return server_fail(st, SCRAM_INTERNAL_ERROR, err, err_len, "SCRAM output buffer too small");
    st->server_first = dup_mem(out, o.len);
    if (st->server_first == NULL)
        return server_fail(st, SCRAM_INTERNAL_ERROR, err, err_len, "out of memory");
    *out_len = o.len;
    st->phase = SCRAM_SERVER_FIRST_SENT;
    return SCRAM_OK;
}

/* Checks the state and message, loads the secret, then runs the first step. */
static enum scram_result server_start(struct scram_server *st, const char *secret_or_password,
                                      const char *doomed_user, const char *client_first, size_t len,
                                      const char *fixed_nonce, char *out, size_t out_cap,
                                      size_t *out_len, char *err, size_t err_len);

enum scram_result scram_server_start(struct scram_server *st, const char *secret_or_password,
                                     const char *client_first, size_t len, char *out,
                                     size_t out_cap, size_t *out_len, char *err, size_t err_len)
{
    return server_start(st, secret_or_password, NULL, client_first, len, NULL, out, out_cap,
                        out_len, err, err_len);
}

enum scram_result scram_server_start_with_nonce(struct scram_server *st,
                                                const char *secret_or_password,
                                                const char *client_first, size_t len,
                                                const char *server_nonce, char *out, size_t out_cap,
                                                size_t *out_len, char *err, size_t err_len)
{
    if (server_nonce == NULL || strlen(server_nonce) > MAX_FIXED_NONCE_LEN ||
        !valid_nonce(server_nonce, strlen(server_nonce)))
        return server_fail(st, SCRAM_INTERNAL_ERROR, err, err_len, "invalid fixed server nonce");
    return server_start(st, secret_or_password, NULL, client_first, len, server_nonce, out, out_cap,
                        out_len, err, err_len);
}

enum scram_result scram_server_start_doomed(struct scram_server *st, const char *user,
                                            const char *client_first, size_t len, char *out,
                                            size_t out_cap, size_t *out_len, char *err,
                                            size_t err_len)
{
    return server_start(st, NULL, user != NULL ? user : "", client_first, len, NULL, out, out_cap,
                        out_len, err, err_len);
}

/* An unknown user gets the same shape of secret as a cached plaintext password: a 16-byte salt
 * that is stable for the name (a real user's salt never changes either) yet unpredictable from
 * outside, and scram_iterations. */
static bool mock_secret(const char *user, struct scram_secret *s)
{
    uint8_t h[SCRAM_KEY_LEN];

    if (!process_keys_ready())
        return false;
    if (!hmac_sha256(process_keys.mock_salt, SCRAM_KEY_LEN, user, strlen(user), h))
        return false;
    memset(s, 0, sizeof(*s));
    s->iterations = own_iterations;
    s->salt_len = SCRAM_DEFAULT_SALT_LEN;
    memcpy(s->salt, h, SCRAM_DEFAULT_SALT_LEN);
    /* Keys that no password derives: the proof check fails, and doomed forces it anyway. */
    return RAND_bytes(s->stored_key, SCRAM_KEY_LEN) == 1 &&
           RAND_bytes(s->server_key, SCRAM_KEY_LEN) == 1;
}

static enum scram_result server_start(struct scram_server *st, const char *secret_or_password,
                                      const char *doomed_user, const char *client_first, size_t len,
                                      const char *fixed_nonce, char *out, size_t out_cap,
                                      size_t *out_len, char *err, size_t err_len)
{
    char nonce[SCRAM_OUT_MAX];

    if (st->phase != SCRAM_SERVER_INIT)
        return server_fail(st, SCRAM_PROTOCOL_ERROR, err, err_len,
                           "unexpected SCRAM client-first message");
    if (out == NULL || out_len == NULL)
        return server_fail(st, SCRAM_INTERNAL_ERROR, err, err_len, "no output buffer");
    if (!check_message(client_first, len, err, err_len))
        return server_fail(st, SCRAM_PROTOCOL_ERROR, err, err_len, NULL);

    if (doomed_user != NULL) {
        st->doomed = true;
        if (!mock_secret(doomed_user, &st->secret))
            return server_fail(st, SCRAM_INTERNAL_ERROR, err, err_len,
                               "could not build a mock SCRAM secret");
    } else if (secret_or_password == NULL) {
        return server_fail(st, SCRAM_BAD_SECRET, err, err_len, "no secret for SCRAM");
    } else if (scram_is_secret(secret_or_password)) {
        if (!scram_secret_parse(secret_or_password, &st->secret))
            return server_fail(st, SCRAM_BAD_SECRET, err, err_len, "invalid SCRAM secret");
    } else if (md5_auth_is_secret(secret_or_password)) {
        return server_fail(st, SCRAM_BAD_SECRET, err, err_len,
                           "an md5 secret cannot be used for SCRAM authentication");
    } else if (!plain_secret(secret_or_password, &st->secret)) {
        return server_fail(st, SCRAM_INTERNAL_ERROR, err, err_len,
                           "could not derive a SCRAM secret");
    }

    if (fixed_nonce != NULL)
        snprintf(nonce, sizeof(nonce), "%s", fixed_nonce);
    else if (!random_nonce(nonce))
        return server_fail(st, SCRAM_INTERNAL_ERROR, err, err_len, "could not generate nonce");
    return server_first_step(st, client_first, len, nonce, out, out_cap, out_len, err, err_len);
}

enum scram_result scram_server_finish(struct scram_server *st, const char *client_final, size_t len,
                                      char *out, size_t out_cap, size_t *out_len, char *err,
                                      size_t err_len)
{
    struct cursor c = {.p = client_final, .end = client_final + len};
    const char *val, *proof_b64, *cfwp_end;
    size_t val_len, proof_len, am_len = 0;
    char name;
    char am[AUTH_MESSAGE_CAP];
    uint8_t proof[SCRAM_KEY_LEN], sig[SCRAM_KEY_LEN], client_key[SCRAM_KEY_LEN];
    uint8_t stored[SCRAM_KEY_LEN], server_sig[SCRAM_KEY_LEN];
    enum scram_result r = SCRAM_OK;
    const char *expect_cb;
    struct outbuf o = {.data = out, .cap = out_cap};

    if (st->phase != SCRAM_SERVER_FIRST_SENT)
        return server_fail(st, SCRAM_PROTOCOL_ERROR, err, err_len,
                           "unexpected SCRAM client-final message");
    if (out == NULL || out_len == NULL)
        return server_fail(st, SCRAM_INTERNAL_ERROR, err, err_len, "no output buffer");
    if (!check_message(client_final, len, err, err_len))
        return server_fail(st, SCRAM_PROTOCOL_ERROR, err, err_len, NULL);

    /* c= must repeat the gs2 header: base64("n,,") or base64("y,,"). */
    expect_cb = st->gs2_y ? "eSws" : "biws";
    if (!read_attr(&c, 'c', &val, &val_len))
        return server_fail(st, SCRAM_PROTOCOL_ERROR, err, err_len,
                           "malformed SCRAM message (channel binding attribute c= expected)");
    if (val_len != 4 || memcmp(val, expect_cb, 4) != 0)
        return server_fail(st, SCRAM_PROTOCOL_ERROR, err, err_len,
                           "SCRAM channel binding check failed");
    if (!read_attr(&c, 'r', &val, &val_len))
        return server_fail(st, SCRAM_PROTOCOL_ERROR, err, err_len,
                           "malformed SCRAM message (nonce attribute r= expected)");
    if (val_len != strlen(st->nonce) || memcmp(val, st->nonce, val_len) != 0)
        return server_fail(st, SCRAM_PROTOCOL_ERROR, err, err_len, "SCRAM nonce mismatch");
    /* Extensions may come before the proof; p= must be last. */
    for (;;) {
        cfwp_end = c.p;
        if (!read_any_attr(&c, &name, &val, &val_len))
            return server_fail(st, SCRAM_PROTOCOL_ERROR, err, err_len,
                               "malformed SCRAM message (proof attribute p= expected)");
        if (name == 'p')
            break;
    }
    proof_b64 = val;
    proof_len = val_len;
    if (!at_end(&c))
        return server_fail(st, SCRAM_PROTOCOL_ERROR, err, err_len,
                           "malformed SCRAM message (garbage after proof)");
    if (!b64_decode_exact(proof_b64, proof_len, proof, SCRAM_KEY_LEN))
        return server_fail(st, SCRAM_PROTOCOL_ERROR, err, err_len,
                           "malformed SCRAM message (invalid proof)");

    /* cfwp_end points after the ',' that precedes "p=". */
    if (!build_auth_message(st->client_first_bare, st->server_first, client_final,
                            (size_t)(cfwp_end - 1 - client_final), am, &am_len) ||
        !hmac_sha256(st->secret.stored_key, SCRAM_KEY_LEN, am, am_len, sig) ||
        !hmac_sha256(st->secret.server_key, SCRAM_KEY_LEN, am, am_len, server_sig)) {
        r = server_fail(st, SCRAM_INTERNAL_ERROR, err, err_len, "SCRAM computation failed");
        goto done;
    }
    for (size_t i = 0; i < SCRAM_KEY_LEN; i++)
        client_key[i] = proof[i] ^ sig[i];
    if (!sha256(client_key, SCRAM_KEY_LEN, stored)) {
        r = server_fail(st, SCRAM_INTERNAL_ERROR, err, err_len, "SCRAM computation failed");
        goto done;
    }
    /* Same work and same message for an unknown user as for a wrong password. */
    if ((CRYPTO_memcmp(stored, st->secret.stored_key, SCRAM_KEY_LEN) != 0) | st->doomed) {
        r = server_fail(st, SCRAM_AUTH_FAILED, err, err_len, "SCRAM authentication failed");
        goto done;
    }

    out_str(&o, "v=");
    out_b64(&o, server_sig, SCRAM_KEY_LEN);
    if (o.overflow) {
        r = server_fail(st, SCRAM_INTERNAL_ERROR, err, err_len, "SCRAM output buffer too small");
        goto done;
    }
    *out_len = o.len;
    memcpy(st->client_key, client_key, SCRAM_KEY_LEN);
    st->have_client_key = true;
    st->phase = SCRAM_SERVER_DONE;
done:
    OPENSSL_cleanse(proof, sizeof(proof));
    OPENSSL_cleanse(sig, sizeof(sig));
    OPENSSL_cleanse(client_key, sizeof(client_key));
    OPENSSL_cleanse(stored, sizeof(stored));
    OPENSSL_cleanse(server_sig, sizeof(server_sig));
    OPENSSL_cleanse(am, am_len);
    return r;
}

/* ------------------------------------------------------------------------------------------
 * client side
 * ------------------------------------------------------------------------------------------ */

void scram_client_init(struct scram_client *st)
{
    memset(st, 0, sizeof(*st));
    st->phase = SCRAM_CLIENT_INIT;
}

void scram_client_clear(struct scram_client *st)
{
    free_wiped(st->password);
    free_wiped(st->client_first_bare);
    OPENSSL_cleanse(st, sizeof(*st));
    scram_client_init(st);
}

static enum scram_result objects_client_fail(struct scram_client *st, enum scram_result r,
                                             char *err, size_t err_len, const char *msg)
{
    st->phase = SCRAM_CLIENT_FAILED;
    /* The password is not needed after a failure: do not keep it around. */
    free_wiped(st->password);
    st->password = NULL;
    if (msg != NULL) /* NULL: err already says why */
        set_err(err, err_len, msg);
    return r;
}

static enum scram_result client_start(struct scram_client *st, const char *user,
                                      const char *password, const uint8_t *client_key,
                                      const uint8_t *server_key, const char *nonce, char *out,
                                      size_t out_cap, size_t *out_len, char *err, size_t err_len)
{
    struct outbuf o = {.data = out, .cap = out_cap};

    if (st->phase != SCRAM_CLIENT_INIT)
        return objects_client_fail(st, SCRAM_PROTOCOL_ERROR, err, err_len,
                                   "SCRAM client exchange already started");
    if (out == NULL || out_len == NULL)
        return objects_client_fail(st, SCRAM_INTERNAL_ERROR, err, err_len, "no output buffer");
    if ((password != NULL) == (client_key != NULL || server_key != NULL) ||
        (client_key != NULL) != (server_key != NULL))
        return objects_client_fail(st, SCRAM_BAD_SECRET, err, err_len,
                                   "SCRAM client needs either a password or both keys");
    if (user == NULL)
        user = "";
    if (strlen(user) > MAX_CLIENT_USER_LEN)
        return objects_client_fail(st, SCRAM_INTERNAL_ERROR, err, err_len, "user name too long");

    if (password != NULL) {
        st->password = strdup(password);
        if (st->password == NULL)
            return objects_client_fail(st, SCRAM_INTERNAL_ERROR, err, err_len, "out of memory");
    } else {
        memcpy(st->client_key, client_key, SCRAM_KEY_LEN);
        memcpy(st->server_key, server_key, SCRAM_KEY_LEN);
        st->have_keys = true;
    }

    /* saslname escaping (RFC 5802): ',' -> "=2C", '=' -> "=3D". */
    out_str(&o, "n,,n=");
    for (const char *p = user; *p != '\0'; p++) {
        if (*p == ',')
            out_str(&o, "=2C");
        else if (*p == '=')
            out_str(&o, "=3D");
        else
            out_mem(&o, p, 1);
    }
    out_str(&o, ",r=");
    out_str(&o, nonce);
    if (o.overflow)
        return objects_client_fail(st, SCRAM_INTERNAL_ERROR, err, err_len,
                                   "SCRAM output buffer too small");
    st->client_first_bare = dup_mem(out + 3, o.len - 3);
    if (st->client_first_bare == NULL)
        return objects_client_fail(st, SCRAM_INTERNAL_ERROR, err, err_len, "out of memory");
    st->client_nonce_len = strlen(nonce);
    *out_len = o.len;
    st->phase = SCRAM_CLIENT_FIRST_SENT;
    return SCRAM_OK;
}

enum scram_result scram_client_start(struct scram_client *st, const char *user,
                                     const char *password, const uint8_t *client_key,
                                     const uint8_t *server_key, char *out, size_t out_cap,
                                     size_t *out_len, char *err, size_t err_len)
{
    char nonce[SCRAM_OUT_MAX];

    if (!random_nonce(nonce))
        return objects_client_fail(st, SCRAM_INTERNAL_ERROR, err, err_len,
                                   "could not generate nonce");
    return client_start(st, user, password, client_key, server_key, nonce, out, out_cap, out_len,
                        err, err_len);
}

enum scram_result scram_client_start_with_nonce(struct scram_client *st, const char *user,
                                                const char *password, const uint8_t *client_key,
                                                const uint8_t *server_key, const char *client_nonce,
                                                char *out, size_t out_cap, size_t *out_len,
                                                char *err, size_t err_len)
{
    if (client_nonce == NULL || strlen(client_nonce) > MAX_FIXED_NONCE_LEN ||
        !valid_nonce(client_nonce, strlen(client_nonce)))
        return objects_client_fail(st, SCRAM_INTERNAL_ERROR, err, err_len,
                                   "invalid fixed client nonce");
    return client_start(st, user, password, client_key, server_key, client_nonce, out, out_cap,
                        out_len, err, err_len);
}

enum scram_result scram_client_continue(struct scram_client *st, const char *server_first,
                                        size_t len, char *out, size_t out_cap, size_t *out_len,
                                        char *err, size_t err_len)
{
    struct cursor c = {.p = server_first, .end = server_first + len};
    const char *nonce, *salt_b64, *iter_s;
    size_t nonce_len, salt_b64_len, iter_len, salt_len = 0, cfwp_len, am_len = 0;
    uint8_t salt[SCRAM_MAX_SALT_LEN];
    uint8_t stored[SCRAM_KEY_LEN], sig[SCRAM_KEY_LEN], proof[SCRAM_KEY_LEN];
    char am[AUTH_MESSAGE_CAP];
    char sf[SCRAM_MAX_MESSAGE_LEN + 1];
    int iterations = 0;
    enum scram_result r = SCRAM_OK;
    struct outbuf o = {.data = out, .cap = out_cap};

    if (st->phase != SCRAM_CLIENT_FIRST_SENT)
        return objects_client_fail(st, SCRAM_PROTOCOL_ERROR, err, err_len,
                                   "unexpected SCRAM server-first message");
    if (out == NULL || out_len == NULL)
        return objects_client_fail(st, SCRAM_INTERNAL_ERROR, err, err_len, "no output buffer");
    if (!check_message(server_first, len, err, err_len))
        return objects_client_fail(st, SCRAM_PROTOCOL_ERROR, err, err_len, NULL);

    if (c.p[0] == 'm')
        return objects_client_fail(st, SCRAM_PROTOCOL_ERROR, err, err_len,
                                   "SCRAM mandatory extensions (m=) are not supported");
    if (!read_attr(&c, 'r', &nonce, &nonce_len))
        return objects_client_fail(st, SCRAM_PROTOCOL_ERROR, err, err_len,
                                   "malformed SCRAM message (nonce attribute r= expected)");
    if (nonce_len > SCRAM_MAX_NONCE_LEN)
        return objects_client_fail(st, SCRAM_PROTOCOL_ERROR, err, err_len,
                                   "malformed SCRAM message (server nonce too long)");
    if (!valid_nonce(nonce, nonce_len) || nonce_len <= st->client_nonce_len ||
        memcmp(nonce, st->client_first_bare + strlen(st->client_first_bare) - st->client_nonce_len,
               st->client_nonce_len) != 0)
        return objects_client_fail(st, SCRAM_PROTOCOL_ERROR, err, err_len,
                                   "invalid SCRAM response (nonce mismatch)");
    if (!read_attr(&c, 's', &salt_b64, &salt_b64_len) ||
        !scram_base64_decode(salt_b64, salt_b64_len, salt, sizeof(salt), &salt_len) ||
        salt_len == 0)
        return objects_client_fail(st, SCRAM_PROTOCOL_ERROR, err, err_len,
                                   "malformed SCRAM message (invalid or too long salt)");
    if (!read_attr(&c, 'i', &iter_s, &iter_len))
        return objects_client_fail(
            st, SCRAM_PROTOCOL_ERROR, err, err_len,
            "malformed SCRAM message (iteration count attribute i= expected)");
    if (!parse_iterations(iter_s, iter_len, INT_MAX, &iterations))
        return objects_client_fail(st, SCRAM_PROTOCOL_ERROR, err, err_len,
                                   "malformed SCRAM message (invalid iteration count)");
    if (iterations > SCRAM_CLIENT_MAX_ITERATIONS) {
        /* Name the count: an administrator who raised scram_iterations needs to see why. */
        char msg[128];

        snprintf(msg, sizeof(msg), "server asked for %d SCRAM iterations; at most %d are accepted",
                 iterations, SCRAM_CLIENT_MAX_ITERATIONS);
        return objects_client_fail(st, SCRAM_PROTOCOL_ERROR, err, err_len, msg);
    }
    if (!at_end(&c))
        return objects_client_fail(st, SCRAM_PROTOCOL_ERROR, err, err_len,
                                   "malformed SCRAM message (garbage at end of server-first)");

    if (!st->have_keys) {
        if (!client_keys(st->password, salt, salt_len, iterations, st->client_key, st->server_key))
            return objects_client_fail(st, SCRAM_INTERNAL_ERROR, err, err_len,
                                       "SCRAM key derivation failed");
        free_wiped(st->password);
        st->password = NULL;
    }

    out_str(&o, "c=biws,r=");
    out_mem(&o, nonce, nonce_len);
    cfwp_len = o.len;
    memcpy(sf, server_first, len);
    sf[len] = '\0';
    if (o.overflow || !build_auth_message(st->client_first_bare, sf, out, cfwp_len, am, &am_len) ||
        !sha256(st->client_key, SCRAM_KEY_LEN, stored) ||
        !hmac_sha256(stored, SCRAM_KEY_LEN, am, am_len, sig) ||
        !hmac_sha256(st->server_key, SCRAM_KEY_LEN, am, am_len, st->server_signature)) {
        r = objects_client_fail(st, SCRAM_INTERNAL_ERROR, err, err_len, "SCRAM computation failed");
        goto done;
    }
    for (size_t i = 0; i < SCRAM_KEY_LEN; i++)
        proof[i] = st->client_key[i] ^ sig[i];
    out_str(&o, ",p=");
    out_b64(&o, proof, SCRAM_KEY_LEN);
    if (o.overflow) {
        r = objects_client_fail(st, SCRAM_INTERNAL_ERROR, err, err_len,
                                "SCRAM output buffer too small");
        goto done;
    }
    *out_len = o.len;
    st->phase = SCRAM_CLIENT_FINAL_SENT;
done:
    OPENSSL_cleanse(stored, sizeof(stored));
    OPENSSL_cleanse(sig, sizeof(sig));
    OPENSSL_cleanse(proof, sizeof(proof));
    OPENSSL_cleanse(am, am_len);
    return r;
}

enum scram_result scram_client_finish(struct scram_client *st, const char *server_final, size_t len,
                                      char *err, size_t err_len)
{
    struct cursor c = {.p = server_final, .end = server_final + len};
    const char *val;
    size_t val_len;
    uint8_t sig[SCRAM_KEY_LEN];

    if (st->phase != SCRAM_CLIENT_FINAL_SENT)
        return objects_client_fail(st, SCRAM_PROTOCOL_ERROR, err, err_len,
                                   "unexpected SCRAM server-final message");
    if (!check_message(server_final, len, err, err_len))
        return objects_client_fail(st, SCRAM_PROTOCOL_ERROR, err, err_len, NULL);

    if (len >= 2 && server_final[0] == 'e' && server_final[1] == '=') {
        /* Pass the server's reason on, but only as short printable text. */
        char msg[160];
        size_t n = 0;

        n += (size_t)snprintf(msg, sizeof(msg), "SCRAM error from server: ");
        for (size_t i = 2; i < len && n < 100 + 25; i++)
            msg[n++] = (server_final[i] >= 0x20 && server_final[i] < 0x7f) ? server_final[i] : '?';
        msg[n] = '\0';
        return objects_client_fail(st, SCRAM_AUTH_FAILED, err, err_len, msg);
    }
    if (!read_attr(&c, 'v', &val, &val_len) || !at_end(&c) ||
        !b64_decode_exact(val, val_len, sig, SCRAM_KEY_LEN))
        return objects_client_fail(st, SCRAM_PROTOCOL_ERROR, err, err_len,
                                   "malformed SCRAM message (invalid server signature)");
    if (CRYPTO_memcmp(sig, st->server_signature, SCRAM_KEY_LEN) != 0)
        return objects_client_fail(st, SCRAM_AUTH_FAILED, err, err_len,
                                   "invalid SCRAM server signature");
    st->phase = SCRAM_CLIENT_DONE;
    return SCRAM_OK;
}
