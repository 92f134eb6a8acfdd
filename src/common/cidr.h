/* Address blocks: "10.0.0.0/8", "fd00::/8", or one address. Shared by kill-idle's
 * --exclude-addr and the HBA file. IPv4-mapped IPv6 addresses count as IPv4, so one rule
 * matches however a peer was printed. */
#ifndef PGWARDEN_COMMON_CIDR_H
#define PGWARDEN_COMMON_CIDR_H

#include <stdbool.h>

/* Room for "ffff:...:ffff/128". */
#define CIDR_TEXT_LEN 56

struct cidr {
    int family;             /* AF_INET or AF_INET6 */
    unsigned char addr[16]; /* network byte order, bits past prefix_len cleared */
    int prefix_len;
    char text[CIDR_TEXT_LEN]; /* canonical "10.0.0.0/8", as PostgreSQL's inet reads it */
};

/* Parses "ADDR" or "ADDR/BITS" (IPv4 or IPv6); host bits past the prefix are cleared. */
bool cidr_parse(const char *text, struct cidr *out);
/* An address and a netmask ("10.0.0.0" "255.0.0.0"), as pg_hba.conf allows; the mask must
 * be contiguous ones. */
bool cidr_parse_with_mask(const char *addr, const char *mask, struct cidr *out);
/* True when the address (family and 4 or 16 bytes) lies in the block. */
bool cidr_contains(const struct cidr *block, int family, const unsigned char *addr);

#endif
