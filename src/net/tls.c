/* TLS over OpenSSL 3 for both ends of the pooler: contexts from PgBouncer-style settings and
 * non-blocking per-connection I/O (design notes below; the settings are in docs/TLS.md).
 *
 * Design notes.
 * - I/O goes through our own small socket BIO: recv/send with MSG_NOSIGNAL (no SIGPIPE from
 *   a peer that left), and bytes the caller already read (a direct-TLS ClientHello it
 *   sniffed) are served before the socket. The BIO's data is the tls_conn itself.
 * - Edge-triggered loops lose data when a read stops while bytes remain, so tls_read reads
 *   until the buffer is full or OpenSSL reports WANT_*, and SSL_MODE_AUTO_RETRY stays on:
 *   without it SSL_read may return WANT_READ after a post-handshake record (KeyUpdate)
 *   while application data still waits in the socket. read_ahead lets one recv take
 *   several records.
 * - Idle memory: SSL_MODE_RELEASE_BUFFERS returns OpenSSL's 16 kB read and write buffers
 *   whenever they are empty, and the handshake's are dropped when it ends, so an idle TLS
 *   connection keeps only its SSL object and session.
 * - No session resumption: tickets and the session cache are off on both sides. libpq never
 *   resumes and PostgreSQL turns both off, so tickets would cost two extra records per
 *   client login and a long-lived ticket key for nothing.
 * - OpenSSL's error queue is per thread and shared by every connection: it is cleared before
 *   each call and after each failure, or one connection's leftovers would misreport
 *   another's. */
#include "net/tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#define ALPN_NAME "postgresql"
#define ALPN_LEN  10
/* A CA bundle (the system one is about 200 kB) or a key; anything larger is a mistake. */
#define MAX_PEM_FILE (8u << 20)

struct tls_context {
    SSL_CTX *ssl_ctx; /* owned */
    int refs;         /* the creator's plus one per tls_conn */
    enum tls_sslmode sslmode;
    bool accepting;           /* TLS server role (connections from clients) */
    bool verify_peer;         /* the peer's certificate chain is checked */
    bool verify_host;         /* connecting with verify-full: the host must match too */
    unsigned char digest[32]; /* SHA-256 of the settings and the files' contents */
};

struct tls_conn {
    SSL *ssl;                /* owned */
    struct tls_context *ctx; /* owned reference */
    char *err;               /* owned: the failure, NULL while there is none */
    char *host;              /* owned: the host verify-full checks (messages), or NULL */
    uint8_t *preread;        /* owned: caller-read bytes not yet given to OpenSSL, or NULL */
    size_t preread_len;
    size_t preread_pos;
    size_t write_retry_min; /* after WANT_*: the bytes a retried tls_write must offer */
    int fd;
    uint8_t queued;     /* enum tls_io: an end tls_read reports next, or TLS_IO_DONE */
    bool established;   /* tls_handshake has returned TLS_IO_DONE */
    bool failed;        /* fatal error seen: no close_notify, every call fails */
    bool verify_failed; /* err holds the certificate check's reason */
    bool bio_eof;       /* recv returned 0 */
    bool bio_drained;   /* the last recv filled less than asked: the socket was empty */
    uint8_t failure;    /* enum tls_failure of the failure, valid when failed */
};

/* ---- settings ---- */

static const char *const sslmode_names[] = {
    [TLS_DISABLE] = "disable", [TLS_ALLOW] = "allow",         [TLS_PREFER] = "prefer",
    [TLS_REQUIRE] = "require", [TLS_VERIFY_CA] = "verify-ca", [TLS_VERIFY_FULL] = "verify-full",
};

bool tls_sslmode_parse(const char *text, enum tls_sslmode *out)
{
    if (!text)
        return false;
    for (size_t i = 0; i < sizeof(sslmode_names) / sizeof(sslmode_names[0]); i++) {
        if (strcasecmp(text, sslmode_names[i]) == 0) {
            *out = (enum tls_sslmode)i;
            return true;
        }
    }
    return false;
}

const char *tls_sslmode_name(enum tls_sslmode mode)
{
    if ((unsigned)mode >= sizeof(sslmode_names) / sizeof(sslmode_names[0]))
        return "?";
    return sslmode_names[mode];
}

/* One bit per version, bit 0 = TLS 1.0. */
enum {
    PROTO_ALL = 0xf,
    PROTO_SECURE = 0xc,
};

static unsigned protocol_bits(const char *name)
{
    static const struct {
        const char *name;
        unsigned bits;
    } names[] = {
        {"all", PROTO_ALL},
        {"legacy", PROTO_ALL},
        {"tlsv1", PROTO_ALL},
        {"secure", PROTO_SECURE},
        {"default", PROTO_SECURE},
        {"tlsv1.0", 1},
        {"tlsv1.1", 2},
        {"tlsv1.2", 4},
        {"tlsv1.3", 8},
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (strcasecmp(name, names[i].name) == 0)
            return names[i].bits;
    return 0;
}

bool tls_protocols_parse(const char *text, struct tls_protocols *out, char *err, size_t err_len)
{
    if (!text || !*text)
        text = "secure";
    char copy[256];
    if (strlen(text) >= sizeof(copy)) {
        snprintf(err, err_len, "protocol list too long");
        return false;
    }
    strcpy(copy, text);
    unsigned set = 0;
    bool first = true;
    for (char *rest = copy, *tok; (tok = strsep(&rest, ",:")) != NULL; first = false) {
        while (*tok == ' ' || *tok == '\t')
            tok++;
        size_t n = strlen(tok);
        while (n > 0 && (tok[n - 1] == ' ' || tok[n - 1] == '\t'))
            tok[--n] = '\0';
        bool remove = *tok == '!';
        if (remove)
            tok++;
        unsigned bits = protocol_bits(tok);
        if (bits == 0) {
            snprintf(err, err_len,
                     "unknown protocol \"%s\" (tlsv1.0, tlsv1.1, tlsv1.2, tlsv1.3, all, secure, "
                     "legacy)",
                     tok);
            return false;
        }
        if (remove && first)
            set = PROTO_ALL; /* "!tlsv1.0" alone means all but TLS 1.0 */
        set = remove ? set & ~bits : set | bits;
    }
    if (set == 0) {
        snprintf(err, err_len, "\"%s\" leaves no protocol version", text);
        return false;
    }
    unsigned lo = (unsigned)__builtin_ctz(set), hi = 31u - (unsigned)__builtin_clz(set);
    unsigned range = ((1u << (hi + 1)) - 1) & ~((1u << lo) - 1);
    if (set != range) {
        snprintf(err, err_len,
                 "\"%s\" leaves a gap between versions (OpenSSL allows a range: from a minimum "
                 "to a maximum)",
                 text);
        return false;
    }
    out->min_version = (uint16_t)(TLS_VERSION_1_0 + lo);
    out->max_version = (uint16_t)(TLS_VERSION_1_0 + hi);
    return true;
}

static bool is_set(const char *s)
{
    return s && *s;
}

/* "client_tls_key_file" and the like, for messages. */
static const char *setting_name(char *buf, size_t len, const struct tls_settings *s,
                                const char *what)
{
    if (strcmp(what, "tls13_ciphers") == 0)
        snprintf(buf, len, "%s%s%s", s->side ? s->side : "", s->side ? "_" : "", what);
    else
        snprintf(buf, len, "%s%stls_%s", s->side ? s->side : "", s->side ? "_" : "", what);
    return buf;
}

/* The reason of the oldest error in OpenSSL's queue ("no start line"), then clears it. */
static const char *ssl_reason(char *buf, size_t len)
{
    unsigned long e = ERR_peek_error();
    const char *r = e ? ERR_reason_error_string(e) : NULL;
    if (r)
        snprintf(buf, len, "%s", r);
    else if (e)
        ERR_error_string_n(e, buf, len);
    else
        snprintf(buf, len, "unknown OpenSSL error");
    ERR_clear_error();
    return buf;
}

/* ---- files ---- */

/* Reads a whole PEM file without blocking on a FIFO. Returns malloc'd bytes (caller frees)
 * or NULL with a reason in err. */
static char *read_pem_file(const char *path, const char *setting, size_t *len_out, char *err,
                           size_t err_len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        snprintf(err, err_len, "%s %s: %s", setting, path, strerror(errno));
        return NULL;
    }
    struct stat st;
    char *data = NULL;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(err, err_len, "%s %s: not a regular file", setting, path);
        goto out;
    }
    if ((uint64_t)st.st_size > MAX_PEM_FILE) {
        snprintf(err, err_len, "%s %s: larger than %u MB", setting, path, MAX_PEM_FILE >> 20);
        goto out;
    }
    data = malloc((size_t)st.st_size + 1);
    if (!data) {
        snprintf(err, err_len, "%s %s: out of memory", setting, path);
        goto out;
    }
    size_t got = 0;
    while (got < (size_t)st.st_size) {
        ssize_t r = read(fd, data + got, (size_t)st.st_size - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            snprintf(err, err_len, "%s %s: %s", setting, path,
                     r < 0 ? strerror(errno) : "file shrank while read");
            free(data);
            data = NULL;
            goto out;
        }
        got += (size_t)r;
    }
    data[got] = '\0';
    *len_out = got;
