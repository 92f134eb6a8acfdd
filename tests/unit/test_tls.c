/* Unit tests for net/tls: both ends of real handshakes over a non-blocking socketpair driven
 * with poll() (sslmodes, host and certificate failures, client certificates, protocol
 * floor, ALPN, direct TLS with sniffed bytes), a megabyte each way through partial writes
 * and moved buffers, tls_read's end and pending rules, memory of idle connections, the
 * context loaders' messages, and the sslmode/protocol parsers. Certificates come from
 * scripts/make-test-certs (PGWARDEN_SOURCE_DIR, else found from this file's path). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <malloc.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "net/tls.h"

#define CLIENT_CN "alice"
#define ERR_LEN   512

static char certdir[256]; /* short: paths built from it fit PATH_MAX */

/* dir/name in one of 16 rotating buffers: enough for one settings struct. */
static const char *path_of(const char *name)
{
    static char slots[16][PATH_MAX];
    static unsigned next;
    char *p = slots[next++ % 16];
    snprintf(p, PATH_MAX, "%s/%s", certdir, name);
    return p;
}

static int group_setup(void **state)
{
    char script[PATH_MAX];
    const char *src = getenv("PGWARDEN_SOURCE_DIR");
    if (src) {
        snprintf(script, sizeof(script), "%s/scripts/make-test-certs", src);
    } else {
        /* __FILE__ is .../tests/unit/test_tls.c */
        snprintf(script, sizeof(script), "%s", __FILE__);
        for (int up = 0; up < 3; up++) {
            char *slash = strrchr(script, '/');
            if (slash)
                *slash = '\0';
        }
        strncat(script, "/scripts/make-test-certs", sizeof(script) - strlen(script) - 1);
    }
    snprintf(certdir, sizeof(certdir), "/tmp/pgwarden-tls-XXXXXX");
    if (!mkdtemp(certdir))
        return -1;
    char cmd[3 * PATH_MAX];
    snprintf(cmd, sizeof(cmd), "'%s' '%s' %s", script, certdir, CLIENT_CN);
    if (system(cmd) != 0) {
        fprintf(stderr, "cannot make test certificates with %s\n", script);
        return -1;
    }
    /* An encrypted copy of the server key, for the passphrase message. */
    snprintf(cmd, sizeof(cmd),
             "openssl pkey -in '%s/server.key' -aes256 -passout pass:secret -out '%s/enc.key'",
             certdir, certdir);
    return system(cmd) == 0 ? 0 : -1;
}

static int group_teardown(void **state)
{
    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", certdir);
    return system(cmd) == 0 ? 0 : -1;
}

/* ---- contexts and pairs ---- */

/* Accepting (client_tls_*) with the CA-signed localhost certificate. */
static struct tls_settings accept_settings(enum tls_sslmode mode)
{
    return (struct tls_settings){
        .side = "client",
        .sslmode = mode,
        .key_file = path_of("server.key"),
        .cert_file = path_of("server.crt"),
        .ca_file = mode >= TLS_VERIFY_CA ? path_of("ca.crt") : NULL,
    };
}

/* Connecting (server_tls_*), trusting the test CA when the mode verifies. */
static struct tls_settings connect_settings(enum tls_sslmode mode)
{
    return (struct tls_settings){
        .side = "server",
        .sslmode = mode,
        .ca_file = mode >= TLS_VERIFY_CA ? path_of("ca.crt") : NULL,
    };
}

static struct tls_context *new_accept(const struct tls_settings *s)
{
    char err[ERR_LEN] = "";
    struct tls_context *ctx = tls_context_new_accept(s, err, sizeof(err));
    if (!ctx)
        fail_msg("accept context: %s", err);
    return ctx;
}

static struct tls_context *new_connect(const struct tls_settings *s)
{
    char err[ERR_LEN] = "";
    struct tls_context *ctx = tls_context_new_connect(s, err, sizeof(err));
    if (!ctx)
        fail_msg("connect context: %s", err);
    return ctx;
}

/* fd[0] accepts (srv), fd[1] connects (cli). */
struct pair {
    int fd[2];
    struct tls_conn *srv;
    struct tls_conn *cli;
};

static void pair_open(struct pair *p, struct tls_context *actx, struct tls_context *cctx,
                      const char *host)
{
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, p->fd), 0);
    char err[ERR_LEN] = "";
    p->srv = tls_conn_new(actx, p->fd[0], NULL, NULL, 0, err, sizeof(err));
    if (!p->srv)
        fail_msg("tls_conn_new (accept): %s", err);
    p->cli = NULL;
    if (cctx) {
        p->cli = tls_conn_new(cctx, p->fd[1], host, NULL, 0, err, sizeof(err));
        if (!p->cli)
            fail_msg("tls_conn_new (connect): %s", err);
    }
}

static void pair_close(struct pair *p)
{
    tls_conn_free(p->srv);
    tls_conn_free(p->cli);
    close(p->fd[0]);
    close(p->fd[1]);
}

static bool wants(enum tls_io r)
{
    return r == TLS_IO_WANT_READ || r == TLS_IO_WANT_WRITE;
}

/* One side's handshake step, for the driver. */
typedef enum tls_io (*step_fn)(void *arg);

static enum tls_io step_tls(void *conn)
{
    return tls_handshake(conn);
}

/* A plain OpenSSL client, for what our connect side never does (ALPN other than ours). */
static enum tls_io step_raw(void *ssl)
{
    ERR_clear_error();
    int rc = SSL_do_handshake(ssl);
    if (rc == 1)
        return TLS_IO_DONE;
    int e = SSL_get_error(ssl, rc);
    ERR_clear_error();
    return e == SSL_ERROR_WANT_READ    ? TLS_IO_WANT_READ
           : e == SSL_ERROR_WANT_WRITE ? TLS_IO_WANT_WRITE
                                       : TLS_IO_ERROR;
}

/* Runs two handshakes to their ends, waiting with poll() as a loop would. A side that fails
 * shuts its socket down so the other sees the end instead of waiting forever. */
