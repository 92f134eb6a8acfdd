/* `pgwarden serve` entry point (placeholder until the runtime lands). */
#include "pool/serve.h"

#include <stdio.h>

int serve_main(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "pgwarden serve: not implemented yet\n");
    return 3;
}
