/* Unit tests for SCRAM-SHA-256: RFC 7677's test vector on both sides, round trips (password,
 * stored secret, pass-through keys), every malformed-input case from bad-inputs.md D.20-22, and
 * the derivation caches (one salt per plaintext password, no PBKDF2 on a repeated login). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "proto/scram.h"

/* RFC 7677 section 3. */
#define RFC_CLIENT_NONCE "rOprNGfwEbeRWgbNEkqO"
#define RFC_SERVER_NONCE "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
#define RFC_SALT_B64     "W22ZaJ0SNY7soEsUEjb6gQ=="
#define RFC_CLIENT_FIRST "n,,n=user,r=" RFC_CLIENT_NONCE
#define RFC_SERVER_FIRST "r=" RFC_CLIENT_NONCE RFC_SERVER_NONCE ",s=" RFC_SALT_B64 ",i=4096"
#define RFC_CLIENT_FINAL                                                                           \
    "c=biws,r=" RFC_CLIENT_NONCE RFC_SERVER_NONCE ",p=dHzbZapWIk4jUhN+"                            \
    "Ute9ytag9zjfMHgsqmmiz7AndVQ="
#define RFC_SERVER_FINAL "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="

static void rfc_secret(struct scram_secret *s)
{
    uint8_t salt[32];
    size_t salt_len = 0;

    assert_true(
        scram_base64_decode(RFC_SALT_B64, strlen(RFC_SALT_B64), salt, sizeof(salt), &salt_len));
    assert_int_equal(salt_len, 16);
    assert_true(scram_secret_from_password_with_salt("pencil", salt, salt_len, 4096, s));
}

static void assert_msg(const char *buf, size_t len, const char *expected)
{
    char tmp[SCRAM_OUT_MAX + 1];

    assert_true(len < sizeof(tmp));
    memcpy(tmp, buf, len);
    tmp[len] = '\0';
    assert_string_equal(tmp, expected);
}

/* ---- base64 ---- */

static void test_base64_roundtrip(void **state)
{
    (void)state;
    const uint8_t data[] = {0, 1, 2, 0xfe, 0xff, 0x80, 0x7f};
    char enc[32];
    uint8_t dec[16];
    size_t n;

    for (size_t len = 0; len <= sizeof(data); len++) {
        assert_true(scram_base64_encode(data, len, enc, sizeof(enc)));
        assert_int_equal(strlen(enc), scram_base64_encoded_len(len));
        assert_true(scram_base64_decode(enc, strlen(enc), dec, sizeof(dec), &n));
        assert_int_equal(n, len);
        assert_memory_equal(dec, data, len);
    }
    assert_true(scram_base64_encode((const uint8_t *)"n,,", 3, enc, sizeof(enc)));
    assert_string_equal(enc, "biws");
    assert_true(scram_base64_encode((const uint8_t *)"y,,", 3, enc, sizeof(enc)));
    assert_string_equal(enc, "eSws");
    /* Output buffer one byte short of the NUL. */
    assert_false(scram_base64_encode(data, 3, enc, 4));
}

static void test_base64_strict(void **state)
{
    (void)state;
    uint8_t out[16];
    size_t n;
    const char *bad[] = {"abc",
                         "ab=c",
                         "a===",
                         "====",
                         "ab c",
                         "ab\ncd",
                         "ab*d",
                         "AB==AB==",
                         "QQ=A",
                         "QR==",
                         /* non-zero unused bits */ "QUJ=",
                         "=AAA"};

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_false(scram_base64_decode(bad[i], strlen(bad[i]), out, sizeof(out), &n));
    assert_true(scram_base64_decode("", 0, out, sizeof(out), &n));
    assert_int_equal(n, 0);
    assert_true(scram_base64_decode("QQ==", 4, out, sizeof(out), &n));
    assert_int_equal(n, 1);
    assert_int_equal(out[0], 'A');
    /* Does not fit. */
    assert_false(scram_base64_decode("QUJD", 4, out, 2, &n));
}

/* ---- secrets ---- */

static void test_secret_roundtrip(void **state)
{
    (void)state;
    struct scram_secret s, t;
    char text[SCRAM_SECRET_MAX];

    rfc_secret(&s);
    assert_true(scram_secret_format(&s, text, sizeof(text)));
    assert_true(strncmp(text, "SCRAM-SHA-256$4096:" RFC_SALT_B64 "$", 43) == 0);
    assert_true(scram_is_secret(text));
    assert_true(scram_secret_parse(text, &t));
    assert_int_equal(t.iterations, 4096);
    assert_int_equal(t.salt_len, 16);
    assert_memory_equal(&s, &t, sizeof(s));
    /* Too small a buffer fails rather than truncating. */
    assert_false(scram_secret_format(&s, text, 40));

    assert_true(scram_secret_from_password("pencil", &t));
    assert_int_equal(t.iterations, SCRAM_DEFAULT_ITERATIONS);
    assert_int_equal(t.salt_len, SCRAM_DEFAULT_SALT_LEN);
    assert_memory_not_equal(t.salt, s.salt, 16);
    scram_secret_clear(&t);
    assert_int_equal(t.iterations, 0);
}

static void test_secret_parse_rejects(void **state)
{
    (void)state;
    struct scram_secret s;
    const char *key = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    char buf[512];
    const char *bad[] = {
        "",
        "md5aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        "SCRAM-SHA-256$",
        "SCRAM-SHA-256$4096",
        "SCRAM-SHA-256$4096:c2FsdA==",
        "SCRAM-SHA-256$4096:c2FsdA==$%s",
        "SCRAM-SHA-256$0:c2FsdA==$%s:%s",
        "SCRAM-SHA-256$-1:c2FsdA==$%s:%s",
        "SCRAM-SHA-256$99999999999:c2FsdA==$%s:%s",
        "SCRAM-SHA-256$4096x:c2FsdA==$%s:%s",
        "SCRAM-SHA-256$4096::$%s:%s",
        "SCRAM-SHA-256$4096:c2Fsd$%s:%s",
        "SCRAM-SHA-256$4096:c2FsdA==$AAAA:%s",
        "SCRAM-SHA-256$4096:c2FsdA==$%s:%s:",
        "SCRAM-SHA-256$4096:c2FsdA==$%s:%s ",
        "SCRAM-SHA-1$4096:c2FsdA==$%s:%s",
    };

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(buf, sizeof(buf), bad[i], key, key);
        assert_false(scram_secret_parse(buf, &s));
    }
    snprintf(buf, sizeof(buf), "SCRAM-SHA-256$4096:c2FsdA==$%s:%s", key, key);
    assert_true(scram_secret_parse(buf, &s));
    assert_int_equal(s.salt_len, 4);
}

/* ---- RFC 7677 vector ---- */

