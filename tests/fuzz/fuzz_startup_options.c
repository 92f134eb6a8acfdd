/* libFuzzer target: the "options" startup parameter (startup_options_parse), the input as the
 * parameter's value. Every setting handed back has a non-empty name without '-' or '=' and
 * lies in the scratch buffer; written back as "-c name=value" with each space and backslash
 * escaped, the settings parse again to exactly the same list. A refusal is one of the
 * documented results and has PgBouncer's message. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto/startup_options.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int ok)
{
    if (!ok)
        __builtin_trap();
}

#define MAX_SETTINGS 64

struct list {
    char *text; /* owned: "name=value\0" after each other */
    size_t len, cap;
    int n;
    const char *scratch; /* borrowed: the parse's scratch buffer */
    size_t scratch_len;
};

static bool add(void *ctx, const char *name, const char *value)
{
    struct list *l = ctx;
    check(name >= l->scratch && name < l->scratch + l->scratch_len);
    check(value >= l->scratch && value < l->scratch + l->scratch_len);
    check(name[0] != '\0' && !strchr(name, '-') && !strchr(name, '='));
    size_t need = strlen(name) + strlen(value) + 2;
    if (l->len + need > l->cap) {
        size_t cap = (l->len + need) * 2;
        char *t = realloc(l->text, cap);
        check(t != NULL);
        l->text = t;
        l->cap = cap;
    }
    memcpy(l->text + l->len, name, strlen(name));
    l->len += strlen(name);
    l->text[l->len++] = '=';
    memcpy(l->text + l->len, value, strlen(value) + 1);
    l->len += strlen(value) + 1;
    return ++l->n < MAX_SETTINGS;
}

static enum startup_options_result parse(const char *options, struct list *l)
{
    size_t n = strlen(options) + 1;
    char *scratch = malloc(n);
    check(scratch != NULL);
    memset(l, 0, sizeof(*l));
    l->scratch = scratch;
    l->scratch_len = n;
    enum startup_options_result r = startup_options_parse(options, scratch, n, add, l);
    free(scratch);
    return r;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *options = malloc(size + 1);
    if (!options)
        return 0;
    memcpy(options, data, size);
    options[size] = '\0'; /* a startup parameter ends at its first NUL */
    struct list first;
    enum startup_options_result r = parse(options, &first);
    check(r == STARTUP_OPTIONS_OK || r == STARTUP_OPTIONS_UNSUPPORTED ||
          r == STARTUP_OPTIONS_STOPPED);
    if (r == STARTUP_OPTIONS_UNSUPPORTED)
        check(strstr(startup_options_error(r), "'-c config=val'") != NULL);
    if (r == STARTUP_OPTIONS_OK) {
        /* Written back, escaped, the same settings come out. */
        char *again = malloc(first.len * 2 + (size_t)first.n * 4 + 1);
        check(again != NULL);
        size_t k = 0;
        for (size_t i = 0; i < first.len; i++) {
            char ch = first.text[i];
            if (i == 0 || first.text[i - 1] == '\0') {
                memcpy(again + k, "-c ", 3);
                k += 3;
            }
            if (ch == '\0') {
                again[k++] = ' ';
                continue;
            }
            if (ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r' || ch == '\f' || ch == '\v' ||
                ch == '\\')
                again[k++] = '\\';
            again[k++] = ch;
        }
        again[k] = '\0';
        struct list second;
        check(parse(again, &second) == STARTUP_OPTIONS_OK);
        check(second.n == first.n && second.len == first.len &&
              (first.len == 0 || !memcmp(second.text, first.text, first.len)));
        free(second.text);
        free(again);
    }
    free(first.text);
    free(options);
    return 0;
}
