/* UTF-8 checking and repair for text that crosses into formats that must be UTF-8 (JSON, the
 * Prometheus exposition): names clients choose (database, application_name) are arbitrary
 * bytes, and one invalid byte made a whole /api/v1 answer or /metrics scrape unreadable. */
#ifndef PGWARDEN_COMMON_UTF8_H
#define PGWARDEN_COMMON_UTF8_H

#include <stdbool.h>
#include <stddef.h>

/* U+FFFD REPLACEMENT CHARACTER, which stands for each byte that starts no valid sequence. */
#define UTF8_REPLACEMENT     "\xef\xbf\xbd"
#define UTF8_REPLACEMENT_LEN 3

/* The length (1-4) of the valid UTF-8 sequence at s, which has n bytes left; 0 when none
 * starts there: a stray continuation byte, an overlong form, a surrogate, a code point past
 * U+10FFFF or a sequence cut short (Unicode's table 3-7). */
size_t utf8_sequence_len(const unsigned char *s, size_t n);

bool utf8_is_valid(const char *s, size_t len);

/* A copy of s (len bytes) with every byte that starts no valid sequence replaced by U+FFFD:
 * NUL-terminated, owned by the caller (free), its length in *out_len; NULL when memory runs
 * out. */
char *utf8_repair(const char *s, size_t len, size_t *out_len);

/* s (NUL-terminated, from malloc, owned by the call) made valid: s itself when it already
 * is, else its repair, s being freed; NULL when s is NULL or memory runs out (s freed). For
 * the output of cJSON_Print*, whose strings hold the bytes they were given. */
char *utf8_make_valid(char *s);

#endif
