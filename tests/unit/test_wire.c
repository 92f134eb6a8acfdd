/* Unit tests for PostgreSQL v3 framing: headers at every length boundary, startup packets
 * (SSL/GSSENC/cancel/versions/malformed), builders round-tripping through the parsers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "proto/wire.h"

static void be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static void test_header_lengths(void **state)
{
    (void)state;
    uint8_t h[5] = {'Q', 0, 0, 0, 0};
    uint8_t type;
    uint32_t len;
    assert_int_equal(wire_parse_header(h, 4, 1000, &type, &len), WIRE_HEADER_INCOMPLETE);
    uint32_t bad[] = {0, 3, 0x80000000u, 0xFFFFFFFFu, 1005};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        be32(h + 1, bad[i]);
        assert_int_equal(wire_parse_header(h, 5, 1000, &type, &len), WIRE_HEADER_BAD_LENGTH);
    }
    be32(h + 1, 4);
    assert_int_equal(wire_parse_header(h, 5, 1000, &type, &len), WIRE_HEADER_OK);
    assert_int_equal(type, 'Q');
    assert_int_equal(len, 0);
    be32(h + 1, 1004);
    assert_int_equal(wire_parse_header(h, 5, 1000, &type, &len), WIRE_HEADER_OK);
    assert_int_equal(len, 1000);
    /* max_body at its extreme never overflows */
    be32(h + 1, 0xFFFFFFFFu);
    assert_int_equal(wire_parse_header(h, 5, 0xFFFFFFFFu, &type, &len), WIRE_HEADER_OK);
    assert_int_equal(len, 0xFFFFFFFBu);
    be32(h + 1, 0x7FFFFFFFu);
    assert_int_equal(wire_parse_header(h, 5, 0x7FFFFFFFu, &type, &len), WIRE_HEADER_OK);
}

static size_t build_startup(uint8_t *buf, size_t cap, uint32_t version, const char *const *kv,
                            size_t n)
{
    struct wire_buf b;
    wire_buf_init(&b, buf, cap);
    wire_put_u32(&b, 0);
    wire_put_u32(&b, version);
    for (size_t i = 0; i < n; i++)
        wire_put_cstr(&b, kv[i]);
    wire_put_u8(&b, 0);
    be32(buf, (uint32_t)b.len);
    return b.len;
}

static void test_startup_message(void **state)
{
    (void)state;
    uint8_t buf[512];
    static struct wire_startup st;
    const char *kv[] = {"user", "alice", "database", "db1", "application_name", "x y"};
    size_t n = build_startup(buf, sizeof(buf), WIRE_PROTOCOL_3_0, kv, 6);
    assert_int_equal(wire_parse_startup(buf, n, &st), WIRE_STARTUP_MESSAGE);
    assert_string_equal(wire_startup_get(&st, "user"), "alice");
    assert_string_equal(wire_startup_get(&st, "database"), "db1");
    assert_string_equal(wire_startup_get(&st, "application_name"), "x y");
    assert_null(wire_startup_get(&st, "options"));

    /* duplicate key */
    const char *dup[] = {"user", "a", "user", "b"};
    n = build_startup(buf, sizeof(buf), WIRE_PROTOCOL_3_0, dup, 4);
    assert_int_equal(wire_parse_startup(buf, n, &st), WIRE_STARTUP_MALFORMED);
    /* missing final terminator */
    n = build_startup(buf, sizeof(buf), WIRE_PROTOCOL_3_0, kv, 2);
    be32(buf, (uint32_t)(n - 1));
    assert_int_equal(wire_parse_startup(buf, n - 1, &st), WIRE_STARTUP_MALFORMED);
    /* key without value */
    const char *odd[] = {"user"};
    n = build_startup(buf, sizeof(buf), WIRE_PROTOCOL_3_0, odd, 1);
    assert_int_equal(wire_parse_startup(buf, n, &st), WIRE_STARTUP_MALFORMED);
    /* length field disagreeing with the packet */
    n = build_startup(buf, sizeof(buf), WIRE_PROTOCOL_3_0, kv, 2);
    be32(buf, (uint32_t)n + 1);
    assert_int_equal(wire_parse_startup(buf, n, &st), WIRE_STARTUP_MALFORMED);
    /* protocol 2.0 and 4.0 */
    n = build_startup(buf, sizeof(buf), WIRE_PROTOCOL(2, 0), kv, 2);
    assert_int_equal(wire_parse_startup(buf, n, &st), WIRE_STARTUP_BAD_VERSION);
    n = build_startup(buf, sizeof(buf), WIRE_PROTOCOL(4, 0), kv, 2);
    assert_int_equal(wire_parse_startup(buf, n, &st), WIRE_STARTUP_BAD_VERSION);
    /* 3.2 parses (negotiated down by the caller) */
    n = build_startup(buf, sizeof(buf), WIRE_PROTOCOL(3, 2), kv, 2);
    assert_int_equal(wire_parse_startup(buf, n, &st), WIRE_STARTUP_MESSAGE);
    assert_int_equal(WIRE_PROTOCOL_MINOR(st.version), 2);
}

