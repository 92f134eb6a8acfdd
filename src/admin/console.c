/* The admin console: who may use it, the one-line SQL it takes, the command table, and the
 * commands that steer the pooler (PAUSE, RESUME, RELOAD, SHUTDOWN, KILL, KILL_CLIENT,
 * RECONNECT). The tables it shows live in admin/pooler_tables (PgBouncer's) and
 * admin/manager_console (the live manager's); replies are built with admin/reply. */
#include "admin/console.h"

#include <ctype.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>

#include "admin/manager_console.h"
#include "admin/pooler_tables.h"
#include "admin/reply.h"
#include "common/log.h"
#include "config/pooler_config.h"
#include "live/pool_source.h"
#include "pool/control.h"
#include "pool/handout.h"
#include "pool/objects.h"
#include "pool/pool.h"
#include "pool/serve.h"
#include "pool/server.h"
#include "proto/wire.h"

/* Grows the output like a vector (1 kB, then doubling); the bytes belong to the console_out. */
static bool out_grow(struct wire_buf *b, size_t need)
{
    size_t cap = b->cap ? b->cap : 1024;
    while (cap - b->len < need)
        cap *= 2;
    uint8_t *d = realloc(b->data, cap);
    if (!d)
        return false;
    b->data = d;
    b->cap = cap;
    return true;
}

void console_out_init(struct console_out *o)
{
    wire_buf_init_growable(&o->buf, out_grow);
    o->sent = 0;
    o->wait = CONSOLE_WAIT_NONE;
    o->wait_db[0] = '\0';
}

void console_out_free(struct console_out *o)
{
    free(o->buf.data);
    console_out_init(o);
}

void console_welcome(struct console_out *o, const char *application_name)
{
    struct wire_buf *b = &o->buf;
    wire_build_parameter_status(b, "server_version", "15.0 (pgwarden " PGWARDEN_VERSION ")");
    wire_build_parameter_status(b, "server_encoding", "UTF8");
    wire_build_parameter_status(b, "client_encoding", "UTF8");
    wire_build_parameter_status(b, "DateStyle", "ISO, MDY");
    wire_build_parameter_status(b, "TimeZone", "UTC");
    wire_build_parameter_status(b, "standard_conforming_strings", "on");
    wire_build_parameter_status(b, "integer_datetimes", "on");
    wire_build_parameter_status(b, "is_superuser", "off");
    wire_build_parameter_status(b, "application_name", application_name ? application_name : "");
}

/* ---- access ---- */

bool console_is_admin_db(const char *db)
{
    return !strcmp(db, "pgbouncer") || !strcmp(db, "pgwarden");
}

static bool listed(const char *list, const char *name)
{
    size_t n = strlen(name);
    const char *p = list ? list : "";
    while (*p) {
        while (*p == ' ' || *p == ',')
            p++;
        size_t k = strcspn(p, ", ");
        if (k == n && !strncmp(p, name, n))
            return true;
        p += k;
    }
    return false;
}

enum console_access console_peer_access(const char *user, bool same_uid_over_unix_socket)
{
    return same_uid_over_unix_socket && !strcmp(user, "pgbouncer") ? CONSOLE_ADMIN : CONSOLE_DENIED;
}

enum console_access console_access_for(const struct pooler_config *cfg, const char *user)
{
    if (listed(cfg->admin_users, user))
        return CONSOLE_ADMIN;
    if (listed(cfg->stats_users, user))
        return CONSOLE_STATS;
    return CONSOLE_DENIED;
}

/* ---- KILL, KILL_CLIENT, RECONNECT ---- */

