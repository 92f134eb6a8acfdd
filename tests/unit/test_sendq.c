/* Unit tests for net_sendq (batched sends through io_uring) on real sockets: several sends
 * to different sockets in one submit, a full peer (-EAGAIN, nothing sent), a closed peer
 * (negative errno, no SIGPIPE), capacity, and an empty submit. Skipped where io_uring is
 * unavailable (net_sendq_new returns NULL). */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "net/sendq.h"

#define MAX_DONE 64

struct outcome {
    void *tag;
    ssize_t result;
};

struct done_log {
    unsigned n;
    struct outcome o[MAX_DONE];
};

static void record_done(void *tag, ssize_t result, void *arg)
{
    struct done_log *log = arg;
    assert_true(log->n < MAX_DONE);
    log->o[log->n].tag = tag;
    log->o[log->n].result = result;
    log->n++;
}

static const struct outcome *outcome_of(const struct done_log *log, void *tag)
{
    const struct outcome *found = NULL;
    for (unsigned i = 0; i < log->n; i++) {
        if (log->o[i].tag == tag) {
            assert_null(found); /* each tag reported once */
            found = &log->o[i];
        }
    }
    assert_non_null(found);
    return found;
}

static struct net_sendq *new_queue_or_skip(unsigned capacity)
{
    char err[256] = "";
    struct net_sendq *q = net_sendq_new(capacity, err, sizeof(err));
    if (!q) {
        print_message("net_sendq_new: %s (skipping)\n", err);
        skip();
    }
    return q;
}

static void set_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    assert_true(fl >= 0);
    assert_int_equal(fcntl(fd, F_SETFL, fl | O_NONBLOCK), 0);
}

static void unix_pair(int sv[2])
{
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
}