static void test_rfc7677_server(void **state)
{
    (void)state;
    struct scram_secret s;
    char secret[SCRAM_SECRET_MAX], out[SCRAM_OUT_MAX], err[256];
    size_t out_len = 0;
    struct scram_server st;

    rfc_secret(&s);
    assert_true(scram_secret_format(&s, secret, sizeof(secret)));
    scram_server_init(&st);
    assert_int_equal(scram_server_start_with_nonce(&st, secret, RFC_CLIENT_FIRST,
                                                   strlen(RFC_CLIENT_FIRST), RFC_SERVER_NONCE, out,
                                                   sizeof(out), &out_len, err, sizeof(err)),
                     SCRAM_OK);
    assert_msg(out, out_len, RFC_SERVER_FIRST);
    assert_int_equal(scram_server_finish(&st, RFC_CLIENT_FINAL, strlen(RFC_CLIENT_FINAL), out,
                                         sizeof(out), &out_len, err, sizeof(err)),
                     SCRAM_OK);
    assert_msg(out, out_len, RFC_SERVER_FINAL);
    assert_int_equal(st.phase, SCRAM_SERVER_DONE);
    assert_true(st.have_client_key);
    scram_server_clear(&st);
    assert_null(st.nonce);
    assert_false(st.have_client_key);
}

static void test_rfc7677_client(void **state)
{
    (void)state;
    char out[SCRAM_OUT_MAX], err[256];
    size_t out_len = 0;
    struct scram_client st;

    scram_client_init(&st);
    assert_int_equal(scram_client_start_with_nonce(&st, "user", "pencil", NULL, NULL,
                                                   RFC_CLIENT_NONCE, out, sizeof(out), &out_len,
                                                   err, sizeof(err)),
                     SCRAM_OK);
    assert_msg(out, out_len, RFC_CLIENT_FIRST);
    assert_int_equal(scram_client_continue(&st, RFC_SERVER_FIRST, strlen(RFC_SERVER_FIRST), out,
                                           sizeof(out), &out_len, err, sizeof(err)),
                     SCRAM_OK);
    assert_msg(out, out_len, RFC_CLIENT_FINAL);
    assert_null(st.password); /* wiped and freed once the keys are derived */
    assert_int_equal(
        scram_client_finish(&st, RFC_SERVER_FINAL, strlen(RFC_SERVER_FINAL), err, sizeof(err)),
        SCRAM_OK);
    assert_int_equal(st.phase, SCRAM_CLIENT_DONE);
    scram_client_clear(&st);
}

/* ---- round trips ---- */

/* Runs a full exchange; returns the server's result for the final step (or the first failure)
 * and, when client_result is given, the client's result for server-final. */
static enum scram_result exchange(struct scram_server *srv, struct scram_client *cli,
                                  const char *server_secret, const char *user, const char *password,
                                  const uint8_t *ck, const uint8_t *sk,
                                  enum scram_result *client_result)
{
    char m1[SCRAM_OUT_MAX], m2[SCRAM_OUT_MAX], m3[SCRAM_OUT_MAX], m4[SCRAM_OUT_MAX];
    char err[256];
    size_t l1, l2, l3, l4;
    enum scram_result r;

    scram_server_init(srv);
    scram_client_init(cli);
    assert_int_equal(
        scram_client_start(cli, user, password, ck, sk, m1, sizeof(m1), &l1, err, sizeof(err)),
        SCRAM_OK);
    r = scram_server_start(srv, server_secret, m1, l1, m2, sizeof(m2), &l2, err, sizeof(err));
    if (r != SCRAM_OK)
        return r;
    assert_int_equal(scram_client_continue(cli, m2, l2, m3, sizeof(m3), &l3, err, sizeof(err)),
                     SCRAM_OK);
    r = scram_server_finish(srv, m3, l3, m4, sizeof(m4), &l4, err, sizeof(err));
    if (r == SCRAM_OK && client_result != NULL)
        *client_result = scram_client_finish(cli, m4, l4, err, sizeof(err));
    return r;
}

static void test_roundtrip_secret_and_plain(void **state)
{
    (void)state;
    struct scram_secret s;
    char secret[SCRAM_SECRET_MAX];
    struct scram_server srv;
    struct scram_client cli;
    enum scram_result cr = SCRAM_INTERNAL_ERROR;

    assert_true(scram_secret_from_password("s3cret,=pass", &s));
    assert_true(scram_secret_format(&s, secret, sizeof(secret)));

    /* Stored secret on the server, password on the client; user name with escapes. */
    assert_int_equal(exchange(&srv, &cli, secret, "a,b=c", "s3cret,=pass", NULL, NULL, &cr),
                     SCRAM_OK);
    assert_int_equal(cr, SCRAM_OK);
    /* The recovered ClientKey is the client's own. */
    assert_memory_equal(srv.client_key, cli.client_key, SCRAM_KEY_LEN);
    scram_server_clear(&srv);
    scram_client_clear(&cli);

    /* Plaintext password on the server. */
    cr = SCRAM_INTERNAL_ERROR;
    assert_int_equal(exchange(&srv, &cli, "s3cret,=pass", NULL, "s3cret,=pass", NULL, NULL, &cr),
                     SCRAM_OK);
    assert_int_equal(cr, SCRAM_OK);
    scram_server_clear(&srv);
    scram_client_clear(&cli);
}

static void test_passthrough_keys(void **state)
{
    (void)state;
    struct scram_secret s;
    char secret[SCRAM_SECRET_MAX];
    struct scram_server srv, backend;
    struct scram_client cli, pooler;
    uint8_t client_key[SCRAM_KEY_LEN];
    enum scram_result cr = SCRAM_INTERNAL_ERROR;

    assert_true(scram_secret_from_password("pass-through", &s));
    assert_true(scram_secret_format(&s, secret, sizeof(secret)));
    /* Client logs in to the pooler... */
    assert_int_equal(exchange(&srv, &cli, secret, "", "pass-through", NULL, NULL, &cr), SCRAM_OK);
    assert_int_equal(cr, SCRAM_OK);
    memcpy(client_key, srv.client_key, SCRAM_KEY_LEN);
    scram_server_clear(&srv);
    scram_client_clear(&cli);
    /* ...and the pooler logs in to "PostgreSQL" (same secret) without knowing the password. */
    cr = SCRAM_INTERNAL_ERROR;
    assert_int_equal(exchange(&backend, &pooler, secret, NULL, NULL, client_key, s.server_key, &cr),
                     SCRAM_OK);
    assert_int_equal(cr, SCRAM_OK);
    scram_server_clear(&backend);
    scram_client_clear(&pooler);

    /* A wrong ServerKey: the backend accepts, but the pooler rejects the backend's signature. */
    uint8_t bad_sk[SCRAM_KEY_LEN];
    memcpy(bad_sk, s.server_key, SCRAM_KEY_LEN);
    bad_sk[0] ^= 1;
    cr = SCRAM_OK;
    assert_int_equal(exchange(&backend, &pooler, secret, NULL, NULL, client_key, bad_sk, &cr),
                     SCRAM_OK);
    assert_int_equal(cr, SCRAM_AUTH_FAILED);
    scram_server_clear(&backend);
    scram_client_clear(&pooler);
}

