/* Heap trimming after bursts (see heap.h). */
#include "common/heap.h"

#include <stdlib.h> /* defines __GLIBC__ with glibc */
#ifdef __GLIBC__
#include <malloc.h>
#endif

bool heap_trim_if_freed(struct heap_trim *t)
{
#ifdef __GLIBC__
    size_t free_bytes = mallinfo2().fordblks;
    /* Memory reused since: its pages are resident again and count as trimmed. */
    if (free_bytes < t->free_after_trim)
        t->free_after_trim = free_bytes;
    if (free_bytes - t->free_after_trim < HEAP_TRIM_MIN_BYTES)
        return false;
    malloc_trim(0);
    t->free_after_trim = mallinfo2().fordblks;
    t->trims++;
    return true;
#else
    (void)t;
    return false;
#endif
}