static void drive(step_fn fa, void *a, int fda, enum tls_io *ra, step_fn fb, void *b, int fdb,
                  enum tls_io *rb)
{
    *ra = TLS_IO_WANT_READ;
    *rb = TLS_IO_WANT_READ;
    for (int round = 0; round < 1000; round++) {
        if (wants(*ra)) {
            *ra = fa(a);
            if (*ra == TLS_IO_ERROR)
                shutdown(fda, SHUT_RDWR);
        }
        if (wants(*rb)) {
            *rb = fb(b);
            if (*rb == TLS_IO_ERROR)
                shutdown(fdb, SHUT_RDWR);
        }
        if (!wants(*ra) && !wants(*rb))
            return;
        struct pollfd pfd[2];
        int n = 0;
        if (wants(*ra))
            pfd[n++] = (struct pollfd){fda, *ra == TLS_IO_WANT_WRITE ? POLLOUT : POLLIN, 0};
        if (wants(*rb))
            pfd[n++] = (struct pollfd){fdb, *rb == TLS_IO_WANT_WRITE ? POLLOUT : POLLIN, 0};
        int ready = poll(pfd, (nfds_t)n, 2000);
        if (ready == 0)
            fail_msg("handshake stalled: %s / %s", tls_io_name(*ra), tls_io_name(*rb));
    }
    fail_msg("handshake did not end");
}

static void handshake(struct pair *p, enum tls_io *rs, enum tls_io *rc)
{
    drive(step_tls, p->srv, p->fd[0], rs, step_tls, p->cli, p->fd[1], rc);
}

static void handshake_ok(struct pair *p)
{
    enum tls_io rs, rc;
    handshake(p, &rs, &rc);
    if (rs != TLS_IO_DONE || rc != TLS_IO_DONE)
        fail_msg("handshake: accept %s (%s), connect %s (%s)", tls_io_name(rs), tls_error(p->srv),
                 tls_io_name(rc), tls_error(p->cli));
}

/* Reads into buf until n bytes came, waiting with poll() (the other side must have sent). */
static void read_exactly(struct tls_conn *c, int fd, uint8_t *buf, size_t n)
{
    size_t have = 0;
    while (have < n) {
        size_t got = 0;
        enum tls_io r = tls_read(c, buf + have, n - have, &got);
        have += got;
        if (r == TLS_IO_DONE || have == n) /* WANT_READ may come with the last bytes */
            continue;
        if (!wants(r))
            fail_msg("read: %s (%s)", tls_io_name(r), tls_error(c));
        struct pollfd pfd = {fd, r == TLS_IO_WANT_WRITE ? POLLOUT : POLLIN, 0};
        assert_int_equal(poll(&pfd, 1, 2000), 1);
    }
}

static void write_all(struct tls_conn *c, int fd, const void *buf, size_t n)
{
    size_t done = 0;
    while (done < n) {
        size_t sent = 0;
        enum tls_io r = tls_write(c, (const uint8_t *)buf + done, n - done, &sent);
        done += sent;
        if (r == TLS_IO_DONE)
            continue;
        if (!wants(r))
            fail_msg("write: %s (%s)", tls_io_name(r), tls_error(c));
        struct pollfd pfd = {fd, r == TLS_IO_WANT_WRITE ? POLLOUT : POLLIN, 0};
        assert_int_equal(poll(&pfd, 1, 2000), 1);
    }
}

/* A message crosses in both directions. */
static void exchange(struct pair *p)
{
    uint8_t buf[64];
    write_all(p->cli, p->fd[1], "ping from client", 16);
    read_exactly(p->srv, p->fd[0], buf, 16);
    assert_memory_equal(buf, "ping from client", 16);
    write_all(p->srv, p->fd[0], "pong from server", 16);
    read_exactly(p->cli, p->fd[1], buf, 16);
    assert_memory_equal(buf, "pong from server", 16);
}

static void assert_contains(const char *text, const char *part)
{
    if (!strstr(text, part))
        fail_msg("\"%s\" does not contain \"%s\"", text, part);
}

#define ANY_CLASS (-1)

/* Runs a handshake that must fail on both sides; checks the connecting side's message (and
 * the accepting side's, when expect_srv is given) and the failure classes /metrics counts
 * (unless ANY_CLASS). */
static void connect_fails_as(struct tls_context *actx, struct tls_context *cctx, const char *host,
                             const char *expect_cli, const char *expect_srv, int cli_class,
                             int srv_class)
{
    struct pair p;
    pair_open(&p, actx, cctx, host);
    enum tls_io rs, rc;
    handshake(&p, &rs, &rc);
    print_message("  connect: %s\n  accept: %s\n", tls_error(p.cli), tls_error(p.srv));
    assert_int_equal(rc, TLS_IO_ERROR);
    assert_int_equal(rs, TLS_IO_ERROR);
    assert_contains(tls_error(p.cli), expect_cli);
    if (expect_srv)
        assert_contains(tls_error(p.srv), expect_srv);
    assert_string_equal(tls_version(p.cli), "");
    print_message("  classes: connect %s, accept %s\n", tls_failure_name(tls_failure_of(p.cli)),
                  tls_failure_name(tls_failure_of(p.srv)));
    if (cli_class != ANY_CLASS)
        assert_string_equal(tls_failure_name(tls_failure_of(p.cli)),
                            tls_failure_name((enum tls_failure)cli_class));
    if (srv_class != ANY_CLASS)
        assert_string_equal(tls_failure_name(tls_failure_of(p.srv)),
                            tls_failure_name((enum tls_failure)srv_class));
    pair_close(&p);
}

static void connect_fails(struct tls_context *actx, struct tls_context *cctx, const char *host,
                          const char *expect_cli, const char *expect_srv)
{
    connect_fails_as(actx, cctx, host, expect_cli, expect_srv, ANY_CLASS, ANY_CLASS);
}

/* Most tests: both sides in require mode, contexts made per test (cmocka state). */
struct require_ctx {
    struct tls_context *actx, *cctx;
};

static int require_setup(void **state)
{
    static struct require_ctx r;
    struct tls_settings as = accept_settings(TLS_REQUIRE), cs = connect_settings(TLS_REQUIRE);
    r.actx = new_accept(&as);
    r.cctx = new_connect(&cs);
    *state = &r;
    return 0;
}

static int require_teardown(void **state)
{
    struct require_ctx *r = *state;
    tls_context_free(r->actx);
    tls_context_free(r->cctx);
    return 0;
}

/* A pair on the require contexts, handshake done. */
static void open_connected(struct pair *p, void **state)
{
    const struct require_ctx *r = *state;
    pair_open(p, r->actx, r->cctx, "localhost");
    handshake_ok(p);
}

/* ---- handshakes ---- */

