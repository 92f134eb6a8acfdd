/* SCRAM-SHA-256 (RFC 5802/7677) as PostgreSQL speaks it, without channel binding: stored
 * secrets, the server side (pooler authenticating a client), the client side (pooler logging
 * in to PostgreSQL, with a password or with the ClientKey recovered from the client), base64.
 * Pure code (OpenSSL for HMAC/SHA-256/PBKDF2/RAND); no I/O, no logging. The only process-wide
 * state is the derivation caches and their random keys, used from the loop thread only. */
#ifndef PGWARDEN_PROTO_SCRAM_H
#define PGWARDEN_PROTO_SCRAM_H

/*
 * Exchange (we only advertise "SCRAM-SHA-256", never "-PLUS"):
 *
 *   client                                   server
 *   client-first  "n,,n=<user>,r=<cnonce>"  ->        scram_server_start
 *                 <- "r=<cnonce><snonce>,s=<salt b64>,i=<iter>"   server-first
 *   client-final  "c=biws,r=<nonce>,p=<proof b64>" -> scram_server_finish
 *                 <- "v=<ServerSignature b64>"                    server-final
 *
 * SaltedPassword = PBKDF2-HMAC-SHA-256(password, salt, iter); ClientKey = HMAC(SP, "Client Key")
 * StoredKey = SHA-256(ClientKey); ServerKey = HMAC(SP, "Server Key")
 * AuthMessage = client-first-bare "," server-first "," client-final-without-proof
 * ClientProof = ClientKey XOR HMAC(StoredKey, AuthMessage)
 * ServerSignature = HMAC(ServerKey, AuthMessage)
 *
 * SASLprep is not applied to passwords: they are used as raw bytes. This matches PostgreSQL
 * for ASCII passwords (and for any password that is not valid UTF-8 or that SASLprep rejects,
 * where PostgreSQL also falls back to the raw bytes). A non-ASCII password that SASLprep would
 * change (NFKC, mapped spaces) derives a different key than PostgreSQL would: store such users
 * with a SCRAM secret taken from PostgreSQL rather than a plaintext password.
 *
 * Messages are byte strings with explicit lengths; they may contain NULs, which are rejected.
 * Every function fails cleanly (never crashes) on any input and reports why in err, which never
 * contains a password, key or proof.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SCRAM_KEY_LEN            32 /* SHA-256 output: keys, proofs, signatures */
#define SCRAM_DEFAULT_SALT_LEN   16 /* what PostgreSQL generates */
#define SCRAM_MAX_SALT_LEN       64 /* longest salt accepted in a secret or server-first */
#define SCRAM_DEFAULT_ITERATIONS 4096
/* Longest incoming SCRAM message accepted (either side). */
#define SCRAM_MAX_MESSAGE_LEN 2048
/* Longest nonce accepted: the client's own part (server side) and the combined nonce from a
 * server (client side); libpq uses 24 chars, a malicious server may send megabytes. */
#define SCRAM_MAX_NONCE_LEN 512
/* Cap on the iteration count a server may ask of us (client side): PBKDF2 runs on the event
 * loop thread, so a server asking for 10^9 iterations would stall the whole pooler
 * (CVE-2026-6669), and the former cap of 10^6 still let a hostile server stall it ~250 times as
 * long as a default login, on every login (a new salt each time defeats the client cache).
 * PostgreSQL's default is 4096; 100000 leaves room for a hardened scram_iterations setting,
 * and an honest server's count is paid once per (password, salt, iterations). */
#define SCRAM_CLIENT_MAX_ITERATIONS 100000
/* Slots in the derivation caches (see "derivation caches" below): plaintext auth_file
 * passwords on the server side, (password, salt, iterations) of PostgreSQL roles on the
 * client side. A miss costs one PBKDF2, so more entries than slots only costs speed. */
#define SCRAM_SERVER_CACHE_SLOTS 256
#define SCRAM_CLIENT_CACHE_SLOTS 64
/* Users whose last accepted cleartext password is remembered (scram_verify_plain). */
#define SCRAM_PLAIN_CACHE_SLOTS 256
/* Every message we build fits in a buffer of this size (out_cap >= this always suffices). */
#define SCRAM_OUT_MAX 1280
/* Longest formatted secret, with NUL. */
#define SCRAM_SECRET_MAX 256