/* Normalises sql into upper-case words separated by one space, without a trailing ';'. */
static void normalise(const char *sql, char *out, size_t len)
{
    size_t j = 0;
    bool space = false;
    for (const char *s = sql; *s && j + 1 < len; s++) {
        char ch = *s;
        if (ch == ';')
            break;
        if (isspace((unsigned char)ch)) {
            space = j > 0;
            continue;
        }
        /* Room for the separator, this character and the terminator: a long command is
         * cut, never written past out (the fuzz target found the one-byte overrun). */
        if (space && j + 2 >= len)
            break;
        if (space)
            out[j++] = ' ';
        space = false;
        out[j++] = (char)toupper((unsigned char)ch);
    }
    out[j] = '\0';
}

/* The database argument as typed (case kept), after the command word. */
static void argument(const char *sql, char *out, size_t len)
{
    while (isspace((unsigned char)*sql))
        sql++;
    while (*sql && !isspace((unsigned char)*sql))
        sql++; /* the command word */
    while (isspace((unsigned char)*sql))
        sql++;
    size_t n = strcspn(sql, " \t\r\n;");
    if (n >= len)
        n = len - 1;
    memcpy(out, sql, n);
    out[n] = '\0';
}

/* PgBouncer's answer to PAUSE and KILL while everything is paused already. */
static bool refuse_when_paused(const struct pooler *p, struct console_out *o)
{
    if (p->run_state != POOLER_PAUSED && p->run_state != POOLER_SUSPENDED)
        return false;
    reply_error(o, "55000", "already suspended/paused");
    return true;
}

static void kill_command(struct pooler *p, const char *sql, struct console_out *o)
{
    char cmd[128];
    normalise(sql, cmd, sizeof(cmd));
    char arg[128];
    argument(sql, arg, sizeof(arg));
    if (!strncmp(cmd, "KILL_CLIENT ", 12)) {
        /* ids as SHOW CLIENTS prints them: c<id> or just <id> */
        const char *digits = arg[0] == 'c' ? arg + 1 : arg;
        char *end;
        unsigned long long id = strtoull(digits, &end, 10);
        /* PgBouncer's words (it takes the id as a pointer), with its code. */
        if (!*digits || *end) {
            reply_error(o, "08P01", "invalid client pointer supplied");
            return;
        }
        /* pgwarden's guarded form: the client's state_change_ms and requests as SHOW SNAPSHOT
         * printed them. The client is closed only when it is still as seen, checked in this
         * loop turn: kill-idle --execute would otherwise close a client that woke up since
         * its plan. */
        const char *guard = strchr(cmd + 12, ' ');
        long long seen_change = 0, seen_requests = 0;
        int used = 0;
        if (guard && (sscanf(guard, " %lld %lld%n", &seen_change, &seen_requests, &used) != 2 ||
                      guard[used])) {
            reply_error(o, "42601",
                        "KILL_CLIENT takes a client id, optionally followed by the client's "
                        "state_change_ms and requests");
            return;
        }
        struct client *c = objects_client_find(p, id);
        if (!c) {
            /* The guarded form's caller tells a client that left from a failure. */
            reply_error(o, guard ? "42704" : "08P01", "client not found");
            return;
        }
        if (guard && !pool_source_client_unchanged(c, seen_change, seen_requests)) {
            reply_error(o, "55000",
                        "client %llu served a request or changed state since it was seen: "
                        "not closed",
                        id);
            return;
        }
        /* Same loop turn as any hand-off: the client is closed in the state it is in now; a
         * busy server dies with it. */
        objects_client_fail(c, "57P01", "terminated by the admin console (KILL_CLIENT)");
        reply_complete(o, "KILL_CLIENT");
        return;
    }
    bool kill = !strcmp(cmd, "KILL") || !strncmp(cmd, "KILL ", 5);
    if (kill && refuse_when_paused(p, o))
        return;
    if (kill && console_is_admin_db(arg)) { /* PgBouncer's words */
        reply_error(o, "08P01", "cannot kill admin db: %s", arg);
        return;
    }
    int matched = 0;
    for (struct plist *n = p->pools.next; n != &p->pools; n = n->next) {
        struct pool *pool = plist_entry(n, struct pool, node);
        if (arg[0] && strcmp(pool->db_name, arg))
            continue;
        matched++;
        /* New clients of a killed database wait for RESUME, as in PgBouncer. */
        if (kill && !control_pause(p, pool->db_name)) {
            reply_error(o, "53200", "out of memory");
            return;
        }
        struct plist *lists[] = {&pool->idle_servers, &pool->active_servers, &pool->tested_servers,
                                 &pool->login_servers, &pool->canceling_servers};
        if (kill) {
            struct plist *clists[] = {&pool->active_clients, &pool->waiting_clients,
                                      &pool->waiting_login_clients};
            for (size_t i = 0; i < 3; i++) {
                struct plist *m;
                while ((m = plist_first(clists[i])) != NULL)
                    objects_client_fail(plist_entry(m, struct client, node), "57P01",
                                        "terminated by the admin console (KILL)");
            }
            for (size_t i = 0; i < 5; i++) {
                struct plist *m;
                while ((m = plist_first(lists[i])) != NULL)
                    server_close(plist_entry(m, struct server, node), "KILL on the console");
            }
        } else {
            /* RECONNECT: every server is replaced when it is next released. */
            objects_pool_mark_servers_obsolete(pool);
        }
    }
    if (arg[0] && !matched && !pooler_config_find_db(p->cfg, arg)) {
        reply_error(o, "08P01", "no such database: %s", arg); /* PgBouncer's code */
        return;
    }
    /* A database no client has logged in to yet has no pool, but is paused all the same:
     * clients that log in after the KILL, or were in the middle of their login, wait for
     * RESUME (PgBouncer pauses the database, not its pools). */
    if (kill && arg[0] && !matched && !control_pause(p, arg)) {
        reply_error(o, "53200", "out of memory");
        return;
    }
    reply_complete(o, kill ? "KILL" : "RECONNECT");
}

