/* Where a peered process marks the cancel keys it hands out (PgBouncer 1.21+'s layout, so a
 * group may mix pgwarden and PgBouncer processes). BackendKeyData is 8 bytes on the wire: the
 * pid's 4 big-endian bytes, then the key's. Bytes 1 and 2 (inside the pid) hold the peer_id,
 * low byte first; the last two bits of byte 7 (the key's lowest) hold a forwarding TTL, 3 when
 * handed out, lowered by one per forward, so a cancel bounced between misconfigured peers dies
 * after three hops. */
#ifndef PGWARDEN_PROTO_CANCEL_KEY_H
#define PGWARDEN_PROTO_CANCEL_KEY_H

#include <stdint.h>

#define CANCEL_KEY_TTL_MASK    3u
#define CANCEL_KEY_MAX_PEER_ID 16383

/* Writes peer_id into a random (pid, key) pair and sets the full TTL. */
void cancel_key_mark_peer(uint32_t *pid, uint32_t *key, int peer_id);
/* The peer_id a pid carries. */
int cancel_key_peer_id(uint32_t pid);
/* Hops a forwarded cancel request may still make. */
unsigned cancel_key_ttl(uint32_t key);

#endif