static void test_wrong_password(void **state)
{
    (void)state;
    struct scram_secret s;
    char secret[SCRAM_SECRET_MAX];
    struct scram_server srv;
    struct scram_client cli;

    assert_true(scram_secret_from_password("right", &s));
    assert_true(scram_secret_format(&s, secret, sizeof(secret)));
    assert_int_equal(exchange(&srv, &cli, secret, NULL, "wrong", NULL, NULL, NULL),
                     SCRAM_AUTH_FAILED);
    assert_int_equal(srv.phase, SCRAM_SERVER_FAILED);
    assert_false(srv.have_client_key);
    scram_server_clear(&srv);
    scram_client_clear(&cli);
    assert_int_equal(exchange(&srv, &cli, "right", NULL, "Right", NULL, NULL, NULL),
                     SCRAM_AUTH_FAILED);
    scram_server_clear(&srv);
    scram_client_clear(&cli);
}

static void test_md5_secret_rejected(void **state)
{
    (void)state;
    struct scram_server srv;
    char out[SCRAM_OUT_MAX], err[256];
    size_t out_len;

    scram_server_init(&srv);
    assert_int_equal(scram_server_start(&srv, "md5d5c2c7b1f2f1bc5d4b1c9e1d2a3b4c5d", "n,,n=,r=abc",
                                        11, out, sizeof(out), &out_len, err, sizeof(err)),
                     SCRAM_BAD_SECRET);
    scram_server_clear(&srv);
    assert_int_equal(scram_server_start(&srv, "SCRAM-SHA-256$broken", "n,,n=,r=abc", 11, out,
                                        sizeof(out), &out_len, err, sizeof(err)),
                     SCRAM_BAD_SECRET);
    scram_server_clear(&srv);
}

/* Server side helper: start with the RFC secret and a given client-first. */
static enum scram_result server_first(struct scram_server *st, const char *msg, size_t len,
                                      char *err, size_t err_len)
{
    struct scram_secret s;
    char secret[SCRAM_SECRET_MAX], out[SCRAM_OUT_MAX];
    size_t out_len;

    rfc_secret(&s);
    assert_true(scram_secret_format(&s, secret, sizeof(secret)));
    scram_server_init(st);
    return scram_server_start_with_nonce(st, secret, msg, len, RFC_SERVER_NONCE, out, sizeof(out),
                                         &out_len, err, err_len);
}

static void test_client_first_garbage(void **state)
{
    (void)state;
    struct scram_server st;
    char err[256];
    char big[SCRAM_MAX_MESSAGE_LEN + 16];
    const char *bad[] = {
        "",
        "n",
        "n,",
        "n,,",
        "n,,n=",
        "n,,n=,",
        "n,,n=,r=",
        "n,,r=abc",
        "x,,n=,r=ab",
        "n,a=u,n=,r=a",
        "n,,m=x,n=,r=a",
        "n,,n=,r=a,",
        "n,,n=,r=a,1",
        "n,,n=,r=a b",
        "n,,n=,r=a,=x",
        "nn,n=,r=a",
        "n,,n=r=abc",
        "y,n=,r=a",
    };

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        assert_int_not_equal(server_first(&st, bad[i], strlen(bad[i]), err, sizeof(err)), SCRAM_OK);
        assert_true(err[0] != '\0');
        assert_int_equal(st.phase, SCRAM_SERVER_FAILED);
        scram_server_clear(&st);
    }

    /* Channel binding requested: a clear error, not a generic one. */
    assert_int_equal(server_first(&st, "p=tls-server-end-point,,n=,r=abc", 32, err, sizeof(err)),
                     SCRAM_PROTOCOL_ERROR);
    assert_non_null(strstr(err, "channel binding"));
    scram_server_clear(&st);

    /* Embedded NUL. */
    assert_int_equal(server_first(&st, "n,,n=\0,r=abc", 12, err, sizeof(err)),
                     SCRAM_PROTOCOL_ERROR);
    scram_server_clear(&st);

    /* Over-long message and over-long nonce. */
    memset(big, 'a', sizeof(big));
    memcpy(big, "n,,n=,r=", 8);
    assert_int_equal(server_first(&st, big, sizeof(big), err, sizeof(err)), SCRAM_PROTOCOL_ERROR);
    assert_string_equal(err, "malformed SCRAM message (too long)");
    scram_server_clear(&st);
    assert_int_equal(server_first(&st, big, 8 + SCRAM_MAX_NONCE_LEN + 1, err, sizeof(err)),
                     SCRAM_PROTOCOL_ERROR);
    scram_server_clear(&st);
    assert_int_equal(server_first(&st, big, 8 + SCRAM_MAX_NONCE_LEN, err, sizeof(err)), SCRAM_OK);
    scram_server_clear(&st);

    /* Accepted variants: escaped user name, extensions after the nonce, "y,,". */
    assert_int_equal(server_first(&st, "n,,n=a=2Cb=3D,r=abc,x=ext", 25, err, sizeof(err)),
                     SCRAM_OK);
    scram_server_clear(&st);
    assert_int_equal(server_first(&st, "y,,n=,r=abc", 11, err, sizeof(err)), SCRAM_OK);
    assert_true(st.gs2_y);
    scram_server_clear(&st);

    /* Second client-first on the same state. */
    char out[SCRAM_OUT_MAX];
    size_t out_len;
    assert_int_equal(
        server_first(&st, RFC_CLIENT_FIRST, strlen(RFC_CLIENT_FIRST), err, sizeof(err)), SCRAM_OK);
    assert_int_equal(scram_server_start(&st, "pw", RFC_CLIENT_FIRST, strlen(RFC_CLIENT_FIRST), out,
                                        sizeof(out), &out_len, err, sizeof(err)),
                     SCRAM_PROTOCOL_ERROR);
    scram_server_clear(&st);
}

static enum scram_result final_with(const char *client_final, char *err, size_t err_len)
{
    struct scram_server st;
    char out[SCRAM_OUT_MAX];
    size_t out_len;
    enum scram_result r;

    assert_int_equal(server_first(&st, RFC_CLIENT_FIRST, strlen(RFC_CLIENT_FIRST), err, err_len),
                     SCRAM_OK);
    r = scram_server_finish(&st, client_final, strlen(client_final), out, sizeof(out), &out_len,
                            err, err_len);
    if (r != SCRAM_OK) {
        assert_int_equal(st.phase, SCRAM_SERVER_FAILED);
        assert_false(st.have_client_key);
    }
    scram_server_clear(&st);
    return r;
}

#define NONCE RFC_CLIENT_NONCE RFC_SERVER_NONCE
#define PROOF "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="