/* ---- dispatch ---- */

/* ---- PAUSE, RESUME, RELOAD, SHUTDOWN ---- */

/* The database named after the command word, checked to exist: false (answered) when not. */
static bool database_argument(struct pooler *p, const char *sql, char *db, size_t len,
                              struct console_out *o)
{
    argument(sql, db, len);
    if (!db[0])
        return true;
    bool known = pooler_config_find_db(p->cfg, db) != NULL;
    for (struct plist *n = p->pools.next; n != &p->pools && !known; n = n->next)
        known = !strcmp(plist_entry(n, struct pool, node)->db_name, db);
    if (!known)
        reply_error(o, "08P01", "no such database: %s", db); /* PgBouncer's code */
    return known;
}

/* The answer comes when the condition holds (console_wait_finish). */
static void wait_for(struct console_out *o, enum console_wait wait, const char *db)
{
    o->wait = (uint8_t)wait;
    snprintf(o->wait_db, sizeof(o->wait_db), "%s", db);
}

static void pause_command(struct pooler *p, const char *sql, struct console_out *o)
{
    char db[64];
    if (refuse_when_paused(p, o) || !database_argument(p, sql, db, sizeof(db), o))
        return;
    if (db[0] && !control_pause(p, db)) {
        reply_error(o, "53200", "out of memory");
        return;
    }
    if (!db[0])
        serve_pause(p);
    wait_for(o, CONSOLE_WAIT_PAUSE, db);
}

static void resume_command(struct pooler *p, const char *sql, struct console_out *o)
{
    char db[64];
    if (!database_argument(p, sql, db, sizeof(db), o))
        return;
    if (p->run_state == POOLER_SHUTDOWN_SERVERS || p->run_state == POOLER_SHUTDOWN_CLIENTS) {
        reply_error(o, "08P01", "pooler is shutting down"); /* PgBouncer's answer */
        return;
    }
    if (db[0] && !control_db_paused(p, db)) {
        reply_error(o, "55000", "database %s is not paused", db);
        return;
    }
    if (!db[0] && p->run_state != POOLER_PAUSED && p->run_state != POOLER_SUSPENDED) {
        reply_error(o, "55000", "pooler is not paused/suspended");
        return;
    }
    if (db[0])
        control_resume(p, db);
    else
        serve_resume(p);
    reply_complete(o, "RESUME");
}