static void test_require(void **state)
{
    const struct require_ctx *rc = *state;
    struct tls_context *actx = rc->actx, *cctx = rc->cctx;
    assert_int_equal(tls_context_sslmode(actx), TLS_REQUIRE);
    struct pair p;
    pair_open(&p, actx, cctx, "db.example.com");
    assert_string_equal(tls_version(p.srv), "");
    assert_string_equal(tls_cipher(p.srv), "");
    assert_string_equal(tls_error(p.srv), "");
    char early[8] = "x";
    assert_int_equal(tls_describe(p.srv, early, sizeof(early)), 0);
    assert_string_equal(early, "");
    handshake_ok(&p);
    exchange(&p);
    assert_string_equal(tls_version(p.srv), "TLSv1.3");
    assert_string_equal(tls_version(p.cli), "TLSv1.3");
    assert_string_equal(tls_cipher(p.srv), tls_cipher(p.cli));
    assert_true(strncmp(tls_cipher(p.srv), "TLS_", 4) == 0);
    char desc[128];
    size_t n = tls_describe(p.srv, desc, sizeof(desc));
    assert_int_equal(n, strlen(desc));
    assert_contains(desc, "TLSv1.3/TLS_");
    assert_contains(desc, "/ECDH=");
    assert_true(tls_alpn_selected(p.srv));
    assert_true(tls_alpn_selected(p.cli));
    char cn[64];
    assert_false(tls_peer_cn(p.srv, cn, sizeof(cn))); /* require asks for no certificate */
    assert_false(tls_peer_cn(p.cli, cn, sizeof(cn))); /* nor checks the server's */
    assert_false(tls_pending(p.srv));
    pair_close(&p);
}

static void test_verify_full(void **state)
{
    struct tls_settings as = accept_settings(TLS_REQUIRE), cs = connect_settings(TLS_VERIFY_FULL);
    struct tls_context *actx = new_accept(&as), *cctx = new_connect(&cs);
    const char *good[] = {"localhost", "127.0.0.1"};
    for (size_t i = 0; i < 2; i++) {
        struct pair p;
        pair_open(&p, actx, cctx, good[i]);
        handshake_ok(&p);
        exchange(&p);
        char cn[64];
        assert_true(tls_peer_cn(p.cli, cn, sizeof(cn))); /* the server's, checked */
        assert_string_equal(cn, "localhost");
        assert_false(tls_peer_cn(p.cli, cn, 5)); /* "localhost" does not fit */
        pair_close(&p);
    }
    connect_fails(actx, cctx, "wronghost", "host name mismatch", "the peer refused");
    connect_fails(actx, cctx, "wronghost", "\"wronghost\"", NULL);
    connect_fails(actx, cctx, "127.0.0.2", "IP address mismatch", NULL);
    /* verify-full cannot check a unix socket or a missing host */
    char err[ERR_LEN] = "";
    int fd[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, fd), 0);
    assert_null(tls_conn_new(cctx, fd[1], "/tmp", NULL, 0, err, sizeof(err)));
    assert_contains(err, "unix socket");
    assert_null(tls_conn_new(cctx, fd[1], NULL, NULL, 0, err, sizeof(err)));
    assert_contains(err, "verify-full needs a host");
    close(fd[0]);
    close(fd[1]);
    tls_context_free(actx);
    tls_context_free(cctx);
}

static void test_verify_ca_failures(void **state)
{
    struct tls_settings cs = connect_settings(TLS_VERIFY_CA);
    struct tls_context *cctx = new_connect(&cs);

    struct tls_settings as = accept_settings(TLS_REQUIRE);
    as.key_file = path_of("untrusted.key");
    as.cert_file = path_of("untrusted.crt");
    struct tls_context *untrusted = new_accept(&as);
    /* OpenSSL 3.0 spells it "self-signed" or "self signed" depending on the release. */
    connect_fails_as(untrusted, cctx, "localhost", "certificate verify failed: self", NULL,
                     TLS_FAILURE_CERTIFICATE, TLS_FAILURE_CERTIFICATE);
    connect_fails(untrusted, cctx, "localhost", "CN=localhost", NULL);

    as.key_file = path_of("expired.key");
    as.cert_file = path_of("expired.crt");
    struct tls_context *expired = new_accept(&as);
    connect_fails(expired, cctx, "localhost", "certificate has expired", NULL);

    /* libpq: require with a root file verifies the chain; prefer does not. */
    struct tls_settings rs = connect_settings(TLS_REQUIRE);
    rs.ca_file = path_of("ca.crt");
    struct tls_context *req = new_connect(&rs);
    connect_fails(untrusted, req, "localhost", "certificate verify failed", NULL);
    rs.sslmode = TLS_PREFER;
    struct tls_context *pref = new_connect(&rs);
    struct pair p;
    pair_open(&p, untrusted, pref, "localhost");
    handshake_ok(&p);
    pair_close(&p);

    /* verify-full with no root file checks against the system's roots (PgBouncer's
     * default): a certificate from the test CA is not among them. */
    struct tls_settings ss = connect_settings(TLS_VERIFY_FULL);
    ss.ca_file = NULL;
    struct tls_context *sys = new_connect(&ss);
    as = accept_settings(TLS_REQUIRE);
    struct tls_context *test_ca_signed = new_accept(&as);
    connect_fails(test_ca_signed, sys, "localhost", "certificate verify failed", NULL);

    tls_context_free(test_ca_signed);
    tls_context_free(sys);
    tls_context_free(pref);
    tls_context_free(req);
    tls_context_free(expired);
    tls_context_free(untrusted);
    tls_context_free(cctx);
}

static void test_client_certificate(void **state)
{
    struct tls_settings as = accept_settings(TLS_VERIFY_FULL);
    struct tls_context *actx = new_accept(&as);
    struct tls_settings cs = connect_settings(TLS_REQUIRE);
    cs.key_file = path_of("client.key");
    cs.cert_file = path_of("client.crt");
    struct tls_context *with_cert = new_connect(&cs);

    struct pair p;
    pair_open(&p, actx, with_cert, "localhost");
    handshake_ok(&p);
    exchange(&p);
    char cn[64] = "";
    assert_true(tls_peer_cn(p.srv, cn, sizeof(cn)));
    assert_string_equal(cn, CLIENT_CN);
    assert_false(tls_peer_cn(p.srv, cn, strlen(CLIENT_CN))); /* no room for the NUL */
    pair_close(&p);

    /* No client certificate: the server refuses. In TLS 1.3 the client's handshake is over
     * before the server has looked, so the client learns it on its first read. */
    struct tls_settings ns = connect_settings(TLS_REQUIRE);
    struct tls_context *no_cert = new_connect(&ns);
    pair_open(&p, actx, no_cert, "localhost");
    enum tls_io rs, rc;
    handshake(&p, &rs, &rc);
    assert_int_equal(rs, TLS_IO_ERROR);
    assert_contains(tls_error(p.srv), "certificate");
    if (rc == TLS_IO_DONE) {
        uint8_t buf[16];
        size_t got = 0;
        enum tls_io r;
        struct pollfd pfd = {p.fd[1], POLLIN, 0};
        while ((r = tls_read(p.cli, buf, sizeof(buf), &got)) == TLS_IO_WANT_READ)
            assert_int_equal(poll(&pfd, 1, 2000), 1);
        assert_int_equal(r, TLS_IO_ERROR);
    }
    assert_contains(tls_error(p.cli), "the peer refused");
    pair_close(&p);

    /* A client certificate from another issuer is refused by the server. */
    cs.key_file = path_of("untrusted.key");
    cs.cert_file = path_of("untrusted.crt");
    struct tls_context *foreign = new_connect(&cs);
    pair_open(&p, actx, foreign, "localhost");
    handshake(&p, &rs, &rc);
    assert_int_equal(rs, TLS_IO_ERROR);
    assert_contains(tls_error(p.srv), "certificate verify failed");
    pair_close(&p);

    tls_context_free(foreign);
    tls_context_free(no_cert);
    tls_context_free(with_cert);
    tls_context_free(actx);
}

