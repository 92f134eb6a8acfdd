/* Socket helpers: everything the pooler does with socket system calls except polling. */
#include "net/sock.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

static struct net_tcp_opts tcp_opts = {.keepalive = true};

void net_set_tcp_opts(const struct net_tcp_opts *opts)
{
    tcp_opts = *opts;
}

/* Kernel socket buffers: set on listeners and outgoing sockets with the other options, and
 * again on each accepted client, so that a reload that changes tcp_socket_buffer reaches new
 * clients too (the listener's value is the one they would inherit otherwise). */
static void set_socket_buffer(int fd)
{
    if (tcp_opts.socket_buffer <= 0)
        return;
    (void)setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &tcp_opts.socket_buffer, sizeof(int));
    (void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &tcp_opts.socket_buffer, sizeof(int));
}

static void tune_tcp(int fd)
{
    int one = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (tcp_opts.keepalive) {
        (void)setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
        if (tcp_opts.keepidle_s > 0)
            (void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &tcp_opts.keepidle_s, sizeof(int));
        if (tcp_opts.keepintvl_s > 0)
            (void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &tcp_opts.keepintvl_s, sizeof(int));
        if (tcp_opts.keepcnt > 0)
            (void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &tcp_opts.keepcnt, sizeof(int));
    }
    if (tcp_opts.user_timeout_ms > 0)
        (void)setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &tcp_opts.user_timeout_ms, sizeof(int));
    set_socket_buffer(fd);
}

static int listen_tcp(const char *addr, int port, int backlog, bool defer_accept, bool reuseport,
                      char *err, size_t err_len)
{
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    char portstr[16];
    snprintf(portstr, sizeof(portstr), "%d", port);
    const char *host = (addr == NULL || strcmp(addr, "*") == 0) ? "0.0.0.0" : addr;
    int rc = getaddrinfo(host, portstr, &hints, &res);
    if (rc != 0) {
        snprintf(err, err_len, "cannot resolve listen_addr %s: %s", host, gai_strerror(rc));
        return -1;
    }
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, err_len, "socket: %s", strerror(errno));
        freeaddrinfo(res);
        return -1;
    }
    int one = 1;
    (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0) {
        snprintf(err, err_len, "so_reuseport: %s", strerror(errno));
        close(fd);
        freeaddrinfo(res);
        return -1;
    }
    /* Accepted sockets inherit TCP_NODELAY and SO_KEEPALIVE from the listener on Linux,
     * which saves two system calls per client connection. */
    tune_tcp(fd);
    if (bind(fd, res->ai_addr, res->ai_addrlen) != 0 || listen(fd, backlog) != 0) {
        snprintf(err, err_len, "cannot listen on %s:%d: %s", host, port, strerror(errno));
        close(fd);
        freeaddrinfo(res);
        return -1;
    }
    freeaddrinfo(res);
    if (defer_accept) {
        /* PostgreSQL clients always speak first (startup packet or SSLRequest), so waiting
         * for that packet delays no one. The value is seconds of deferral: a client that
         * stays silent is still accepted after about a second (Linux accepts on the ACK of
         * the retransmitted SYN-ACK), and client_login_timeout then applies as usual. */
        int secs = 1;
        (void)setsockopt(fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &secs, sizeof(secs));
    }
    return fd;
}

int net_listen_tcp(const char *addr, int port, int backlog, bool defer_accept, char *err,
                   size_t err_len)
{
    return listen_tcp(addr, port, backlog, defer_accept, false, err, err_len);
}

int net_listen_tcp_shared(const char *addr, int port, int backlog, bool defer_accept, char *err,
                          size_t err_len)
{
    return listen_tcp(addr, port, backlog, defer_accept, true, err, err_len);
}

