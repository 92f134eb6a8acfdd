/* TLS for both ends of the pooler over OpenSSL 3: contexts built from PgBouncer-style settings,
 * and a non-blocking handshake, read and write per connection with named results made for
 * edge-triggered loops. Knows nothing of pools or clients; of PostgreSQL it knows only the
 * ALPN name "postgresql" and how a direct-TLS ClientHello differs from a startup packet.
 *
 * Roles. A context either accepts TLS (we are the TLS server: connections from clients,
 * client_tls_* settings) or makes TLS connections (we are the TLS client: connections to
 * PostgreSQL, server_tls_* settings). The role lives in the context, so a connection needs
 * nothing but its context and fd.
 *
 * Reload. Build the new context first; when that fails keep the old one and log the message.
 * tls_context_free drops the caller's reference only: every tls_conn holds its own, so
 * connections made before a reload keep their context until they close. */
#ifndef PGWARDEN_NET_TLS_H
#define PGWARDEN_NET_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* libpq's sslmode names, in order of strength (comparisons like mode >= TLS_REQUIRE hold).
 * What each one means on each side is in docs/TLS.md. */
enum tls_sslmode {
    TLS_DISABLE,
    TLS_ALLOW,
    TLS_PREFER,
    TLS_REQUIRE,
    TLS_VERIFY_CA,
    TLS_VERIFY_FULL,
};
/* "disable" ... "verify-full" (case-insensitive). False, *out untouched, on anything else. */
__attribute__((warn_unused_result)) bool tls_sslmode_parse(const char *text, enum tls_sslmode *out);
/* Static string; "?" for an out-of-range value. */
const char *tls_sslmode_name(enum tls_sslmode mode);

/* Protocol versions as on the wire: 0x0301 TLS 1.0, 0x0302 TLS 1.1, 0x0303 TLS 1.2,
 * 0x0304 TLS 1.3 (the same numbers as OpenSSL's TLS1_x_VERSION). */
enum {
    TLS_VERSION_1_0 = 0x0301,
    TLS_VERSION_1_1 = 0x0302,
    TLS_VERSION_1_2 = 0x0303,
    TLS_VERSION_1_3 = 0x0304,
};
struct tls_protocols {
    uint16_t min_version;
    uint16_t max_version;
};
/* PgBouncer's *_tls_protocols: a list separated by ',' or ':' of tlsv1.0, tlsv1.1, tlsv1.2,
 * tlsv1.3 and the shortcuts all (1.0-1.3), secure and default (1.2-1.3), legacy (= all);
 * "!name" removes versions (a list that starts with a removal starts from all). NULL or ""
 * is "secure". OpenSSL takes a range, so a set with a hole (tlsv1.0,tlsv1.2) is refused.
 * False with a reason in err, *out untouched, on a bad string. */
__attribute__((warn_unused_result)) bool
tls_protocols_parse(const char *text, struct tls_protocols *out, char *err, size_t err_len);

/* Plain data parsed elsewhere (the config). All strings are borrowed for the duration of
 * the tls_context_new_* call only; NULL and "" mean "not set" (the default). */
struct tls_settings {
    const char *side; /* "client" or "server": names settings in messages
                         ("client_tls_key_file ..."); NULL gives "tls_key_file" */
    enum tls_sslmode sslmode;
    const char *key_file;      /* PEM private key, not encrypted */
    const char *cert_file;     /* PEM certificate, then any intermediates */
    const char *ca_file;       /* PEM root certificates; connecting: "system" = OpenSSL's
                                  default trust store (libpq's sslrootcert=system), which
                                  verify-full also uses when none is set (PgBouncer) */
    const char *protocols;     /* see tls_protocols_parse; default "secure" (TLS 1.2+) */
    const char *ciphers;       /* TLS <= 1.2: OpenSSL cipher list; "default", "secure",
                                  "fast", "normal" = OpenSSL's (system) default; "all" */
    const char *tls13_ciphers; /* TLS 1.3 suites, ':'-separated; default OpenSSL's */
    const char *dheparams;     /* accepting only: "none", "auto" (default), "legacy" */
    const char *ecdhcurve;     /* accepting only: "auto" (default), "none", or group names
                                  separated by ':' (prime256v1, X25519, ...) */
};

