/* Fuzz target for the manager options parser (command line and [manager] values: durations,
 * percentages, integers, booleans, name lists, address/CIDR lists, leak_reclaim): any key and
 * value must be accepted or refused with a message, never crash, and leave the options valid
 * to free. Input: lines of "key=value". */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "manager/options.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    if (!text)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    struct manager_options opts;
    options_init_defaults(&opts);
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char *eq = strchr(line, '=');
        if (!eq)
            continue;
        *eq = '\0';
        char err[256];
        enum options_result r = options_set(&opts, line, eq + 1, err, sizeof(err));
        if (r != OPTIONS_OK && r != OPTIONS_NO_MEMORY && err[0] == '\0')
            abort(); /* a refusal always says why */
    }
    char err[256];
    (void)options_validate(&opts, err, sizeof(err));
    options_free(&opts);
    free(text);
    return 0;
}
