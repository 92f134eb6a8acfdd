/* Unit tests for pool/conn over TLS (a real handshake on a non-blocking socketpair): reading
 * goes on while tls_read says so, never judged by a short read; a full buffer leaves bytes in
 * OpenSSL that the next fill still gets; a send that would block is finished by offering the
 * same bytes again; the pooler's own short messages do not wait on a blocked socket; the
 * crossed edges of TLS; and plain connections keep their one-send behaviour. Certificates come
 * from scripts/make-test-certs (PGWARDEN_SOURCE_DIR, else found from this file's path). */
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "net/tls.h"
#include "pool/conn.h"

#define PKT_BUF 8192

static char certdir[64];

static int group_setup(void **state)
{
    (void)state;
    char script[PATH_MAX];
    const char *src = getenv("PGWARDEN_SOURCE_DIR");
    if (src) {
        snprintf(script, sizeof(script), "%s/scripts/make-test-certs", src);
    } else {
        snprintf(script, sizeof(script), "%s", __FILE__); /* .../tests/unit/this.c */
        for (int up = 0; up < 3; up++)
            *strrchr(script, '/') = '\0';
        strncat(script, "/scripts/make-test-certs", sizeof(script) - strlen(script) - 1);
    }
    snprintf(certdir, sizeof(certdir), "/tmp/pgwarden-pconn-XXXXXX");
    if (!mkdtemp(certdir))
        return -1;
    char cmd[2 * PATH_MAX];
    snprintf(cmd, sizeof(cmd), "'%s' '%s' >/dev/null", script, certdir);
    return system(cmd) == 0 ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", certdir);
    return system(cmd) == 0 ? 0 : -1;
}

/* A pooler with only what conn.c uses (its buffer cache), and two TLS ends of a socketpair:
 * a (pgwarden accepting a client) and b (its peer). */
struct fixture {
    struct pooler p;
    struct pconn a, b;
    struct tls_context *actx, *cctx;
};

static void fixture_open(struct fixture *f)
{
    memset(f, 0, sizeof(*f));
    iobuf_cache_init(&f->p.bufs, PKT_BUF);
    char key[128], crt[128], err[512] = "";
    snprintf(key, sizeof(key), "%s/server.key", certdir);
    snprintf(crt, sizeof(crt), "%s/server.crt", certdir);
    struct tls_settings as = {
        .side = "client", .sslmode = TLS_REQUIRE, .key_file = key, .cert_file = crt};
    struct tls_settings cs = {.side = "server", .sslmode = TLS_REQUIRE};
    f->actx = tls_context_new_accept(&as, err, sizeof(err));
    f->cctx = tls_context_new_connect(&cs, err, sizeof(err));
    if (!f->actx || !f->cctx)
        fail_msg("context: %s", err);
    int fd[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, fd), 0);
    f->a.fd = fd[0];
    f->b.fd = fd[1];
    f->a.tls = tls_conn_new(f->actx, fd[0], NULL, NULL, 0, err, sizeof(err));
    f->b.tls = tls_conn_new(f->cctx, fd[1], "localhost", NULL, 0, err, sizeof(err));
    assert_non_null(f->a.tls);
    assert_non_null(f->b.tls);
    enum tls_io ra = TLS_IO_WANT_READ, rb = TLS_IO_WANT_READ;
    for (int i = 0; i < 100 && (ra != TLS_IO_DONE || rb != TLS_IO_DONE); i++) {
        rb = tls_handshake(f->b.tls);
        ra = tls_handshake(f->a.tls);
    }
    assert_int_equal(ra, TLS_IO_DONE);
    assert_int_equal(rb, TLS_IO_DONE);
    f->a.may_read = f->b.may_read = true;
}