#define SCRAM_MECHANISM "SCRAM-SHA-256"

enum scram_result {
    SCRAM_OK,
    SCRAM_AUTH_FAILED,    /* wrong password: proof or server signature did not verify */
    SCRAM_PROTOCOL_ERROR, /* malformed or out-of-order message, limit exceeded, bad nonce */
    SCRAM_BAD_SECRET,     /* the stored secret cannot be used for SCRAM (md5, malformed) */
    SCRAM_INTERNAL_ERROR, /* OpenSSL or allocation failure, output buffer too small */
};

/* ---- stored secrets: SCRAM-SHA-256$<iter>:<salt b64>$<StoredKey b64>:<ServerKey b64> ---- */

struct scram_secret {
    int iterations;
    size_t salt_len;
    uint8_t salt[SCRAM_MAX_SALT_LEN];
    uint8_t stored_key[SCRAM_KEY_LEN];
    uint8_t server_key[SCRAM_KEY_LEN];
};

/* True when text starts with "SCRAM-SHA-256$" (it may still fail to parse). */
bool scram_is_secret(const char *text);

/* Parses a stored secret strictly (iterations 1..INT_MAX, salt 1..SCRAM_MAX_SALT_LEN bytes,
 * keys exactly 32 bytes, canonical base64). */
__attribute__((warn_unused_result)) bool scram_secret_parse(const char *text,
                                                            struct scram_secret *out);

/* Formats a secret into out (NUL-terminated); out_cap >= SCRAM_SECRET_MAX always suffices. */
__attribute__((warn_unused_result)) bool scram_secret_format(const struct scram_secret *secret,
                                                             char *out, size_t out_cap);

/* scram_iterations (PgBouncer's key): the iteration count of the secrets the pooler makes
 * itself, for a plaintext password it checks over SCRAM and for an unknown user's mock secret
 * (1 and up; default SCRAM_DEFAULT_ITERATIONS). Cached secrets of another count are made
 * again at their next use. */
void scram_set_iterations(int iterations);

/* Derives a secret from a plaintext password with a random 16-byte salt and 4096 iterations.
 * Uncached: every call runs PBKDF2 and picks a new salt. */
__attribute__((warn_unused_result)) bool scram_secret_from_password(const char *password,
                                                                    struct scram_secret *out);

/* Same with a given salt and iteration count (tests, and deterministic mock secrets). */
__attribute__((warn_unused_result)) bool
scram_secret_from_password_with_salt(const char *password, const uint8_t *salt, size_t salt_len,
                                     int iterations, struct scram_secret *out);

/* Wipes the keys (OPENSSL_cleanse). */
void scram_secret_clear(struct scram_secret *secret);

/* ---- server side: the pooler authenticates a client ---- */

enum scram_server_phase {
    SCRAM_SERVER_INIT,       /* nothing received yet */
    SCRAM_SERVER_FIRST_SENT, /* server-first built, waiting for client-final */
    SCRAM_SERVER_DONE,       /* client authenticated, server-final built */
    SCRAM_SERVER_FAILED,     /* any error; the exchange cannot continue */
};

struct scram_server {
    enum scram_server_phase phase;
    struct scram_secret secret;
    bool doomed;                       /* unknown user: run the exchange, always fail at the end */
    bool gs2_y;                        /* client sent "y,,": expects c=eSws instead of c=biws */
    char *client_first_bare;           /* owned: for AuthMessage */
    char *server_first;                /* owned: for AuthMessage */
    char *nonce;                       /* owned: client nonce + server nonce */
    bool have_client_key;              /* true after SCRAM_OK from scram_server_finish */
    uint8_t client_key[SCRAM_KEY_LEN]; /* recovered ClientKey, for SCRAM pass-through */
};

/* Zeroes a state for first use. A zeroed struct is also a valid initial state. */
void scram_server_init(struct scram_server *st);

/* Frees the owned strings and wipes keys; the state is then as after scram_server_init. */
void scram_server_clear(struct scram_server *st);