static void test_client_final_garbage(void **state)
{
    (void)state;
    char err[256];
    const char *protocol_errors[] = {
        "",
        "c=biws",
        "c=biws,r=" NONCE,
        "c=biws,r=" NONCE ",",
        "r=" NONCE ",p=" PROOF,        /* missing c= */
        "c=biws,p=" PROOF,             /* missing r= */
        "c=eSws,r=" NONCE ",p=" PROOF, /* c= does not match "n,," */
        "c=cD10bHMtc2VydmVyLWVuZC1wb2ludCws,r=" NONCE ",p=" PROOF,
        "c=biws,r=" RFC_CLIENT_NONCE ",p=" PROOF, /* nonce mismatch (truncated) */
        "c=biws,r=" NONCE "x,p=" PROOF,           /* nonce mismatch (longer) */
        "c=biws,r=" NONCE ",p=" PROOF ",x=1",     /* attribute after proof */
        "c=biws,r=" NONCE ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ",
        "c=biws,r=" NONCE ",p=AAAA", /* proof of the wrong length */
        "c=biws,r=" NONCE ",p=" PROOF "AAAA",
        "c=biws,r=" NONCE ",p=!HzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
        "c=biws,r=" NONCE ",p=",
        "c=biws,r=" NONCE ",1=x,p=" PROOF,
    };

    for (size_t i = 0; i < sizeof(protocol_errors) / sizeof(protocol_errors[0]); i++)
        assert_int_equal(final_with(protocol_errors[i], err, sizeof(err)), SCRAM_PROTOCOL_ERROR);

    /* Tampered proof (valid base64, right length): authentication fails. */
    assert_int_equal(final_with("c=biws,r=" NONCE ",p=eHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
                                err, sizeof(err)),
                     SCRAM_AUTH_FAILED);
    assert_string_equal(err, "SCRAM authentication failed");
    /* An extension before the proof changes AuthMessage, so the RFC proof no longer fits. */
    assert_int_equal(final_with("c=biws,r=" NONCE ",x=y,p=" PROOF, err, sizeof(err)),
                     SCRAM_AUTH_FAILED);
    assert_int_equal(final_with(RFC_CLIENT_FINAL, err, sizeof(err)), SCRAM_OK);
}

static void test_finish_before_start(void **state)
{
    (void)state;
    struct scram_server srv;
    struct scram_client cli;
    char out[SCRAM_OUT_MAX], err[256];
    size_t out_len;

    scram_server_init(&srv);
    assert_int_equal(scram_server_finish(&srv, RFC_CLIENT_FINAL, strlen(RFC_CLIENT_FINAL), out,
                                         sizeof(out), &out_len, err, sizeof(err)),
                     SCRAM_PROTOCOL_ERROR);
    scram_server_clear(&srv);

    scram_client_init(&cli);
    assert_int_equal(scram_client_continue(&cli, RFC_SERVER_FIRST, strlen(RFC_SERVER_FIRST), out,
                                           sizeof(out), &out_len, err, sizeof(err)),
                     SCRAM_PROTOCOL_ERROR);
    scram_client_clear(&cli);
    scram_client_init(&cli);
    assert_int_equal(
        scram_client_finish(&cli, RFC_SERVER_FINAL, strlen(RFC_SERVER_FINAL), err, sizeof(err)),
        SCRAM_PROTOCOL_ERROR);
    scram_client_clear(&cli);

    /* Neither or both credentials. */
    uint8_t key[SCRAM_KEY_LEN] = {0};
    scram_client_init(&cli);
    assert_int_equal(scram_client_start(&cli, NULL, NULL, NULL, NULL, out, sizeof(out), &out_len,
                                        err, sizeof(err)),
                     SCRAM_BAD_SECRET);
    scram_client_clear(&cli);
    assert_int_equal(scram_client_start(&cli, NULL, "pw", key, key, out, sizeof(out), &out_len, err,
                                        sizeof(err)),
                     SCRAM_BAD_SECRET);
    scram_client_clear(&cli);
    assert_int_equal(scram_client_start(&cli, NULL, NULL, key, NULL, out, sizeof(out), &out_len,
                                        err, sizeof(err)),
                     SCRAM_BAD_SECRET);
    scram_client_clear(&cli);
}

/* Client side: start with the RFC nonce, then feed a server-first. */
static enum scram_result client_continue_with(const char *server_first_msg, size_t len, char *err,
                                              size_t err_len)
{
    struct scram_client st;
    char out[SCRAM_OUT_MAX];
    size_t out_len;
    enum scram_result r;

    scram_client_init(&st);
    assert_int_equal(scram_client_start_with_nonce(&st, "user", "pencil", NULL, NULL,
                                                   RFC_CLIENT_NONCE, out, sizeof(out), &out_len,
                                                   err, err_len),
                     SCRAM_OK);
    r = scram_client_continue(&st, server_first_msg, len, out, sizeof(out), &out_len, err, err_len);
    if (r != SCRAM_OK) {
        assert_int_equal(st.phase, SCRAM_CLIENT_FAILED);
        assert_null(st.password);
    }
    scram_client_clear(&st);
    return r;
}

#define SF_PREFIX "r=" NONCE ",s=" RFC_SALT_B64

static void test_server_first_malicious(void **state)
{
    (void)state;
    char err[256];
    char big[SCRAM_MAX_MESSAGE_LEN + 64];
    const char *bad[] = {
        "",
        "r=" NONCE,
        "r=" NONCE ",s=" RFC_SALT_B64,
        SF_PREFIX ",i=0",
        SF_PREFIX ",i=-1",
        SF_PREFIX ",i=+4096",
        SF_PREFIX ",i= 4096",
        SF_PREFIX ",i=1000000000", /* CVE-2026-6669: never run 10^9 PBKDF2 rounds */
        SF_PREFIX ",i=1000001",
        SF_PREFIX ",i=100001", /* SCRAM_CLIENT_MAX_ITERATIONS + 1 */
        SF_PREFIX ",i=99999999999999999999999",
        SF_PREFIX ",i=abc",
        SF_PREFIX ",i=",
        SF_PREFIX ",i=4096,x=1", /* garbage at the end */
        SF_PREFIX ",i=4096,",
        "r=" RFC_CLIENT_NONCE ",s=" RFC_SALT_B64 ",i=4096",                     /* no server part */
        "r=xOprNGfwEbeRWgbNEkqO" RFC_SERVER_NONCE ",s=" RFC_SALT_B64 ",i=4096", /* not ours */
        "r=rOprNG,s=" RFC_SALT_B64 ",i=4096",
        "r=" NONCE ",s=,i=4096",
        "r=" NONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ,i=4096",
        "r=" NONCE ",s=!!!!,i=4096",
        "r=" NONCE ",i=4096",
        "m=ext,r=" NONCE ",s=" RFC_SALT_B64 ",i=4096",
        "s=" RFC_SALT_B64 ",r=" NONCE ",i=4096",
        "e=other-error",
    };

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(client_continue_with(bad[i], strlen(bad[i]), err, sizeof(err)),
                         SCRAM_PROTOCOL_ERROR);
    assert_int_equal(
        client_continue_with(SF_PREFIX ",i=1000000000", strlen(SF_PREFIX) + 13, err, sizeof(err)),
        SCRAM_PROTOCOL_ERROR);
    assert_non_null(strstr(err, "iteration"));

    /* CVE-2026-6665: a very long nonce, within and beyond the message cap. */
    memset(big, 'A', sizeof(big));
    memcpy(big, "r=" RFC_CLIENT_NONCE, 22);
    assert_int_equal(client_continue_with(big, sizeof(big), err, sizeof(err)),
                     SCRAM_PROTOCOL_ERROR);
    snprintf(big + 2 + SCRAM_MAX_NONCE_LEN + 1, 64, ",s=%s,i=4096", RFC_SALT_B64);
    assert_int_equal(client_continue_with(big, strlen(big), err, sizeof(err)),
                     SCRAM_PROTOCOL_ERROR);
    /* Over-long salt. */
    char longsalt[512];
    snprintf(longsalt, sizeof(longsalt), "r=%s,s=%0*d,i=4096", NONCE, 4 * 30, 0);
    for (char *p = strstr(longsalt, ",s=") + 3; *p != ','; p++)
        *p = 'A';
    assert_int_equal(client_continue_with(longsalt, strlen(longsalt), err, sizeof(err)),
                     SCRAM_PROTOCOL_ERROR);
    /* NUL in the message. */
    assert_int_equal(client_continue_with("r=" NONCE "\0,s=", strlen(NONCE) + 6, err, sizeof(err)),
                     SCRAM_PROTOCOL_ERROR);
    /* The good one still works, and i=1 is legal. */
    assert_int_equal(
        client_continue_with(RFC_SERVER_FIRST, strlen(RFC_SERVER_FIRST), err, sizeof(err)),
        SCRAM_OK);
    assert_int_equal(
        client_continue_with(SF_PREFIX ",i=1", strlen(SF_PREFIX) + 4, err, sizeof(err)), SCRAM_OK);
}