static void test_special_requests(void **state)
{
    (void)state;
    static struct wire_startup st;
    uint8_t buf[300];
    be32(buf, 8);
    be32(buf + 4, WIRE_SSL_REQUEST_CODE);
    assert_int_equal(wire_parse_startup(buf, 8, &st), WIRE_STARTUP_SSL);
    be32(buf + 4, WIRE_GSSENC_REQUEST_CODE);
    assert_int_equal(wire_parse_startup(buf, 8, &st), WIRE_STARTUP_GSSENC);
    /* cancel with key lengths 0, 3, 4, 32, 256, 257 */
    size_t keys[] = {0, 3, 4, 32, 256, 257};
    enum wire_startup_kind want[] = {WIRE_STARTUP_MALFORMED, WIRE_STARTUP_MALFORMED,
                                     WIRE_STARTUP_CANCEL,    WIRE_STARTUP_CANCEL,
                                     WIRE_STARTUP_CANCEL,    WIRE_STARTUP_MALFORMED};
    for (size_t i = 0; i < 6; i++) {
        size_t len = 12 + keys[i];
        memset(buf, 0x5a, sizeof(buf));
        be32(buf, (uint32_t)len);
        be32(buf + 4, WIRE_CANCEL_REQUEST_CODE);
        be32(buf + 8, 1234);
        if (len <= sizeof(buf))
            assert_int_equal(wire_parse_startup(buf, len, &st), want[i]);
    }
    be32(buf, 16);
    be32(buf + 4, WIRE_CANCEL_REQUEST_CODE);
    be32(buf + 8, 77);
    be32(buf + 12, 0xdeadbeef);
    assert_int_equal(wire_parse_startup(buf, 16, &st), WIRE_STARTUP_CANCEL);
    assert_int_equal(st.cancel_pid, 77);
    assert_int_equal(st.cancel_key_len, 4);
    assert_int_equal(wire_get_u32(st.cancel_key), 0xdeadbeef);
    /* too short / too long */
    assert_int_equal(wire_parse_startup(buf, 4, &st), WIRE_STARTUP_MALFORMED);
    be32(buf, 20000);
    assert_int_equal(wire_parse_startup(buf, 20000 > sizeof(buf) ? 16 : 20000, &st),
                     WIRE_STARTUP_MALFORMED);
}

static void test_build_and_parse(void **state)
{
    (void)state;
    uint8_t buf[256];
    struct wire_buf b;
    wire_buf_init(&b, buf, sizeof(buf));
    wire_build_error(&b, "FATAL", "28P01", "password authentication failed");
    uint8_t type;
    uint32_t len;
    assert_int_equal(wire_parse_header(buf, b.len, 1000, &type, &len), WIRE_HEADER_OK);
    assert_int_equal(type, WIRE_BE_ERROR);
    assert_int_equal(len + 5, b.len);
    struct wire_error e;
    assert_true(wire_parse_error(buf + 5, len, &e));
    assert_string_equal(e.sqlstate, "28P01");
    assert_string_equal(e.severity, "FATAL");
    assert_string_equal(e.message, "password authentication failed");

    /* ErrorResponse without C, M or S (CVE-2026-6666 class): fields stay NULL */
    uint8_t empty[] = {0};
    assert_true(wire_parse_error(empty, 1, &e));
    assert_null(e.sqlstate);
    assert_null(e.message);
    uint8_t unterminated[] = {'C', '4', '2'};
    assert_false(wire_parse_error(unterminated, 3, &e));

    wire_buf_init(&b, buf, sizeof(buf));
    wire_build_parameter_status(&b, "TimeZone", "Europe/Paris");
    const char *name, *value;
    assert_true(wire_parse_parameter_status(buf + 5, b.len - 5, &name, &value));
    assert_string_equal(name, "TimeZone");
    assert_string_equal(value, "Europe/Paris");
    assert_false(wire_parse_parameter_status(buf + 5, b.len - 6, &name, &value));

    wire_buf_init(&b, buf, sizeof(buf));
    wire_build_ready(&b, 'T');
    uint8_t st;
    assert_true(wire_parse_ready(buf + 5, 1, &st));
    assert_int_equal(st, 'T');
    uint8_t badst = 'X';
    assert_false(wire_parse_ready(&badst, 1, &st));

    wire_buf_init(&b, buf, sizeof(buf));
    wire_build_backend_key(&b, 42, 0xabcdef01);
    uint32_t pid, key;
    assert_true(wire_parse_backend_key(buf + 5, 8, &pid, &key));
    assert_int_equal(pid, 42);
    assert_int_equal(key, 0xabcdef01);
    assert_false(wire_parse_backend_key(buf + 5, 7, &pid, &key));

    /* overflow is sticky and leaves len unchanged */
    uint8_t tiny[8];
    wire_buf_init(&b, tiny, sizeof(tiny));
    wire_build_query(&b, "SELECT 1");
    assert_true(b.overflow);
}

