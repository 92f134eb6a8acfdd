/* Allocation-failure injection (see failalloc.h): the __wrap_ functions ld --wrap routes
 * pgwarden's allocation calls to. Test builds only; nothing here allocates. */
#include "common/failalloc.h"

#ifdef PGWARDEN_FAILALLOC

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void *__real_malloc(size_t size);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *ptr, size_t size);
char *__real_strdup(const char *s);
char *__real_strndup(const char *s, size_t n);
int __real_vasprintf(char **out, const char *fmt, va_list ap);

void *__wrap_malloc(size_t size);
void *__wrap_calloc(size_t n, size_t size);
void *__wrap_realloc(void *ptr, size_t size);
char *__wrap_strdup(const char *s);
char *__wrap_strndup(const char *s, size_t n);
int __wrap_vasprintf(char **out, const char *fmt, va_list ap);
int __wrap_asprintf(char **out, const char *fmt, ...);

static struct {
    bool ready;
    uint64_t nth;
    uint64_t threshold; /* fail when the next random word is below it (probability mode) */
    uint64_t rng;
    uint64_t after;
    uint64_t max;
    uint64_t count;
    uint64_t failures;
} fa;

static uint64_t env_u64(const char *name, uint64_t dflt)
{
    const char *v = getenv(name);
    return v && *v ? strtoull(v, NULL, 10) : dflt;
}

/* At exit: how many allocations the run made, so a test can aim NTH inside the part of the
 * run it cares about (after start-up, before shutdown). */
static void report_at_exit(void)
{
    char msg[96];
    int len = snprintf(msg, sizeof(msg), "failalloc: %llu allocations, %llu failed\n",
                       (unsigned long long)fa.count, (unsigned long long)fa.failures);
    if (len > 0)
        (void)!write(2, msg, (size_t)len);
}

static void setup(void)
{
    fa.ready = true;
    if (getenv("PGWARDEN_FAILALLOC_REPORT"))
        atexit(report_at_exit);
    fa.nth = env_u64("PGWARDEN_FAILALLOC_NTH", 0);
    fa.after = env_u64("PGWARDEN_FAILALLOC_AFTER", 0);
    fa.max = env_u64("PGWARDEN_FAILALLOC_MAX", UINT64_MAX);
    fa.rng = env_u64("PGWARDEN_FAILALLOC_SEED", 1) * 0x9E3779B97F4A7C15ull + 1;
    const char *p = getenv("PGWARDEN_FAILALLOC_P");
    double prob = p ? strtod(p, NULL) : 0.0;
    if (prob > 0)
        fa.threshold = prob >= 1 ? UINT64_MAX : (uint64_t)(prob * 18446744073709551615.0);
}

/* xorshift64*: reproducible from the seed, and no libc state (rand) shared with the code
 * under test. */
static uint64_t next_random(void)
{
    fa.rng ^= fa.rng >> 12;
    fa.rng ^= fa.rng << 25;
    fa.rng ^= fa.rng >> 27;
    return fa.rng * 0x2545F4914F6CDD1Dull;
}

/* Counts one allocation and says whether it is to fail. */
static bool should_fail(void)
{
    if (!fa.ready)
        setup();
    uint64_t n = ++fa.count;
    if (n <= fa.after || fa.failures >= fa.max)
        return false;
    bool fail = (fa.nth && n == fa.nth) || (fa.threshold && next_random() < fa.threshold);
    if (!fail)
        return false;
    fa.failures++;
    /* snprintf into a stack buffer and write(2): reporting must not allocate. */
    char msg[96];
    int len = snprintf(msg, sizeof(msg), "failalloc: failing allocation #%llu (failure %llu)\n",
                       (unsigned long long)n, (unsigned long long)fa.failures);
    if (len > 0)
        (void)!write(2, msg, (size_t)len);
    errno = ENOMEM;
    return true;
}

void *__wrap_malloc(size_t size)
{
    return should_fail() ? NULL : __real_malloc(size);
}

void *__wrap_calloc(size_t n, size_t size)
{
    return should_fail() ? NULL : __real_calloc(n, size);
}

void *__wrap_realloc(void *ptr, size_t size)
{
    return should_fail() ? NULL : __real_realloc(ptr, size);
}

char *__wrap_strdup(const char *s)
{
    return should_fail() ? NULL : __real_strdup(s);
}

char *__wrap_strndup(const char *s, size_t n)
{
    return should_fail() ? NULL : __real_strndup(s, n);
}

int __wrap_vasprintf(char **out, const char *fmt, va_list ap)
{
    return should_fail() ? -1 : __real_vasprintf(out, fmt, ap);
}

int __wrap_asprintf(char **out, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = __wrap_vasprintf(out, fmt, ap);
    va_end(ap);
    return rc;
}

uint64_t failalloc_count(void)
{
    return fa.count;
}

uint64_t failalloc_failures(void)
{
    return fa.failures;
}

#else

uint64_t failalloc_count(void)
{
    return 0;
}

uint64_t failalloc_failures(void)
{
    return 0;
}

#endif