static void disable_command(struct pooler *p, const char *sql, struct console_out *o)
{
    char db[64];
    if (!database_argument(p, sql, db, sizeof(db), o))
        return;
    bool disable = !strncasecmp(sql + strspn(sql, " \t\r\n"), "DISABLE", 7);
    if (!control_disable(p, db, disable)) {
        reply_error(o, "53200", "out of memory");
        return;
    }
    reply_complete(o, disable ? "DISABLE" : "ENABLE");
}

static void wait_close_command(struct pooler *p, const char *sql, struct console_out *o)
{
    char db[64];
    if (database_argument(p, sql, db, sizeof(db), o))
        wait_for(o, CONSOLE_WAIT_CLOSE, db);
}

/* PgBouncer's SUSPEND: stop reading pooled clients and their servers, answer once what was
 * read is sent on; RESUME goes on. New clients log in and wait for a server meanwhile. */
static void suspend_command(struct pooler *p, const char *sql, struct console_out *o)
{
    (void)sql;
    if (refuse_when_paused(p, o))
        return;
    if (control_any_db_paused(p)) { /* PgBouncer's rule and words */
        reply_error(o, "55000", "cannot suspend with paused databases");
        return;
    }
    if (!serve_suspend(p)) {
        reply_error(o, "55000", "pooler is shutting down");
        return;
    }
    wait_for(o, CONSOLE_WAIT_SUSPEND, "");
}

bool console_wait_over(const struct pooler *p, enum console_wait wait, const char *db)
{
    switch (wait) {
    case CONSOLE_WAIT_PAUSE:
        return control_paused_done(p, db);
    case CONSOLE_WAIT_CLOSE:
        return control_closed_done(p, db);
    case CONSOLE_WAIT_SUSPEND:
        return control_suspend_flushed(p);
    case CONSOLE_WAIT_NONE:
        break;
    }
    return true;
}

void console_wait_finish(enum console_wait wait, struct console_out *o)
{
    static const char *const tags[] = {
        [CONSOLE_WAIT_NONE] = "",
        [CONSOLE_WAIT_PAUSE] = "PAUSE",
        [CONSOLE_WAIT_CLOSE] = "WAIT_CLOSE",
        [CONSOLE_WAIT_SUSPEND] = "SUSPEND",
    };
    reply_complete(o, tags[wait]);
    wire_build_ready(&o->buf, WIRE_XACT_IDLE);
}

static void reload_command(struct pooler *p, const char *sql, struct console_out *o)
{
    (void)sql;
    char err[512];
    if (serve_reload(p, err, sizeof(err))) {
        reply_complete(o, "RELOAD");
        return;
    }
    /* PgBouncer's message (serve_reload logs why); the reason goes in the error's detail
     * too, which psql and libpq show under it. The configuration stays. */
    struct wire_buf *b = &o->buf;
    size_t m = wire_msg_begin(b, WIRE_BE_ERROR);
    const struct {
        uint8_t code;
        const char *value;
    } fields[] = {{'S', "ERROR"},
                  {'V', "ERROR"},
                  {'C', "F0000"},
                  {'M', "RELOAD failed, see logs for additional details"},
                  {'D', err}};
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
        wire_put_u8(b, fields[i].code);
        wire_put_cstr(b, fields[i].value);
    }
    wire_put_u8(b, 0);
    wire_msg_end(b, m);
}

static void shutdown_command(struct pooler *p, const char *sql, struct console_out *o)
{
    char how[64];
    argument(sql, how, sizeof(how));
    if (!how[0]) {
        serve_shutdown(p);
    } else if (!strcasecmp(how, "WAIT_FOR_SERVERS") || !strcasecmp(how, "WAIT_FOR_CLIENTS")) {
        serve_shutdown_when(p, !strcasecmp(how, "WAIT_FOR_CLIENTS"));
    } else {
        reply_error(o, "42601", "SHUTDOWN takes WAIT_FOR_SERVERS or WAIT_FOR_CLIENTS");
        return;
    }
    reply_complete(o, "SHUTDOWN");
}

