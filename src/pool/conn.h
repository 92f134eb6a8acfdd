/* Buffer plumbing shared by both directions: one read into a borrowed buffer, one send of an
 * accounted range, through TLS when the connection has it. */
#ifndef PGWARDEN_POOL_CONN_H
#define PGWARDEN_POOL_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pool/pool.h"

enum fill_result {
    FILL_OK,    /* bytes were read */
    FILL_AGAIN, /* nothing to read now */
    FILL_FULL,  /* no room: flush first */
    FILL_EOF,
    FILL_ERROR,
    FILL_NO_MEMORY,
    FILL_WANT_WRITE, /* TLS: nothing read; the read goes on at the socket's writable edge
                        (registered), which conn_tls_edges turns into a readable one */
};
enum fill_result conn_fill(struct pooler *p, struct pconn *c);
/* sbuf_loopcnt: counts one read of this loop turn in *reads. True once cap reads were made
 * while the socket may hold more: the caller stops reading, and the connection is woken again
 * at the next loop turn, after the loop has served the other ready sockets and due timers, so
 * one big result cannot hold up the loop (cap 0 = never). */
bool conn_read_budget_spent(struct pconn *c, int *reads, int cap);
enum flush_result {
    FLUSH_DONE,
    FLUSH_PARTIAL, /* destination would block: its writable edge resumes (its readable edge
                      when dst->send_wants_read) */
    FLUSH_ERROR,
};
/* Sends data to dst in one attempt (TLS when dst has it); *sent is always set. After
 * FLUSH_PARTIAL the next send to dst must offer the unsent bytes again, at least as many
 * (TLS refuses fewer). */
enum flush_result conn_send(struct pconn *dst, const void *data, size_t len, size_t *sent);
/* Sends all of data now; false when dst would block or failed. For the small messages the
 * pooler writes itself (errors, login, internal queries) on a socket whose send buffer is
 * empty or nearly so: a peer that does not take them loses its connection. */
__attribute__((warn_unused_result)) bool conn_send_all(struct pconn *dst, const void *data,
                                                       size_t len);
/* Sends src's accounted range [pos, scan) to dst and books what went. */
enum flush_result conn_flush(struct pconn *src, struct pconn *dst, int64_t *counter);
/* Books n bytes of src's sendable range as sent (conn_flush, or a batched send). */
void conn_sent(struct pconn *src, size_t n, int64_t *counter);
/* TLS connections only (callers test c->tls): a TLS read may need the writable edge and a
 * TLS write the readable one. Returns the io callback's `what` with those edges added, so
 * the callback's usual paths (read on readable, flush on writable) resume them. */
unsigned conn_tls_edges(struct pconn *c, unsigned what);
/* What an I/O callback is told about c's socket, noted on c: TLS edges translated (above), a
 * hang-up (closing) and readable bytes (may_read) remembered. Returns the edges to act on. */
unsigned conn_note_edges(struct pconn *c, unsigned what);
/* TLS accounting: each connection that tries TLS lands in counts exactly once. ok books a
 * finished handshake the pooler accepted; failure books a refusal the caller decided (ALPN
 * missing, TLS required but not offered: c->tls may be NULL then); close books a connection
 * closed before either, by the class tls_failure_of gives (called when it is freed). */
void conn_tls_book_ok(struct pconn *c, struct tls_counters *counts);
void conn_tls_book_failure(struct pconn *c, struct tls_counters *counts, enum tls_failure why);
void conn_tls_book_close(struct pconn *c, struct tls_counters *counts);
/* Returns the buffer to the cache when it holds nothing. */
void conn_release_if_empty(struct pooler *p, struct pconn *c);
void conn_drop_buffer(struct pooler *p, struct pconn *c);

#endif
