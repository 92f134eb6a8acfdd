/* Allocation-failure injection for testing error paths (build option PGWARDEN_FAILALLOC).
 * The linker routes pgwarden's own calls to malloc, calloc, realloc, strdup, strndup,
 * asprintf and vasprintf through failalloc.c (ld --wrap); libraries (libevent, OpenSSL,
 * libc internals) allocate normally. Which calls fail is set by the environment, read at the
 * first allocation:
 *
 *   PGWARDEN_FAILALLOC_NTH=N     the Nth allocation fails (counted from 1), once
 *   PGWARDEN_FAILALLOC_P=0.01    each allocation fails with this probability ...
 *   PGWARDEN_FAILALLOC_SEED=S    ... drawn from this seed (default 1), so a run repeats
 *   PGWARDEN_FAILALLOC_AFTER=K   no failure among the first K allocations (start-up)
 *   PGWARDEN_FAILALLOC_MAX=M     no more than M failures in all (then it serves normally)
 *   PGWARDEN_FAILALLOC_REPORT=1  at exit, "failalloc: <count> allocations, <m> failed"
 *
 * Every injected failure writes "failalloc: failing allocation #n (failure m)" to stderr.
 * Without the build option nothing is wrapped and this module is empty. */
#ifndef PGWARDEN_COMMON_FAILALLOC_H
#define PGWARDEN_COMMON_FAILALLOC_H

#include <stdint.h>

/* Allocations counted and failures injected so far (0 in a build without the option). */
uint64_t failalloc_count(void);
uint64_t failalloc_failures(void);

#endif