struct tls_context; /* opaque, reference counted */

/* A context that accepts TLS from clients: needs key_file and cert_file; verify-ca and
 * verify-full also need ca_file and then demand a client certificate signed by it. Below
 * them a ca_file asks for a certificate without demanding one and checks one that comes
 * (tls_peer_cn then names it). Offers
 * ALPN "postgresql". Returns NULL with a message naming the setting, the file and OpenSSL's
 * reason in err (also for sslmode disable: no context is needed then). Free with
 * tls_context_free. */
struct tls_context *tls_context_new_accept(const struct tls_settings *s, char *err, size_t err_len);
/* A context for connecting to PostgreSQL with libpq's sslmode meanings: verify-ca needs
 * ca_file, verify-full takes a file or the system's roots ("system", or no ca_file as in
 * PgBouncer); require with a ca_file verifies the chain
 * too (libpq's rule); key_file and cert_file, when set, are the client certificate. Returns
 * NULL with a reason in err. Free with tls_context_free. */
struct tls_context *tls_context_new_connect(const struct tls_settings *s, char *err,
                                            size_t err_len);
/* Drops the caller's reference; connections made from ctx keep theirs. NULL is ignored. */
void tls_context_free(struct tls_context *ctx);
enum tls_sslmode tls_context_sslmode(const struct tls_context *ctx);
/* True when both were built from the same settings and the same file contents (a SHA-256
 * of both, taken when built): a reload that changes nothing TLS-related needs no reconnect.
 * NULL equals only NULL. */
bool tls_context_same(const struct tls_context *a, const struct tls_context *b);

struct tls_conn; /* opaque: one connection's TLS state */

/* TLS over fd (non-blocking, connected; stays owned by the caller). host: connecting only,
 * the host name or numeric address asked for: sent as SNI when it is a name, and checked
 * against the certificate under verify-full (required then). preread: accepting only, bytes
 * of the TLS stream the caller already read off fd (the start of a direct-TLS ClientHello);
 * copied. Returns NULL with a reason in err. Free with tls_conn_free. */
struct tls_conn *tls_conn_new(struct tls_context *ctx, int fd, const char *host,
                              const void *preread, size_t preread_len, char *err, size_t err_len);
/* Best-effort close_notify (one non-blocking attempt, skipped after an error), then frees.
 * Does not close the fd. NULL is ignored. */
void tls_conn_free(struct tls_conn *c);

enum tls_io {
    TLS_IO_DONE,       /* handshake: finished; read: buffer full or an end is queued, call
                          again; write: everything was sent */
    TLS_IO_WANT_READ,  /* wait for the readable edge, then repeat the call */
    TLS_IO_WANT_WRITE, /* wait for the writable edge, then repeat the call */
    TLS_IO_EOF,        /* read: the peer closed cleanly (close_notify) */
    TLS_IO_ERROR,      /* fatal; tls_error says why */
};
/* Static name of a result ("done", "want-read", ...). */
const char *tls_io_name(enum tls_io r);

/* Advances the handshake. After TLS_IO_DONE call tls_read at once without waiting for an
 * edge: the peer's first message often arrives with its last handshake record, and that
 * edge is spent. */
enum tls_io tls_handshake(struct tls_conn *c);
/* Reads decrypted bytes until buf is full or nothing more can be had without waiting.
 * *got is always set and must be booked whatever the result. TLS_IO_DONE with *got < len
 * means an end (EOF or error) follows on the next call; WANT_READ/WANT_WRITE mean nothing
 * is left until that edge (edge-triggered: the socket was drained). WANT_READ with *got > 0
 * may also follow a short recv, which drained the socket, without the system call that
 * would prove it; a peer that shut down its side may then still have its end to give (read
 * on while the loop reports the hang-up). So a TLS reader keeps reading while the result is
 * TLS_IO_DONE, never by comparing *got with len. EOF and ERROR come with *got == 0. */
