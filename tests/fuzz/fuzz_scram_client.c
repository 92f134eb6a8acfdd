/* libFuzzer target: the client side of SCRAM (pgwarden logging in to PostgreSQL), fed what a
 * hostile or broken server sends. Each input runs two exchanges:
 *  - against pgwarden's own server side, whose server-first and server-final the input edits
 *    (so the fuzzer starts from messages that verify and can change any byte of them): the
 *    client must accept exactly the unedited messages;
 *  - against raw server-first / server-final bytes, which can never verify (the fuzzer cannot
 *    compute the server's HMAC).
 * Input: parts split at 0xFF: the user name, the server nonce, the edit of server-first, the
 * edit of server-final. An edit is offset (2 bytes), bytes to delete (1), bytes to insert
 * (the rest); a part shorter than 3 bytes edits nothing. The raw exchange uses the last two
 * parts as they are. The client uses pass-through keys, so no input runs PBKDF2. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "proto/scram.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CLIENT_NONCE "rOprNGfwEbeRWgbNEkqO"
#define SERVER_NONCE "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
#define ERROR_PREFIX "SCRAM error from server: "
#define MAX_PARTS    4
#define MAX_EDITED   (2 * SCRAM_MAX_MESSAGE_LEN)

static const uint8_t client_key[SCRAM_KEY_LEN] = {1, 2, 3, 4, 5, 6, 7, 8};
static const uint8_t server_key[SCRAM_KEY_LEN] = {9, 10, 11, 12, 13, 14, 15, 16};
/* The stored secret of those keys: StoredKey = SHA-256(ClientKey). */
static char secret[SCRAM_SECRET_MAX];

static void check(int ok)
{
    if (!ok)
        __builtin_trap();
}

static void make_secret(void)
{
    struct scram_secret s = {.iterations = SCRAM_DEFAULT_ITERATIONS, .salt_len = 16};
    unsigned int n = 0;
    memcpy(s.salt, "pgwarden-salt-16", 16);
    memcpy(s.server_key, server_key, SCRAM_KEY_LEN);
    check(EVP_Digest(client_key, SCRAM_KEY_LEN, s.stored_key, &n, EVP_sha256(), NULL) == 1);
    check(scram_secret_format(&s, secret, sizeof(secret)));
}

struct part {
    const uint8_t *p; /* borrowed from the input */
    size_t n;
};

/* Applies edit to msg[0..len) into out (MAX_EDITED bytes); returns the new length. */
static size_t apply_edit(const char *msg, size_t len, struct part edit, char *out)
{
    if (edit.n < 3) {
        memcpy(out, msg, len);
        return len;
    }
    size_t off = ((size_t)edit.p[0] << 8 | edit.p[1]) % (len + 1);
    size_t del = edit.p[2] < len - off ? edit.p[2] : len - off;
    size_t ins = edit.n - 3 < MAX_EDITED - (len - del) ? edit.n - 3 : MAX_EDITED - (len - del);
    memcpy(out, msg, off);
    memcpy(out + off, edit.p + 3, ins);
    memcpy(out + off + ins, msg + off + del, len - off - del);
    return len - del + ins;
}

static bool same(const char *a, size_t a_len, const char *b, size_t b_len)
{
    return a_len == b_len && memcmp(a, b, a_len) == 0;
}

/* A failed step leaves the exchange failed, says why, and keeps no password. */
static void check_failed(const struct scram_client *st, enum scram_result r, const char *err)
{
    check(r != SCRAM_OK && st->phase == SCRAM_CLIENT_FAILED && st->password == NULL);
    check(err[0] != '\0');
}

/* The server's own e= reason reaches err as short printable text only. */
static void check_finish_error(const char *final, size_t len, enum scram_result r, const char *err)
{
    if (len < 2 || final[0] != 'e' || final[1] != '=' || memchr(final, '\0', len) ||
        len > SCRAM_MAX_MESSAGE_LEN)
        return;
    check(r == SCRAM_AUTH_FAILED && strncmp(err, ERROR_PREFIX, strlen(ERROR_PREFIX)) == 0);
    for (const char *c = err; *c; c++)
        check(*c >= 0x20 && *c < 0x7f);
}

/* client-first is "n,,n=<user with ',' and '=' escaped>,r=<nonce>". */
static void check_client_first(const char *out, size_t len, const char *user)
{
    size_t u = 0, i = 5;
    check(len > 5 && memcmp(out, "n,,n=", 5) == 0);
    for (; i < len && out[i] != ','; i++) {
        if (out[i] == '=') {
            check(i + 2 < len &&
                  (memcmp(out + i, "=2C", 3) == 0 || memcmp(out + i, "=3D", 3) == 0));
            check(user[u++] == (out[i + 1] == '2' ? ',' : '='));
            i += 2;
        } else {
            check(user[u++] == out[i]);
        }
    }
    check(user[u] == '\0');
    check(same(out + i, len - i, ",r=" CLIENT_NONCE, strlen(",r=" CLIENT_NONCE)));
}

/* client-final is "c=biws,r=<the nonce of server-first>,p=<32 bytes in base64>". */
static void check_client_final(const char *out, size_t len, const char *server_first)
{
    size_t nonce_len = strcspn(server_first + 2, ",");
    check(len == 9 + nonce_len + 3 + 44 && memcmp(out, "c=biws,r=", 9) == 0);
    check(memcmp(out + 9, server_first + 2, nonce_len) == 0);
    check(memcmp(out + 9 + nonce_len, ",p=", 3) == 0);
    uint8_t proof[SCRAM_KEY_LEN + 2];
    size_t n = 0;
    check(scram_base64_decode(out + len - 44, 44, proof, sizeof(proof), &n) && n == SCRAM_KEY_LEN);
}

