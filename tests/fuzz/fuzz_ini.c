/* libFuzzer target: the ini tokenizer on a string (includes resolve relative to a directory
 * that holds no config, so %include lines exercise the error paths) and the connection string
 * parser on every value. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/ini.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool on_pair(void *ctx, const char *key, const char *value, char *err, size_t err_len)
{
    (void)ctx;
    (void)err;
    (void)err_len;
    if (key[0] == '\0')
        __builtin_trap();   /* empty keys are a parse error */
    return value[0] != '!'; /* exercise the callback-error path now and then */
}

static bool on_entry(void *ctx, const char *section, const char *key, const char *value,
                     const char *file, int line, char *err, size_t err_len)
{
    char cerr[256];

    (void)ctx;
    (void)file;
    if (section[0] == '\0' || key[0] == '\0' || line < 1)
        __builtin_trap();
    (void)ini_parse_connstr(value, on_pair, NULL, cerr, sizeof(cerr));
    if (strcmp(key, "reject") == 0) {
        snprintf(err, err_len, "rejected");
        return false;
    }
    return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    char err[512];

    if (text == NULL)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    (void)ini_parse_string(text, "/nonexistent-pgwarden-fuzz/fuzz.ini", on_entry, NULL, err,
                           sizeof(err));
    (void)ini_parse_connstr(text, on_pair, NULL, err, sizeof(err));
    free(text);
    return 0;
}
