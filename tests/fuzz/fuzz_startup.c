/* libFuzzer target: the client's first packet (wire_parse_startup: StartupMessage,
 * SSLRequest, GSSENCRequest, CancelRequest), as sent and with its length field set to the
 * input's size so the fuzzer gets past the length check. A StartupMessage must come back
 * byte for byte from wire_build_startup over its parameters (the protocol minor version
 * aside), so no parameter is lost, split or invented; every kind keeps its documented
 * shape. (What the pooler then accepts, user and database names and the parameters it
 * refuses, is decided in src/pool/client.c, interleaved with replies, and not fuzzed here.) */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto/wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int ok)
{
    if (!ok)
        __builtin_trap();
}

/* A borrowed string lies in the packet, with its NUL. */
static void check_inside(const uint8_t *pkt, size_t len, const char *s)
{
    const uint8_t *u = (const uint8_t *)s;
    check(u >= pkt && u < pkt + len && memchr(u, 0, (size_t)(pkt + len - u)) != NULL);
}

static void check_message(const uint8_t *pkt, size_t len, const struct wire_startup *st)
{
    static uint8_t built[WIRE_MAX_STARTUP_LEN];
    struct wire_buf b;

    check(WIRE_PROTOCOL_MAJOR(st->version) == 3 && st->n_params <= WIRE_MAX_STARTUP_PARAMS);
    for (size_t i = 0; i < st->n_params; i++) {
        check_inside(pkt, len, st->params[i].key);
        check_inside(pkt, len, st->params[i].value);
        check(st->params[i].key[0] != '\0');
        /* Keys are unique, so each one finds its own value. */
        check(wire_startup_get(st, st->params[i].key) == st->params[i].value);
    }
    wire_buf_init(&b, built, sizeof(built));
    wire_build_startup(&b, st->params, st->n_params);
    check(!b.overflow && b.len == len);
    check(memcmp(built, pkt, 4) == 0 && memcmp(built + 8, pkt + 8, len - 8) == 0);
}

static void check_packet(const uint8_t *pkt, size_t len)
{
    static struct wire_startup st;
    uint32_t code = len >= 8 ? wire_get_u32(pkt + 4) : 0;
    bool length_ok =
        len >= WIRE_STARTUP_HEADER_LEN && len <= WIRE_MAX_STARTUP_LEN && wire_get_u32(pkt) == len;

    enum wire_startup_kind kind = wire_parse_startup(pkt, len, &st);
    check(kind == st.kind);
    if (kind != WIRE_STARTUP_MALFORMED)
        check(length_ok && st.version == code);
    if (kind == WIRE_STARTUP_SSL || kind == WIRE_STARTUP_GSSENC || kind == WIRE_STARTUP_CANCEL)
        check(st.n_params == 0); /* a malformed StartupMessage may keep the ones read */
    switch (kind) {
    case WIRE_STARTUP_MESSAGE:
        check_message(pkt, len, &st);
        break;
    case WIRE_STARTUP_SSL:
    case WIRE_STARTUP_GSSENC:
        check(len == WIRE_STARTUP_HEADER_LEN);
        check(code ==
              (kind == WIRE_STARTUP_SSL ? WIRE_SSL_REQUEST_CODE : WIRE_GSSENC_REQUEST_CODE));
        break;
    case WIRE_STARTUP_CANCEL:
        check(code == WIRE_CANCEL_REQUEST_CODE && st.cancel_key == pkt + 12);
        check(st.cancel_key_len >= 4 && st.cancel_key_len <= 256 && st.cancel_key_len == len - 12);
        check(st.cancel_pid == wire_get_u32(pkt + 8));
        if (len == 16) { /* protocol 3.0: the pooler builds the same packet */
            uint8_t built[16];
            struct wire_buf b;
            wire_buf_init(&b, built, sizeof(built));
            wire_build_cancel(&b, st.cancel_pid, wire_get_u32(st.cancel_key));
            check(!b.overflow && memcmp(built, pkt, 16) == 0);
        }
        break;
    case WIRE_STARTUP_BAD_VERSION:
        check(WIRE_PROTOCOL_MAJOR(code) != 3 && code != WIRE_CANCEL_REQUEST_CODE &&
              code != WIRE_SSL_REQUEST_CODE && code != WIRE_GSSENC_REQUEST_CODE);
        break;
    case WIRE_STARTUP_MALFORMED:
        break;
    }
    uint32_t declared;
    check(wire_startup_length(pkt, len, &declared) == (len >= 4));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    check_packet(data, size);
    if (size < 4 || size > WIRE_MAX_STARTUP_LEN)
        return 0;
    /* The same bytes with a length field that agrees, in a buffer of exactly that size so
     * any read past the packet is caught. */
    uint8_t *pkt = malloc(size);
    if (pkt == NULL)
        abort();
    memcpy(pkt, data, size);
    pkt[0] = (uint8_t)(size >> 24);
    pkt[1] = (uint8_t)(size >> 16);
    pkt[2] = (uint8_t)(size >> 8);
    pkt[3] = (uint8_t)size;
    check_packet(pkt, size);
    free(pkt);
    return 0;
}
