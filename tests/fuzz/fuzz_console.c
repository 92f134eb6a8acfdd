/* Fuzz target for the admin console's input: a sequence of frontend messages (type byte,
 * then a body; lengths come from the input) handed to console_handle_message as a stats user
 * on a pooler without pools, and the SET parser on the raw text. Invariants: every answer is
 * a run of well-framed backend messages (type, length that fits), a Query is always answered
 * with exactly one ReadyForQuery at its end, nothing after a refused extended-protocol
 * message is answered before its Sync, and SET's parser returns NUL-terminated parts within
 * their buffers. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "admin/console.h"
#include "config/pooler_config.h"
#include "net/loop.h"
#include "pool/pool.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct pooler *pooler_once(void)
{
    static struct pooler p;
    static struct pooler_config cfg;
    static bool ready;
    if (!ready) {
        if (!pooler_config_init_defaults(&cfg))
            abort();
        p.cfg = &cfg;
        p.loop = net_loop_new();
        if (!p.loop)
            abort();
        plist_init(&p.pools);
        plist_init(&p.login_clients);
        ready = true;
    }
    return &p;
}

/* The messages in buf are framed exactly; returns how many ReadyForQuery there are. */
static int check_framing(const struct wire_buf *b)
{
    size_t at = 0;
    int ready = 0;
    while (at < b->len) {
        if (b->len - at < 5)
            abort();
        uint32_t len = (uint32_t)b->data[at + 1] << 24 | (uint32_t)b->data[at + 2] << 16 |
                       (uint32_t)b->data[at + 3] << 8 | b->data[at + 4];
        if (len < 4 || len > b->len - at - 1)
            abort();
        ready += b->data[at] == 'Z';
        at += 1 + len;
    }
    return ready;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct pooler *p = pooler_once();
    bool skipping = false;
    size_t at = 0;
    while (at + 2 <= size) {
        uint8_t type = data[at];
        size_t len = data[at + 1];
        at += 2;
        if (len > size - at)
            len = size - at;
        /* A Query body as the pooler hands it over: NUL-terminated inside the message. */
        uint8_t *body = malloc(len + 1);
        if (!body)
            return 0;
        memcpy(body, data + at, len);
        body[len] = '\0';
        at += len;
        struct console_out o;
        console_out_init(&o);
        bool was_skipping = skipping;
        enum console_verdict v =
            console_handle_message(p, CONSOLE_STATS, type, body, (uint32_t)len + 1, &skipping, &o);
        if (!o.buf.overflow) {
            int ready = check_framing(&o.buf);
            if (v == CONSOLE_ANSWERED && type == 'Q' && !was_skipping &&
                (ready != 1 || o.buf.data[o.buf.len - 6] != 'Z'))
                abort();
            if (was_skipping && type != 'S' && o.buf.len != 0)
                abort(); /* discarded up to Sync */
        }
        console_out_free(&o);
        free(body);
    }
    char *text = malloc(size + 1);
    if (!text)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    char key[16], value[32];
    if (console_parse_set(text, key, sizeof(key), value, sizeof(value))) {
        if (strnlen(key, sizeof(key)) == sizeof(key) ||
            strnlen(value, sizeof(value)) == sizeof(value) || key[0] == '\0')
            abort();
    }
    free(text);
    return 0;
}