static void honest_exchange(const char *user, const char *snonce, struct part first_edit,
                            struct part final_edit)
{
    struct scram_client cl;
    struct scram_server sv;
    char out[SCRAM_OUT_MAX], first[SCRAM_OUT_MAX], final[SCRAM_OUT_MAX], err[256];
    char edited[MAX_EDITED + 1];
    size_t out_len = 0, first_len = 0, final_len = 0, n;
    enum scram_result r;

    scram_client_init(&cl);
    scram_server_init(&sv);
    r = scram_client_start_with_nonce(&cl, user, NULL, client_key, server_key, CLIENT_NONCE, out,
                                      sizeof(out), &out_len, err, sizeof(err));
    if (strlen(user) > 255) { /* longer names are refused before anything is sent */
        check_failed(&cl, r, err);
        goto done;
    }
    check(r == SCRAM_OK && out_len <= sizeof(out));
    check_client_first(out, out_len, user);
    /* pgwarden's own server side accepts what its client side sends. */
    check(scram_server_start_with_nonce(&sv, secret, out, out_len, snonce, first, sizeof(first),
                                        &first_len, err, sizeof(err)) == SCRAM_OK);

    n = apply_edit(first, first_len, first_edit, edited);
    bool first_intact = same(edited, n, first, first_len);
    r = scram_client_continue(&cl, edited, n, out, sizeof(out), &out_len, err, sizeof(err));
    check(r == SCRAM_OK || !first_intact);
    if (r != SCRAM_OK) {
        check_failed(&cl, r, err);
        goto done;
    }
    edited[n] = '\0';
    check_client_final(out, out_len, edited);
    r = scram_server_finish(&sv, out, out_len, final, sizeof(final), &final_len, err, sizeof(err));
    /* The proof covers server-first as the client saw it: any change fails on the server. */
    check((r == SCRAM_OK) == first_intact);
    if (r != SCRAM_OK) {
        /* Without the server's answer, nothing verifies: the edit bytes as server-final. */
        r = scram_client_finish(&cl, (const char *)final_edit.p, final_edit.n, err, sizeof(err));
        check_failed(&cl, r, err);
        goto done;
    }
    check(memcmp(sv.client_key, client_key, SCRAM_KEY_LEN) == 0);

    n = apply_edit(final, final_len, final_edit, edited);
    r = scram_client_finish(&cl, edited, n, err, sizeof(err));
    check((r == SCRAM_OK) == same(edited, n, final, final_len));
    if (r == SCRAM_OK)
        check(cl.phase == SCRAM_CLIENT_DONE);
    else
        check_failed(&cl, r, err);
    check_finish_error(edited, n, r, err);
done:
    /* Nothing is accepted out of turn. */
    check(scram_client_continue(&cl, first, first_len, out, sizeof(out), &out_len, err,
                                sizeof(err)) == SCRAM_PROTOCOL_ERROR);
    scram_client_clear(&cl);
    scram_server_clear(&sv);
}

static void raw_exchange(struct part first, struct part final)
{
    struct scram_client cl;
    char out[SCRAM_OUT_MAX], err[256];
    size_t out_len = 0;
    enum scram_result r;

    scram_client_init(&cl);
    check(scram_client_start_with_nonce(&cl, "user", NULL, client_key, server_key, CLIENT_NONCE,
                                        out, sizeof(out), &out_len, err, sizeof(err)) == SCRAM_OK);
    r = scram_client_continue(&cl, (const char *)first.p, first.n, out, sizeof(out), &out_len, err,
                              sizeof(err));
    if (r == SCRAM_OK) {
        char text[SCRAM_MAX_MESSAGE_LEN + 1];
        memcpy(text, first.p, first.n);
        text[first.n] = '\0';
        check_client_final(out, out_len, text);
        r = scram_client_finish(&cl, (const char *) final.p, final.n, err, sizeof(err));
        check_finish_error((const char *) final.p, final.n, r, err);
    }
    check_failed(&cl, r, err);
    scram_client_clear(&cl);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool ready;
    struct part parts[MAX_PARTS] = {{0}};
    const uint8_t *p = data, *end = data + size;
    char user[512], snonce[65];

    if (!ready) {
        make_secret();
        ready = true;
    }
    for (size_t i = 0; i < MAX_PARTS; i++) {
        const uint8_t *sep = i + 1 < MAX_PARTS ? memchr(p, 0xff, (size_t)(end - p)) : NULL;
        parts[i].p = p;
        parts[i].n = (size_t)((sep ? sep : end) - p);
        p = sep ? sep + 1 : end;
    }
    /* A user name is a C string; a fixed server nonce must be one the server accepts. */
    size_t un = strnlen((const char *)parts[0].p, parts[0].n < 511 ? parts[0].n : 511);
    memcpy(user, parts[0].p, un);
    user[un] = '\0';
    size_t sn = parts[1].n < 64 ? parts[1].n : 64;
    memcpy(snonce, parts[1].p, sn);
    snonce[sn] = '\0';
    for (size_t i = 0; i < sn; i++)
        if (snonce[i] < 0x21 || snonce[i] > 0x7e || snonce[i] == ',')
            sn = 0;
    honest_exchange(user, sn > 0 ? snonce : SERVER_NONCE, parts[2], parts[3]);
    raw_exchange(parts[2], parts[3]);
    return 0;
}