out:
    close(fd);
    return data;
}

/* PEM passphrase callback: there is no one to ask (OpenSSL's default would prompt on the
 * terminal and block the loop). Records that a passphrase was wanted. */
static int no_passphrase(char *buf, int size, int rwflag, void *asked)
{
    if (asked)
        *(bool *)asked = true;
    return -1;
}

/* Everything that goes into a context's digest besides the files. */
static void digest_str(EVP_MD_CTX *md, const char *s)
{
    const char *v = s ? s : "";
    EVP_DigestUpdate(md, v, strlen(v) + 1);
}

/* One context under construction: what the loaders need to report and digest. */
struct builder {
    const struct tls_settings *s;
    struct tls_context *ctx;
    EVP_MD_CTX *md; /* owned */
    char *err;
    size_t err_len;
};

/* One PEM file being loaded: read whole and digested, behind a memory BIO. */
struct pem_input {
    struct builder *b; /* borrowed */
    const char *path;  /* borrowed */
    char name[64];     /* its setting, for messages */
    char *data;        /* owned */
    BIO *bio;          /* owned */
};

static bool pem_open(struct builder *b, const char *what, const char *path, struct pem_input *in)
{
    *in = (struct pem_input){.b = b, .path = path};
    setting_name(in->name, sizeof(in->name), b->s, what);
    size_t len = 0;
    in->data = read_pem_file(path, in->name, &len, b->err, b->err_len);
    if (!in->data)
        return false;
    EVP_DigestUpdate(b->md, what, strlen(what) + 1);
    EVP_DigestUpdate(b->md, in->data, len);
    in->bio = BIO_new_mem_buf(in->data, (int)len);
    if (!in->bio) {
        snprintf(b->err, b->err_len, "%s %s: out of memory", in->name, path);
        free(in->data);
        return false;
    }
    return true;
}

static void pem_close(struct pem_input *in)
{
    BIO_free(in->bio);
    free(in->data);
}

/* "<subject>: <what> (<OpenSSL's reason>)" into the builder's err, either part left out
 * when empty (the reason when OpenSSL's queue is); returns false. */
static bool report(struct builder *b, const char *subject, const char *what)
{
    char why[160] = "";
    if (ERR_peek_error())
        ssl_reason(why, sizeof(why));
    bool both = *what && *why;
    snprintf(b->err, b->err_len, "%s: %s%s%s%s", subject, what, both ? " (" : "", why,
             both ? ")" : "");
    return false;
}

/* "<setting> <path>: ..." */
static bool pem_fail(struct pem_input *in, const char *what)
{
    char subject[PATH_MAX + 80];
    snprintf(subject, sizeof(subject), "%s %s", in->name, in->path);
    return report(in->b, subject, what);
}

/* "<setting> "<value>": ..." */
static bool setting_fail(struct builder *b, const char *setting, const char *value,
                         const char *what)
{
    char name[64], subject[400];
    setting_name(name, sizeof(name), b->s, setting);
    snprintf(subject, sizeof(subject), "%s \"%s\"", name, value);
    return report(b, subject, what);
}

typedef bool (*pem_loader_fn)(struct pem_input *in);

/* Opens the file behind a setting, hands it to load, closes it. */
static bool load_pem(struct builder *b, const char *what, const char *path, pem_loader_fn load)
{
    struct pem_input in;
    if (!pem_open(b, what, path, &in))
        return false;
    bool ok = load(&in);
    pem_close(&in);
    return ok;
}

/* The certificate, then any intermediates (as SSL_CTX_use_certificate_chain_file). */
static bool use_cert_chain(struct pem_input *in)
{
    SSL_CTX *ssl_ctx = in->b->ctx->ssl_ctx;
    X509 *leaf = PEM_read_bio_X509_AUX(in->bio, NULL, no_passphrase, NULL);
    if (!leaf)
        return pem_fail(in, "no certificate");
    bool ok = SSL_CTX_use_certificate(ssl_ctx, leaf) == 1;
    X509_free(leaf);
    if (!ok)
        return pem_fail(in, "");
    X509 *extra;
    while ((extra = PEM_read_bio_X509(in->bio, NULL, no_passphrase, NULL)) != NULL) {
        if (SSL_CTX_add0_chain_cert(ssl_ctx, extra) != 1) {
            X509_free(extra);
            return pem_fail(in, "");
        }
    }
    unsigned long e = ERR_peek_last_error();
    if (e && !(ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE))
        return pem_fail(in, "bad certificate after the first");
    ERR_clear_error(); /* the expected end-of-file "no start line" */
    return true;
}