/* ---- SET key = value ---- */

bool console_parse_set(const char *sql, char *key, size_t key_len, char *value, size_t value_len)
{
    const char *s = sql;
    while (isspace((unsigned char)*s))
        s++;
    if (strncasecmp(s, "SET", 3) != 0 || !isspace((unsigned char)s[3]))
        return false;
    s += 3;
    while (isspace((unsigned char)*s))
        s++;
    size_t n = 0;
    while (isalnum((unsigned char)s[n]) || s[n] == '_')
        n++;
    if (n == 0 || n >= key_len)
        return false;
    memcpy(key, s, n);
    key[n] = '\0';
    s += n;
    while (isspace((unsigned char)*s))
        s++;
    if (*s == '=')
        s++;
    else if (!strncasecmp(s, "TO", 2) && isspace((unsigned char)s[2]))
        s += 2;
    else
        return false;
    while (isspace((unsigned char)*s))
        s++;
    size_t j = 0;
    if (*s == '\'') {
        /* A quoted value; '' stands for one quote. */
        for (s++;; s++) {
            if (*s == '\0')
                return false; /* unterminated */
            if (*s == '\'') {
                if (s[1] != '\'')
                    break;
                s++;
            }
            if (j + 1 >= value_len)
                return false;
            value[j++] = *s;
        }
        s++;
    } else {
        while (*s && !isspace((unsigned char)*s) && *s != ';') {
            if (j + 1 >= value_len)
                return false;
            value[j++] = *s++;
        }
        if (j == 0)
            return false;
    }
    value[j] = '\0';
    while (isspace((unsigned char)*s) || *s == ';')
        s++;
    return *s == '\0';
}

static void set_command(struct pooler *p, const char *sql, struct console_out *o)
{
    char key[64], value[1024], err[512];
    if (!console_parse_set(sql, key, sizeof(key), value, sizeof(value))) {
        reply_error(o, "42601", "SET needs: SET key = value (quote values with spaces: 'a b')");
        return;
    }
    switch (serve_set(p, key, value, err, sizeof(err))) {
    case SERVE_SET_REFUSED:
        reply_error(o, "F0000", "%s", err);
        return;
    case SERVE_SET_TLS_NOT_APPLIED: /* PgBouncer's words, then the reason */
        reply_notice_detail(o, "TLS settings could not be applied, still using old configuration",
                            err);
        break;
    case SERVE_SET_APPLIED:
        break;
    }
    reply_complete(o, "SET");
}

/* ---- dispatch ---- */

enum arg_rule {
    ARG_NONE,     /* the command alone */
    ARG_OPTIONAL, /* the command, or the command and one argument */
    ARG_REQUIRED, /* the command and one argument */
    ARG_ANY,      /* the command and whatever follows (the act parses sql itself) */
    ARG_SOME,     /* the command and at least one argument (the act parses sql itself) */
};

struct console_command {
    const char *words; /* upper case, as normalise() leaves them */
    enum arg_rule arg;
    bool admin_only;                                       /* stats_users may not run it */
    void (*show)(struct pooler *p, struct console_out *o); /* or: */
    void (*act)(struct pooler *p, const char *sql, struct console_out *o); /* sql as typed */
};