static enum scram_result client_finish_with(const char *server_final, size_t len, char *err,
                                            size_t err_len)
{
    struct scram_client st;
    char out[SCRAM_OUT_MAX];
    size_t out_len;
    enum scram_result r;

    scram_client_init(&st);
    assert_int_equal(scram_client_start_with_nonce(&st, "user", "pencil", NULL, NULL,
                                                   RFC_CLIENT_NONCE, out, sizeof(out), &out_len,
                                                   err, err_len),
                     SCRAM_OK);
    assert_int_equal(scram_client_continue(&st, RFC_SERVER_FIRST, strlen(RFC_SERVER_FIRST), out,
                                           sizeof(out), &out_len, err, err_len),
                     SCRAM_OK);
    r = scram_client_finish(&st, server_final, len, err, err_len);
    scram_client_clear(&st);
    return r;
}

static void test_server_final_malicious(void **state)
{
    (void)state;
    char err[256];
    char big[4000];

    assert_int_equal(client_finish_with("", 0, err, sizeof(err)), SCRAM_PROTOCOL_ERROR);
    assert_int_equal(client_finish_with("v=", 2, err, sizeof(err)), SCRAM_PROTOCOL_ERROR);
    assert_int_equal(client_finish_with("x=abc", 5, err, sizeof(err)), SCRAM_PROTOCOL_ERROR);
    assert_int_equal(
        client_finish_with(RFC_SERVER_FINAL ",x=1", strlen(RFC_SERVER_FINAL) + 4, err, sizeof(err)),
        SCRAM_PROTOCOL_ERROR);
    assert_int_equal(client_finish_with("v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=AAAA", 50,
                                        err, sizeof(err)),
                     SCRAM_PROTOCOL_ERROR);
    assert_int_equal(
        client_finish_with("v=7rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=", 46, err, sizeof(err)),
        SCRAM_AUTH_FAILED);
    assert_int_equal(client_finish_with("e=invalid-proof", 15, err, sizeof(err)),
                     SCRAM_AUTH_FAILED);
    assert_non_null(strstr(err, "invalid-proof"));
    /* A long or binary e= is truncated and sanitized. */
    memset(big, '\x01', sizeof(big));
    memcpy(big, "e=", 2);
    assert_int_equal(client_finish_with(big, SCRAM_MAX_MESSAGE_LEN, err, sizeof(err)),
                     SCRAM_AUTH_FAILED);
    assert_true(strlen(err) < 160);
    assert_null(strchr(err, '\x01'));
    assert_int_equal(client_finish_with(big, sizeof(big), err, sizeof(err)), SCRAM_PROTOCOL_ERROR);
    assert_int_equal(
        client_finish_with(RFC_SERVER_FINAL, strlen(RFC_SERVER_FINAL), err, sizeof(err)), SCRAM_OK);
}

static void test_doomed_user(void **state)
{
    (void)state;
    struct scram_server st;
    struct scram_client cli;
    char m1[SCRAM_OUT_MAX], m2[SCRAM_OUT_MAX], m2b[SCRAM_OUT_MAX], m3[SCRAM_OUT_MAX];
    char m4[SCRAM_OUT_MAX], err[256], err_wrong[256];
    size_t l1, l2, l2b, l3, l4;
    const char *salt_a, *salt_b;

    scram_client_init(&cli);
    assert_int_equal(scram_client_start(&cli, NULL, "anything", NULL, NULL, m1, sizeof(m1), &l1,
                                        err, sizeof(err)),
                     SCRAM_OK);
    scram_server_init(&st);
    assert_int_equal(
        scram_server_start_doomed(&st, "ghost", m1, l1, m2, sizeof(m2), &l2, err, sizeof(err)),
        SCRAM_OK);
    assert_int_equal(scram_client_continue(&cli, m2, l2, m3, sizeof(m3), &l3, err, sizeof(err)),
                     SCRAM_OK);
    assert_int_equal(scram_server_finish(&st, m3, l3, m4, sizeof(m4), &l4, err, sizeof(err)),
                     SCRAM_AUTH_FAILED);
    scram_server_clear(&st);
    scram_client_clear(&cli);

    /* Same failure text as a wrong password. */
    assert_int_equal(final_with("c=biws,r=" NONCE ",p=eHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
                                err_wrong, sizeof(err_wrong)),
                     SCRAM_AUTH_FAILED);
    assert_string_equal(err, err_wrong);

    /* The mock salt is stable for a user and differs between users. */
    m2[l2] = '\0';
    assert_int_equal(
        scram_server_start_doomed(&st, "ghost", m1, l1, m2b, sizeof(m2b), &l2b, err, sizeof(err)),
        SCRAM_OK);
    m2b[l2b] = '\0';
    salt_a = strstr(m2, ",s=");
    salt_b = strstr(m2b, ",s=");
    assert_string_equal(salt_a, salt_b);
    scram_server_clear(&st);
    assert_int_equal(
        scram_server_start_doomed(&st, "ghost2", m1, l1, m2b, sizeof(m2b), &l2b, err, sizeof(err)),
        SCRAM_OK);
    m2b[l2b] = '\0';
    assert_string_not_equal(salt_a, strstr(m2b, ",s="));
    scram_server_clear(&st);
}

static void test_small_output_buffer(void **state)
{
    (void)state;
    struct scram_server st;
    char out[16], err[256];
    size_t out_len;

    scram_server_init(&st);
    assert_int_equal(scram_server_start(&st, "pw", RFC_CLIENT_FIRST, strlen(RFC_CLIENT_FIRST), out,
                                        sizeof(out), &out_len, err, sizeof(err)),
                     SCRAM_INTERNAL_ERROR);
    scram_server_clear(&st);
}

/* ---- derivation caches ---- */

