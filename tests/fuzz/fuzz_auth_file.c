/* libFuzzer target: auth_file (userlist.txt) parsing from memory, plus a lookup of every
 * loaded user (which must find its secret, or nothing when the secret is empty) and of a
 * user that cannot exist. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "config/auth_file.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct auth_file af;
    char err[256];

    if (auth_file_parse((const char *)data, size, "fuzz", &af, err, sizeof(err))) {
        for (size_t i = 0; i < af.count; i++) {
            const char *secret = auth_file_lookup(&af, af.entries[i].user);
            const char *expected = af.entries[i].secret[0] != '\0' ? af.entries[i].secret : NULL;
            if (secret != expected)
                __builtin_trap();
            (void)auth_file_secret_kind(secret);
        }
        (void)auth_file_lookup(&af, "");
        auth_file_free(&af);
    } else if (af.entries != NULL || af.count != 0 || memchr(err, '\0', sizeof(err)) == NULL) {
        __builtin_trap();
    }
    return 0;
}