static void test_protocol_floor(void **state)
{
    struct tls_settings as = accept_settings(TLS_REQUIRE); /* protocols default: secure */
    struct tls_context *actx = new_accept(&as);
    /* A TLS 1.1 client; security level 0 so that OpenSSL lets it send its hello at all. */
    struct tls_settings cs = connect_settings(TLS_REQUIRE);
    cs.protocols = "tlsv1.1";
    cs.ciphers = "DEFAULT:@SECLEVEL=0";
    struct tls_context *old = new_connect(&cs);
    connect_fails_as(actx, old, "localhost", "the peer refused", "unsupported protocol",
                     TLS_FAILURE_PROTOCOL, TLS_FAILURE_PROTOCOL);

    /* TLS 1.2 only still works against "secure". */
    cs.protocols = "tlsv1.2";
    cs.ciphers = NULL;
    struct tls_context *v12 = new_connect(&cs);
    struct pair p;
    pair_open(&p, actx, v12, "localhost");
    handshake_ok(&p);
    exchange(&p);
    assert_string_equal(tls_version(p.srv), "TLSv1.2");
    assert_true(tls_alpn_selected(p.srv));
    char desc[128];
    tls_describe(p.cli, desc, sizeof(desc));
    print_message("TLS 1.2: %s\n", desc);
    assert_contains(desc, "TLSv1.2/ECDHE-ECDSA-");
    assert_contains(desc, "/ECDH=");
    pair_close(&p);

    /* And a server limited to TLS 1.3 refuses a TLS 1.2-only client. */
    as.protocols = "tlsv1.3";
    struct tls_context *only13 = new_accept(&as);
    connect_fails(only13, v12, "localhost", "the peer refused", "unsupported protocol");

    tls_context_free(only13);
    tls_context_free(v12);
    tls_context_free(old);
    tls_context_free(actx);
}

static void test_curves(void **state)
{
    struct tls_settings as = accept_settings(TLS_REQUIRE);
    struct tls_settings cs = connect_settings(TLS_REQUIRE);
    struct tls_context *cctx = new_connect(&cs);
    const struct {
        const char *setting, *shown;
    } cases[] = {{"prime256v1", "ECDH=prime256v1"}, {"none", "/DH=2048"}};
    for (size_t i = 0; i < 2; i++) {
        as.ecdhcurve = cases[i].setting;
        struct tls_context *actx = new_accept(&as);
        struct pair p;
        pair_open(&p, actx, cctx, "localhost");
        handshake_ok(&p);
        char desc[128];
        tls_describe(p.srv, desc, sizeof(desc));
        assert_contains(desc, cases[i].shown);
        pair_close(&p);
        tls_context_free(actx);
    }
    tls_context_free(cctx);
}

static void test_alpn_rules(void **state)
{
    struct tls_settings as = accept_settings(TLS_REQUIRE);
    struct tls_context *actx = new_accept(&as);
    const struct {
        const unsigned char *alpn;
        unsigned len;
        bool ok, selected;
    } cases[] = {
        {NULL, 0, true, false}, /* no ALPN: none selected */
        {(const unsigned char *)"\x02h2\x0apostgresql", 14, true, true}, /* among others */
        {(const unsigned char *)"\x02h2", 3, false, false}, /* ALPN without postgresql */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct pair p;
        pair_open(&p, actx, NULL, NULL);
        SSL_CTX *raw_ctx = SSL_CTX_new(TLS_client_method());
        assert_non_null(raw_ctx);
        if (cases[i].alpn)
            assert_int_equal(SSL_CTX_set_alpn_protos(raw_ctx, cases[i].alpn, cases[i].len), 0);
        SSL *raw = SSL_new(raw_ctx);
        assert_int_equal(SSL_set_fd(raw, p.fd[1]), 1);
        SSL_set_connect_state(raw);
        enum tls_io rs, rc;
        drive(step_tls, p.srv, p.fd[0], &rs, step_raw, raw, p.fd[1], &rc);
        if (cases[i].ok) {
            assert_int_equal(rs, TLS_IO_DONE);
            assert_int_equal(tls_alpn_selected(p.srv), cases[i].selected);
        } else {
            assert_int_equal(rs, TLS_IO_ERROR);
            print_message("  ALPN h2 only: %s\n", tls_error(p.srv));
            assert_contains(tls_error(p.srv), "application protocol");
        }
        SSL_free(raw);
        SSL_CTX_free(raw_ctx);
        pair_close(&p);
    }
    tls_context_free(actx);
}

/* ---- direct TLS ---- */

static void test_direct_tls_preread(void **state)
{
    const struct require_ctx *rc = *state;
    struct tls_context *actx = rc->actx, *cctx = rc->cctx;
    const size_t sniff[] = {1, 5, 4096}; /* one byte, a record header, all there is */
    for (size_t i = 0; i < 3; i++) {
        int fd[2];
        assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, fd), 0);
        char err[ERR_LEN];
        struct tls_conn *cli = tls_conn_new(cctx, fd[1], "localhost", NULL, 0, err, sizeof(err));
        assert_non_null(cli);
        assert_int_equal(tls_handshake(cli), TLS_IO_WANT_READ); /* ClientHello sent */
        uint8_t first[4096];
        ssize_t n = recv(fd[0], first, sniff[i], 0);
        assert_true(n > 0);
        assert_true(tls_looks_like_client_hello(first, (size_t)n));
        struct tls_conn *srv = tls_conn_new(actx, fd[0], NULL, first, (size_t)n, err, sizeof(err));
        assert_non_null(srv);
        assert_true(tls_pending(srv)); /* the sniffed bytes */
        struct pair p = {{fd[0], fd[1]}, srv, cli};
        handshake_ok(&p);
        assert_true(tls_alpn_selected(srv)); /* mandatory for direct TLS */
        exchange(&p);
        pair_close(&p);
    }
}

