/* The peer_id and TTL fields of a cancel key. */
#include "proto/cancel_key.h"

void cancel_key_mark_peer(uint32_t *pid, uint32_t *key, int peer_id)
{
    uint32_t id = (uint32_t)peer_id & 0xFFFF;
    /* byte 1 = (pid >> 16) & 0xFF: low byte of the id; byte 2 = (pid >> 8): its high byte */
    *pid = (*pid & 0xFF0000FFu) | ((id & 0xFF) << 16) | ((id >> 8) << 8);
    *key |= CANCEL_KEY_TTL_MASK;
}

int cancel_key_peer_id(uint32_t pid)
{
    return (int)(((pid >> 16) & 0xFF) | (((pid >> 8) & 0xFF) << 8));
}

unsigned cancel_key_ttl(uint32_t key)
{
    return key & CANCEL_KEY_TTL_MASK;
}
