/* Sockets without the event loop: listeners (TCP, unix), accept4, non-blocking connects,
 * and send/recv wrappers that turn errno into named outcomes. */
#ifndef PGWARDEN_NET_SOCK_H
#define PGWARDEN_NET_SOCK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

/* Compact peer address (kept in every client; sockaddr_storage would be 128 bytes). */
struct net_addr {
    uint8_t family; /* AF_INET, AF_INET6 or AF_UNIX */
    uint16_t port;
    uint8_t ip[16];
};

/* A resolved socket address (IPv4 or IPv6; a unix socket's path from net_peer_sockaddr). */
struct net_sockaddr {
    struct sockaddr_storage ss;
    socklen_t len;
};

/* TCP options applied to every TCP socket the pooler opens or accepts (accepted sockets
 * inherit them from the listener). 0 leaves the kernel default. */
struct net_tcp_opts {
    bool keepalive;
    int keepidle_s;
    int keepintvl_s;
    int keepcnt;
    int user_timeout_ms; /* TCP_USER_TIMEOUT: unacknowledged data makes the connection fail */
    int socket_buffer;   /* SO_SNDBUF and SO_RCVBUF in bytes (the kernel doubles it) */
};
/* Process-wide defaults (set at start-up and on reload; single-threaded). */
void net_set_tcp_opts(const struct net_tcp_opts *opts);

/* True when host is a numeric IPv4/IPv6 address (no DNS needed). */
bool net_host_is_numeric(const char *host);

/* Listening socket on addr ("*" = all IPv4 addresses, or a numeric address) and port.
 * defer_accept sets TCP_DEFER_ACCEPT: the listener turns readable only once a new
 * connection's first packet has arrived, so accepting and reading the startup packet take one
 * wake-up instead of two. Returns the fd or -1 with a reason in err. */
int net_listen_tcp(const char *addr, int port, int backlog, bool defer_accept, char *err,
                   size_t err_len);
/* The same with SO_REUSEPORT: several processes bind the port and the kernel spreads new
 * connections over them (so_reuseport). */
int net_listen_tcp_shared(const char *addr, int port, int backlog, bool defer_accept, char *err,
                          size_t err_len);
/* Listening unix socket dir/.s.PGSQL.<port>; removes a stale socket first. The socket file
 * gets group gid ((gid_t)-1 = the process's) and then the permission bits mode: who may
 * connect is decided by the file (unix_socket_mode, unix_socket_group). */
int net_listen_unix(const char *dir, int port, int backlog, mode_t mode, gid_t gid, char *path_out,
                    size_t path_len, char *err, size_t err_len);

enum net_accept_result {
    NET_ACCEPT_OK,
    NET_ACCEPT_AGAIN,  /* nothing to accept */
    NET_ACCEPT_NO_FDS, /* EMFILE/ENFILE: back off */
    NET_ACCEPT_ERROR,
};
/* accept4(NONBLOCK|CLOEXEC); TCP peers inherit TCP_NODELAY and keepalive from the
 * listener (Linux copies both to accepted sockets); socket_buffer is set on each, so that
 * the current value applies. */
enum net_accept_result net_accept(int lfd, int *fd_out, struct net_addr *peer);

/* Starts a non-blocking connect. host starting with '/' is a unix socket directory.
 * Returns the fd (connecting; completion shows as writability) or -1 with err. */
int net_connect(const char *host, int port, char *err, size_t err_len);
/* Starts a non-blocking TCP connect to an already resolved address. */
int net_connect_addr(const struct net_sockaddr *addr, char *err, size_t err_len);
/* After writability: 0 when connected, else the errno of the failed connect. */
int net_connect_result(int fd);

enum net_io_result {
    NET_OK,    /* *n bytes moved (> 0) */
    NET_AGAIN, /* would block */
    NET_EOF,   /* peer closed (recv only) */
    NET_ERROR, /* connection error (errno kept) */
};
enum net_io_result net_recv(int fd, void *buf, size_t len, size_t *n);
enum net_io_result net_send(int fd, const void *buf, size_t len, size_t *n);
/* Whether the socket reports room to write now (poll, no wait). Linux reports it only with a
 * good share of the send buffer free (a third for TCP, three quarters for unix sockets), so a
 * small message then goes out whole. */
bool net_writable_now(int fd);

/* The Unix user of the process at the other end of a unix socket; false when unknown. */
bool net_peer_uid(int fd, uid_t *uid);
/* The process id of a unix socket's peer (SO_PEERCRED); false when unknown. */
bool net_peer_pid(int fd, pid_t *pid);
/* The address a connected socket's peer is at (getpeername), to open another connection to
 * the very same server; false when unknown. */
bool net_peer_sockaddr(int fd, struct net_sockaddr *out);

/* Best effort: sends msg (an error for the client) on a just-accepted socket and closes it. */
void net_refuse(int fd, const void *msg, size_t len);

/* Fills out from a socket address (AF_UNIX for anything not IPv4/IPv6). */
void net_addr_from_sockaddr(struct net_addr *out, const struct sockaddr *sa, socklen_t len);

/* Formats a peer as "1.2.3.4:5678" or "unix". */
void net_addr_format(const struct net_addr *a, char *out, size_t out_len);

#endif