static void fixture_close(struct fixture *f)
{
    conn_drop_buffer(&f->p, &f->a);
    conn_drop_buffer(&f->p, &f->b);
    tls_conn_free(f->a.tls);
    tls_conn_free(f->b.tls);
    close(f->a.fd);
    close(f->b.fd);
    tls_context_free(f->actx);
    tls_context_free(f->cctx);
    iobuf_cache_destroy(&f->p.bufs);
}

static uint8_t pattern(size_t i)
{
    return (uint8_t)(i * 7 + i / 251);
}

/* Writes n pattern bytes from offset `from` through b's TLS, all of them (the peer reads
 * fast enough: they fit the socket). */
static void peer_write(struct fixture *f, size_t from, size_t n)
{
    uint8_t *data = malloc(n);
    for (size_t i = 0; i < n; i++)
        data[i] = pattern(from + i);
    size_t sent = 0;
    assert_int_equal(tls_write(f->b.tls, data, n, &sent), TLS_IO_DONE);
    assert_int_equal(sent, n);
    free(data);
}

/* Reads everything b sent into a's buffers, a buffer at a time, checking the pattern; stops
 * when conn_fill asks for an edge. Returns the bytes read. */
static size_t read_all(struct fixture *f, size_t from)
{
    size_t got = 0;
    for (int turns = 0; turns < 10000 && f->a.may_read; turns++) {
        enum fill_result r = conn_fill(&f->p, &f->a);
        assert_true(r == FILL_OK || r == FILL_FULL || r == FILL_AGAIN);
        struct iobuf *b = f->a.buf;
        for (uint32_t i = b->pos; i < b->end; i++)
            assert_int_equal(b->data[i], pattern(from + got + (i - b->pos)));
        got += b->end - b->pos;
        b->pos = b->end = 0; /* as if sent on */
        f->a.scan = 0;
    }
    return got;
}

static void test_reads_on_while_tls_says_so(void **state)
{
    (void)state;
    struct fixture f;
    fixture_open(&f);
    /* Four records, more than a buffer: the first fill fills the buffer and leaves the rest
     * inside OpenSSL or the socket, so may_read must stay set although no edge will come. */
    peer_write(&f, 0, 40000);
    assert_int_equal(conn_fill(&f.p, &f.a), FILL_OK);
    assert_int_equal(f.a.buf->end, PKT_BUF);
    assert_true(f.a.may_read);
    assert_int_equal(conn_fill(&f.p, &f.a), FILL_FULL); /* nothing moved: flush first */
    f.a.buf->pos = f.a.buf->end = 0;
    size_t got = PKT_BUF + read_all(&f, PKT_BUF);
    assert_int_equal(got, 40000);
    assert_false(f.a.may_read); /* drained: now an edge is due */
    /* A short message is read whole and then the socket is known drained. */
    peer_write(&f, 40000, 100);
    f.a.may_read = true;
    assert_int_equal(read_all(&f, 40000), 100);
    fixture_close(&f);
}

static void test_close_notify_is_eof(void **state)
{
    (void)state;
    struct fixture f;
    fixture_open(&f);
    peer_write(&f, 0, 10);
    tls_conn_free(f.b.tls); /* sends close_notify */
    f.b.tls = NULL;
    assert_int_equal(conn_fill(&f.p, &f.a), FILL_OK); /* the bytes first ... */
    assert_int_equal(f.a.buf->end, 10);
    assert_true(f.a.may_read);
    assert_int_equal(conn_fill(&f.p, &f.a), FILL_EOF); /* ... then the end */
    fixture_close(&f);
}