/* Handles client-first (the SASLInitialResponse data, len bytes) for a user whose stored
 * secret_or_password is a SCRAM secret or a plaintext password. For a plaintext password the
 * secret comes from the server cache: the first login derives it (random 16-byte salt, 4096
 * PBKDF2 iterations), later logins reuse the same salt and keys, so the server-first message
 * looks like an unknown user's (scram_server_start_doomed) and costs as little.
 * md5 secrets give SCRAM_BAD_SECRET.
 * The user name inside client-first is ignored, as PostgreSQL does: the startup user counts.
 * Rejects "p=" (channel binding), authzid, "m=", missing or over-long r=.
 * On SCRAM_OK writes server-first (not NUL-terminated, *out_len bytes) into out. */
__attribute__((warn_unused_result)) enum scram_result
scram_server_start(struct scram_server *st, const char *secret_or_password,
                   const char *client_first, size_t len, char *out, size_t out_cap, size_t *out_len,
                   char *err, size_t err_len);

/* Same with a fixed server nonce (printable ASCII except ','), for deterministic tests. */
__attribute__((warn_unused_result)) enum scram_result
scram_server_start_with_nonce(struct scram_server *st, const char *secret_or_password,
                              const char *client_first, size_t len, const char *server_nonce,
                              char *out, size_t out_cap, size_t *out_len, char *err,
                              size_t err_len);

/* For a user that does not exist: answers with a mock salt derived from user (stable per
 * process, so repeated attempts look like a real user) and always ends with
 * SCRAM_AUTH_FAILED in scram_server_finish, at the same point and with the same message as a
 * wrong password (no user enumeration). */
__attribute__((warn_unused_result)) enum scram_result
scram_server_start_doomed(struct scram_server *st, const char *user, const char *client_first,
                          size_t len, char *out, size_t out_cap, size_t *out_len, char *err,
                          size_t err_len);

/* Handles client-final: checks c= (biws or eSws to match the gs2 header), the combined nonce,
 * the proof's length and value (constant-time). On SCRAM_OK writes server-final "v=..." into
 * out and keeps the recovered ClientKey in st->client_key. SCRAM_AUTH_FAILED means a wrong
 * password (send "password authentication failed"); other results are protocol errors. */
__attribute__((warn_unused_result)) enum scram_result
scram_server_finish(struct scram_server *st, const char *client_final, size_t len, char *out,
                    size_t out_cap, size_t *out_len, char *err, size_t err_len);

/* ---- client side: the pooler logs in to PostgreSQL ---- */

enum scram_client_phase {
    SCRAM_CLIENT_INIT,       /* nothing sent yet */
    SCRAM_CLIENT_FIRST_SENT, /* client-first built, waiting for server-first */
    SCRAM_CLIENT_FINAL_SENT, /* client-final built, waiting for server-final */
    SCRAM_CLIENT_DONE,       /* server signature verified */
    SCRAM_CLIENT_FAILED,     /* any error; the exchange cannot continue */
};

struct scram_client {
    enum scram_client_phase phase;
    char *password;                    /* owned, wiped on clear; NULL when using keys */
    bool have_keys;                    /* client_key/server_key given instead of a password */
    uint8_t client_key[SCRAM_KEY_LEN]; /* given (pass-through) or derived in continue */
    uint8_t server_key[SCRAM_KEY_LEN];
    char *client_first_bare;                 /* owned: for AuthMessage */
    size_t client_nonce_len;                 /* the nonce is the tail of client_first_bare */
    uint8_t server_signature[SCRAM_KEY_LEN]; /* expected in server-final */
};

void scram_client_init(struct scram_client *st);
void scram_client_clear(struct scram_client *st);

/* Builds client-first "n,,n=<user>,r=<random nonce>" into out. Give exactly one of password
 * (plaintext) or client_key + server_key (SCRAM pass-through: the keys recovered by
 * scram_server_finish for the same secret, and that secret's ServerKey). user may be NULL or
 * "" (libpq sends "n=", the server ignores it); ',' and '=' in it are escaped as =2C and =3D. */