/* After use_cert_chain: the key must match the certificate. */
static bool use_key(struct pem_input *in)
{
    SSL_CTX *ssl_ctx = in->b->ctx->ssl_ctx;
    bool asked = false;
    EVP_PKEY *key = PEM_read_bio_PrivateKey(in->bio, NULL, no_passphrase, &asked);
    if (!key)
        return pem_fail(in, asked ? "the key is encrypted and pgwarden cannot ask for a passphrase"
                                  : "no private key");
    bool ok = SSL_CTX_use_PrivateKey(ssl_ctx, key) == 1 && SSL_CTX_check_private_key(ssl_ctx) == 1;
    EVP_PKEY_free(key);
    if (ok)
        return true;
    char cert_name[64], what[PATH_MAX + 96];
    setting_name(cert_name, sizeof(cert_name), in->b->s, "cert_file");
    snprintf(what, sizeof(what), "does not match %s %s", cert_name, in->b->s->cert_file);
    return pem_fail(in, what);
}

/* Trusted roots; accepting, they also name the CAs whose client certificates are welcome
 * (the CertificateRequest's list). CRLs and keys in the file are passed over. */
static bool use_ca(struct pem_input *in)
{
    struct tls_context *ctx = in->b->ctx;
    STACK_OF(X509_INFO) *infos = PEM_X509_INFO_read_bio(in->bio, NULL, no_passphrase, NULL);
    if (!infos)
        return pem_fail(in, "");
    X509_STORE *store = SSL_CTX_get_cert_store(ctx->ssl_ctx);
    bool ok = true;
    int added = 0;
    for (int i = 0; ok && i < sk_X509_INFO_num(infos); i++) {
        X509 *x = sk_X509_INFO_value(infos, i)->x509;
        if (!x)
            continue;
        if (X509_STORE_add_cert(store, x) != 1 ||
            (ctx->accepting && SSL_CTX_add_client_CA(ctx->ssl_ctx, x) != 1))
            ok = pem_fail(in, "");
        added++;
    }
    sk_X509_INFO_pop_free(infos, X509_INFO_free);
    if (ok && added == 0)
        ok = pem_fail(in, "no certificates in the file");
    if (ok)
        ERR_clear_error();
    return ok;
}

/* ---- verification and ALPN callbacks ---- */

static void conn_fail(struct tls_conn *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void conn_fail(struct tls_conn *c, const char *fmt, ...)
{
    c->failed = true;
    if (c->verify_failed)
        return; /* the certificate check's reason is the better one */
    free(c->err);
    c->err = NULL;
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(&c->err, fmt, ap) < 0)
        c->err = NULL; /* tls_error falls back to a fixed text */
    va_end(ap);
}

/* Keeps the first certificate failure's details, which OpenSSL's own error ("certificate
 * verify failed") lacks. The verdict stays OpenSSL's. */
static int verify_cb(int ok, X509_STORE_CTX *store)
{
    if (ok)
        return ok;
    SSL *ssl = X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx());
    struct tls_conn *c = ssl ? SSL_get_app_data(ssl) : NULL;
    if (!c || c->verify_failed)
        return ok;
    int code = X509_STORE_CTX_get_error(store);
    if (code == X509_V_ERR_HOSTNAME_MISMATCH) {
        conn_fail(c,
                  "certificate verify failed: host name mismatch: the certificate is not "
                  "for \"%s\"",
                  c->host ? c->host : "?");
    } else if (code == X509_V_ERR_IP_ADDRESS_MISMATCH) {
        conn_fail(c,
                  "certificate verify failed: IP address mismatch: the certificate is not "
                  "for %s",
                  c->host ? c->host : "?");
    } else {
        char subject[256] = "?";
        X509 *cert = X509_STORE_CTX_get_current_cert(store);
        if (cert)
            X509_NAME_oneline(X509_get_subject_name(cert), subject, sizeof(subject));
        conn_fail(c, "certificate verify failed: %s (depth %d, subject %s)",
                  X509_verify_cert_error_string(code), X509_STORE_CTX_get_error_depth(store),
                  subject);
    }
    c->verify_failed = true;
    return ok;
}

/* PostgreSQL's rule: a client that offers ALPN must offer "postgresql", or the handshake
 * ends with no_application_protocol. A client offering none gets none (direct TLS then
 * refuses it through tls_alpn_selected). */
static int alpn_select_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                          const unsigned char *in, unsigned int inlen, void *arg)
{
    for (unsigned i = 0; i < inlen;) {
        unsigned n = in[i];
        if (i + 1 + n > inlen)
            break;
        if (n == ALPN_LEN && memcmp(in + i + 1, ALPN_NAME, ALPN_LEN) == 0) {
            *out = in + i + 1; /* OpenSSL copies the selection */
            *outlen = (unsigned char)n;
            return SSL_TLSEXT_ERR_OK;
        }
        i += 1 + n;
    }
    return SSL_TLSEXT_ERR_ALERT_FATAL;
}

/* ---- contexts ---- */

static bool default_ciphers(const char *c)
{
    return !is_set(c) || strcasecmp(c, "default") == 0 || strcasecmp(c, "secure") == 0 ||
           strcasecmp(c, "fast") == 0 || strcasecmp(c, "normal") == 0;
}

