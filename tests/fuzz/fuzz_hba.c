/* Fuzz target for the HBA file and ident map parsers (auth_hba_file, auth_ident_file): any
 * text must load or be refused with "name:line: reason", never crash; a loaded file's rules
 * carry increasing line numbers within the text, and matching any request against them never
 * crashes and returns one of them. The same text is read as an ident map. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "config/hba.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    if (!text)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    size_t lines = 1;
    for (size_t i = 0; i < size; i++)
        lines += text[i] == '\n';
    struct hba h;
    char err[256] = "";
    if (hba_parse(text, "f", NULL, &h, err, sizeof(err))) {
        int last = 0;
        for (size_t i = 0; i < h.n; i++) {
            if (h.rules[i].line <= last || (size_t)h.rules[i].line > lines)
                abort();
            last = h.rules[i].line;
        }
        static const unsigned char v4[4] = {10, 0, 0, 1}, v6[16] = {0xfd, 0, [15] = 1};
        const struct hba_request reqs[] = {
            {.unix_socket = true, .database = "db", .user = "u"},
            {.tls = true, .family = AF_INET, .addr = v4, .database = "u", .user = "u"},
            {.family = AF_INET6, .addr = v6, .database = "", .user = "", .replication = true},
        };
        for (size_t i = 0; i < sizeof(reqs) / sizeof(reqs[0]); i++) {
            const struct hba_rule *r = hba_match(&h, &reqs[i]);
            if (r && (r < h.rules || r >= h.rules + h.n))
                abort();
            const struct hba_rule *d;
            enum hba_method m = hba_decide(&h, &reqs[i], &d);
            if (d != r || (!d && m != HBA_REJECT) || (d && m != d->method))
                abort();
        }
        /* The same text as its own ident map: every map= it names is checked against it. */
        struct ident_map self;
        if (hba_ident_parse(text, "i", &self, err, sizeof(err))) {
            const char *missing = hba_missing_map(&h, &self);
            for (size_t i = 0; missing && i < self.n; i++)
                if (!strcmp(self.entries[i].map, missing))
                    abort();
            for (size_t i = 0; i < h.n; i++)
                (void)hba_identity_ok(&self, h.rules[i].map, "u", "u");
            hba_ident_free(&self);
        }
        hba_free(&h);
    } else if (strncmp(err, "f:", 2) != 0) {
        abort(); /* a refusal names the file and line */
    }
    struct ident_map m;
    if (hba_ident_parse(text, "i", &m, err, sizeof(err)))
        hba_ident_free(&m);
    free(text);
    return 0;
}
