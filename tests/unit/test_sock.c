/* Unit tests for the TCP options every pooler socket gets: tcp_socket_buffer sets the kernel's
 * send and receive buffers on the listener, on outgoing (server) sockets and on each accepted
 * client, and 0 leaves the kernel's default. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cmocka.h>

#include "config/pooler_config.h"
#include "net/sock.h"

static int buffer_of(int fd, int opt)
{
    int v = 0;
    socklen_t len = sizeof(v);
    assert_int_equal(getsockopt(fd, SOL_SOCKET, opt, &v, &len), 0);
    return v;
}

/* A listener on a free loopback port, an outgoing connection to it and the accepted end. */
static void connect_pair(int *lfd, int *out_fd, int *in_fd)
{
    char err[256];
    int port = 0;
    /* net_listen_tcp wants a port number: find a free one through a throwaway socket. */
    int probe = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof(a);
    assert_int_equal(bind(probe, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(getsockname(probe, (struct sockaddr *)&a, &alen), 0);
    port = ntohs(a.sin_port);
    close(probe);

    *lfd = net_listen_tcp("127.0.0.1", port, 8, false, err, sizeof(err));
    assert_true(*lfd >= 0);
    struct net_sockaddr to = {.len = sizeof(struct sockaddr_in)};
    memcpy(&to.ss, &a, sizeof(a));
    *out_fd = net_connect_addr(&to, err, sizeof(err));
    assert_true(*out_fd >= 0);
    struct net_addr peer;
    enum net_accept_result r;
    for (int i = 0; i < 1000; i++) {
        r = net_accept(*lfd, in_fd, &peer);
        if (r != NET_ACCEPT_AGAIN)
            break;
        usleep(1000);
    }
    assert_int_equal(r, NET_ACCEPT_OK);
}

static void test_socket_buffer_set(void **state)
{
    (void)state;
    /* Linux doubles the value (bookkeeping overhead) and reports the doubled size; 32 kB is
     * below the default net.core.[rw]mem_max, so it is not clamped. */
    const int size = 32768;
    struct net_tcp_opts o = {.keepalive = true, .socket_buffer = size};
    net_set_tcp_opts(&o);
    int lfd, out_fd, in_fd;
    connect_pair(&lfd, &out_fd, &in_fd);
    int fds[] = {lfd, out_fd, in_fd};
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(buffer_of(fds[i], SO_SNDBUF), 2 * size);
        assert_int_equal(buffer_of(fds[i], SO_RCVBUF), 2 * size);
    }
    /* A new value (a reload) reaches the next accepted client, not only new listeners. */
    o.socket_buffer = 2 * size;
    net_set_tcp_opts(&o);
    int out2, in2;
    struct net_sockaddr to = {0};
    struct sockaddr_in a;
    socklen_t alen = sizeof(a);
    assert_int_equal(getsockname(lfd, (struct sockaddr *)&a, &alen), 0);
    memcpy(&to.ss, &a, sizeof(a));
    to.len = sizeof(a);
    char err[256];
    out2 = net_connect_addr(&to, err, sizeof(err));
    assert_true(out2 >= 0);
    struct net_addr peer;
    enum net_accept_result r;
    for (int i = 0; i < 1000; i++) {
        r = net_accept(lfd, &in2, &peer);
        if (r != NET_ACCEPT_AGAIN)
            break;
        usleep(1000);
    }
    assert_int_equal(r, NET_ACCEPT_OK);
    assert_int_equal(buffer_of(out2, SO_SNDBUF), 4 * size);
    assert_int_equal(buffer_of(in2, SO_RCVBUF), 4 * size);
    close(out2);
    close(in2);
    for (size_t i = 0; i < 3; i++)
        close(fds[i]);
}

static void test_socket_buffer_default(void **state)
{
    (void)state;
    struct net_tcp_opts o = {.keepalive = true};
    net_set_tcp_opts(&o);
    int plain = socket(AF_INET, SOCK_STREAM, 0);
    int kernel_rcv = buffer_of(plain, SO_RCVBUF);
    close(plain);
    int lfd, out_fd, in_fd;
    connect_pair(&lfd, &out_fd, &in_fd);
    /* Untouched: the kernel's value (a listener's does not move with traffic). */
    assert_int_equal(buffer_of(lfd, SO_RCVBUF), kernel_rcv);
    close(lfd);
    close(out_fd);
    close(in_fd);
}

static void test_socket_buffer_key(void **state)
{
    (void)state;
    struct pooler_config cfg;
    char err[512];
    assert_true(pooler_config_load_string("[pgbouncer]\nauth_type = trust\n", "t.ini", &cfg, err,
                                          sizeof(err)));
    assert_int_equal(cfg.tcp_socket_buffer, 0);
    assert_int_equal(cfg.n_warnings, 0);
    pooler_config_free(&cfg);
    assert_true(
        pooler_config_load_string("[pgbouncer]\nauth_type = trust\ntcp_socket_buffer = 65536\n",
                                  "t.ini", &cfg, err, sizeof(err)));
    assert_int_equal(cfg.tcp_socket_buffer, 65536);
    assert_int_equal(cfg.n_warnings, 0);
    pooler_config_free(&cfg);
    assert_false(pooler_config_load_string("[pgbouncer]\nauth_type = trust\ntcp_socket_buffer = "
                                           "-1\n",
                                           "t.ini", &cfg, err, sizeof(err)));
    assert_non_null(strstr(err, "tcp_socket_buffer"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_socket_buffer_set),
        cmocka_unit_test(test_socket_buffer_default),
        cmocka_unit_test(test_socket_buffer_key),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