/* A connected loopback TCP pair, both ends non-blocking: sv[0] client, sv[1] accepted. */
static void tcp_pair(int sv[2])
{
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(ls >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(ls, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(ls, 1), 0);
    socklen_t alen = sizeof(a);
    assert_int_equal(getsockname(ls, (struct sockaddr *)&a, &alen), 0);
    int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(c >= 0);
    assert_int_equal(connect(c, (struct sockaddr *)&a, sizeof(a)), 0);
    int s = accept4(ls, NULL, NULL, SOCK_CLOEXEC);
    assert_true(s >= 0);
    close(ls);
    int one = 1;
    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    set_nonblock(c);
    set_nonblock(s);
    sv[0] = c;
    sv[1] = s;
}

/* Reads exactly len bytes (the sender already sent them all) and checks nothing follows. */
static void expect_bytes(int fd, const uint8_t *want, size_t len)
{
    uint8_t *got = malloc(len + 1);
    assert_non_null(got);
    size_t have = 0;
    for (int spins = 0; have < len && spins < 100000; spins++) {
        ssize_t n = recv(fd, got + have, len - have, 0);
        if (n > 0)
            have += (size_t)n;
        else if (n == 0)
            break;
        else if (errno != EAGAIN && errno != EINTR)
            fail_msg("recv: %s", strerror(errno));
        else
            usleep(100);
    }
    assert_int_equal(have, len);
    assert_memory_equal(got, want, len);
    assert_int_equal(recv(fd, got, 1, MSG_DONTWAIT), -1);
    assert_true(errno == EAGAIN || errno == EWOULDBLOCK);
    free(got);
}

/* Fills the send path of fd (fd's send buffer and its peer's receive buffer) until send()
 * says EAGAIN. */
static size_t fill_until_eagain(int fd)
{
    static uint8_t junk[65536];
    size_t total = 0;
    for (;;) {
        ssize_t n = send(fd, junk, sizeof(junk), MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n > 0) {
            total += (size_t)n;
            continue;
        }
        assert_int_equal(n, -1);
        if (errno == EINTR)
            continue;
        assert_true(errno == EAGAIN || errno == EWOULDBLOCK);
        /* TCP may take one more small write after the kernel frees memory: settle. */
        usleep(20000);
        n = send(fd, junk, sizeof(junk), MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n > 0) {
            total += (size_t)n;
            continue;
        }
        return total;
    }
}

static ssize_t drain(int fd)
{
    uint8_t buf[65536];
    ssize_t total = 0;
    for (;;) {
        ssize_t n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
        if (n <= 0)
            return total;
        total += n;
    }
}

static void test_many_sockets_one_submit(void **state)
{
    (void)state;
    enum { N = 6 };
    struct net_sendq *q = new_queue_or_skip(16);
    int pairs[N][2];
    uint8_t *data[N];
    size_t lens[N] = {1, 5, 100, 4096, 20000, 777};
    int tags[N];
    for (int i = 0; i < N; i++) {
        if (i % 2)
            tcp_pair(pairs[i]);
        else
            unix_pair(pairs[i]);
        data[i] = malloc(lens[i]);
        assert_non_null(data[i]);
        for (size_t k = 0; k < lens[i]; k++)
            data[i][k] = (uint8_t)(k * 31 + (size_t)i * 7 + 1);
        assert_true(net_sendq_add(q, pairs[i][0], data[i], lens[i], &tags[i]));
        assert_int_equal(net_sendq_pending(q), (unsigned)i + 1);
    }
    struct done_log log = {0};
    assert_true(net_sendq_submit(q, record_done, &log));
    assert_int_equal(log.n, N);
    assert_int_equal(net_sendq_pending(q), 0);
    for (int i = 0; i < N; i++) {
        const struct outcome *o = outcome_of(&log, &tags[i]);
        assert_int_equal(o->result, (ssize_t)lens[i]);
        expect_bytes(pairs[i][1], data[i], lens[i]);
    }
    /* The queue is reusable after a submit. */
    struct done_log log2 = {0};
    assert_true(net_sendq_add(q, pairs[0][0], "again", 5, &tags[0]));
    assert_true(net_sendq_add(q, pairs[1][0], "more", 4, &tags[1]));
    assert_true(net_sendq_submit(q, record_done, &log2));
    assert_int_equal(log2.n, 2);
    assert_int_equal(outcome_of(&log2, &tags[0])->result, 5);
    assert_int_equal(outcome_of(&log2, &tags[1])->result, 4);
    expect_bytes(pairs[0][1], (const uint8_t *)"again", 5);
    expect_bytes(pairs[1][1], (const uint8_t *)"more", 4);
    for (int i = 0; i < N; i++) {
        close(pairs[i][0]);
        close(pairs[i][1]);
        free(data[i]);
    }
    net_sendq_free(q);
}

static void full_peer_case(bool tcp)
{
    struct net_sendq *q = new_queue_or_skip(4);
    int full[2], ok[2];
    if (tcp) {
        tcp_pair(full);
        tcp_pair(ok);
    } else {
        unix_pair(full);
        unix_pair(ok);
    }
    size_t filled = fill_until_eagain(full[0]);
    assert_true(filled > 0);
    static const char msg[] = "after-full";
    int tag_full, tag_ok;
    assert_true(net_sendq_add(q, full[0], msg, sizeof(msg), &tag_full));
    assert_true(net_sendq_add(q, ok[0], msg, sizeof(msg), &tag_ok));
    struct done_log log = {0};
    assert_true(net_sendq_submit(q, record_done, &log));
    assert_int_equal(log.n, 2);
    ssize_t r = outcome_of(&log, &tag_full)->result;
    assert_true(r == -EAGAIN || r == 0);
    /* The other socket in the same batch is unaffected. */
    assert_int_equal(outcome_of(&log, &tag_ok)->result, (ssize_t)sizeof(msg));
    expect_bytes(ok[1], (const uint8_t *)msg, sizeof(msg));
    /* Nothing of the refused send arrived: the peer gets exactly the filler bytes. Shut the
     * writer down so the reader sees the end of the stream. */
    assert_int_equal(shutdown(full[0], SHUT_WR), 0);
    size_t got = 0;
    for (int spins = 0; spins < 20000; spins++) {
        ssize_t n = drain(full[1]);
        got += (size_t)n;
        char c;
        ssize_t e = recv(full[1], &c, 1, MSG_DONTWAIT | MSG_PEEK);
        if (e == 0)
            break;
        usleep(200);
    }
    assert_int_equal(got, filled);
    close(full[0]);
    close(full[1]);
    close(ok[0]);
    close(ok[1]);
    net_sendq_free(q);
}

static void test_full_peer_eagain_unix(void **state)
{
    (void)state;
    full_peer_case(false);
}

static void test_full_peer_eagain_tcp(void **state)
{
    (void)state;
    full_peer_case(true);
}

static volatile sig_atomic_t sigpipes;

static void on_sigpipe(int sig)
{
    (void)sig;
    sigpipes++;
}

static void test_closed_peer_errno_no_sigpipe(void **state)
{
    (void)state;
    struct net_sendq *q = new_queue_or_skip(8);
    struct sigaction sa = {0}, old;
    sa.sa_handler = on_sigpipe;
    sigemptyset(&sa.sa_mask);
    assert_int_equal(sigaction(SIGPIPE, &sa, &old), 0);
    sigpipes = 0;

    int ux[2], tc[2], ok[2];
    unix_pair(ux);
    tcp_pair(tc);
    unix_pair(ok);
    close(ux[1]);
    /* TCP: the peer closes with unread data, so it answers with RST; a send after that fails
     * with ECONNRESET or EPIPE. */
    assert_int_equal(send(tc[1], "x", 1, MSG_NOSIGNAL), 1);
    assert_int_equal(send(tc[0], "unread", 6, MSG_NOSIGNAL), 6);
    usleep(20000);
    close(tc[1]);
    usleep(50000);

    static const char msg[] = "to nobody";
    int tag_ux, tag_tc, tag_ok;
    assert_true(net_sendq_add(q, ux[0], msg, sizeof(msg), &tag_ux));
    assert_true(net_sendq_add(q, tc[0], msg, sizeof(msg), &tag_tc));
    assert_true(net_sendq_add(q, ok[0], msg, sizeof(msg), &tag_ok));
    struct done_log log = {0};
    assert_true(net_sendq_submit(q, record_done, &log));
    assert_int_equal(log.n, 3);
    ssize_t r = outcome_of(&log, &tag_ux)->result;
    assert_true(r == -EPIPE || r == -ECONNRESET);
    r = outcome_of(&log, &tag_tc)->result;
    if (r > 0) {
        /* The RST had not been processed yet: the next send must fail. */
        struct done_log again = {0};
        assert_true(net_sendq_add(q, tc[0], msg, sizeof(msg), &tag_tc));
        usleep(50000);
        assert_true(net_sendq_submit(q, record_done, &again));
        r = outcome_of(&again, &tag_tc)->result;
    }
    assert_true(r == -EPIPE || r == -ECONNRESET);
    assert_int_equal(outcome_of(&log, &tag_ok)->result, (ssize_t)sizeof(msg));
    expect_bytes(ok[1], (const uint8_t *)msg, sizeof(msg));
    assert_int_equal(sigpipes, 0);

    assert_int_equal(sigaction(SIGPIPE, &old, NULL), 0);
    close(ux[0]);
    close(tc[0]);
    close(ok[0]);
    close(ok[1]);
    net_sendq_free(q);
}

static void test_capacity(void **state)
{
    (void)state;
    enum { CAP = 4 };
    struct net_sendq *q = new_queue_or_skip(CAP);
    int sv[2];
    unix_pair(sv);
    int tags[CAP + 1];
    for (int i = 0; i < CAP; i++)
        assert_true(net_sendq_add(q, sv[0], "ab", 2, &tags[i]));
    assert_int_equal(net_sendq_pending(q), CAP);
    assert_false(net_sendq_add(q, sv[0], "zz", 2, &tags[CAP]));
    assert_int_equal(net_sendq_pending(q), CAP);
    struct done_log log = {0};
    assert_true(net_sendq_submit(q, record_done, &log));
    assert_int_equal(log.n, CAP);
    for (int i = 0; i < CAP; i++)
        assert_int_equal(outcome_of(&log, &tags[i])->result, 2);
    /* The refused add sent nothing: exactly CAP * "ab" arrived. */
    expect_bytes(sv[1], (const uint8_t *)"abababab", 2 * CAP);
    /* Room again after the submit. */
    assert_true(net_sendq_add(q, sv[0], "zz", 2, &tags[CAP]));
    assert_int_equal(net_sendq_pending(q), 1);
    struct done_log log2 = {0};
    assert_true(net_sendq_submit(q, record_done, &log2));
    assert_int_equal(log2.n, 1);
    expect_bytes(sv[1], (const uint8_t *)"zz", 2);
    close(sv[0]);
    close(sv[1]);
    net_sendq_free(q);
}

static void must_not_be_called(void *tag, ssize_t result, void *arg)
{
    (void)tag;
    (void)result;
    (void)arg;
    fail_msg("done called for an empty submit");
}

static void test_empty_submit(void **state)
{
    (void)state;
    struct net_sendq *q = new_queue_or_skip(4);
    assert_int_equal(net_sendq_pending(q), 0);
    assert_true(net_sendq_submit(q, must_not_be_called, NULL));
    assert_true(net_sendq_submit(q, must_not_be_called, NULL));
    /* Still works afterwards. */
    int sv[2];
    unix_pair(sv);
    int tag;
    assert_true(net_sendq_add(q, sv[0], "ok", 2, &tag));
    struct done_log log = {0};
    assert_true(net_sendq_submit(q, record_done, &log));
    assert_int_equal(log.n, 1);
    assert_int_equal(outcome_of(&log, &tag)->result, 2);
    expect_bytes(sv[1], (const uint8_t *)"ok", 2);
    assert_true(net_sendq_submit(q, must_not_be_called, NULL));
    close(sv[0]);
    close(sv[1]);
    net_sendq_free(q);
    net_sendq_free(NULL);
}

int main(void)
{
    /* A send that blocks instead of reporting -EAGAIN would hang submit: fail instead. */
    alarm(60);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_many_sockets_one_submit),
        cmocka_unit_test(test_full_peer_eagain_unix),
        cmocka_unit_test(test_full_peer_eagain_tcp),
        cmocka_unit_test(test_closed_peer_errno_no_sigpipe),
        cmocka_unit_test(test_capacity),
        cmocka_unit_test(test_empty_submit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