enum tls_io tls_read(struct tls_conn *c, void *buf, size_t len, size_t *got);
/* Encrypts and sends buf until all is sent or the socket would block. *sent is always set
 * and must be booked. After WANT_READ/WANT_WRITE, the next call must offer the unsent bytes
 * again, at least as many as were left (more may follow; the buffer may have moved); a
 * shorter retry is refused with TLS_IO_ERROR. */
enum tls_io tls_write(struct tls_conn *c, const void *buf, size_t len, size_t *sent);
/* True when tls_read would return bytes or an end without waiting for the socket:
 * decrypted or undecrypted bytes inside OpenSSL, unread preread bytes, or a queued end. */
bool tls_pending(const struct tls_conn *c);

/* Why the connection failed ("certificate verify failed: ..."), or "" when it has not.
 * Borrowed: valid until the next call on c. */
const char *tls_error(const struct tls_conn *c);
/* Why a handshake failed, in the few classes /metrics counts (a label per class; OpenSSL's
 * reason is mapped by a table in tls.c, the full text stays in tls_error and the log). */
enum tls_failure {
    TLS_FAILURE_PROTOCOL,    /* not TLS, no version both accept, a malformed record or
                                message, ALPN refused, or TLS required and not started */
    TLS_FAILURE_CERTIFICATE, /* a certificate was refused or missing (either side's check) */
    TLS_FAILURE_CIPHER,      /* no cipher, group or signature algorithm both accept */
    TLS_FAILURE_CLOSED,      /* the peer closed or reset the connection, or time ran out */
    TLS_FAILURE_OTHER,
    TLS_FAILURE_COUNT,
};
/* Static label value: "protocol", "certificate", "cipher", "closed", "other". */
const char *tls_failure_name(enum tls_failure f);
/* The class of the connection's failure; TLS_FAILURE_CLOSED when it has not failed (it is
 * being closed during its handshake: the peer hung up or a timeout ended it). */
enum tls_failure tls_failure_of(const struct tls_conn *c);

/* Handshake outcomes of one side (clients or servers) since start, for /metrics. Plain data
 * kept by the pooler; every TLS connection adds to it exactly once (pool/conn.c). */
struct tls_counters {
    uint64_t handshakes;                  /* completed and accepted */
    uint64_t failures[TLS_FAILURE_COUNT]; /* by class */
};

/* "TLSv1.3" etc., and the cipher's OpenSSL name; static strings, "" before the handshake
 * is done. */
const char *tls_version(const struct tls_conn *c);
const char *tls_cipher(const struct tls_conn *c);
/* PgBouncer's SHOW CLIENTS/SERVERS tls column: "TLSv1.3/TLS_AES_256_GCM_SHA384/ECDH=X25519";
 * "" before the handshake. Returns the length snprintf would have written. */
size_t tls_describe(const struct tls_conn *c, char *buf, size_t len);
/* The verified peer certificate's common name (for cert authentication). False when there
 * is no verified certificate (the context does not verify, or the peer sent none), the
 * name is missing, holds a NUL byte, or does not fit in len bytes with its terminator. */
__attribute__((warn_unused_result)) bool tls_peer_cn(const struct tls_conn *c, char *buf,
                                                     size_t len);
/* True when ALPN "postgresql" was negotiated. Direct TLS (PostgreSQL 17) requires it: a
 * direct-TLS client without it must be refused. */
bool tls_alpn_selected(const struct tls_conn *c);

/* True when the first bytes read from a new connection start a TLS handshake record
 * (0x16, then version 0x03 0x01..0x04) rather than a startup packet or SSLRequest: direct
 * TLS. One byte decides (a startup packet cannot begin with 0x16: its length would exceed
 * 360 MB); further bytes, when present, must agree. False when n == 0. */
bool tls_looks_like_client_hello(const uint8_t *b, size_t n);

#endif