int net_listen_unix(const char *dir, int port, int backlog, mode_t mode, gid_t gid, char *path_out,
                    size_t path_len, char *err, size_t err_len)
{
    struct sockaddr_un sun = {0};
    sun.sun_family = AF_UNIX;
    int n = snprintf(sun.sun_path, sizeof(sun.sun_path), "%s/.s.PGSQL.%d", dir, port);
    if (n < 0 || (size_t)n >= sizeof(sun.sun_path)) {
        snprintf(err, err_len, "unix socket path too long in %s", dir);
        return -1;
    }
    snprintf(path_out, path_len, "%s", sun.sun_path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, err_len, "socket: %s", strerror(errno));
        return -1;
    }
    /* A stale socket from a crashed run blocks bind; a live one would accept a connect. */
    int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (probe >= 0) {
        if (connect(probe, (struct sockaddr *)&sun, sizeof(sun)) != 0 && errno == ECONNREFUSED)
            unlink(sun.sun_path);
        close(probe);
    }
    if (bind(fd, (struct sockaddr *)&sun, sizeof(sun)) != 0 || listen(fd, backlog) != 0) {
        snprintf(err, err_len, "cannot listen on %s: %s", sun.sun_path, strerror(errno));
        close(fd);
        return -1;
    }
    /* A socket nobody can reach as asked is a start-up error (PgBouncer stops too), not a
     * listener that silently lets in more, or fewer, users than the file says. */
    if ((gid != (gid_t)-1 && chown(sun.sun_path, (uid_t)-1, gid) != 0) ||
        chmod(sun.sun_path, mode) != 0) {
        snprintf(err, err_len, "cannot set the group or mode of %s: %s", sun.sun_path,
                 strerror(errno));
        close(fd);
        unlink(sun.sun_path);
        return -1;
    }
    return fd;
}

enum net_accept_result net_accept(int lfd, int *fd_out, struct net_addr *peer)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    int fd = accept4(lfd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR || errno == ECONNABORTED)
            return NET_ACCEPT_AGAIN;
        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
            return NET_ACCEPT_NO_FDS;
        return NET_ACCEPT_ERROR;
    }
    if (ss.ss_family == AF_INET || ss.ss_family == AF_INET6)
        set_socket_buffer(fd);
    net_addr_from_sockaddr(peer, (const struct sockaddr *)&ss, sl);
    *fd_out = fd;
    return NET_ACCEPT_OK;
}

void net_addr_from_sockaddr(struct net_addr *out, const struct sockaddr *sa, socklen_t len)
{
    memset(out, 0, sizeof(*out));
    out->family = (uint8_t)sa->sa_family;
    if (sa->sa_family == AF_INET && len >= (socklen_t)sizeof(struct sockaddr_in)) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        memcpy(out->ip, &in->sin_addr, 4);
        out->port = ntohs(in->sin_port);
    } else if (sa->sa_family == AF_INET6 && len >= (socklen_t)sizeof(struct sockaddr_in6)) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        memcpy(out->ip, &in6->sin6_addr, 16);
        out->port = ntohs(in6->sin6_port);
    } else if (sa->sa_family != AF_INET && sa->sa_family != AF_INET6) {
        out->family = AF_UNIX;
    }
}

