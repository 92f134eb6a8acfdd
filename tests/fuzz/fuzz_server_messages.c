/* libFuzzer target: the fields pgwarden reads from a server's ErrorResponse / NoticeResponse
 * (severity, SQLSTATE, message) and ParameterStatus (name, value), from message bodies of
 * any bytes. Every string handed back lies in the body with its NUL. An ErrorResponse read
 * and rebuilt (wire_build_error / wire_build_notice) reads back the same; a ParameterStatus
 * is accepted exactly when it is two strings, and rebuilding it gives the same bytes (the
 * pooler forwards the welcome's ParameterStatus messages that way, src/pool/client.c). */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto/wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Room for a rebuilt message: the body, the header and the duplicated severity. */
#define MAX_BODY 8192

static void check(int ok)
{
    if (!ok)
        __builtin_trap();
}

static void check_inside(const uint8_t *body, size_t len, const char *s)
{
    const uint8_t *u = (const uint8_t *)s;
    if (s != NULL)
        check(u >= body && u < body + len && memchr(u, 0, (size_t)(body + len - u)) != NULL);
}

static bool same_field(const char *a, const char *b)
{
    return strcmp(a ? a : "", b ? b : "") == 0;
}

static void check_report(const uint8_t *body, size_t len, uint8_t type)
{
    static uint8_t out[2 * MAX_BODY + 64];
    struct wire_error e, again;
    struct wire_buf b;
    uint8_t t;
    uint32_t n;

    if (!wire_parse_error(body, len, &e))
        return;
    check_inside(body, len, e.severity);
    check_inside(body, len, e.sqlstate);
    check_inside(body, len, e.message);
    wire_buf_init(&b, out, sizeof(out));
    if (type == WIRE_BE_ERROR)
        wire_build_error(&b, e.severity ? e.severity : "", e.sqlstate ? e.sqlstate : "",
                         e.message ? e.message : "");
    else
        wire_build_notice(&b, e.severity ? e.severity : "", e.sqlstate ? e.sqlstate : "",
                          e.message ? e.message : "");
    check(!b.overflow);
    check(wire_parse_header(out, b.len, MAX_BODY * 2, &t, &n) == WIRE_HEADER_OK && t == type);
    check(n == b.len - WIRE_HEADER_LEN && wire_parse_error(out + WIRE_HEADER_LEN, n, &again));
    check(same_field(e.severity, again.severity) && same_field(e.sqlstate, again.sqlstate) &&
          same_field(e.message, again.message));
}

static void check_parameter_status(const uint8_t *body, size_t len)
{
    static uint8_t out[MAX_BODY + WIRE_HEADER_LEN];
    const char *name = NULL, *value = NULL;
    struct wire_buf b;

    size_t nuls = 0;
    for (size_t i = 0; i < len; i++)
        nuls += body[i] == 0;
    bool two_strings = nuls == 2 && body[len - 1] == 0;
    bool ok = wire_parse_parameter_status(body, len, &name, &value);
    check(ok == two_strings);
    if (!ok)
        return;
    check(name == (const char *)body && value == name + strlen(name) + 1);
    check_inside(body, len, value);
    wire_buf_init(&b, out, sizeof(out));
    wire_build_parameter_status(&b, name, value);
    check(!b.overflow && b.len == len + WIRE_HEADER_LEN && out[0] == WIRE_BE_PARAMETER_STATUS);
    check(wire_get_u32(out + 1) == len + 4 && memcmp(out + WIRE_HEADER_LEN, body, len) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > MAX_BODY)
        return 0;
    check_report(data, size, WIRE_BE_ERROR);
    check_report(data, size, WIRE_BE_NOTICE);
    check_parameter_status(data, size);
    return 0;
}
