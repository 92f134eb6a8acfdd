/* Giving freed heap memory back to the kernel after a burst of short-lived allocations. */
#ifndef PGWARDEN_COMMON_HEAP_H
#define PGWARDEN_COMMON_HEAP_H

#include <stdbool.h>
#include <stddef.h>

/* glibc keeps a free chunk inside the heap resident until it is reused. A TLS handshake
 * allocates tens of kilobytes that it frees when it ends, between the objects the connection
 * keeps (the SSL object, the client), so a burst of logins leaves free holes all over the
 * heap: about 1.4 kB of resident memory per idle TLS client after 2,000 logins. malloc_trim()
 * returns the whole pages inside them (madvise); a page used again later is faulted back in.
 *
 * It runs only when at least HEAP_TRIM_MIN_BYTES more are free than after the last trim
 * (or than the least seen since): under steady load the free bytes go up and down with the
 * work and trims are rare; after a burst of logins or disconnections one runs. Counting the
 * free bytes walks malloc's free lists, and a trim costs 0.2-3 ms with 6,000 idle TLS
 * clients and 10-100 ms once after thousands of them disconnected at once (returning tens of
 * megabytes), so the caller runs it from a timer, never per request. */
#define HEAP_TRIM_MIN_BYTES (256 * 1024)

struct heap_trim {
    size_t free_after_trim; /* free heap bytes after the last trim, or the lowest since */
    size_t trims;           /* trims done (for logs and tests) */
};

/* Trims when enough was freed since the last look; true when it trimmed. */
bool heap_trim_if_freed(struct heap_trim *t);

#endif
