/* UTF-8 checking and repair (see utf8.h). */
#include "common/utf8.h"

#include <stdlib.h>
#include <string.h>

static bool is_cont(unsigned char c)
{
    return (c & 0xc0) == 0x80;
}

size_t utf8_sequence_len(const unsigned char *s, size_t n)
{
    if (n == 0)
        return 0;
    unsigned char c = s[0];
    if (c < 0x80)
        return 1;
    /* The second byte's range depends on the first (no overlongs, no surrogates, nothing past
     * U+10FFFF); later bytes are plain continuation bytes. */
    size_t len;
    unsigned char lo = 0x80, hi = 0xbf;
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        if (c == 0xe0)
            lo = 0xa0;
        else if (c == 0xed)
            hi = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        if (c == 0xf0)
            lo = 0x90;
        else if (c == 0xf4)
            hi = 0x8f;
    } else {
        return 0;
    }
    if (n < len || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if (!is_cont(s[i]))
            return 0;
    return len;
}

bool utf8_is_valid(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (i < len) {
        if (p[i] < 0x80) {
            i++;
            continue;
        }
        size_t n = utf8_sequence_len(p + i, len - i);
        if (n == 0)
            return false;
        i += n;
    }
    return true;
}

char *utf8_repair(const char *s, size_t len, size_t *out_len)
{
    const unsigned char *p = (const unsigned char *)s;
    /* At most every byte becomes the three of U+FFFD. */
    char *out = malloc(len * UTF8_REPLACEMENT_LEN + 1);
    if (!out)
        return NULL;
    size_t o = 0;
    for (size_t i = 0; i < len;) {
        size_t n = utf8_sequence_len(p + i, len - i);
        if (n == 0) {
            memcpy(out + o, UTF8_REPLACEMENT, UTF8_REPLACEMENT_LEN);
            o += UTF8_REPLACEMENT_LEN;
            i++;
        } else {
            memcpy(out + o, s + i, n);
            o += n;
            i += n;
        }
    }
    out[o] = '\0';
    *out_len = o;
    return out;
}

char *utf8_make_valid(char *s)
{
    if (!s)
        return NULL;
    size_t len = strlen(s);
    if (utf8_is_valid(s, len))
        return s;
    size_t n;
    char *fixed = utf8_repair(s, len, &n);
    free(s);
    return fixed;
}
