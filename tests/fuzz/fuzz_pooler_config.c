/* libFuzzer target: a whole pooler configuration from a string -- every section
 * ([databases] entries with host lists and load_balance_hosts, [users], [peers], [manager],
 * [pgbouncer] keys and their cross-checks). Files it names (auth_file, auth_hba_file,
 * %include) resolve under a directory that does not exist, so those paths fail cleanly. A
 * load either succeeds and is freed, or fails with a message; nothing may crash or leak. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config/pooler_config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 64 * 1024)
        return 0;
    char *text = malloc(size + 1);
    if (!text)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    struct pooler_config cfg;
    char err[512];
    if (pooler_config_load_string(text, "/nonexistent-pgwarden-fuzz/fuzz.ini", &cfg, err,
                                  sizeof(err))) {
        for (size_t i = 0; i < cfg.n_peers; i++)
            if (!cfg.peers[i].host || cfg.peers[i].id < 1 || cfg.peers[i].id > 16383)
                __builtin_trap();
        pooler_config_free(&cfg);
    } else if (err[0] == '\0') {
        __builtin_trap(); /* a failed load always says why */
    }
    free(text);
    return 0;
}