/* Copies attribute name= of a server-first message (NUL-terminated) into out. */
static void sf_attr(const char *msg, size_t len, char name, char *out, size_t cap)
{
    char tmp[SCRAM_OUT_MAX + 1], key[4] = {',', name, '=', '\0'};
    const char *p, *end;

    assert_true(len < sizeof(tmp));
    memcpy(tmp, msg, len);
    tmp[len] = '\0';
    p = strstr(tmp, key);
    assert_non_null(p);
    p += 3;
    end = strchr(p, ',');
    if (end == NULL)
        end = p + strlen(p);
    assert_true((size_t)(end - p) < cap);
    memcpy(out, p, (size_t)(end - p));
    out[end - p] = '\0';
}

static void assert_same_secret(const struct scram_secret *a, const struct scram_secret *b)
{
    assert_int_equal(a->iterations, b->iterations);
    assert_int_equal(a->salt_len, b->salt_len);
    assert_memory_equal(a->salt, b->salt, a->salt_len);
    assert_memory_equal(a->stored_key, b->stored_key, SCRAM_KEY_LEN);
    assert_memory_equal(a->server_key, b->server_key, SCRAM_KEY_LEN);
}

/* Logs in with a plaintext password on the server side; returns the server's result and
 * copies the secret the server used into used (when the exchange got that far). */
static enum scram_result plain_login(const char *server_password, const char *client_password,
                                     struct scram_secret *used)
{
    struct scram_server srv;
    struct scram_client cli;
    enum scram_result r, cr = SCRAM_INTERNAL_ERROR;

    r = exchange(&srv, &cli, server_password, NULL, client_password, NULL, NULL, &cr);
    if (used != NULL)
        *used = srv.secret;
    if (r == SCRAM_OK)
        assert_int_equal(cr, SCRAM_OK);
    scram_server_clear(&srv);
    scram_client_clear(&cli);
    return r;
}

/* A plaintext password keeps one salt and one set of keys: the second login runs no PBKDF2
 * at all (the server reuses its secret, the client its keys for that salt). */
static void test_plain_cache_stable_secret(void **state)
{
    (void)state;
    struct scram_secret first, second, third;
    struct scram_cache_stats before, after;

    scram_cache_clear();
    assert_int_equal(plain_login("cached-pw", "cached-pw", &first), SCRAM_OK);
    assert_int_equal(first.iterations, SCRAM_DEFAULT_ITERATIONS);
    assert_int_equal(first.salt_len, SCRAM_DEFAULT_SALT_LEN);

    scram_cache_get_stats(&before);
    assert_int_equal(plain_login("cached-pw", "cached-pw", &second), SCRAM_OK);
    scram_cache_get_stats(&after);
    assert_same_secret(&first, &second);
    assert_int_equal(after.pbkdf2_runs, before.pbkdf2_runs);
    assert_int_equal(after.server_hits, before.server_hits + 1);
    assert_int_equal(after.client_hits, before.client_hits + 1);

    /* Clearing forgets it: a new salt, one derivation on each side. */
    scram_cache_clear();
    scram_cache_get_stats(&before);
    assert_int_equal(plain_login("cached-pw", "cached-pw", &third), SCRAM_OK);
    scram_cache_get_stats(&after);
    assert_memory_not_equal(first.salt, third.salt, SCRAM_DEFAULT_SALT_LEN);
    assert_int_equal(after.pbkdf2_runs, before.pbkdf2_runs + 2);
    scram_secret_clear(&first);
    scram_secret_clear(&second);
    scram_secret_clear(&third);
}

/* The cache never turns a wrong password into a right one, before or after the entry exists. */
static void test_plain_cache_still_checks_password(void **state)
{
    (void)state;
    const char *wrong[] = {"Right-pw", "right-p", "right-pw ", "right-pwright-pw", ""};

    scram_cache_clear();
    assert_int_equal(plain_login("right-pw", "wrong-pw", NULL), SCRAM_AUTH_FAILED);
    for (int round = 0; round < 2; round++) {
        assert_int_equal(plain_login("right-pw", "right-pw", NULL), SCRAM_OK);
        for (size_t i = 0; i < sizeof(wrong) / sizeof(wrong[0]); i++)
            assert_int_equal(plain_login("right-pw", wrong[i], NULL), SCRAM_AUTH_FAILED);
    }
}

/* Different passwords (including prefixes of each other) get different entries. */
static void test_plain_cache_no_collision(void **state)
{
    (void)state;
    const char *pw[] = {"alpha", "alphab", "beta", "alpha\x01"};
    struct scram_secret s[4], again;

    scram_cache_clear();
    for (size_t i = 0; i < 4; i++)
        assert_int_equal(plain_login(pw[i], pw[i], &s[i]), SCRAM_OK);
    for (size_t i = 0; i < 4; i++) {
        assert_int_equal(plain_login(pw[i], pw[i], &again), SCRAM_OK);
        assert_same_secret(&s[i], &again);
        for (size_t j = 0; j < 4; j++) {
            if (i == j)
                continue;
            assert_memory_not_equal(s[i].salt, s[j].salt, SCRAM_DEFAULT_SALT_LEN);
            assert_memory_not_equal(s[i].stored_key, s[j].stored_key, SCRAM_KEY_LEN);
            assert_int_equal(plain_login(pw[i], pw[j], NULL), SCRAM_AUTH_FAILED);
        }
    }
}

/* An unknown user's server-first must not tell it apart from a plaintext user's: same length,
 * same salt length, same iteration count, a salt stable across attempts, and no PBKDF2 for
 * either once the plaintext user has logged in once. */
static void test_doomed_looks_like_plain(void **state)
{
    (void)state;
    struct scram_server st;
    struct scram_client cli;
    struct scram_cache_stats before, after;
    char m1[SCRAM_OUT_MAX], m2[SCRAM_OUT_MAX], err[256];
    char salt[2][2][64], iter[2][2][16];
    uint8_t raw[SCRAM_MAX_SALT_LEN];
    size_t l1, l2, lens[2][2], raw_len;

    scram_cache_clear();
    assert_int_equal(plain_login("shape-pw", "shape-pw", NULL), SCRAM_OK);
    scram_client_init(&cli);
    assert_int_equal(
        scram_client_start(&cli, NULL, "guess", NULL, NULL, m1, sizeof(m1), &l1, err, sizeof(err)),
        SCRAM_OK);
    scram_cache_get_stats(&before);
    for (int kind = 0; kind < 2; kind++) {
        for (int attempt = 0; attempt < 2; attempt++) {
            scram_server_init(&st);
            if (kind == 0)
                assert_int_equal(scram_server_start(&st, "shape-pw", m1, l1, m2, sizeof(m2), &l2,
                                                    err, sizeof(err)),
                                 SCRAM_OK);
            else
                assert_int_equal(scram_server_start_doomed(&st, "ghost", m1, l1, m2, sizeof(m2),
                                                           &l2, err, sizeof(err)),
                                 SCRAM_OK);
            lens[kind][attempt] = l2;
            sf_attr(m2, l2, 's', salt[kind][attempt], sizeof(salt[kind][attempt]));
            sf_attr(m2, l2, 'i', iter[kind][attempt], sizeof(iter[kind][attempt]));
            assert_true(scram_base64_decode(salt[kind][attempt], strlen(salt[kind][attempt]), raw,
                                            sizeof(raw), &raw_len));
            assert_int_equal(raw_len, SCRAM_DEFAULT_SALT_LEN);
            assert_string_equal(iter[kind][attempt], "4096");
            scram_server_clear(&st);
        }
        assert_string_equal(salt[kind][0], salt[kind][1]);
    }
    scram_cache_get_stats(&after);
    assert_int_equal(after.pbkdf2_runs, before.pbkdf2_runs);
    assert_int_equal(lens[0][0], lens[1][0]);
    assert_string_not_equal(salt[0][0], salt[1][0]);
    scram_client_clear(&cli);
}

