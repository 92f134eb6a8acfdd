/* libFuzzer target: both sides of SCRAM fed attacker bytes. The input is split at the first
 * 0xFF byte: part one is the client-first message, part two the client-final message for the
 * server side; the same parts are also fed to the client side as server-first/server-final. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "proto/scram.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Fixed secret (password "pencil", RFC 7677 salt) so no PBKDF2 runs per input on the server
 * side. The plaintext password run is cheap too: the server cache derives its secret on the
 * first input only. The client side uses pass-through keys: with a plaintext password every
 * input with a new salt or count (up to SCRAM_CLIENT_MAX_ITERATIONS) would run PBKDF2. */
static const char secret[] = "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$"
                             "WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:"
                             "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=";

enum server_kind {
    SERVER_SECRET,    /* stored SCRAM secret */
    SERVER_PLAINTEXT, /* plaintext password, through the server cache */
    SERVER_DOOMED,    /* unknown user */
};

static void run_server(const char *first, size_t first_len, const char *final, size_t final_len,
                       enum server_kind kind)
{
    struct scram_server st;
    char out[SCRAM_OUT_MAX], err[256];
    size_t out_len = 0;
    enum scram_result r;

    scram_server_init(&st);
    if (kind == SERVER_DOOMED)
        r = scram_server_start_doomed(&st, "ghost", first, first_len, out, sizeof(out), &out_len,
                                      err, sizeof(err));
    else
        r = scram_server_start_with_nonce(&st, kind == SERVER_SECRET ? secret : "pencil", first,
                                          first_len, "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0", out,
                                          sizeof(out), &out_len, err, sizeof(err));
    if (r == SCRAM_OK) {
        if (out_len > sizeof(out))
            __builtin_trap();
        r = scram_server_finish(&st, final, final_len, out, sizeof(out), &out_len, err,
                                sizeof(err));
        if (r == SCRAM_OK && (kind == SERVER_DOOMED || !st.have_client_key))
            __builtin_trap(); /* a doomed exchange must never succeed */
    }
    scram_server_clear(&st);
}

static void run_client(const char *first, size_t first_len, const char *final, size_t final_len)
{
    static const uint8_t ck[SCRAM_KEY_LEN] = {1, 2, 3};
    static const uint8_t sk[SCRAM_KEY_LEN] = {4, 5, 6};
    struct scram_client st;
    char out[SCRAM_OUT_MAX], err[256];
    size_t out_len = 0;

    scram_client_init(&st);
    if (scram_client_start_with_nonce(&st, "user", NULL, ck, sk, "rOprNGfwEbeRWgbNEkqO", out,
                                      sizeof(out), &out_len, err, sizeof(err)) != SCRAM_OK)
        __builtin_trap();
    if (scram_client_continue(&st, first, first_len, out, sizeof(out), &out_len, err,
                              sizeof(err)) == SCRAM_OK)
        (void)scram_client_finish(&st, final, final_len, err, sizeof(err));
    scram_client_clear(&st);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *p = (const char *)data;
    const uint8_t *sep = memchr(data, 0xff, size);
    size_t first_len = sep != NULL ? (size_t)(sep - data) : size;
    const char *final = sep != NULL ? p + first_len + 1 : p + size;
    size_t final_len = sep != NULL ? size - first_len - 1 : 0;
    struct scram_secret s;
    uint8_t buf[256];
    size_t n;

    run_server(p, first_len, final, final_len, SERVER_SECRET);
    run_server(p, first_len, final, final_len, SERVER_PLAINTEXT);
    run_server(p, first_len, final, final_len, SERVER_DOOMED);
    run_client(p, first_len, final, final_len);
    (void)scram_base64_decode(p, size, buf, sizeof(buf), &n);
    if (size < 512) {
        char text[512];
        memcpy(text, p, size);
        text[size] = '\0';
        if (scram_secret_parse(text, &s))
            scram_secret_clear(&s);
    }
    return 0;
}
