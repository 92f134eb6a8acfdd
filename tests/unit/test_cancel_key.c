/* Unit tests for proto/cancel_key: the peer_id and TTL fields sit in the bytes PgBouncer's
 * peering puts them in, the random bits around them survive, and the pid stays positive. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "proto/cancel_key.h"

/* The 8 BackendKeyData bytes as a client sees them. */
static void wire_bytes(uint32_t pid, uint32_t key, uint8_t out[8])
{
    for (int i = 0; i < 4; i++) {
        out[i] = (uint8_t)(pid >> (24 - 8 * i));
        out[4 + i] = (uint8_t)(key >> (24 - 8 * i));
    }
}

static void test_layout(void **state)
{
    (void)state;
    uint32_t pid = 0x7A123456u, key = 0xDEADBEECu; /* TTL bits clear before */
    cancel_key_mark_peer(&pid, &key, 0x1234);
    uint8_t b[8];
    wire_bytes(pid, key, b);
    assert_int_equal(b[1] + (b[2] << 8), 0x1234); /* PgBouncer: key[1] + (key[2] << 8) */
    assert_int_equal(b[0], 0x7A);                 /* random bits kept */
    assert_int_equal(b[3], 0x56);
    assert_int_equal(b[7] & CANCEL_KEY_TTL_MASK, 3);
    assert_int_equal(key & ~CANCEL_KEY_TTL_MASK, 0xDEADBEECu);
    assert_int_equal(cancel_key_peer_id(pid), 0x1234);
    assert_int_equal(cancel_key_ttl(key), 3);
}

static void test_edges(void **state)
{
    (void)state;
    for (int id = 1; id <= CANCEL_KEY_MAX_PEER_ID; id += 997) {
        uint32_t pid = 0x7FFFFFFFu, key = 0;
        cancel_key_mark_peer(&pid, &key, id);
        assert_int_equal(cancel_key_peer_id(pid), id);
        assert_true(pid <= 0x7FFFFFFFu); /* some clients print it as a signed pid */
    }
    uint32_t pid = 0x00FFFF00u, key = 1;
    cancel_key_mark_peer(&pid, &key, 1);
    assert_int_equal(cancel_key_peer_id(pid), 1);
    assert_int_equal(cancel_key_ttl(key - 1), 2); /* one forward */
    assert_int_equal(cancel_key_ttl(key - 3), 0); /* three: no further hop */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_layout),
        cmocka_unit_test(test_edges),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