static void test_blocked_send_is_finished_with_the_same_bytes(void **state)
{
    (void)state;
    struct fixture f;
    fixture_open(&f);
    /* a's buffer holds a long stream to send to b; b does not read until a blocks. */
    const size_t total = 4 * 1024 * 1024;
    uint8_t *stream = malloc(total);
    for (size_t i = 0; i < total; i++)
        stream[i] = pattern(i);
    size_t off = 0, received = 0, n = 0;
    enum flush_result r = FLUSH_DONE;
    while (off < total && (r = conn_send(&f.b, stream + off, total - off, &n)) == FLUSH_DONE)
        off += n;
    assert_int_equal(r, FLUSH_PARTIAL);
    off += n;
    assert_true(off < total);
    uint8_t *in = malloc(total);
    for (int turns = 0; turns < 100000 && received < total; turns++) {
        size_t got = 0;
        enum tls_io rr = tls_read(f.a.tls, in + received, total - received, &got);
        assert_true(rr == TLS_IO_DONE || rr == TLS_IO_WANT_READ);
        received += got;
        if (off < total) {
            /* The writable edge: the unsent bytes are offered again, never fewer. */
            r = conn_send(&f.b, stream + off, total - off, &n);
            assert_int_not_equal(r, FLUSH_ERROR);
            off += n;
        }
    }
    assert_int_equal(off, total);
    assert_int_equal(received, total);
    assert_memory_equal(in, stream, total);
    /* Blocked again, the pooler's own short messages do not wait: refused at once (the
     * connection is then closed by its owner). */
    while ((r = conn_send(&f.b, stream, total, &n)) == FLUSH_DONE)
        ;
    assert_int_equal(r, FLUSH_PARTIAL);
    assert_false(conn_send_all(&f.b, "Zabc", 4));
    free(in);
    free(stream);
    fixture_close(&f);
}

static void test_crossed_edges(void **state)
{
    (void)state;
    struct pconn c = {.tls = NULL};
    c.read_wants_write = true;
    assert_int_equal(conn_tls_edges(&c, NET_IO_WRITABLE), NET_IO_WRITABLE | NET_IO_READABLE);
    assert_false(c.read_wants_write);
    c.send_wants_read = true;
    assert_int_equal(conn_tls_edges(&c, NET_IO_READABLE), NET_IO_READABLE | NET_IO_WRITABLE);
    assert_false(c.send_wants_read);
    /* Nothing waits: edges pass unchanged. */
    assert_int_equal(conn_tls_edges(&c, NET_IO_READABLE), NET_IO_READABLE);
    c.send_wants_read = true;
    assert_int_equal(conn_tls_edges(&c, NET_IO_WRITABLE), NET_IO_WRITABLE);
    assert_true(c.send_wants_read); /* still waiting for its readable edge */
}

static void test_plain_send_and_flush(void **state)
{
    (void)state;
    struct pooler p;
    memset(&p, 0, sizeof(p));
    iobuf_cache_init(&p.bufs, PKT_BUF);
    int fd[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, fd), 0);
    struct pconn src = {.fd = fd[0], .may_read = true}, dst = {.fd = fd[0]};
    struct pconn peer = {.fd = fd[1], .may_read = true};
    assert_int_equal(write(fd[1], "hello", 5), 5);
    assert_int_equal(conn_fill(&p, &src), FILL_OK);
    assert_false(src.may_read); /* plain: a short read drained the socket */
    src.scan = src.buf->end;
    int64_t counter = 0;
    assert_int_equal(conn_flush(&src, &peer, &counter), FLUSH_DONE);
    assert_int_equal(counter, 5);
    char back[8] = "";
    assert_int_equal(read(fd[0], back, sizeof(back)), 5);
    assert_memory_equal(back, "hello", 5);
    assert_true(conn_send_all(&dst, "abc", 3));
    assert_int_equal(read(fd[1], back, sizeof(back)), 3);
    conn_drop_buffer(&p, &src);
    close(fd[0]);
    close(fd[1]);
    iobuf_cache_destroy(&p.bufs);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reads_on_while_tls_says_so),
        cmocka_unit_test(test_close_notify_is_eof),
        cmocka_unit_test(test_blocked_send_is_finished_with_the_same_bytes),
        cmocka_unit_test(test_crossed_edges),
        cmocka_unit_test(test_plain_send_and_flush),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
