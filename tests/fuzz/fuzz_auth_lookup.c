/* Fuzz target for auth_query answers (pool/auth_lookup): DataRow bodies from the auth
 * database, fed as rows (the input split at 0xff 0xfe markers), must be judged without a crash
 * or leak; a secret is only ever returned for exactly one well-formed row naming the user. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pool/auth_lookup.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct auth_lookup_answer a = {0};
    size_t start = 0;
    for (size_t i = 0; i <= size; i++) {
        bool end = i == size || (i + 1 < size && data[i] == 0xff && data[i + 1] == 0xfe);
        if (!end)
            continue;
        auth_lookup_answer_row(&a, "u", data + start, i - start);
        start = i + 2;
        i++;
    }
    const char *why = NULL;
    enum auth_lookup_verdict v = auth_lookup_judge(&a, &why);
    if (v == AUTH_LOOKUP_SECRET && (a.rows != 1 || a.bad || !a.secret || why))
        abort();
    if (v != AUTH_LOOKUP_SECRET && !why)
        abort();
    auth_lookup_answer_clear(&a);
    return 0;
}