static void test_client_hello_detection(void **state)
{
    const uint8_t ssl_request[] = {0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f};
    const uint8_t startup[] = {0, 0, 0, 0x29, 0, 3, 0, 0, 'u', 's', 'e', 'r', 0};
    const uint8_t hello13[] = {0x16, 0x03, 0x01, 0x02, 0x00, 0x01};
    const uint8_t hello_v4[] = {0x16, 0x03, 0x04};
    const uint8_t bad_minor[] = {0x16, 0x03, 0x05};
    const uint8_t bad_major[] = {0x16, 0x02, 0x01};
    const uint8_t alert[] = {0x15, 0x03, 0x01};
    assert_false(tls_looks_like_client_hello(ssl_request, sizeof(ssl_request)));
    assert_false(tls_looks_like_client_hello(startup, sizeof(startup)));
    assert_true(tls_looks_like_client_hello(hello13, sizeof(hello13)));
    assert_true(tls_looks_like_client_hello(hello13, 1));
    assert_true(tls_looks_like_client_hello(hello13, 2));
    assert_true(tls_looks_like_client_hello(hello_v4, sizeof(hello_v4)));
    assert_false(tls_looks_like_client_hello(bad_minor, sizeof(bad_minor)));
    assert_false(tls_looks_like_client_hello(bad_major, sizeof(bad_major)));
    assert_false(tls_looks_like_client_hello(alert, sizeof(alert)));
    assert_false(tls_looks_like_client_hello(hello13, 0));
}

static void test_garbage_instead_of_hello(void **state)
{
    struct tls_settings as = accept_settings(TLS_REQUIRE);
    struct tls_context *actx = new_accept(&as);
    const char *inputs[] = {
        "GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        "\x16\x03\x01\xff\xff garbage that claims a huge record",
        "\x16\x03\x01\x00\x05\x01\x00\x00\x01\x00", /* a tiny, malformed ClientHello */
        "\x00\x00\x00\x08\x04\xd2\x16\x2f",         /* an SSLRequest after 'S' */
    };
    const size_t lens[] = {strlen(inputs[0]), 40, 10, 8};
    for (size_t i = 0; i < 4; i++) {
        struct pair p;
        pair_open(&p, actx, NULL, NULL);
        assert_int_equal(send(p.fd[1], inputs[i], lens[i], 0), (ssize_t)lens[i]);
        shutdown(p.fd[1], SHUT_WR); /* and nothing more */
        enum tls_io r;
        struct pollfd pfd = {p.fd[0], POLLIN, 0};
        while ((r = tls_handshake(p.srv)) == TLS_IO_WANT_READ)
            assert_int_equal(poll(&pfd, 1, 2000), 1);
        assert_int_equal(r, TLS_IO_ERROR);
        print_message("  garbage %zu: %s (%s)\n", i, tls_error(p.srv),
                      tls_failure_name(tls_failure_of(p.srv)));
        assert_true(strlen(tls_error(p.srv)) > 0);
        assert_int_equal(tls_failure_of(p.srv), TLS_FAILURE_PROTOCOL);
        assert_int_equal(tls_handshake(p.srv), TLS_IO_ERROR); /* stays failed */
        size_t got = 1;
        uint8_t buf[8];
        assert_int_equal(tls_read(p.srv, buf, sizeof(buf), &got), TLS_IO_ERROR);
        assert_int_equal(got, 0);
        pair_close(&p);
    }
    tls_context_free(actx);
}

/* ---- data ---- */

static uint32_t rng_state = 12345;

static uint32_t rng(void)
{
    rng_state = rng_state * 1103515245u + 12345u;
    return rng_state >> 8;
}

/* One direction of the bulk transfer: sends through staging buffers that alternate, so a
 * retry after WANT_* offers the same bytes from a different address. */
struct flow {
    struct tls_conn *from, *to;
    const uint8_t *src;
    uint8_t *dst;
    size_t n;
    size_t sent, got;
    size_t retry_len; /* bytes the next write must offer at least */
    enum tls_io wr, rd;
    uint8_t *stage[2];
    unsigned flip;
    unsigned blocked_writes, short_reads;
};

/* Writes until the socket is full or everything is sent. */
static void flow_write(struct flow *f)
{
    while (f->sent < f->n && !wants(f->wr)) {
        size_t len = 1 + rng() % 70000;
        if (len < f->retry_len)
            len = f->retry_len;
        if (len > f->n - f->sent)
            len = f->n - f->sent;
        uint8_t *stage = f->stage[f->flip++ & 1];
        memcpy(stage, f->src + f->sent, len);
        size_t k = 0;
        f->wr = tls_write(f->from, stage, len, &k);
        f->sent += k;
        if (f->wr == TLS_IO_ERROR)
            fail_msg("write: %s", tls_error(f->from));
        if (wants(f->wr)) {
            f->retry_len = len - k;
            f->blocked_writes++;
        } else {
            assert_int_equal(k, len);
            f->retry_len = 0;
        }
    }
}

static void flow_read(struct flow *f)
{
    while (f->got < f->n) {
        size_t room = 1 + rng() % 40000;
        if (room > f->n - f->got)
            room = f->n - f->got;
        size_t k = 0;
        f->rd = tls_read(f->to, f->dst + f->got, room, &k);
        f->got += k;
        if (f->rd == TLS_IO_DONE) {
            assert_int_equal(k, room); /* short only before an end */
            continue;
        }
        if (!wants(f->rd))
            fail_msg("read: %s (%s)", tls_io_name(f->rd), tls_error(f->to));
        if (k > 0)
            f->short_reads++;
        return;
    }
}