static const struct console_command COMMANDS[] = {
    /* PgBouncer's tables */
    {"SHOW POOLS", ARG_NONE, false, pooler_tables_pools, NULL},
    {"SHOW PEER_POOLS", ARG_NONE, false, pooler_tables_peer_pools, NULL},
    {"SHOW STATS", ARG_NONE, false, pooler_tables_stats, NULL},
    {"SHOW STATS_TOTALS", ARG_NONE, false, pooler_tables_stats_totals, NULL},
    {"SHOW STATS_AVERAGES", ARG_NONE, false, pooler_tables_stats_averages, NULL},
    {"SHOW TOTALS", ARG_NONE, false, pooler_tables_totals, NULL},
    {"SHOW DATABASES", ARG_NONE, false, pooler_tables_databases, NULL},
    {"SHOW USERS", ARG_NONE, false, pooler_tables_users, NULL},
    {"SHOW PEERS", ARG_NONE, false, pooler_tables_peers, NULL},
    {"SHOW CLIENTS", ARG_NONE, false, pooler_tables_clients, NULL},
    {"SHOW SERVERS", ARG_NONE, false, pooler_tables_servers, NULL},
    {"SHOW SOCKETS", ARG_NONE, false, pooler_tables_sockets, NULL},
    {"SHOW ACTIVE_SOCKETS", ARG_NONE, false, pooler_tables_active_sockets, NULL},
    {"SHOW FDS", ARG_NONE, true, pooler_tables_fds, NULL},
    {"SHOW LISTS", ARG_NONE, false, pooler_tables_lists, NULL},
    {"SHOW MEM", ARG_NONE, false, pooler_tables_mem, NULL},
    {"SHOW DNS_HOSTS", ARG_NONE, false, pooler_tables_dns_hosts, NULL},
    {"SHOW DNS_ZONES", ARG_NONE, false, pooler_tables_dns_zones, NULL},
    {"SHOW CONFIG", ARG_NONE, false, pooler_tables_config, NULL},
    {"SHOW VERSION", ARG_NONE, false, pooler_tables_version, NULL},
    {"SHOW STATE", ARG_NONE, false, pooler_tables_state, NULL},
    {"SHOW POOL_COUNTERS", ARG_NONE, false, pooler_tables_pool_counters, NULL},
    {"SHOW HELP", ARG_NONE, false, pooler_tables_help, NULL},
    {"SHOW", ARG_NONE, false, pooler_tables_help, NULL},
    /* the live manager */
    {"SHOW LEAKS", ARG_NONE, false, manager_console_leaks, NULL},
    {"SHOW EVENTS", ARG_NONE, false, manager_console_events, NULL},
    {"SHOW SCALING", ARG_NONE, false, manager_console_scaling, NULL},
    {"SHOW HEALTH", ARG_NONE, false, manager_console_health, NULL},
    {"SHOW ANALYSIS", ARG_NONE, false, manager_console_analysis, NULL},
    {"SHOW MANAGER", ARG_NONE, false, manager_console_settings, NULL},
    {"SHOW SNAPSHOT", ARG_NONE, false, manager_console_snapshot, NULL},
    {"SHOW SNAPSHOT_TOTALS", ARG_NONE, false, manager_console_snapshot_totals, NULL},
    {"SHOW SNAPSHOT_POOLS", ARG_NONE, false, manager_console_snapshot_pools, NULL},
    {"KILL_IDLE DRY RUN", ARG_NONE, false, manager_console_kill_idle_dry_run, NULL},
    {"KILL_IDLE", ARG_NONE, true, NULL, manager_console_kill_idle},
    {"HEALTH_CHECK", ARG_NONE, true, NULL, manager_console_health_check},
    {"AUTO_SCALE DRY RUN", ARG_NONE, false, manager_console_auto_scale_dry_run, NULL},
    {"AUTO_SCALE", ARG_NONE, true, NULL, manager_console_auto_scale},
    /* steering the pooler */
    {"KILL", ARG_OPTIONAL, true, NULL, kill_command},
    {"KILL_CLIENT", ARG_SOME, true, NULL, kill_command}, /* id [state_change_ms requests] */
    {"RECONNECT", ARG_OPTIONAL, true, NULL, kill_command},
    {"PAUSE", ARG_OPTIONAL, true, NULL, pause_command},
    {"RESUME", ARG_OPTIONAL, true, NULL, resume_command},
    {"DISABLE", ARG_REQUIRED, true, NULL, disable_command},
    {"ENABLE", ARG_REQUIRED, true, NULL, disable_command},
    {"WAIT_CLOSE", ARG_OPTIONAL, true, NULL, wait_close_command},
    {"SUSPEND", ARG_NONE, true, NULL, suspend_command},
    {"RELOAD", ARG_NONE, true, NULL, reload_command},
    {"SHUTDOWN", ARG_OPTIONAL, true, NULL, shutdown_command},
    {"SET", ARG_ANY, true, NULL, set_command},
};

