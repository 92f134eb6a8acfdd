/* Fuzz target for the owed-answer model: any interleaving of frontend messages and backend
 * answers must keep the queue within its bound, never crash, and never report a server idle
 * while a message it counted is still unanswered. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "proto/owed.h"

static const uint8_t frontend[] = {'Q', 'F', 'S', 'P', 'B', 'D', 'E', 'C', 'H', 'd', 'c', 'f'};
static const uint8_t backend[] = {'Z', 'E', 'G', 'H', 'd', 'c', 'D', 'T', 'n', 't', 'C',
                                  'I', 's', '1', '2', '3', 'V', 'N', 'S', 'A', 'W', 'K'};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct owed_queue q;
    owed_init(&q, NULL, NULL);
    for (size_t i = 0; i < size; i++) {
        uint8_t b = data[i];
        if (b & 0x80) {
            uint8_t type = backend[(b & 0x7f) % sizeof(backend)];
            (void)owed_answer_swallowed(&q, type);
            if (owed_on_backend(&q, type) == OWED_VIOLATION) {
                owed_reset(&q); /* the pooler closes such a server */
                continue;
            }
        } else if (b & 0x40) {
            if (owed_probe_due(&q))
                (void)owed_note_probe(&q);
        } else if (owed_has_room(&q)) {
            (void)owed_note_frontend(&q, frontend[b % sizeof(frontend)],
                                     b & 0x20 ? OWED_SWALLOW : 0, b & 0x10 ? (uint64_t)b : 0);
        }
        if (q.n > OWED_MAX_ENTRIES || q.n_alts > OWED_MAX_ALTS)
            abort();
        if (owed_is_idle(&q) && q.n_alts)
            abort();
    }
    owed_reset(&q);
    return 0;
}