static void test_megabyte_both_ways(void **state)
{
    struct pair p;
    open_connected(&p, state);
    const size_t n = 1 << 20;
    struct flow up = {.from = p.cli, .to = p.srv, .n = n},
                down = {.from = p.srv, .to = p.cli, .n = n};
    struct flow *flows[2] = {&up, &down};
    for (int i = 0; i < 2; i++) {
        uint8_t *src = malloc(n);
        flows[i]->dst = malloc(n);
        flows[i]->stage[0] = malloc(70000);
        flows[i]->stage[1] = malloc(70000);
        assert_non_null(src);
        for (size_t j = 0; j < n; j++)
            src[j] = (uint8_t)(rng() + (unsigned)i);
        flows[i]->src = src;
    }
    for (int round = 0; up.got < n || down.got < n; round++) {
        assert_true(round < 100000);
        up.wr = down.wr = TLS_IO_DONE; /* try again after every wait */
        flow_write(&up);
        flow_write(&down);
        flow_read(&up);
        flow_read(&down);
        /* Wait for what each socket is blocked on: its read, and its write if blocked. */
        struct pollfd pfd[2] = {{p.fd[0], 0, 0}, {p.fd[1], 0, 0}};
        if (up.got < n)
            pfd[0].events |= up.rd == TLS_IO_WANT_WRITE ? POLLOUT : POLLIN;
        if (down.sent < n && wants(down.wr))
            pfd[0].events |= down.wr == TLS_IO_WANT_WRITE ? POLLOUT : POLLIN;
        if (down.got < n)
            pfd[1].events |= down.rd == TLS_IO_WANT_WRITE ? POLLOUT : POLLIN;
        if (up.sent < n && wants(up.wr))
            pfd[1].events |= up.wr == TLS_IO_WANT_WRITE ? POLLOUT : POLLIN;
        if (up.got < n || down.got < n)
            assert_true(poll(pfd, 2, 2000) > 0);
    }
    for (int i = 0; i < 2; i++) {
        assert_int_equal(flows[i]->sent, n);
        assert_memory_equal(flows[i]->src, flows[i]->dst, n);
        assert_true(flows[i]->blocked_writes > 0); /* the socket buffer did fill */
        free((void *)flows[i]->src);
        free(flows[i]->dst);
        free(flows[i]->stage[0]);
        free(flows[i]->stage[1]);
    }
    assert_false(tls_pending(p.srv));
    assert_false(tls_pending(p.cli));
    pair_close(&p);
}

static void test_short_retry_refused(void **state)
{
    struct pair p;
    open_connected(&p, state);
    static uint8_t big[1 << 20];
    size_t sent = 0;
    enum tls_io r = tls_write(p.srv, big, sizeof(big), &sent); /* nobody reads */
    assert_int_equal(r, TLS_IO_WANT_WRITE);
    assert_true(sent < sizeof(big));
    size_t left = sizeof(big) - sent;
    size_t again = 1;
    assert_int_equal(tls_write(p.srv, big + sent, left - 1, &again), TLS_IO_ERROR);
    assert_int_equal(again, 0);
    assert_contains(tls_error(p.srv), "write retried");
    pair_close(&p);
}

static void test_pending_and_ends(void **state)
{
    struct pair p;
    open_connected(&p, state);

    /* A 10,000-byte record read 100 bytes at a time: the rest waits inside OpenSSL. */
    static uint8_t msg[10000], back[10000];
    for (size_t i = 0; i < sizeof(msg); i++)
        msg[i] = (uint8_t)(i * 7);
    write_all(p.srv, p.fd[0], msg, sizeof(msg));
    struct pollfd pfd = {p.fd[1], POLLIN, 0};
    assert_int_equal(poll(&pfd, 1, 2000), 1);
    size_t have = 0, got = 0;
    assert_int_equal(tls_read(p.cli, back, 100, &got), TLS_IO_DONE);
    assert_int_equal(got, 100);
    have += got;
    assert_true(tls_pending(p.cli));
    enum tls_io r;
    while ((r = tls_read(p.cli, back + have, 100, &got)) == TLS_IO_DONE)
        have += got;
    have += got;
    assert_int_equal(r, TLS_IO_WANT_READ);
    assert_int_equal(have, sizeof(msg));
    assert_memory_equal(back, msg, sizeof(msg));
    assert_false(tls_pending(p.cli));

    /* Bytes then close_notify: the bytes come first, with DONE though short; then EOF. */
    write_all(p.srv, p.fd[0], "last words", 10);
    tls_conn_free(p.srv); /* sends close_notify */
    p.srv = NULL;
    assert_int_equal(poll(&pfd, 1, 2000), 1);
    uint8_t buf[100];
    assert_int_equal(tls_read(p.cli, buf, sizeof(buf), &got), TLS_IO_DONE);
    assert_int_equal(got, 10);
    assert_memory_equal(buf, "last words", 10);
    assert_true(tls_pending(p.cli)); /* the end is queued */
    assert_int_equal(tls_read(p.cli, buf, sizeof(buf), &got), TLS_IO_EOF);
    assert_int_equal(got, 0);
    assert_int_equal(tls_read(p.cli, buf, sizeof(buf), &got), TLS_IO_EOF); /* sticky */
    pair_close(&p);

    /* Bytes then a bare FIN: truncation is an error, after the bytes. */
    open_connected(&p, state);
    write_all(p.srv, p.fd[0], "cut", 3);
    shutdown(p.fd[0], SHUT_WR);
    pfd.fd = p.fd[1];
    assert_int_equal(poll(&pfd, 1, 2000), 1);
    /* The bytes, with DONE, or with WANT_READ after the short recv that drained the socket
     * (a caller that saw the hang-up reads on); then the error. */
    r = tls_read(p.cli, buf, sizeof(buf), &got);
    assert_true(r == TLS_IO_DONE || r == TLS_IO_WANT_READ);
    assert_int_equal(got, 3);
    assert_int_equal(tls_read(p.cli, buf, sizeof(buf), &got), TLS_IO_ERROR);
    assert_contains(tls_error(p.cli), "without close_notify");
    pair_close(&p);

    /* Writing to a peer that left: an error, and no SIGPIPE kills the test. */
    open_connected(&p, state);
    close(p.fd[1]);
    p.fd[1] = -1;
    size_t sent = 0;
    r = tls_write(p.srv, msg, sizeof(msg), &sent);
    assert_int_equal(r, TLS_IO_ERROR);
    assert_contains(tls_error(p.srv), "Broken pipe");
    pair_close(&p);
}

/* Heap held per idle TLS connection after a handshake and one exchange. Skipped under ASan,
 * whose allocator mallinfo2 does not see. */
static void test_idle_memory(void **state)
{
#if defined(__SANITIZE_ADDRESS__)
    skip();
#else
    enum { N = 32 };
    static struct pair pairs[N];
    open_connected(&pairs[0], state); /* warm up OpenSSL's lazy tables */
    exchange(&pairs[0]);
    pair_close(&pairs[0]);
    size_t before = mallinfo2().uordblks;
    for (int i = 0; i < N; i++) {
        open_connected(&pairs[i], state);
        exchange(&pairs[i]);
    }
    size_t after = mallinfo2().uordblks;
    for (int i = 0; i < N; i++)
        pair_close(&pairs[i]);
    if (after <= before) /* not glibc's allocator (valgrind): nothing to measure */
        skip();
    size_t per_side = (after - before) / (2 * N);
    print_message("heap per idle TLS connection end: %zu bytes\n", per_side);
    /* About 14 kB accepting and 19 kB connecting (OpenSSL 3.0's SSL object alone is 7.6 kB);
     * read and write buffers kept while idle would add 33 kB more. */
    assert_true(per_side < 24 * 1024);
#endif
}

