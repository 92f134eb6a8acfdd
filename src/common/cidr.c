/* Address block parsing and matching (see cidr.h). */
#include "common/cidr.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

/* The address part alone; IPv4-mapped IPv6 folded to IPv4 (with *bits adjusted). */
static bool parse_addr(const char *buf, struct cidr *out, long *bits)
{
    static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    memset(out, 0, sizeof(*out));
    if (inet_pton(AF_INET, buf, out->addr) == 1) {
        out->family = AF_INET;
        out->prefix_len = 32;
        return true;
    }
    if (inet_pton(AF_INET6, buf, out->addr) != 1)
        return false;
    out->family = AF_INET6;
    out->prefix_len = 128;
    if (memcmp(out->addr, mapped, sizeof(mapped)) == 0 && (*bits < 0 || *bits >= 96)) {
        memmove(out->addr, out->addr + 12, 4);
        memset(out->addr + 4, 0, 12);
        out->family = AF_INET;
        out->prefix_len = 32;
        if (*bits >= 0)
            *bits -= 96;
    }
    return true;
}

/* Applies the prefix and writes the canonical text. */
static bool finish(struct cidr *out, long bits)
{
    if (bits > out->prefix_len)
        return false;
    if (bits >= 0)
        out->prefix_len = (int)bits;
    for (int i = out->prefix_len; i < 128; i++)
        out->addr[i / 8] &= (unsigned char)~(0x80u >> (i % 8));
    char host[INET6_ADDRSTRLEN];
    if (inet_ntop(out->family, out->addr, host, sizeof(host)) == NULL)
        return false;
    snprintf(out->text, sizeof(out->text), "%s/%d", host, out->prefix_len);
    return true;
}

bool cidr_parse(const char *text, struct cidr *out)
{
    char buf[CIDR_TEXT_LEN];
    if (snprintf(buf, sizeof(buf), "%s", text) >= (int)sizeof(buf))
        return false;
    char *slash = strchr(buf, '/');
    long bits = -1;
    if (slash != NULL) {
        *slash = '\0';
        char *end;
        bits = strtol(slash + 1, &end, 10);
        if (slash[1] < '0' || slash[1] > '9' || *end != '\0')
            return false;
    }
    return parse_addr(buf, out, &bits) && finish(out, bits);
}

bool cidr_parse_with_mask(const char *addr, const char *mask, struct cidr *out)
{
    struct cidr m;
    long none = -1;
    if (!parse_addr(mask, &m, &none))
        return false;
    int len = m.family == AF_INET ? 32 : 128, ones = 0;
    while (ones < len && (m.addr[ones / 8] & (0x80u >> (ones % 8))))
        ones++;
    for (int i = ones; i < len; i++)
        if (m.addr[i / 8] & (0x80u >> (i % 8)))
            return false; /* not contiguous */
    long bits = ones;
    return parse_addr(addr, out, &bits) && out->family == m.family && finish(out, bits);
}

bool cidr_contains(const struct cidr *block, int family, const unsigned char *addr)
{
    if (block->family != family)
        return false;
    size_t full = (size_t)block->prefix_len / 8;
    int rest = block->prefix_len % 8;
    if (memcmp(block->addr, addr, full) != 0)
        return false;
    if (rest == 0)
        return true;
    unsigned char mask = (unsigned char)(0xffu << (8 - rest));
    return (addr[full] & mask) == block->addr[full];
}