static void test_sasl_initial(void **state)
{
    (void)state;
    uint8_t buf[128];
    struct wire_buf b;
    wire_buf_init(&b, buf, sizeof(buf));
    wire_build_sasl_initial(&b, "SCRAM-SHA-256", "n,,n=,r=abc", 11);
    const char *mech;
    const uint8_t *data;
    size_t dlen;
    assert_true(wire_parse_sasl_initial(buf + 5, b.len - 5, &mech, &data, &dlen));
    assert_string_equal(mech, "SCRAM-SHA-256");
    assert_int_equal(dlen, 11);
    /* inner length 0xFFFFFFFF with data following, or larger than the message (CVE-2026-6664) */
    uint8_t evil[] = {'M', 0, 0xff, 0xff, 0xff, 0xff, 'x'};
    assert_false(wire_parse_sasl_initial(evil, sizeof(evil), &mech, &data, &dlen));
    uint8_t evil2[] = {'M', 0, 0x7f, 0xff, 0xff, 0xff, 'x'};
    assert_false(wire_parse_sasl_initial(evil2, sizeof(evil2), &mech, &data, &dlen));
    uint8_t nodata[] = {'M', 0, 0xff, 0xff, 0xff, 0xff};
    assert_true(wire_parse_sasl_initial(nodata, sizeof(nodata), &mech, &data, &dlen));
    assert_null(data);
    uint8_t mechs[] = "SCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0";
    assert_true(wire_sasl_offers(mechs, sizeof(mechs), "SCRAM-SHA-256"));
    assert_false(wire_sasl_offers(mechs, 19, "SCRAM-SHA-256"));
}

/* A growable buffer: realloc'ed up to a limit the test sets. */
static size_t grow_limit;

static bool test_grow(struct wire_buf *b, size_t need)
{
    size_t cap = b->cap ? b->cap : 8;
    while (cap - b->len < need)
        cap *= 2;
    if (cap > grow_limit)
        return false;
    uint8_t *d = realloc(b->data, cap);
    if (!d)
        return false;
    b->data = d;
    b->cap = cap;
    return true;
}

static void test_growable_buffer(void **state)
{
    (void)state;
    struct wire_buf b;
    grow_limit = 1 << 20;
    wire_buf_init_growable(&b, test_grow);
    for (int i = 0; i < 100; i++)
        wire_build_error(&b, "ERROR", "42601", "a message long enough to need growing");
    assert_false(b.overflow);
    /* Every message is intact: walk the framing. */
    size_t off = 0;
    int n = 0;
    while (off < b.len) {
        uint8_t type;
        uint32_t len;
        assert_int_equal(wire_parse_header(b.data + off, b.len - off, 1 << 20, &type, &len),
                         WIRE_HEADER_OK);
        assert_int_equal(type, 'E');
        off += WIRE_HEADER_LEN + len;
        n++;
    }
    assert_int_equal(n, 100);
    free(b.data);
    /* A grow that fails overflows the buffer and keeps what fitted. */
    grow_limit = 64;
    wire_buf_init_growable(&b, test_grow);
    wire_build_ready(&b, 'I');
    size_t kept = b.len;
    for (int i = 0; i < 10; i++)
        wire_build_error(&b, "ERROR", "42601", "too long for the limit of sixty-four bytes");
    assert_true(b.overflow);
    assert_true(b.len >= kept && b.len <= 64);
    free(b.data);
}

static void test_data_row_int(void **state)
{
    (void)state;
    long long v = 0;
    const uint8_t row[] = {0, 1, 0, 0, 0, 3, '1', '1', '7'};
    assert_true(wire_parse_data_row_int(row, sizeof(row), &v));
    assert_int_equal(v, 117);
    const uint8_t neg[] = {0, 1, 0, 0, 0, 2, '-', '5'};
    assert_true(wire_parse_data_row_int(neg, sizeof(neg), &v));
    assert_int_equal(v, -5);
    const uint8_t null_col[] = {0, 1, 0xff, 0xff, 0xff, 0xff};
    assert_false(wire_parse_data_row_int(null_col, sizeof(null_col), &v));
    const uint8_t text[] = {0, 1, 0, 0, 0, 2, 'o', 'n'};
    assert_false(wire_parse_data_row_int(text, sizeof(text), &v));
    const uint8_t cut[] = {0, 1, 0, 0, 0, 9, '1'};
    assert_false(wire_parse_data_row_int(cut, sizeof(cut), &v));
    const uint8_t none[] = {0, 0};
    assert_false(wire_parse_data_row_int(none, sizeof(none), &v));
    const uint8_t minus[] = {0, 1, 0, 0, 0, 1, '-'};
    assert_false(wire_parse_data_row_int(minus, sizeof(minus), &v));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_header_lengths),   cmocka_unit_test(test_startup_message),
        cmocka_unit_test(test_special_requests), cmocka_unit_test(test_build_and_parse),
        cmocka_unit_test(test_sasl_initial),     cmocka_unit_test(test_growable_buffer),
        cmocka_unit_test(test_data_row_int),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
