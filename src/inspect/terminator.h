/* Inspect-mode executor of a kill plan: terminates each planned session with a statement
 * that re-checks, at the moment of acting, that it is still the same backend in the same
 * idle period and still passes every safety rule. */
#ifndef PGWARDEN_INSPECT_TERMINATOR_H
#define PGWARDEN_INSPECT_TERMINATOR_H

#include <libpq-fe.h>

#include "manager/options.h"
#include "manager/reaper.h"

/* Acts on every KILL_PLANNED action and records its outcome (terminated, gone, denied,
 * failed); updates plan->killed. Never fails as a whole: each target gets its own result. */
void terminator_execute(PGconn *conn, const struct manager_options *opts, struct kill_plan *plan);

#endif