/* Runs the client side with the RFC nonce against server_first_msg and copies client-final
 * (NUL-terminated) into final_out. */
static enum scram_result client_final_for(const char *password, const char *server_first_msg,
                                          char *final_out, char *err, size_t err_len)
{
    struct scram_client st;
    char out[SCRAM_OUT_MAX];
    size_t out_len;
    enum scram_result r;

    scram_client_init(&st);
    assert_int_equal(scram_client_start_with_nonce(&st, "user", password, NULL, NULL,
                                                   RFC_CLIENT_NONCE, out, sizeof(out), &out_len,
                                                   err, err_len),
                     SCRAM_OK);
    r = scram_client_continue(&st, server_first_msg, strlen(server_first_msg), out, sizeof(out),
                              &out_len, err, err_len);
    if (r == SCRAM_OK) {
        memcpy(final_out, out, out_len);
        final_out[out_len] = '\0';
    }
    scram_client_clear(&st);
    return r;
}

static void test_client_iteration_cap(void **state)
{
    (void)state;
    char final1[SCRAM_OUT_MAX + 1], final2[SCRAM_OUT_MAX + 1], err[256];
    struct scram_cache_stats before, after;

    assert_int_equal(SCRAM_CLIENT_MAX_ITERATIONS, 100000);
    assert_int_equal(client_final_for("pencil", SF_PREFIX ",i=100001", final1, err, sizeof(err)),
                     SCRAM_PROTOCOL_ERROR);
    assert_non_null(strstr(err, "100001"));
    assert_non_null(strstr(err, "100000"));
    assert_int_equal(client_final_for("pencil", SF_PREFIX ",i=1000000", final1, err, sizeof(err)),
                     SCRAM_PROTOCOL_ERROR);
    assert_non_null(strstr(err, "1000000 SCRAM iterations"));
    assert_int_equal(
        client_final_for("pencil", SF_PREFIX ",i=2147483647", final1, err, sizeof(err)),
        SCRAM_PROTOCOL_ERROR);
    assert_non_null(strstr(err, "2147483647"));
    assert_int_equal(
        client_final_for("pencil", SF_PREFIX ",i=2147483648", final1, err, sizeof(err)),
        SCRAM_PROTOCOL_ERROR);
    assert_non_null(strstr(err, "iteration count"));

    /* The cap itself is accepted, and derived once. */
    scram_cache_get_stats(&before);
    assert_int_equal(client_final_for("pencil", SF_PREFIX ",i=100000", final1, err, sizeof(err)),
                     SCRAM_OK);
    assert_int_equal(client_final_for("pencil", SF_PREFIX ",i=100000", final2, err, sizeof(err)),
                     SCRAM_OK);
    scram_cache_get_stats(&after);
    assert_int_equal(after.pbkdf2_runs, before.pbkdf2_runs + 1);
    assert_string_equal(final1, final2);
}