/* The command cmd (normalised) names, or NULL. */
static const struct console_command *find_command(const char *cmd)
{
    for (size_t i = 0; i < sizeof(COMMANDS) / sizeof(COMMANDS[0]); i++) {
        const struct console_command *k = &COMMANDS[i];
        size_t n = strlen(k->words);
        if (strncmp(cmd, k->words, n))
            continue;
        if (cmd[n] == '\0' && k->arg != ARG_REQUIRED && k->arg != ARG_SOME)
            return k;
        if (cmd[n] == ' ' && (k->arg == ARG_ANY || k->arg == ARG_SOME))
            return k;
        if (cmd[n] == ' ' && k->arg != ARG_NONE && !strchr(cmd + n + 1, ' '))
            return k;
    }
    return NULL;
}

enum console_verdict console_handle_message(struct pooler *p, enum console_access access,
                                            uint8_t type, const uint8_t *body, uint32_t len,
                                            bool *skipping, struct console_out *o)
{
    if (type == WIRE_FE_SYNC) {
        /* The end of an extended-protocol batch: whatever it held was refused once. */
        *skipping = false;
        wire_build_ready(&o->buf, WIRE_XACT_IDLE);
        return CONSOLE_ANSWERED;
    }
    if (*skipping)
        return CONSOLE_ANSWERED; /* as PostgreSQL: everything up to Sync is discarded */
    switch (type) {
    case WIRE_FE_QUERY:
        if (len == 0 || body[len - 1] != 0)
            return CONSOLE_PROTOCOL_VIOLATION;
        console_handle_query(p, access, (const char *)body, o);
        return CONSOLE_ANSWERED;
    case WIRE_FE_PARSE:
    case WIRE_FE_BIND:
    case WIRE_FE_DESCRIBE:
    case WIRE_FE_EXECUTE:
    case WIRE_FE_CLOSE:
    case WIRE_FE_FLUSH:
        reply_error(o, "0A000",
                    "the admin console accepts only the simple query protocol (as psql sends "
                    "it)");
        *skipping = true;
        return CONSOLE_ANSWERED;
    case WIRE_FE_FUNCTION_CALL:
        reply_error(o, "0A000", "the admin console has no functions to call");
        wire_build_ready(&o->buf, WIRE_XACT_IDLE);
        return CONSOLE_ANSWERED;
    default:
        return CONSOLE_PROTOCOL_VIOLATION;
    }
}

void console_handle_query(struct pooler *p, enum console_access access, const char *sql,
                          struct console_out *o)
{
    char cmd[128];
    normalise(sql, cmd, sizeof(cmd));
    const struct console_command *k = cmd[0] ? find_command(cmd) : NULL;
    if (cmd[0] == '\0') {
        size_t m = wire_msg_begin(&o->buf, WIRE_BE_EMPTY_QUERY);
        wire_msg_end(&o->buf, m);
    } else if (!k) {
        reply_error(o, "42601", "invalid command '%.64s', use SHOW HELP;", cmd);
    } else if (k->admin_only && access != CONSOLE_ADMIN) {
        reply_error(o, "42501", "admin access needed for %s (user is in stats_users only)", cmd);
    } else if (k->show) {
        k->show(p, o);
    } else {
        k->act(p, sql, o);
    }
    if (o->wait == CONSOLE_WAIT_NONE)
        wire_build_ready(&o->buf, WIRE_XACT_IDLE);
}
