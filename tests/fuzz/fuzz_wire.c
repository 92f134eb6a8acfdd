/* libFuzzer target: every wire parser on arbitrary bytes (headers with several max sizes,
 * startup packets, the backend messages the pooler reads, SASL initial responses), and a
 * framing walk that must always make progress. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "proto/wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct wire_startup st;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t type;
    uint32_t len;
    /* Framing walk: each accepted header consumes at least 5 bytes. */
    size_t pos = 0;
    while (pos < size) {
        enum wire_header_result r =
            wire_parse_header(data + pos, size - pos, 0x7FFFFFFFu, &type, &len);
        if (r != WIRE_HEADER_OK)
            break;
        if ((uint64_t)len > size - pos - WIRE_HEADER_LEN)
            break;
        const uint8_t *body = data + pos + WIRE_HEADER_LEN;
        struct wire_error e;
        const char *a, *b;
        uint32_t u1, u2;
        uint8_t s;
        const uint8_t *d;
        size_t dl;
        switch (type) {
        case 'E':
        case 'N':
            if (wire_parse_error(body, len, &e)) {
                if (e.sqlstate)
                    (void)strlen(e.sqlstate);
                if (e.message)
                    (void)strlen(e.message);
            }
            break;
        case 'S':
            if (wire_parse_parameter_status(body, len, &a, &b) && (strlen(a) + strlen(b) > len))
                __builtin_trap();
            break;
        case 'Z':
            (void)wire_parse_ready(body, len, &s);
            break;
        case 'K':
            (void)wire_parse_backend_key(body, len, &u1, &u2);
            break;
        case 'D': {
            long long v;
            if (wire_parse_data_row_int(body, len, &v) &&
                (v > 100000000000LL * 10 + 9 || v < -(100000000000LL * 10 + 9)))
                __builtin_trap();
            break;
        }
        case 'R':
            if (wire_parse_auth(body, len, &u1, &d, &dl)) {
                if (dl > len)
                    __builtin_trap();
                (void)wire_sasl_offers(d, dl, "SCRAM-SHA-256");
            }
            break;
        case 'p':
            if (wire_parse_sasl_initial(body, len, &a, &d, &dl) && d && dl > len)
                __builtin_trap();
            break;
        default:
            break;
        }
        pos += WIRE_HEADER_LEN + len;
    }
    (void)wire_parse_header(data, size, 1000, &type, &len);
    (void)wire_parse_header(data, size, 0xFFFFFFFFu, &type, &len);
    if (wire_parse_startup(data, size, &st) == WIRE_STARTUP_MESSAGE) {
        for (size_t i = 0; i < st.n_params; i++)
            if (st.params[i].key[0] == '\0' || wire_startup_get(&st, st.params[i].key) == NULL)
                __builtin_trap();
    }
    return 0;
}
