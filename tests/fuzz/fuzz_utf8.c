/* libFuzzer target for common/utf8: the repair that makes names clients choose (database,
 * application_name: any bytes) safe for JSON and the Prometheus exposition.
 *
 * Input: any bytes. Besides "no crash, no leak, no UB" it checks what the callers rely on:
 * the repair is always valid UTF-8 and NUL-terminated at its length; valid input comes back
 * unchanged and invalid input never does; repairing twice changes nothing; a sequence length
 * is 0 to 4 and never past the bytes left; utf8_make_valid agrees with the repair on the
 * input up to its first NUL. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/utf8.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 4096)
        return 0;
    const char *in = (const char *)data;
    for (size_t i = 0; i < size; i++) {
        size_t n = utf8_sequence_len(data + i, size - i);
        if (n > 4 || n > size - i)
            abort();
    }
    bool valid = utf8_is_valid(in, size);
    size_t out_len;
    char *out = utf8_repair(in, size, &out_len);
    if (!out)
        return 0;
    if (out[out_len] != '\0' || !utf8_is_valid(out, out_len) ||
        out_len > size * UTF8_REPLACEMENT_LEN)
        abort();
    bool same = out_len == size && memcmp(out, in, size) == 0;
    if (valid != same)
        abort();
    size_t again_len;
    char *again = utf8_repair(out, out_len, &again_len);
    if (again && (again_len != out_len || memcmp(again, out, out_len) != 0))
        abort();
    free(again);

    /* utf8_make_valid works on a C string: the input up to its first NUL. */
    size_t text_len = strnlen(in, size);
    char *text = malloc(text_len + 1);
    if (text) {
        memcpy(text, in, text_len);
        text[text_len] = '\0';
        size_t want_len;
        char *want = utf8_repair(text, text_len, &want_len);
        char *made = utf8_make_valid(text); /* takes text */
        if (want && made && (strlen(made) != want_len || memcmp(made, want, want_len) != 0))
            abort();
        free(want);
        free(made);
    }
    free(out);
    return 0;
}
