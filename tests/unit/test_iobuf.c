/* Unit tests for the I/O buffer cache: buffers come back to the free list up to its bound, a
 * buffer grown for one long message keeps its bytes and offsets and is freed, not cached,
 * when it is put back (so the cache never lends out a buffer of another size). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "pool/iobuf.h"

static void test_get_put_reuses(void **state)
{
    (void)state;
    struct iobuf_cache cache;
    iobuf_cache_init(&cache, 64);
    struct iobuf *a = iobuf_get(&cache);
    assert_non_null(a);
    assert_int_equal(a->cap, 64);
    assert_int_equal(cache.n_used, 1);
    iobuf_put(&cache, a);
    assert_int_equal(cache.n_free, 1);
    struct iobuf *b = iobuf_get(&cache);
    assert_ptr_equal(a, b);
    assert_int_equal(b->pos, 0);
    assert_int_equal(b->end, 0);
    iobuf_put(&cache, b);
    iobuf_cache_destroy(&cache);
}

static void test_grow_keeps_bytes_and_is_not_cached(void **state)
{
    (void)state;
    struct iobuf_cache cache;
    iobuf_cache_init(&cache, 64);
    struct iobuf *b = iobuf_get(&cache);
    memset(b->data, 'x', 64);
    b->pos = 10;
    b->end = 64;
    assert_true(iobuf_grow(&b, 32)); /* smaller: nothing to do */
    assert_int_equal(b->cap, 64);
    assert_true(iobuf_grow(&b, 1000));
    assert_int_equal(b->cap, 1000);
    assert_int_equal(b->pos, 10);
    assert_int_equal(b->end, 64);
    for (int i = 0; i < 64; i++)
        assert_int_equal(b->data[i], 'x');
    memset(b->data + 64, 'y', 1000 - 64); /* the new room is usable */
    iobuf_put(&cache, b);
    assert_int_equal(cache.n_used, 0);
    assert_int_equal(cache.n_free, 0); /* freed: the cache keeps pkt_buf-sized buffers only */
    struct iobuf *c = iobuf_get(&cache);
    assert_int_equal(c->cap, 64);
    iobuf_put(&cache, c);
    iobuf_cache_destroy(&cache);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_get_put_reuses),
        cmocka_unit_test(test_grow_keeps_bytes_and_is_not_cached),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