/* What both roles share: versions, ciphers, modes, options. */
static bool configure_common(struct builder *b, const struct tls_protocols *protos)
{
    SSL_CTX *ssl_ctx = b->ctx->ssl_ctx;
    char name[64], why[160];
    /* Partial writes and moving buffers: the caller's unsent bytes move when its buffer
     * slides (conn_fill). AUTO_RETRY: see the design note. */
    SSL_CTX_set_mode(ssl_ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                                  SSL_MODE_RELEASE_BUFFERS | SSL_MODE_AUTO_RETRY);
    SSL_CTX_set_options(ssl_ctx,
                        SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION | SSL_OP_NO_TICKET);
    SSL_CTX_set_read_ahead(ssl_ctx, 1);
    SSL_CTX_set_session_cache_mode(ssl_ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_default_passwd_cb(ssl_ctx, no_passphrase);
    if (SSL_CTX_set_min_proto_version(ssl_ctx, protos->min_version) != 1 ||
        SSL_CTX_set_max_proto_version(ssl_ctx, protos->max_version) != 1) {
        snprintf(b->err, b->err_len, "%s: %s", setting_name(name, sizeof(name), b->s, "protocols"),
                 ssl_reason(why, sizeof(why)));
        return false;
    }
    if (!default_ciphers(b->s->ciphers)) {
        const char *list = strcasecmp(b->s->ciphers, "all") == 0 ? "ALL" : b->s->ciphers;
        if (SSL_CTX_set_cipher_list(ssl_ctx, list) != 1)
            return setting_fail(b, "ciphers", b->s->ciphers, "");
    }
    if (is_set(b->s->tls13_ciphers) && SSL_CTX_set_ciphersuites(ssl_ctx, b->s->tls13_ciphers) != 1)
        return setting_fail(b, "tls13_ciphers", b->s->tls13_ciphers,
                            "failed to set the TLSv1.3 cipher suites");
    return true;
}

static bool configure_accept(struct builder *b)
{
    const struct tls_settings *s = b->s;
    SSL_CTX *ssl_ctx = b->ctx->ssl_ctx;
    char name[64], other[64];
    if (!is_set(s->key_file) || !is_set(s->cert_file)) {
        char mode[64];
        snprintf(b->err, b->err_len, "%s %s needs %s and %s",
                 setting_name(mode, sizeof(mode), s, "sslmode"), tls_sslmode_name(s->sslmode),
                 setting_name(name, sizeof(name), s, "key_file"),
                 setting_name(other, sizeof(other), s, "cert_file"));
        return false;
    }
    if (!load_pem(b, "cert_file", s->cert_file, use_cert_chain) ||
        !load_pem(b, "key_file", s->key_file, use_key))
        return false;
    if (s->sslmode >= TLS_VERIFY_CA) {
        if (!is_set(s->ca_file)) {
            snprintf(b->err, b->err_len, "%s %s needs %s to check client certificates",
                     setting_name(other, sizeof(other), s, "sslmode"), tls_sslmode_name(s->sslmode),
                     setting_name(name, sizeof(name), s, "ca_file"));
            return false;
        }
        if (!load_pem(b, "ca_file", s->ca_file, use_ca))
            return false;
        SSL_CTX_set_verify(
            ssl_ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT | SSL_VERIFY_CLIENT_ONCE,
            verify_cb);
        b->ctx->verify_peer = true;
    } else if (is_set(s->ca_file)) {
        /* Below verify-ca a root file still asks for a certificate without demanding one,
         * and checks one that comes (PostgreSQL's and PgBouncer's rule): `cert` lines of
         * auth_hba_file work under require. */
        if (!load_pem(b, "ca_file", s->ca_file, use_ca))
            return false;
        SSL_CTX_set_verify(ssl_ctx, SSL_VERIFY_PEER | SSL_VERIFY_CLIENT_ONCE, verify_cb);
        b->ctx->verify_peer = true;
    } else {
        SSL_CTX_set_verify(ssl_ctx, SSL_VERIFY_NONE, NULL);
    }
    /* Required by OpenSSL whenever client certificates are verified; cheap otherwise. */
    SSL_CTX_set_session_id_context(ssl_ctx, (const unsigned char *)"pgwarden", 8);
    SSL_CTX_set_num_tickets(ssl_ctx, 0);
    SSL_CTX_set_options(ssl_ctx, SSL_OP_CIPHER_SERVER_PREFERENCE);
    SSL_CTX_set_alpn_select_cb(ssl_ctx, alpn_select_cb, NULL);

    const char *dh = is_set(s->dheparams) ? s->dheparams : "auto";
    if (strcasecmp(dh, "auto") == 0) {
        SSL_CTX_set_dh_auto(ssl_ctx, 1);
    } else if (strcasecmp(dh, "legacy") == 0) {
        snprintf(b->err, b->err_len,
                 "%s legacy (1024-bit DH) is not supported: OpenSSL 3 refuses it at its default "
                 "security level; use auto",
                 setting_name(name, sizeof(name), s, "dheparams"));
        return false;
    } else if (strcasecmp(dh, "none") != 0) {
        return setting_fail(b, "dheparams", dh, "expected none, auto or legacy");
    }
    const char *curve = is_set(s->ecdhcurve) ? s->ecdhcurve : "auto";
    if (strcasecmp(curve, "none") == 0) {
        /* No elliptic curves: key exchange falls back to finite-field DH groups. */
        curve = "ffdhe2048:ffdhe3072:ffdhe4096:ffdhe6144:ffdhe8192";
    }
    if (strcasecmp(curve, "auto") != 0 && SSL_CTX_set1_groups_list(ssl_ctx, curve) != 1)
        return setting_fail(b, "ecdhcurve", s->ecdhcurve, "unknown curve");
    return true;
}

static bool configure_connect(struct builder *b)
{
    const struct tls_settings *s = b->s;
    SSL_CTX *ssl_ctx = b->ctx->ssl_ctx;
    char name[64], other[64], why[160];
    if (is_set(s->key_file) != is_set(s->cert_file)) {
        snprintf(b->err, b->err_len, "%s and %s go together (a client certificate and its key)",
                 setting_name(name, sizeof(name), s, "key_file"),
                 setting_name(other, sizeof(other), s, "cert_file"));
        return false;
    }
    if (is_set(s->cert_file) && (!load_pem(b, "cert_file", s->cert_file, use_cert_chain) ||
                                 !load_pem(b, "key_file", s->key_file, use_key)))
        return false;
    setting_name(name, sizeof(name), s, "ca_file");
    /* verify-full without a file checks against the system's roots, as PgBouncer does. */
    bool system_roots =
        is_set(s->ca_file) ? strcmp(s->ca_file, "system") == 0 : s->sslmode == TLS_VERIFY_FULL;
    if (s->sslmode == TLS_VERIFY_CA && !is_set(s->ca_file)) {
        snprintf(b->err, b->err_len,
                 "%s verify-ca needs %s (a root certificate file; the system's roots only with "
                 "verify-full)",
                 setting_name(other, sizeof(other), s, "sslmode"), name);
        return false;
    }
    if (system_roots && s->sslmode != TLS_VERIFY_FULL) {
        /* libpq's rule for sslrootcert=system: public CAs sign anyone's host name. */
        snprintf(b->err, b->err_len, "%s = system needs %s verify-full, not %s", name,
                 setting_name(other, sizeof(other), s, "sslmode"), tls_sslmode_name(s->sslmode));
        return false;
    }
    /* libpq: require with a root certificate file verifies the chain like verify-ca. */
    bool verify = s->sslmode >= TLS_VERIFY_CA || (s->sslmode == TLS_REQUIRE && is_set(s->ca_file));
    if (verify && system_roots) {
        if (SSL_CTX_set_default_verify_paths(ssl_ctx) != 1) {
            snprintf(b->err, b->err_len, "%s = system: %s", name, ssl_reason(why, sizeof(why)));
            return false;
        }
    } else if (verify && !load_pem(b, "ca_file", s->ca_file, use_ca)) {
        return false;
    }
    SSL_CTX_set_verify(ssl_ctx, verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE,
                       verify ? verify_cb : NULL);
    b->ctx->verify_peer = verify;
    b->ctx->verify_host = s->sslmode == TLS_VERIFY_FULL;
    /* As libpq 17 does; servers before PostgreSQL 17 ignore it. */
    if (SSL_CTX_set_alpn_protos(ssl_ctx, (const unsigned char *)"\x0a" ALPN_NAME, ALPN_LEN + 1) !=
        0) {
        snprintf(b->err, b->err_len, "ALPN: %s", ssl_reason(why, sizeof(why)));
        return false;
    }
    return true;
}

static struct tls_context *context_new(const struct tls_settings *s, bool accepting, char *err,
                                       size_t err_len)
{
    char name[64];
    struct tls_protocols protos;
    char why[160];
    if (s->sslmode == TLS_DISABLE || (unsigned)s->sslmode > TLS_VERIFY_FULL) {
        snprintf(err, err_len, "%s %s: no TLS context is needed",
                 setting_name(name, sizeof(name), s, "sslmode"), tls_sslmode_name(s->sslmode));
        return NULL;
    }
    if (!tls_protocols_parse(s->protocols, &protos, why, sizeof(why))) {
        snprintf(err, err_len, "%s: %s", setting_name(name, sizeof(name), s, "protocols"), why);
        return NULL;
    }
    ERR_clear_error();
    struct builder b = {.s = s, .err = err, .err_len = err_len};
    b.ctx = calloc(1, sizeof(*b.ctx));
    b.md = EVP_MD_CTX_new();
    if (!b.ctx || !b.md || EVP_DigestInit_ex(b.md, EVP_sha256(), NULL) != 1) {
        snprintf(err, err_len, "out of memory");
        goto fail;
    }
    b.ctx->refs = 1;
    b.ctx->sslmode = s->sslmode;
    b.ctx->accepting = accepting;
    b.ctx->ssl_ctx = SSL_CTX_new(accepting ? TLS_server_method() : TLS_client_method());
    if (!b.ctx->ssl_ctx) {
        snprintf(err, err_len, "cannot create an OpenSSL context: %s",
                 ssl_reason(why, sizeof(why)));
        goto fail;
    }
    const char *fields[] = {accepting ? "accept" : "connect",
                            tls_sslmode_name(s->sslmode),
                            s->key_file,
                            s->cert_file,
                            s->ca_file,
                            s->protocols,
                            s->ciphers,
                            s->tls13_ciphers,
                            s->dheparams,
                            s->ecdhcurve};
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++)
        digest_str(b.md, fields[i]);
    if (!configure_common(&b, &protos))
        goto fail;
    if (!(accepting ? configure_accept(&b) : configure_connect(&b)))
        goto fail;
    unsigned int dlen = 0;
    EVP_DigestFinal_ex(b.md, b.ctx->digest, &dlen);
    EVP_MD_CTX_free(b.md);
    ERR_clear_error();
    return b.ctx;
fail:
    EVP_MD_CTX_free(b.md);
    if (b.ctx) {
        SSL_CTX_free(b.ctx->ssl_ctx);
        free(b.ctx);
    }
    ERR_clear_error();
    return NULL;
}