/* ---- contexts ---- */

static void expect_accept_error(const struct tls_settings *s, const char *part1, const char *part2)
{
    char err[ERR_LEN] = "";
    struct tls_context *ctx = tls_context_new_accept(s, err, sizeof(err));
    if (ctx)
        fail_msg("accept context built; expected an error with \"%s\"", part1);
    assert_contains(err, part1);
    if (part2)
        assert_contains(err, part2);
}

static void expect_connect_error(const struct tls_settings *s, const char *part1, const char *part2)
{
    char err[ERR_LEN] = "";
    struct tls_context *ctx = tls_context_new_connect(s, err, sizeof(err));
    if (ctx)
        fail_msg("connect context built; expected an error with \"%s\"", part1);
    assert_contains(err, part1);
    if (part2)
        assert_contains(err, part2);
}

static void test_context_errors(void **state)
{
    struct tls_settings s = accept_settings(TLS_REQUIRE);
    s.key_file = path_of("missing.key");
    expect_accept_error(&s, "client_tls_key_file", "No such file");
    s = accept_settings(TLS_REQUIRE);
    s.cert_file = path_of("server.key"); /* a key where the certificate should be */
    expect_accept_error(&s, "client_tls_cert_file", "no certificate");
    s = accept_settings(TLS_REQUIRE);
    s.key_file = path_of("client.key");
    expect_accept_error(&s, "does not match client_tls_cert_file", NULL);
    s = accept_settings(TLS_REQUIRE);
    s.key_file = path_of("enc.key");
    expect_accept_error(&s, "encrypted", NULL);
    s = accept_settings(TLS_REQUIRE);
    s.key_file = NULL;
    expect_accept_error(&s, "client_tls_sslmode require needs client_tls_key_file", NULL);
    s = accept_settings(TLS_VERIFY_CA);
    s.ca_file = NULL;
    expect_accept_error(&s, "client_tls_sslmode verify-ca needs client_tls_ca_file", NULL);
    s = accept_settings(TLS_VERIFY_CA);
    s.ca_file = path_of("server.key");
    expect_accept_error(&s, "client_tls_ca_file", "no certificates");
    s = accept_settings(TLS_REQUIRE);
    s.ciphers = "NO-SUCH-CIPHER";
    expect_accept_error(&s, "client_tls_ciphers \"NO-SUCH-CIPHER\"", NULL);
    s = accept_settings(TLS_REQUIRE);
    s.tls13_ciphers = "TLS_NOPE";
    expect_accept_error(&s, "client_tls13_ciphers \"TLS_NOPE\"",
                        "failed to set the TLSv1.3 cipher suites");
    s = accept_settings(TLS_REQUIRE);
    s.protocols = "tlsv1.4";
    expect_accept_error(&s, "client_tls_protocols", "tlsv1.4");
    s = accept_settings(TLS_REQUIRE);
    s.dheparams = "legacy";
    expect_accept_error(&s, "client_tls_dheparams legacy", "auto");
    s.dheparams = "huge";
    expect_accept_error(&s, "client_tls_dheparams \"huge\"", NULL);
    s = accept_settings(TLS_REQUIRE);
    s.ecdhcurve = "no-such-curve";
    expect_accept_error(&s, "client_tls_ecdhcurve \"no-such-curve\"", NULL);
    s = accept_settings(TLS_DISABLE);
    expect_accept_error(&s, "disable", NULL);

    /* A FIFO where a file should be: refused, not waited on. */
    const char *fifo = path_of("fifo.key");
    assert_int_equal(mkfifo(fifo, 0600), 0);
    s = accept_settings(TLS_REQUIRE);
    s.key_file = fifo;
    expect_accept_error(&s, "not a regular file", NULL);
    unlink(fifo);

    struct tls_settings c = connect_settings(TLS_VERIFY_CA);
    c.ca_file = NULL;
    expect_connect_error(&c, "server_tls_sslmode verify-ca needs server_tls_ca_file",
                         "only with verify-full");
    c = connect_settings(TLS_VERIFY_CA);
    c.ca_file = "system";
    expect_connect_error(&c, "server_tls_ca_file = system needs", "verify-full");
    c = connect_settings(TLS_REQUIRE);
    c.key_file = path_of("client.key");
    expect_connect_error(&c, "server_tls_key_file and server_tls_cert_file go together", NULL);
    c = connect_settings(TLS_REQUIRE);
    c.key_file = path_of("server.key");
    c.cert_file = path_of("client.crt");
    expect_connect_error(&c, "does not match", NULL);

    /* What is allowed: the system store under verify-full, all the shortcuts. */
    c = connect_settings(TLS_VERIFY_FULL);
    c.ca_file = "system";
    tls_context_free(new_connect(&c));
    s = accept_settings(TLS_REQUIRE);
    s.ciphers = "all";
    s.protocols = "all";
    s.dheparams = "none";
    s.ecdhcurve = "X25519:prime256v1";
    s.tls13_ciphers = "TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256";
    tls_context_free(new_accept(&s));
    s.ciphers = "fast";
    s.dheparams = "auto";
    tls_context_free(new_accept(&s));
    tls_context_free(NULL);
}

static void copy_file(const char *from, const char *to)
{
    char cmd[3 * PATH_MAX];
    snprintf(cmd, sizeof(cmd), "cp '%s' '%s'", from, to);
    assert_int_equal(system(cmd), 0);
}

static void test_reload_contexts(void **state)
{
    /* Files under fixed names whose contents a "reload" replaces. */
    char key[PATH_MAX], crt[PATH_MAX];
    snprintf(key, sizeof(key), "%s/live.key", certdir);
    snprintf(crt, sizeof(crt), "%s/live.crt", certdir);
    copy_file(path_of("server.key"), key);
    copy_file(path_of("server.crt"), crt);
    struct tls_settings s = accept_settings(TLS_REQUIRE);
    s.key_file = key;
    s.cert_file = crt;
    struct tls_context *a = new_accept(&s), *b = new_accept(&s);
    assert_true(tls_context_same(a, b));
    assert_true(tls_context_same(NULL, NULL));
    assert_false(tls_context_same(a, NULL));
    s.ciphers = "HIGH";
    struct tls_context *other = new_accept(&s);
    assert_false(tls_context_same(a, other));
    tls_context_free(other);
    s.ciphers = NULL;

    /* A connection made before the reload keeps the old context alive. */
    struct tls_settings cs = connect_settings(TLS_REQUIRE);
    struct tls_context *cctx = new_connect(&cs);
    struct pair p;
    pair_open(&p, a, cctx, "localhost");
    tls_context_free(a); /* swapped out */
    copy_file(path_of("untrusted.key"), key);
    copy_file(path_of("untrusted.crt"), crt);
    struct tls_context *fresh = new_accept(&s);
    assert_false(tls_context_same(fresh, b)); /* same names, new contents */
    handshake_ok(&p);                         /* on the old context */
    exchange(&p);
    pair_close(&p); /* the old context goes with its last connection */

    /* A broken file: no context, and a reason (the caller keeps the old one). */
    FILE *f = fopen(crt, "w");
    assert_non_null(f);
    fputs("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n", f);
    fclose(f);
    expect_accept_error(&s, "client_tls_cert_file", crt);

    tls_context_free(fresh);
    tls_context_free(b);
    tls_context_free(cctx);
}