int net_connect(const char *host, int port, char *err, size_t err_len)
{
    int fd;
    int rc;
    if (host[0] == '/') {
        struct sockaddr_un sun = {0};
        sun.sun_family = AF_UNIX;
        int n = snprintf(sun.sun_path, sizeof(sun.sun_path), "%s/.s.PGSQL.%d", host, port);
        if (n < 0 || (size_t)n >= sizeof(sun.sun_path)) {
            snprintf(err, err_len, "unix socket path too long");
            return -1;
        }
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            snprintf(err, err_len, "socket: %s", strerror(errno));
            return -1;
        }
        rc = connect(fd, (struct sockaddr *)&sun, sizeof(sun));
    } else {
        /* Only numeric hosts come here from the pooler (names go through net_resolve_start
         * first, so the loop never blocks on DNS). */
        struct addrinfo hints = {0}, *res = NULL;
        hints.ai_family = AF_UNSPEC;
        hints.ai_socktype = SOCK_STREAM;
        hints.ai_flags = AI_NUMERICSERV;
        char portstr[16];
        snprintf(portstr, sizeof(portstr), "%d", port);
        int g = getaddrinfo(host, portstr, &hints, &res);
        if (g != 0) {
            snprintf(err, err_len, "cannot resolve %s: %s", host, gai_strerror(g));
            return -1;
        }
        fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            snprintf(err, err_len, "socket: %s", strerror(errno));
            freeaddrinfo(res);
            return -1;
        }
        tune_tcp(fd);
        rc = connect(fd, res->ai_addr, res->ai_addrlen);
        freeaddrinfo(res);
    }
    if (rc != 0 && errno != EINPROGRESS && errno != EAGAIN) {
        snprintf(err, err_len, "connect to %s:%d: %s", host, port, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

bool net_host_is_numeric(const char *host)
{
    struct in6_addr a6;
    struct in_addr a4;
    return inet_pton(AF_INET, host, &a4) == 1 || inet_pton(AF_INET6, host, &a6) == 1;
}

int net_connect_addr(const struct net_sockaddr *addr, char *err, size_t err_len)
{
    int fd = socket(addr->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, err_len, "socket: %s", strerror(errno));
        return -1;
    }
    tune_tcp(fd);
    if (connect(fd, (const struct sockaddr *)&addr->ss, addr->len) != 0 && errno != EINPROGRESS &&
        errno != EAGAIN) {
        snprintf(err, err_len, "connect: %s", strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

int net_connect_result(int fd)
{
    int e = 0;
    socklen_t l = sizeof(e);
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &l) != 0)
        return errno;
    return e;
}

enum net_io_result net_recv(int fd, void *buf, size_t len, size_t *n)
{
    for (;;) {
        ssize_t r = recv(fd, buf, len, 0);
        if (r > 0) {
            *n = (size_t)r;
            return NET_OK;
        }
        if (r == 0)
            return NET_EOF;
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return NET_AGAIN;
        return NET_ERROR;
    }
}

enum net_io_result net_send(int fd, const void *buf, size_t len, size_t *n)
{
    for (;;) {
        ssize_t r = send(fd, buf, len, MSG_NOSIGNAL);
        if (r >= 0) {
            *n = (size_t)r;
            return r > 0 ? NET_OK : NET_AGAIN;
        }
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return NET_AGAIN;
        return NET_ERROR;
    }
}

bool net_writable_now(int fd)
{
    struct pollfd pfd = {.fd = fd, .events = POLLOUT};
    int r;
    do
        r = poll(&pfd, 1, 0);
    while (r < 0 && errno == EINTR);
    return r == 1 && (pfd.revents & POLLOUT) && !(pfd.revents & (POLLERR | POLLHUP));
}

void net_addr_format(const struct net_addr *a, char *out, size_t out_len)
{
    char ip[INET6_ADDRSTRLEN] = "";
    if (a->family == AF_INET) {
        inet_ntop(AF_INET, a->ip, ip, sizeof(ip));
        snprintf(out, out_len, "%s:%u", ip, a->port);
    } else if (a->family == AF_INET6) {
        inet_ntop(AF_INET6, a->ip, ip, sizeof(ip));
        snprintf(out, out_len, "[%s]:%u", ip, a->port);
    } else {
        snprintf(out, out_len, "unix");
    }
}

void net_refuse(int fd, const void *msg, size_t len)
{
    /* Read what the client already sent (its startup packet), so closing does not answer
     * with a reset that could discard the message before the client reads it. */
    char drain[1024];
    for (int i = 0; i < 8 && recv(fd, drain, sizeof(drain), MSG_DONTWAIT) > 0; i++)
        ;
    (void)send(fd, msg, len, MSG_DONTWAIT | MSG_NOSIGNAL);
    shutdown(fd, SHUT_WR);
    close(fd);
}

static bool peer_cred(int fd, struct ucred *cred)
{
    socklen_t len = sizeof(*cred);
    return getsockopt(fd, SOL_SOCKET, SO_PEERCRED, cred, &len) == 0 && len == sizeof(*cred);
}

bool net_peer_uid(int fd, uid_t *uid)
{
    struct ucred cred;
    if (!peer_cred(fd, &cred))
        return false;
    *uid = cred.uid;
    return true;
}

bool net_peer_sockaddr(int fd, struct net_sockaddr *out)
{
    out->len = sizeof(out->ss);
    return fd >= 0 && getpeername(fd, (struct sockaddr *)&out->ss, &out->len) == 0 &&
           out->len <= sizeof(out->ss);
}

bool net_peer_pid(int fd, pid_t *pid)
{
    struct ucred cred;
    if (!peer_cred(fd, &cred) || cred.pid <= 0)
        return false;
    *pid = cred.pid;
    return true;
}