struct tls_context *tls_context_new_accept(const struct tls_settings *s, char *err, size_t err_len)
{
    return context_new(s, true, err, err_len);
}

struct tls_context *tls_context_new_connect(const struct tls_settings *s, char *err, size_t err_len)
{
    return context_new(s, false, err, err_len);
}

void tls_context_free(struct tls_context *ctx)
{
    if (!ctx || --ctx->refs > 0)
        return;
    SSL_CTX_free(ctx->ssl_ctx);
    free(ctx);
}

enum tls_sslmode tls_context_sslmode(const struct tls_context *ctx)
{
    return ctx->sslmode;
}

bool tls_context_same(const struct tls_context *a, const struct tls_context *b)
{
    if (!a || !b)
        return a == b;
    return memcmp(a->digest, b->digest, sizeof(a->digest)) == 0;
}

/* ---- the socket BIO (design note at the top) ---- */

static int bio_read(BIO *bio, char *out, int outl)
{
    struct tls_conn *c = BIO_get_data(bio);
    BIO_clear_retry_flags(bio);
    if (outl <= 0)
        return 0;
    if (c->preread) {
        size_t n = c->preread_len - c->preread_pos;
        if (n > (size_t)outl)
            n = (size_t)outl;
        memcpy(out, c->preread + c->preread_pos, n);
        c->preread_pos += n;
        if (c->preread_pos == c->preread_len) {
            free(c->preread);
            c->preread = NULL;
        }
        return (int)n;
    }
    ssize_t r;
    do
        r = recv(c->fd, out, (size_t)outl, 0);
    while (r < 0 && errno == EINTR);
    if (r > 0) {
        c->bio_drained = r < outl;
        return (int)r;
    }
    if (r == 0) {
        c->bio_eof = true;
        return 0;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK)
        BIO_set_retry_read(bio);
    return -1;
}

static int bio_write(BIO *bio, const char *in, int inl)
{
    struct tls_conn *c = BIO_get_data(bio);
    BIO_clear_retry_flags(bio);
    if (inl <= 0)
        return 0;
    ssize_t r;
    do
        r = send(c->fd, in, (size_t)inl, MSG_NOSIGNAL);
    while (r < 0 && errno == EINTR);
    if (r >= 0)
        return (int)r;
    if (errno == EAGAIN || errno == EWOULDBLOCK)
        BIO_set_retry_write(bio);
    return -1;
}

static long bio_ctrl(BIO *bio, int cmd, long num, void *ptr)
{
    struct tls_conn *c = BIO_get_data(bio);
    switch (cmd) {
    case BIO_CTRL_FLUSH:
    case BIO_CTRL_DUP:
        return 1;
    case BIO_CTRL_EOF: /* tells OpenSSL that a 0 from read was the peer closing */
        return c->bio_eof;
    case BIO_CTRL_PENDING:
        return c->preread ? (long)(c->preread_len - c->preread_pos) : 0;
    case BIO_C_GET_FD:
        if (ptr)
            *(int *)ptr = c->fd;
        return c->fd;
    default:
        return 0;
    }
}

static int bio_create(BIO *bio)
{
    BIO_set_init(bio, 1);
    return 1;
}

/* One method for the process; the pooler is single-threaded. */
static BIO_METHOD *bio_method(void)
{
    static BIO_METHOD *method;
    if (method)
        return method;
    BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK | BIO_TYPE_DESCRIPTOR,
                                 "pgwarden socket");
    if (!m)
        return NULL;
    if (!BIO_meth_set_read(m, bio_read) || !BIO_meth_set_write(m, bio_write) ||
        !BIO_meth_set_ctrl(m, bio_ctrl) || !BIO_meth_set_create(m, bio_create)) {
        BIO_meth_free(m);
        return NULL;
    }
    method = m;
    return method;
}

/* ---- connections ---- */