/* ---- parsers ---- */

static void test_sslmode_parse(void **state)
{
    const char *names[] = {"disable", "allow", "prefer", "require", "verify-ca", "verify-full"};
    for (int i = 0; i < 6; i++) {
        enum tls_sslmode m = TLS_VERIFY_FULL;
        assert_true(tls_sslmode_parse(names[i], &m));
        assert_int_equal(m, i);
        assert_string_equal(tls_sslmode_name(m), names[i]);
    }
    enum tls_sslmode m = TLS_ALLOW;
    assert_true(tls_sslmode_parse("Verify-Full", &m));
    assert_int_equal(m, TLS_VERIFY_FULL);
    const char *bad[] = {"", "verify", "verify_full", "on", "require "};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        m = TLS_ALLOW;
        assert_false(tls_sslmode_parse(bad[i], &m));
        assert_int_equal(m, TLS_ALLOW);
    }
    assert_false(tls_sslmode_parse(NULL, &m));
    assert_string_equal(tls_sslmode_name((enum tls_sslmode)42), "?");
    assert_true(TLS_REQUIRE > TLS_PREFER && TLS_VERIFY_CA > TLS_REQUIRE);
}

static void protocols_are(const char *text, uint16_t min, uint16_t max)
{
    struct tls_protocols p = {0, 0};
    char err[ERR_LEN] = "";
    if (!tls_protocols_parse(text, &p, err, sizeof(err)))
        fail_msg("\"%s\": %s", text ? text : "(null)", err);
    assert_int_equal(p.min_version, min);
    assert_int_equal(p.max_version, max);
}

static void protocols_bad(const char *text, const char *part)
{
    struct tls_protocols p = {1, 2};
    char err[ERR_LEN] = "";
    assert_false(tls_protocols_parse(text, &p, err, sizeof(err)));
    assert_int_equal(p.min_version, 1); /* untouched */
    assert_contains(err, part);
}

static void test_protocols_parse(void **state)
{
    protocols_are(NULL, TLS_VERSION_1_2, TLS_VERSION_1_3);
    protocols_are("", TLS_VERSION_1_2, TLS_VERSION_1_3);
    protocols_are("secure", TLS_VERSION_1_2, TLS_VERSION_1_3);
    protocols_are("default", TLS_VERSION_1_2, TLS_VERSION_1_3);
    protocols_are("all", TLS_VERSION_1_0, TLS_VERSION_1_3);
    protocols_are("legacy", TLS_VERSION_1_0, TLS_VERSION_1_3);
    protocols_are("tlsv1.2", TLS_VERSION_1_2, TLS_VERSION_1_2);
    protocols_are("tlsv1.3", TLS_VERSION_1_3, TLS_VERSION_1_3);
    protocols_are("tlsv1.2,tlsv1.3", TLS_VERSION_1_2, TLS_VERSION_1_3);
    protocols_are("TLSv1.3:TLSv1.2", TLS_VERSION_1_2, TLS_VERSION_1_3);
    protocols_are(" tlsv1.1 , tlsv1.2 ", TLS_VERSION_1_1, TLS_VERSION_1_2);
    protocols_are("!tlsv1.0", TLS_VERSION_1_1, TLS_VERSION_1_3);
    protocols_are("all,!tlsv1.0,!tlsv1.1", TLS_VERSION_1_2, TLS_VERSION_1_3);
    protocols_are("secure,!tlsv1.3", TLS_VERSION_1_2, TLS_VERSION_1_2);
    protocols_are("tlsv1.0,tlsv1.1", TLS_VERSION_1_0, TLS_VERSION_1_1);
    protocols_bad("tlsv1.4", "unknown protocol \"tlsv1.4\"");
    protocols_bad("sslv3", "unknown protocol");
    protocols_bad("tlsv1.2,,tlsv1.3", "unknown protocol \"\"");
    protocols_bad("tlsv1.0,tlsv1.2", "gap");
    protocols_bad("all,!tlsv1.1", "gap");
    protocols_bad("!all", "no protocol version");
    protocols_bad("secure,!tlsv1.2,!tlsv1.3", "no protocol version");
    char longer[400];
    memset(longer, 'a', sizeof(longer) - 1);
    longer[sizeof(longer) - 1] = '\0';
    protocols_bad(longer, "too long");
    assert_string_equal(tls_io_name(TLS_IO_WANT_WRITE), "want-write");
    assert_string_equal(tls_io_name((enum tls_io)99), "?");
}

int main(void)
{
    /* A handshake or transfer that waits forever fails the test instead of hanging ctest. */
    alarm(120);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_require, require_setup, require_teardown),
        cmocka_unit_test(test_verify_full),
        cmocka_unit_test(test_verify_ca_failures),
        cmocka_unit_test(test_client_certificate),
        cmocka_unit_test(test_protocol_floor),
        cmocka_unit_test(test_curves),
        cmocka_unit_test(test_alpn_rules),
        cmocka_unit_test_setup_teardown(test_direct_tls_preread, require_setup, require_teardown),
        cmocka_unit_test(test_client_hello_detection),
        cmocka_unit_test(test_garbage_instead_of_hello),
        cmocka_unit_test_setup_teardown(test_megabyte_both_ways, require_setup, require_teardown),
        cmocka_unit_test_setup_teardown(test_short_retry_refused, require_setup, require_teardown),
        cmocka_unit_test_setup_teardown(test_pending_and_ends, require_setup, require_teardown),
        cmocka_unit_test_setup_teardown(test_idle_memory, require_setup, require_teardown),
        cmocka_unit_test(test_context_errors),
        cmocka_unit_test(test_reload_contexts),
        cmocka_unit_test(test_sslmode_parse),
        cmocka_unit_test(test_protocols_parse),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