/* The client cache gives exactly what an uncached derivation gives: the RFC 7677 proof. */
static void test_client_cache_rfc_vector(void **state)
{
    (void)state;
    struct scram_client st;
    struct scram_secret uncached;
    struct scram_cache_stats before, after;
    char out[SCRAM_OUT_MAX], err[256], final[SCRAM_OUT_MAX + 1];
    size_t out_len;

    scram_cache_clear();
    rfc_secret(&uncached);
    for (int round = 0; round < 3; round++) {
        scram_cache_get_stats(&before);
        scram_client_init(&st);
        assert_int_equal(scram_client_start_with_nonce(&st, "user", "pencil", NULL, NULL,
                                                       RFC_CLIENT_NONCE, out, sizeof(out), &out_len,
                                                       err, sizeof(err)),
                         SCRAM_OK);
        assert_int_equal(scram_client_continue(&st, RFC_SERVER_FIRST, strlen(RFC_SERVER_FIRST), out,
                                               sizeof(out), &out_len, err, sizeof(err)),
                         SCRAM_OK);
        assert_msg(out, out_len, RFC_CLIENT_FINAL);
        assert_memory_equal(st.server_key, uncached.server_key, SCRAM_KEY_LEN);
        assert_int_equal(
            scram_client_finish(&st, RFC_SERVER_FINAL, strlen(RFC_SERVER_FINAL), err, sizeof(err)),
            SCRAM_OK);
        scram_client_clear(&st);
        scram_cache_get_stats(&after);
        /* Round 0 derives (the rfc_secret above does not fill the cache); later rounds hit. */
        assert_int_equal(after.pbkdf2_runs, before.pbkdf2_runs + (round == 0 ? 1 : 0));
        assert_int_equal(after.client_hits, before.client_hits + (round == 0 ? 0 : 1));
    }

    /* Another password, iteration count or salt is another entry with another proof. */
    scram_cache_get_stats(&before);
    assert_int_equal(client_final_for("pencil2", RFC_SERVER_FIRST, final, err, sizeof(err)),
                     SCRAM_OK);
    assert_string_not_equal(final, RFC_CLIENT_FINAL);
    assert_int_equal(client_final_for("pencil", SF_PREFIX ",i=4095", final, err, sizeof(err)),
                     SCRAM_OK);
    assert_string_not_equal(final,
                            "c=biws,r=" NONCE ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=");
    assert_int_equal(client_final_for("pencil", "r=" NONCE ",s=X22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
                                      final, err, sizeof(err)),
                     SCRAM_OK);
    scram_cache_get_stats(&after);
    assert_int_equal(after.pbkdf2_runs, before.pbkdf2_runs + 3);
    assert_int_equal(after.client_hits, before.client_hits);
    /* ...and the RFC entry is still there. */
    assert_int_equal(client_final_for("pencil", RFC_SERVER_FIRST, final, err, sizeof(err)),
                     SCRAM_OK);
    assert_string_equal(final, RFC_CLIENT_FINAL);
    scram_cache_get_stats(&before);
    assert_int_equal(before.pbkdf2_runs, after.pbkdf2_runs);
    scram_secret_clear(&uncached);
}

/* A full table replaces its least recently used entry, and a replaced entry derives again to
 * the same result (i=1 keeps this fast). */
static void test_client_cache_eviction(void **state)
{
    (void)state;
    char sf[256], salt_b64[32], final[SCRAM_CLIENT_CACHE_SLOTS + 1][SCRAM_OUT_MAX + 1];
    char again[SCRAM_OUT_MAX + 1], err[256];
    uint8_t salt[SCRAM_DEFAULT_SALT_LEN] = {0};
    struct scram_cache_stats before, after;

    scram_cache_clear();
    for (int k = 0; k <= SCRAM_CLIENT_CACHE_SLOTS; k++) {
        salt[0] = (uint8_t)k;
        assert_true(scram_base64_encode(salt, sizeof(salt), salt_b64, sizeof(salt_b64)));
        snprintf(sf, sizeof(sf), "r=%s,s=%s,i=1", NONCE, salt_b64);
        assert_int_equal(client_final_for("evict", sf, final[k], err, sizeof(err)), SCRAM_OK);
    }
    /* Salt 0 was the oldest when salt SLOTS came in: it derives again; the newest hits. */
    for (int k = SCRAM_CLIENT_CACHE_SLOTS; k >= 0; k -= SCRAM_CLIENT_CACHE_SLOTS) {
        salt[0] = (uint8_t)k;
        assert_true(scram_base64_encode(salt, sizeof(salt), salt_b64, sizeof(salt_b64)));
        snprintf(sf, sizeof(sf), "r=%s,s=%s,i=1", NONCE, salt_b64);
        scram_cache_get_stats(&before);
        assert_int_equal(client_final_for("evict", sf, again, err, sizeof(err)), SCRAM_OK);
        scram_cache_get_stats(&after);
        assert_string_equal(again, final[k]);
        assert_int_equal(after.pbkdf2_runs, before.pbkdf2_runs + (k == 0 ? 1 : 0));
    }
}

/* A stored secret's text for password, with a salt of its own (i=1 keeps this fast). */
static void secret_text(const char *password, uint8_t salt_byte, char out[SCRAM_SECRET_MAX])
{
    uint8_t salt[SCRAM_DEFAULT_SALT_LEN];
    struct scram_secret s;

    memset(salt, salt_byte, sizeof(salt));
    assert_true(scram_secret_from_password_with_salt(password, salt, sizeof(salt), 1, &s));
    assert_true(scram_secret_format(&s, out, SCRAM_SECRET_MAX));
    scram_secret_clear(&s);
}

/* Checks password and asserts the result and how many PBKDF2 runs and cache hits it took. */
static void expect_plain(const char *user, const char *secret, const char *password, bool ok,
                         uint64_t runs, uint64_t hits)
{
    struct scram_cache_stats before, after;

    scram_cache_get_stats(&before);
    assert_int_equal(scram_verify_plain(user, secret, password), ok);
    scram_cache_get_stats(&after);
    assert_int_equal(after.pbkdf2_runs - before.pbkdf2_runs, runs);
    assert_int_equal(after.plain_hits - before.plain_hits, hits);
}

/* auth_type plain against a SCRAM secret: the password that last verified for a user is a
 * cheap compare next time; wrong passwords, other users and a changed secret run PBKDF2. */
static void test_verify_plain_remembers_last_accepted(void **state)
{
    (void)state;
    char a[SCRAM_SECRET_MAX], b[SCRAM_SECRET_MAX];

    secret_text("pw-a", 1, a);
    secret_text("pw-b", 2, b);
    scram_cache_clear();
    expect_plain("alice", a, "pw-a", true, 1, 0);
    expect_plain("alice", a, "pw-a", true, 0, 1);
    expect_plain("alice", a, "nope", false, 1, 0); /* the full check, and a refusal */
    expect_plain("alice", a, "", false, 1, 0);
    expect_plain("alice", a, "pw-a", true, 0, 1); /* a wrong password replaced nothing */
    expect_plain("bob", a, "pw-a", true, 1, 0);   /* per user */
    expect_plain("bob", a, "pw-a", true, 0, 1);
    /* alice's secret changes (reload, auth_query): her old password fails, the new one
     * verifies once with PBKDF2 and then from the cache */
    expect_plain("alice", b, "pw-a", false, 1, 0);
    expect_plain("alice", b, "pw-b", true, 1, 0);
    expect_plain("alice", b, "pw-b", true, 0, 1);
    /* and back: what verified against b proves nothing against a */
    expect_plain("alice", a, "pw-b", false, 1, 0);
    expect_plain("alice", a, "pw-a", true, 1, 0);
    expect_plain("bob", a, "pw-a", true, 0, 1); /* bob's entry was never touched */
    /* a secret that does not parse checks nothing */
    expect_plain("alice", "SCRAM-SHA-256$garbage", "pw-a", false, 0, 0);
    /* cleared: derived again */
    scram_cache_clear();
    expect_plain("alice", a, "pw-a", true, 1, 0);
}

/* Only passwords that verified take a slot: any number of wrong ones, for users remembered
 * or not, evicts nobody; a full table gives the least recently used user's slot to a new
 * user who verified. */
static void test_verify_plain_wrong_never_evicts(void **state)
{
    (void)state;
    char secret[SCRAM_SECRET_MAX], user[32];

    secret_text("shared-pw", 3, secret);
    scram_cache_clear();
    for (int i = 0; i < SCRAM_PLAIN_CACHE_SLOTS; i++) {
        snprintf(user, sizeof(user), "user%d", i);
        expect_plain(user, secret, "shared-pw", true, 1, 0);
    }
    for (int i = 0; i < 2 * SCRAM_PLAIN_CACHE_SLOTS; i++) {
        snprintf(user, sizeof(user), i % 2 ? "user%d" : "ghost%d", i / 2);
        expect_plain(user, secret, "wrong", false, 1, 0);
    }
    for (int i = 0; i < SCRAM_PLAIN_CACHE_SLOTS; i++) {
        snprintf(user, sizeof(user), "user%d", i);
        expect_plain(user, secret, "shared-pw", true, 0, 1);
    }
    expect_plain("newcomer", secret, "shared-pw", true, 1, 0); /* takes user0's slot */
    expect_plain("user0", secret, "shared-pw", true, 1, 0);
    expect_plain("newcomer", secret, "shared-pw", true, 0, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_base64_roundtrip),
        cmocka_unit_test(test_base64_strict),
        cmocka_unit_test(test_secret_roundtrip),
        cmocka_unit_test(test_secret_parse_rejects),
        cmocka_unit_test(test_rfc7677_server),
        cmocka_unit_test(test_rfc7677_client),
        cmocka_unit_test(test_roundtrip_secret_and_plain),
        cmocka_unit_test(test_passthrough_keys),
        cmocka_unit_test(test_wrong_password),
        cmocka_unit_test(test_md5_secret_rejected),
        cmocka_unit_test(test_client_first_garbage),
        cmocka_unit_test(test_client_final_garbage),
        cmocka_unit_test(test_finish_before_start),
        cmocka_unit_test(test_server_first_malicious),
        cmocka_unit_test(test_server_final_malicious),
        cmocka_unit_test(test_doomed_user),
        cmocka_unit_test(test_small_output_buffer),
        cmocka_unit_test(test_plain_cache_stable_secret),
        cmocka_unit_test(test_plain_cache_still_checks_password),
        cmocka_unit_test(test_plain_cache_no_collision),
        cmocka_unit_test(test_doomed_looks_like_plain),
        cmocka_unit_test(test_client_iteration_cap),
        cmocka_unit_test(test_client_cache_rfc_vector),
        cmocka_unit_test(test_client_cache_eviction),
        cmocka_unit_test(test_verify_plain_remembers_last_accepted),
        cmocka_unit_test(test_verify_plain_wrong_never_evicts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