__attribute__((warn_unused_result)) enum scram_result
scram_client_start(struct scram_client *st, const char *user, const char *password,
                   const uint8_t *client_key, const uint8_t *server_key, char *out, size_t out_cap,
                   size_t *out_len, char *err, size_t err_len);

/* Same with a fixed client nonce (printable ASCII except ','), for deterministic tests. */
__attribute__((warn_unused_result)) enum scram_result
scram_client_start_with_nonce(struct scram_client *st, const char *user, const char *password,
                              const uint8_t *client_key, const uint8_t *server_key,
                              const char *client_nonce, char *out, size_t out_cap, size_t *out_len,
                              char *err, size_t err_len);

/* Handles server-first (the AuthenticationSASLContinue data): checks that the server nonce
 * extends ours, the salt, the iteration count (1..SCRAM_CLIENT_MAX_ITERATIONS, a larger one is
 * refused with an error naming it), then builds client-final "c=biws,r=<nonce>,p=<proof>"
 * into out. With a password, the keys come from the client cache when this (password, salt,
 * iterations) was derived before. */
__attribute__((warn_unused_result)) enum scram_result
scram_client_continue(struct scram_client *st, const char *server_first, size_t len, char *out,
                      size_t out_cap, size_t *out_len, char *err, size_t err_len);

/* Handles server-final (the AuthenticationSASLFinal data): "v=<signature>" must verify
 * (SCRAM_AUTH_FAILED otherwise); "e=<error>" gives SCRAM_AUTH_FAILED with the (sanitized,
 * truncated) server error in err. */
__attribute__((warn_unused_result)) enum scram_result scram_client_finish(struct scram_client *st,
                                                                          const char *server_final,
                                                                          size_t len, char *err,
                                                                          size_t err_len);

/* ---- derivation caches ----
 * Each process keeps the keys it derived from plaintext passwords, and for each user the
 * cleartext password that last verified against its SCRAM secret (never the passwords
 * themselves: keyed hashes), so that repeated logins run no PBKDF2 on the event loop. scram.c
 * explains why. The tables live for the whole process and are wiped at exit. */

struct scram_cache_stats {
    uint64_t pbkdf2_runs; /* PBKDF2 derivations run by this module, through a cache or not */
    uint64_t server_hits; /* plaintext-password logins served without PBKDF2 */
    uint64_t client_hits; /* logins to PostgreSQL served without PBKDF2 */
    uint64_t plain_hits;  /* cleartext passwords checked against a SCRAM secret without PBKDF2 */
};

/* Checks a cleartext password (auth_type plain) against user's stored SCRAM secret (its
 * text). The first check, and every check of another password, runs PBKDF2 with the secret's
 * salt and iterations; a password that verified is remembered for its user and that exact
 * secret text, so the same password again is a constant-time compare of keyed hashes. A
 * secret that changes (reload, auth_query) forgets it. False for a wrong password or a
 * secret that does not parse. */
__attribute__((warn_unused_result)) bool
scram_verify_plain(const char *user, const char *secret_text, const char *password);

/* Copies the counters (cumulative since process start; scram_cache_clear keeps them). */
void scram_cache_get_stats(struct scram_cache_stats *out);

/* Wipes the caches (OPENSSL_cleanse): the next login for each password derives again, and a
 * plaintext password gets a new salt. Not needed for correctness (a changed password simply
 * misses); for tests, and for callers that want keys of removed users gone at once. */
void scram_cache_clear(void);

/* ---- base64 (RFC 4648, standard alphabet, with padding) ---- */

/* Encoded length of n bytes, without NUL. */
size_t scram_base64_encoded_len(size_t n);

/* Encodes len bytes into out, NUL-terminated; needs out_cap > scram_base64_encoded_len(len). */
__attribute__((warn_unused_result)) bool scram_base64_encode(const uint8_t *in, size_t len,
                                                             char *out, size_t out_cap);

/* Strict decoding: length a multiple of 4, only the alphabet, '=' only as final padding, no
 * whitespace, unused bits zero. Writes *out_len bytes; fails if they do not fit in out_cap. */
__attribute__((warn_unused_result)) bool
scram_base64_decode(const char *in, size_t len, uint8_t *out, size_t out_cap, size_t *out_len);

#endif