struct tls_conn *tls_conn_new(struct tls_context *ctx, int fd, const char *host,
                              const void *preread, size_t preread_len, char *err, size_t err_len)
{
    ERR_clear_error();
    char why[160];
    struct tls_conn *c = calloc(1, sizeof(*c));
    if (!c) {
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    c->fd = fd;
    c->failure = TLS_FAILURE_OTHER; /* outcome() names the class of each failure it sees */
    c->ctx = ctx;
    ctx->refs++;
    BIO_METHOD *method = bio_method();
    BIO *bio = method ? BIO_new(method) : NULL;
    c->ssl = bio ? SSL_new(ctx->ssl_ctx) : NULL;
    if (!c->ssl) {
        BIO_free(bio);
        snprintf(err, err_len, "cannot create a TLS connection: %s", ssl_reason(why, sizeof(why)));
        goto fail;
    }
    BIO_set_data(bio, c);
    SSL_set_bio(c->ssl, bio, bio); /* the SSL owns the BIO now */
    SSL_set_app_data(c->ssl, c);
    if (preread_len > 0) {
        c->preread = malloc(preread_len);
        if (!c->preread) {
            snprintf(err, err_len, "out of memory");
            goto fail;
        }
        memcpy(c->preread, preread, preread_len);
        c->preread_len = preread_len;
    }
    if (ctx->accepting) {
        SSL_set_accept_state(c->ssl);
        return c;
    }
    SSL_set_connect_state(c->ssl);
    bool have_host = is_set(host) && host[0] != '/';
    if (ctx->verify_host && !have_host) {
        snprintf(err, err_len, "sslmode verify-full needs a host name or address to check%s",
                 is_set(host) ? ", not a unix socket" : "");
        goto fail;
    }
    if (!have_host)
        return c;
    unsigned char addr[16];
    bool numeric = inet_pton(AF_INET, host, addr) == 1 || inet_pton(AF_INET6, host, addr) == 1;
    /* SNI carries names only (RFC 6066), as libpq's sslsni. */
    if (!numeric && SSL_set_tlsext_host_name(c->ssl, host) != 1) {
        snprintf(err, err_len, "host name \"%s\": %s", host, ssl_reason(why, sizeof(why)));
        goto fail;
    }
    if (ctx->verify_host) {
        c->host = strdup(host);
        X509_VERIFY_PARAM *param = SSL_get0_param(c->ssl);
        int ok;
        if (numeric) {
            ok = X509_VERIFY_PARAM_set1_ip_asc(param, host);
        } else {
            /* libpq accepts a wildcard only as the whole leftmost label. */
            SSL_set_hostflags(c->ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
            ok = SSL_set1_host(c->ssl, host);
        }
        if (!c->host || ok != 1) {
            snprintf(err, err_len, "host \"%s\": cannot be checked (%s)", host,
                     ssl_reason(why, sizeof(why)));
            goto fail;
        }
    }
    return c;
fail:
    ERR_clear_error();
    c->failed = true; /* no close_notify from tls_conn_free */
    tls_conn_free(c);
    return NULL;
}

void tls_conn_free(struct tls_conn *c)
{
    if (!c)
        return;
    if (c->ssl) {
        if (!c->failed && SSL_is_init_finished(c->ssl)) {
            /* One attempt: queues close_notify in the socket or gives up; never waits for
             * the peer's. */
            ERR_clear_error();
            (void)SSL_shutdown(c->ssl);
            ERR_clear_error();
        }
        SSL_free(c->ssl);
    }
    free(c->err);
    free(c->host);
    free(c->preread);
    tls_context_free(c->ctx);
    free(c);
}

const char *tls_io_name(enum tls_io r)
{
    switch (r) {
    case TLS_IO_DONE:
        return "done";
    case TLS_IO_WANT_READ:
        return "want-read";
    case TLS_IO_WANT_WRITE:
        return "want-write";
    case TLS_IO_EOF:
        return "eof";
    case TLS_IO_ERROR:
        return "error";
    }
    return "?";
}

/* ---- failure classes (/metrics) ---- */

static const char *const failure_names[TLS_FAILURE_COUNT] = {
    [TLS_FAILURE_PROTOCOL] = "protocol", [TLS_FAILURE_CERTIFICATE] = "certificate",
    [TLS_FAILURE_CIPHER] = "cipher",     [TLS_FAILURE_CLOSED] = "closed",
    [TLS_FAILURE_OTHER] = "other",
};

const char *tls_failure_name(enum tls_failure f)
{
    return (unsigned)f < TLS_FAILURE_COUNT ? failure_names[f] : "other";
}

/* OpenSSL's SSL-library reasons that name a class; any other reason is "other". Alerts the
 * peer sent (SSL_R_*ALERT*) count as our own failure of the same kind would: the peer's
 * "unknown CA" is a certificate problem on our side. */
static const struct {
    int reason;
    enum tls_failure failure;
} FAILURE_REASONS[] = {
    {SSL_R_WRONG_VERSION_NUMBER, TLS_FAILURE_PROTOCOL},
    {SSL_R_UNSUPPORTED_PROTOCOL, TLS_FAILURE_PROTOCOL},
    {SSL_R_UNKNOWN_PROTOCOL, TLS_FAILURE_PROTOCOL},
    {SSL_R_NO_PROTOCOLS_AVAILABLE, TLS_FAILURE_PROTOCOL},
    {SSL_R_VERSION_TOO_LOW, TLS_FAILURE_PROTOCOL},
    {SSL_R_VERSION_TOO_HIGH, TLS_FAILURE_PROTOCOL},
    {SSL_R_TLSV1_ALERT_PROTOCOL_VERSION, TLS_FAILURE_PROTOCOL},
    {SSL_R_INAPPROPRIATE_FALLBACK, TLS_FAILURE_PROTOCOL},
    {SSL_R_TLSV1_ALERT_INAPPROPRIATE_FALLBACK, TLS_FAILURE_PROTOCOL},
    {SSL_R_HTTP_REQUEST, TLS_FAILURE_PROTOCOL},
    {SSL_R_HTTPS_PROXY_REQUEST, TLS_FAILURE_PROTOCOL},
    {SSL_R_PACKET_LENGTH_TOO_LONG, TLS_FAILURE_PROTOCOL},
    {SSL_R_RECORD_LENGTH_MISMATCH, TLS_FAILURE_PROTOCOL},
    {SSL_R_BAD_PACKET_LENGTH, TLS_FAILURE_PROTOCOL},
    {SSL_R_LENGTH_MISMATCH, TLS_FAILURE_PROTOCOL},
    {SSL_R_BAD_RECORD_TYPE, TLS_FAILURE_PROTOCOL},
    {SSL_R_UNEXPECTED_MESSAGE, TLS_FAILURE_PROTOCOL},
    {SSL_R_UNEXPECTED_RECORD, TLS_FAILURE_PROTOCOL},
    {SSL_R_LENGTH_TOO_SHORT, TLS_FAILURE_PROTOCOL},
    {SSL_R_LENGTH_TOO_LONG, TLS_FAILURE_PROTOCOL},
    {SSL_R_BAD_LENGTH, TLS_FAILURE_PROTOCOL},
    {SSL_R_BAD_HANDSHAKE_LENGTH, TLS_FAILURE_PROTOCOL},
    {SSL_R_RECORD_TOO_SMALL, TLS_FAILURE_PROTOCOL},
    {SSL_R_ENCRYPTED_LENGTH_TOO_LONG, TLS_FAILURE_PROTOCOL},
    {SSL_R_EXTRA_DATA_IN_MESSAGE, TLS_FAILURE_PROTOCOL},
    {SSL_R_BAD_EXTENSION, TLS_FAILURE_PROTOCOL},
    {SSL_R_UNEXPECTED_CCS_MESSAGE, TLS_FAILURE_PROTOCOL},
    {SSL_R_SSLV3_ALERT_UNEXPECTED_MESSAGE, TLS_FAILURE_PROTOCOL},
    {SSL_R_SSLV3_ALERT_ILLEGAL_PARAMETER, TLS_FAILURE_PROTOCOL},
    {SSL_R_TLSV1_ALERT_DECODE_ERROR, TLS_FAILURE_PROTOCOL},
    {SSL_R_NO_APPLICATION_PROTOCOL, TLS_FAILURE_PROTOCOL},
    {SSL_R_TLSV1_ALERT_NO_APPLICATION_PROTOCOL, TLS_FAILURE_PROTOCOL},
    {SSL_R_CERTIFICATE_VERIFY_FAILED, TLS_FAILURE_CERTIFICATE},
    {SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE, TLS_FAILURE_CERTIFICATE},
    {SSL_R_NO_CERTIFICATES_RETURNED, TLS_FAILURE_CERTIFICATE},
    {SSL_R_TLSV13_ALERT_CERTIFICATE_REQUIRED, TLS_FAILURE_CERTIFICATE},
    {SSL_R_SSLV3_ALERT_BAD_CERTIFICATE, TLS_FAILURE_CERTIFICATE},
    {SSL_R_SSLV3_ALERT_UNSUPPORTED_CERTIFICATE, TLS_FAILURE_CERTIFICATE},
    {SSL_R_SSLV3_ALERT_CERTIFICATE_REVOKED, TLS_FAILURE_CERTIFICATE},
    {SSL_R_SSLV3_ALERT_CERTIFICATE_EXPIRED, TLS_FAILURE_CERTIFICATE},
    {SSL_R_SSLV3_ALERT_CERTIFICATE_UNKNOWN, TLS_FAILURE_CERTIFICATE},
    {SSL_R_TLSV1_ALERT_UNKNOWN_CA, TLS_FAILURE_CERTIFICATE},
    {SSL_R_TLSV1_ALERT_ACCESS_DENIED, TLS_FAILURE_CERTIFICATE},
    {SSL_R_NO_SHARED_CIPHER, TLS_FAILURE_CIPHER},
    {SSL_R_NO_CIPHERS_AVAILABLE, TLS_FAILURE_CIPHER},
    {SSL_R_NO_SHARED_GROUPS, TLS_FAILURE_CIPHER},
    {SSL_R_NO_SUITABLE_KEY_SHARE, TLS_FAILURE_CIPHER},
    {SSL_R_NO_SHARED_SIGNATURE_ALGORITHMS, TLS_FAILURE_CIPHER},
    {SSL_R_TLSV1_ALERT_INSUFFICIENT_SECURITY, TLS_FAILURE_CIPHER},
    /* A bare handshake_failure alert is what a peer sends when nothing it offered fits. */
    {SSL_R_SSLV3_ALERT_HANDSHAKE_FAILURE, TLS_FAILURE_CIPHER},
    {SSL_R_UNEXPECTED_EOF_WHILE_READING, TLS_FAILURE_CLOSED},
};

static enum tls_failure failure_of_error(unsigned long err)
{
    if (ERR_GET_LIB(err) != ERR_LIB_SSL)
        return TLS_FAILURE_OTHER;
    int reason = ERR_GET_REASON(err);
    for (size_t i = 0; i < sizeof(FAILURE_REASONS) / sizeof(FAILURE_REASONS[0]); i++)
        if (FAILURE_REASONS[i].reason == reason)
            return FAILURE_REASONS[i].failure;
    return TLS_FAILURE_OTHER;
}

/* A system call's failure: the peer went away, or something else. */
static enum tls_failure failure_of_errno(int e)
{
    return e == 0 || e == ECONNRESET || e == EPIPE || e == ETIMEDOUT || e == ECONNABORTED
               ? TLS_FAILURE_CLOSED
               : TLS_FAILURE_OTHER;
}

enum tls_failure tls_failure_of(const struct tls_conn *c)
{
    if (!c->failed)
        return TLS_FAILURE_CLOSED;
    return c->verify_failed ? TLS_FAILURE_CERTIFICATE : (enum tls_failure)c->failure;
}

/* Names the outcome of a failed SSL call (rc <= 0), recording the reason of a failure and
 * its class. saved_errno is errno right after the call. */
static enum tls_io outcome(struct tls_conn *c, int rc, int saved_errno)
{
    int e = SSL_get_error(c->ssl, rc);
    bool in_handshake = !c->established; /* OpenSSL's own state says "in init" after errors */
    switch (e) {
    case SSL_ERROR_WANT_READ:
        return TLS_IO_WANT_READ;
    case SSL_ERROR_WANT_WRITE:
        return TLS_IO_WANT_WRITE;
    case SSL_ERROR_ZERO_RETURN:
        ERR_clear_error();
        return TLS_IO_EOF;
    case SSL_ERROR_SYSCALL:
        c->failure = (uint8_t)failure_of_errno(saved_errno);
        if (saved_errno != 0)
            conn_fail(c, "%s", strerror(saved_errno));
        else
            conn_fail(c, "the peer closed the connection%s",
                      in_handshake ? " during the TLS handshake" : " without close_notify");
        break;
    case SSL_ERROR_SSL: {
        unsigned long err = ERR_peek_error();
        int reason = ERR_GET_REASON(err);
        char why[160];
        c->failure = (uint8_t)failure_of_error(err);
        if (ERR_GET_LIB(err) == ERR_LIB_SSL && reason == SSL_R_UNEXPECTED_EOF_WHILE_READING)
            conn_fail(c, "the peer closed the connection%s",
                      in_handshake ? " during the TLS handshake"
                                   : " without close_notify (truncated)");
        else if (ERR_GET_LIB(err) == ERR_LIB_SSL && reason >= SSL_AD_REASON_OFFSET)
            conn_fail(c, "the peer refused: %s", ssl_reason(why, sizeof(why)));
        else
            conn_fail(c, "%s", ssl_reason(why, sizeof(why)));
        break;
    }
    default:
        c->failure = TLS_FAILURE_OTHER;
        conn_fail(c, "unexpected OpenSSL result %d", e);
        break;
    }
    ERR_clear_error();
    return TLS_IO_ERROR;
}

enum ssl_op {
    OP_HANDSHAKE,
    OP_READ,
    OP_WRITE,
};

/* One OpenSSL call with a clean error queue and errno: TLS_IO_DONE when it succeeded (*n
 * bytes moved), else its outcome. */
static enum tls_io ssl_call(struct tls_conn *c, enum ssl_op op, void *buf, size_t len, size_t *n)
{
    ERR_clear_error();
    errno = 0;
    int rc = op == OP_HANDSHAKE ? SSL_do_handshake(c->ssl)
             : op == OP_READ    ? SSL_read_ex(c->ssl, buf, len, n)
                                : SSL_write_ex(c->ssl, buf, len, n);
    if (rc == 1)
        return TLS_IO_DONE;
    return outcome(c, rc, errno);
}

enum tls_io tls_handshake(struct tls_conn *c)
{
    if (c->failed)
        return TLS_IO_ERROR;
    if (SSL_is_init_finished(c->ssl))
        return TLS_IO_DONE;
    enum tls_io r = ssl_call(c, OP_HANDSHAKE, NULL, 0, NULL);
    if (r == TLS_IO_DONE) {
        c->established = true;
        /* The handshake's buffers go now (kept only while bytes wait in them). */
        int freed = SSL_free_buffers(c->ssl);
        (void)freed;
    }
    return r;
}

enum tls_io tls_read(struct tls_conn *c, void *buf, size_t len, size_t *got)
{
    *got = 0;
    if (c->queued != TLS_IO_DONE)
        return (enum tls_io)c->queued;
    if (c->failed)
        return TLS_IO_ERROR;
    size_t total = 0;
    while (total < len) {
        size_t n = 0;
        c->bio_drained = false;
        enum tls_io r = ssl_call(c, OP_READ, (char *)buf + total, len - total, &n);
        total += n;
        /* A short recv emptied the socket (read_ahead asks for a whole buffer), and nothing
         * waits inside OpenSSL: the next SSL_read could only end in EAGAIN. Saying WANT_READ
         * now saves that system call on every read, as a plain short read does. */
        if (r == TLS_IO_DONE && c->bio_drained && !SSL_has_pending(c->ssl) &&
            SSL_pending(c->ssl) == 0 && !c->preread) {
            *got = total;
            return TLS_IO_WANT_READ;
        }
        if (r == TLS_IO_DONE)
            continue;
        *got = total;
        if (total == 0 || r == TLS_IO_WANT_READ || r == TLS_IO_WANT_WRITE)
            return r;
        /* Bytes first; the end they preceded is reported by the next call. */
        c->queued = (uint8_t)r;
        return TLS_IO_DONE;
    }
    *got = total;
    return TLS_IO_DONE;
}

enum tls_io tls_write(struct tls_conn *c, const void *buf, size_t len, size_t *sent)
{
    *sent = 0;
    if (c->failed || c->queued == TLS_IO_ERROR)
        return TLS_IO_ERROR;
    if (len < c->write_retry_min) {
        conn_fail(c,
                  "write retried with %zu bytes after an interrupted write of %zu "
                  "(the unsent bytes must be offered again)",
                  len, c->write_retry_min);
        return TLS_IO_ERROR;
    }
    size_t total = 0;
    while (total < len) {
        size_t n = 0;
        enum tls_io r = ssl_call(c, OP_WRITE, (char *)buf + total, len - total, &n);
        total += n;
        if (r == TLS_IO_DONE) {
            c->write_retry_min = 0;
            continue;
        }
        *sent = total;
        if (r == TLS_IO_WANT_READ || r == TLS_IO_WANT_WRITE) {
            c->write_retry_min = len - total;
            return r;
        }
        if (r == TLS_IO_EOF)
            conn_fail(c, "the peer closed the connection (close_notify) during a write");
        return TLS_IO_ERROR;
    }
    *sent = total;
    return TLS_IO_DONE;
}

bool tls_pending(const struct tls_conn *c)
{
    return c->queued != TLS_IO_DONE || c->preread != NULL || SSL_pending(c->ssl) > 0 ||
           SSL_has_pending(c->ssl);
}

const char *tls_error(const struct tls_conn *c)
{
    if (c->err)
        return c->err;
    return c->failed ? "TLS failure (no memory for the reason)" : "";
}

const char *tls_version(const struct tls_conn *c)
{
    return SSL_is_init_finished(c->ssl) ? SSL_get_version(c->ssl) : "";
}

const char *tls_cipher(const struct tls_conn *c)
{
    const char *name = SSL_is_init_finished(c->ssl) ? SSL_get_cipher_name(c->ssl) : NULL;
    return name ? name : "";
}

size_t tls_describe(const struct tls_conn *c, char *buf, size_t len)
{
    if (!SSL_is_init_finished(c->ssl)) {
        if (len > 0)
            buf[0] = '\0';
        return 0;
    }
    /* PgBouncer's form: an elliptic curve by name ("ECDH=X25519"), finite-field
     * Diffie-Hellman by its size in bits ("DH=2048"). */
    char kx[64] = "";
    int nid = SSL_get_negotiated_group(c->ssl);
    EVP_PKEY *key = NULL;
    if (nid >= NID_ffdhe2048 && nid <= NID_ffdhe8192) {
        static const struct {
            int nid, bits;
        } ffdhe[] = {{NID_ffdhe2048, 2048},
                     {NID_ffdhe3072, 3072},
                     {NID_ffdhe4096, 4096},
                     {NID_ffdhe6144, 6144},
                     {NID_ffdhe8192, 8192}};
        for (size_t i = 0; i < sizeof(ffdhe) / sizeof(ffdhe[0]); i++)
            if (ffdhe[i].nid == nid)
                snprintf(kx, sizeof(kx), "/DH=%d", ffdhe[i].bits);
    } else if (nid > 0) {
        const char *group =
            (nid & TLSEXT_nid_unknown) ? SSL_group_to_name(c->ssl, nid) : OBJ_nid2sn(nid);
        if (group)
            snprintf(kx, sizeof(kx), "/ECDH=%s", group);
    } else if ((SSL_is_server(c->ssl) ? SSL_get_tmp_key(c->ssl, &key)
                                      : SSL_get_peer_tmp_key(c->ssl, &key)) &&
               key) {
        /* TLS 1.2 DHE with client_tls_dheparams: no named group, a key of that size. */
        if (EVP_PKEY_is_a(key, "DH"))
            snprintf(kx, sizeof(kx), "/DH=%d", EVP_PKEY_get_bits(key));
        EVP_PKEY_free(key);
    }
    int n = snprintf(buf, len, "%s/%s%s", tls_version(c), tls_cipher(c), kx);
    return n < 0 ? 0 : (size_t)n;
}

bool tls_peer_cn(const struct tls_conn *c, char *buf, size_t len)
{
    if (!c->ctx->verify_peer || !SSL_is_init_finished(c->ssl) ||
        SSL_get_verify_result(c->ssl) != X509_V_OK)
        return false;
    X509 *peer = SSL_get0_peer_certificate(c->ssl);
    if (!peer)
        return false;
    X509_NAME *subject = X509_get_subject_name(peer);
    /* The first CN, as PostgreSQL takes it. */
    int i = X509_NAME_get_index_by_NID(subject, NID_commonName, -1);
    if (i < 0)
        return false;
    unsigned char *utf8 = NULL;
    int n = ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, i)));
    bool ok = n >= 0 && (size_t)n < len && !memchr(utf8, '\0', (size_t)n);
    if (ok) {
        memcpy(buf, utf8, (size_t)n);
        buf[n] = '\0';
    }
    OPENSSL_free(utf8);
    ERR_clear_error();
    return ok;
}

bool tls_alpn_selected(const struct tls_conn *c)
{
    const unsigned char *p = NULL;
    unsigned int n = 0;
    SSL_get0_alpn_selected(c->ssl, &p, &n);
    return n == ALPN_LEN && memcmp(p, ALPN_NAME, ALPN_LEN) == 0;
}

bool tls_looks_like_client_hello(const uint8_t *b, size_t n)
{
    /* Record type handshake (22), then the record version's major 3 and a minor from
     * TLS 1.0 (1) to TLS 1.3 (4). */
    return n >= 1 && b[0] == 0x16 && (n < 2 || b[1] == 0x03) &&
           (n < 3 || (b[2] >= 0x01 && b[2] <= 0x04));
}
