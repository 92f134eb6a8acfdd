/* Stateful fuzz target for the pooler's data path: the real client.c / server.c / conn.c code,
 * run in-process on its own event loop (net_loop_run_once), with two clients on socketpairs
 * and a scripted fake PostgreSQL behind a unix socket. The input is a program: messages each
 * client queues (startup, SSLRequest, Query, Parse/Bind/Describe/Execute/Sync/Flush/Close,
 * FunctionCall, CopyData/CopyDone/CopyFail, Terminate, garbage), how many of the queued bytes
 * reach the pooler at each step (so messages split anywhere), and what the fake server does
 * (answers at once or holds them, ParameterStatus or notices out of the blue, a crash).
 *
 * After every step it checks:
 *   - every byte the fake server reads is a well-framed frontend message a client may send;
 *   - every byte a client reads is a well-framed backend message;
 *   - a CommandComplete carries the marker of the client whose query it answers: results
 *     never reach another client;
 *   - each server's owed queue stays within its bound (an underflow would show as a huge n),
 *     and a linked server and client point at each other;
 *   - buffers lent out stay bounded by the number of connections.
 * Transaction pooling, max_prepared_statements on: statements are renamed and re-prepared. */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"
#include "config/pooler_config.h"
#include "net/loop.h"
#include "net/sock.h"
#include "pool/cancel.h"
#include "pool/client.h"
#include "pool/control.h"
#include "pool/objects.h"
#include "pool/pool.h"
#include "pool/server.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define N_CLIENTS     2
#define MAX_FAKES     8
#define PEND_CAP      (64 * 1024) /* bytes a client may queue per input */
#define FAKE_PORT     5999
#define MAX_ROUNDS    200 /* loop turns per step; more means the pooler spins */
#define CLIENT_IN_CAP (256 * 1024)
#define MAX_PACKET    65536 /* max_packet_size: the pooler forwards nothing longer */

static char dir[64];
static bool trace; /* FUZZ_SESSION_TRACE set: every message either side reads goes to stderr */
static char config_text[1024];
static int listen_fd = -1;

/* ---- the input, read as a program ---- */

struct input {
    const uint8_t *p;
    size_t left;
};

static uint8_t take(struct input *in)
{
    if (!in->left)
        return 0;
    in->left--;
    return *in->p++;
}

/* ---- byte buffers ---- */

struct bytes {
    uint8_t *d;
    size_t len;
    size_t cap;
};

static void bytes_put(struct bytes *b, const void *src, size_t n)
{
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n)
            cap *= 2;
        uint8_t *d = realloc(b->d, cap);
        if (!d)
            abort();
        b->d = d;
        b->cap = cap;
    }
    memcpy(b->d + b->len, src, n);
    b->len += n;
}

static void bytes_consume(struct bytes *b, size_t n)
{
    memmove(b->d, b->d + n, b->len - n);
    b->len -= n;
}

static void bytes_free(struct bytes *b)
{
    free(b->d);
    memset(b, 0, sizeof(*b));
}

static void put_u32(struct bytes *b, uint32_t v)
{
    uint8_t x[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
    bytes_put(b, x, 4);
}

static void put_u16(struct bytes *b, uint16_t v)
{
    uint8_t x[2] = {(uint8_t)(v >> 8), (uint8_t)v};
    bytes_put(b, x, 2);
}

static void put_str(struct bytes *b, const char *s)
{
    bytes_put(b, s, strlen(s) + 1);
}

static uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* A message: type, then body built by the caller between msg_begin and msg_end. */
static size_t msg_begin(struct bytes *b, uint8_t type)
{
    bytes_put(b, &type, 1);
    size_t at = b->len;
    put_u32(b, 0);
    return at;
}

static void msg_end(struct bytes *b, size_t at)
{
    uint32_t len = (uint32_t)(b->len - at);
    uint8_t x[4] = {(uint8_t)(len >> 24), (uint8_t)(len >> 16), (uint8_t)(len >> 8), (uint8_t)len};
    memcpy(b->d + at, x, 4);
}

static void msg_str(struct bytes *b, uint8_t type, const char *s)
{
    size_t at = msg_begin(b, type);
    put_str(b, s);
    msg_end(b, at);
}

static void msg_empty(struct bytes *b, uint8_t type)
{
    size_t at = msg_begin(b, type);
    msg_end(b, at);
}

/* ---- the fake PostgreSQL ---- */

enum fake_mode { FAKE_STARTUP, FAKE_NORMAL, FAKE_SKIP, FAKE_COPY_SIMPLE, FAKE_COPY_EXT };

struct fake_stmt {
    char name[64];
    char query[160];
    bool used;
};

struct fake {
    int fd;
    struct bytes in;
    struct bytes out;
    enum fake_mode mode;
    char xact; /* 'I', 'T' or 'E' */
    bool held; /* answers wait in out until released */
    struct fake_stmt stmts[16];
    struct fake_stmt portals[4];
};

static struct fake fakes[MAX_FAKES];

static void fake_close(struct fake *f)
{
    if (f->fd >= 0)
        close(f->fd);
    bytes_free(&f->in);
    bytes_free(&f->out);
    memset(f, 0, sizeof(*f));
    f->fd = -1;
}

static void fake_error(struct fake *f, const char *code, const char *text)
{
    size_t at = msg_begin(&f->out, 'E');
    put_str(&f->out, "SERROR");
    char field[64];
    snprintf(field, sizeof(field), "C%s", code);
    put_str(&f->out, field);
    snprintf(field, sizeof(field), "M%s", text);
    put_str(&f->out, field);
    bytes_put(&f->out, "", 1);
    msg_end(&f->out, at);
    if (f->xact == 'T')
        f->xact = 'E';
}

static struct fake_stmt *fake_find(struct fake_stmt *set, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (set[i].used && !strcmp(set[i].name, name))
            return &set[i];
    return NULL;
}

static void fake_ready(struct fake *f)
{
    /* Portals end with their transaction, as in PostgreSQL. The unnamed statement does not:
     * it lives until the next unnamed Parse or simple Query (fake_message), so a client that
     * Binds "" without its own Parse would reach one another client left on its server
     * unless the pooler closes it first (struct unnamed_stmt in pool/prepared.h). */
    if (f->xact == 'I')
        memset(f->portals, 0, sizeof(f->portals));
    size_t at = msg_begin(&f->out, 'Z');
    bytes_put(&f->out, &f->xact, 1);
    msg_end(&f->out, at);
}

static void fake_put(struct fake_stmt *set, size_t n, const char *name, const char *query)
{
    struct fake_stmt *e = fake_find(set, n, name);
    for (size_t i = 0; !e && i < n; i++)
        if (!set[i].used)
            e = &set[i];
    if (!e)
        e = &set[0]; /* full: the fake forgets one (a test server, not PostgreSQL) */
    e->used = true;
    snprintf(e->name, sizeof(e->name), "%s", name);
    snprintf(e->query, sizeof(e->query), "%s", query);
}

/* What running query does: COPY starts a copy, ERR fails, BEGIN/COMMIT move the status; the
 * CommandComplete tag echoes the text, so the client check sees whose query it was. */
static void fake_run(struct fake *f, const char *query, bool simple)
{
    if (f->xact == 'E' && !strstr(query, "ROLLBACK") && !strstr(query, "COMMIT")) {
        fake_error(f, "25P02", "current transaction is aborted");
        if (!simple)
            f->mode = FAKE_SKIP;
        return;
    }
    if (strstr(query, "ERR")) {
        fake_error(f, "42601", "syntax error");
        if (!simple)
            f->mode = FAKE_SKIP;
        return;
    }
    if (strstr(query, "COPY")) {
        size_t at = msg_begin(&f->out, 'G');
        bytes_put(&f->out, "\0\0\0", 3);
        msg_end(&f->out, at);
        f->mode = simple ? FAKE_COPY_SIMPLE : FAKE_COPY_EXT;
        return;
    }
    const char *rest = query;
    while (*rest == ' ')
        rest++;
    if (!strncmp(rest, "/*c", 3) && strlen(rest) == 6) {
        msg_empty(&f->out, 'I');
        return;
    }
    if (strstr(query, "BEGIN"))
        f->xact = 'T';
    else if (strstr(query, "COMMIT") || strstr(query, "ROLLBACK"))
        f->xact = 'I';
    char tag[200];
    snprintf(tag, sizeof(tag), "SELECT %.180s", query);
    msg_str(&f->out, 'C', tag);
}

static bool frontend_type(uint8_t t)
{
    return strchr("QPBDESHCdcfFX", t) != NULL && t != 0;
}

/* One whole frontend message: checks it and answers as PostgreSQL's command loop would. */
static void fake_message(struct fake *f, uint8_t type, const uint8_t *body, uint32_t len)
{
    if (!frontend_type(type)) {
        fprintf(stderr, "fake server: got message type 0x%02x\n", type);
        abort();
    }
    if (type == 'X') {
        f->mode = FAKE_STARTUP; /* ignored: the socket is closed below */
        close(f->fd);
        f->fd = -2;
        return;
    }
    /* Strings inside a message always end inside it: the pooler forwards whole messages. */
    char s1[256] = "", s2[256] = "";
    const uint8_t *nul = len ? memchr(body, 0, len) : NULL;
    if (nul) {
        snprintf(s1, sizeof(s1), "%.*s", (int)(nul - body), (const char *)body);
        const uint8_t *p2 = nul + 1;
        const uint8_t *nul2 = memchr(p2, 0, len - (size_t)(p2 - body));
        if (nul2)
            snprintf(s2, sizeof(s2), "%.*s", (int)(nul2 - p2), (const char *)p2);
    }
    if (f->mode == FAKE_COPY_SIMPLE || f->mode == FAKE_COPY_EXT) {
        bool simple = f->mode == FAKE_COPY_SIMPLE;
        switch (type) {
        case 'd':
        case 'H':
        case 'S':
            return; /* CopyData is consumed, Flush and Sync ignored during COPY */
        case 'c':
            f->mode = FAKE_NORMAL;
            msg_str(&f->out, 'C', "COPY 0");
            if (simple)
                fake_ready(f);
            return;
        default: /* CopyFail, or a message COPY does not take */
            f->mode = simple ? FAKE_NORMAL : FAKE_SKIP;
            fake_error(f, "57014", "COPY from stdin failed");
            if (simple)
                fake_ready(f);
            return;
        }
    }
    if (f->mode == FAKE_SKIP) {
        if (type == 'S') {
            f->mode = FAKE_NORMAL;
            fake_ready(f);
        }
        return;
    }
    switch (type) {
    case 'Q': {
        /* A simple Query drops the unnamed statement and portal first (exec_simple_query). */
        struct fake_stmt *unnamed = fake_find(f->stmts, 16, "");
        if (unnamed)
            unnamed->used = false;
        unnamed = fake_find(f->portals, 4, "");
        if (unnamed)
            unnamed->used = false;
        fake_run(f, s1, true);
        if (f->mode == FAKE_NORMAL)
            fake_ready(f);
        return;
    }
    case 'P':
        if (s1[0] && fake_find(f->stmts, 16, s1)) {
            fake_error(f, "42P05", "prepared statement already exists");
            f->mode = FAKE_SKIP;
            return;
        }
        fake_put(f->stmts, 16, s1, s2);
        msg_empty(&f->out, '1');
        return;
    case 'B': {
        struct fake_stmt *st = fake_find(f->stmts, 16, s2);
        if (!st) {
            fake_error(f, "26000", "prepared statement does not exist");
            f->mode = FAKE_SKIP;
            return;
        }
        fake_put(f->portals, 4, s1, st->query);
        msg_empty(&f->out, '2');
        return;
    }
    case 'D': {
        bool stmt = len && body[0] == 'S';
        const char *name = len > 1 ? (const char *)body + 1 : "";
        char n[64];
        snprintf(n, sizeof(n), "%.*s", (int)strnlen(name, len > 1 ? len - 1 : 0), name);
        if (!fake_find(stmt ? f->stmts : f->portals, stmt ? 16 : 4, n)) {
            fake_error(f, stmt ? "26000" : "34000", "does not exist");
            f->mode = FAKE_SKIP;
            return;
        }
        if (stmt) {
            size_t at = msg_begin(&f->out, 't');
            put_u16(&f->out, 0);
            msg_end(&f->out, at);
        }
        msg_empty(&f->out, 'n');
        return;
    }
    case 'E': {
        struct fake_stmt *portal = fake_find(f->portals, 4, s1);
        if (!portal) {
            fake_error(f, "34000", "portal does not exist");
            f->mode = FAKE_SKIP;
            return;
        }
        fake_run(f, portal->query, false);
        return;
    }
    case 'C': {
        bool stmt = len && body[0] == 'S';
        const char *name = len > 1 ? (const char *)body + 1 : "";
        char n[64];
        snprintf(n, sizeof(n), "%.*s", (int)strnlen(name, len > 1 ? len - 1 : 0), name);
        struct fake_stmt *e = fake_find(stmt ? f->stmts : f->portals, stmt ? 16 : 4, n);
        if (e)
            e->used = false;
        msg_empty(&f->out, '3');
        return;
    }
    case 'S':
        fake_ready(f);
        return;
    case 'H':
        return;
    case 'F': {
        size_t at = msg_begin(&f->out, 'V');
        put_u32(&f->out, 0xffffffffu);
        msg_end(&f->out, at);
        fake_ready(f);
        return;
    }
    default: /* CopyData, CopyDone, CopyFail outside COPY: PostgreSQL ignores them */
        return;
    }
}

static void fake_login(struct fake *f)
{
    size_t at = msg_begin(&f->out, 'R');
    put_u32(&f->out, 0);
    msg_end(&f->out, at);
    static const char *const params[][2] = {
        {"server_version", "16.4"},     {"client_encoding", "UTF8"},
        {"DateStyle", "ISO, MDY"},      {"TimeZone", "UTC"},
        {"integer_datetimes", "on"},    {"standard_conforming_strings", "on"},
        {"application_name", ""},       {"is_superuser", "off"},
        {"session_authorization", "u"}, {"IntervalStyle", "postgres"},
    };
    for (size_t i = 0; i < sizeof(params) / sizeof(params[0]); i++) {
        at = msg_begin(&f->out, 'S');
        put_str(&f->out, params[i][0]);
        put_str(&f->out, params[i][1]);
        msg_end(&f->out, at);
    }
    at = msg_begin(&f->out, 'K');
    put_u32(&f->out, 4242);
    put_u32(&f->out, 77);
    msg_end(&f->out, at);
    f->xact = 'I';
    fake_ready(f);
    f->mode = FAKE_NORMAL;
}

/* Reads, answers and sends what it can; true when anything moved. */
static bool fake_service(struct fake *f)
{
    bool moved = false;
    for (;;) {
        uint8_t buf[4096];
        ssize_t n = read(f->fd, buf, sizeof(buf));
        if (n > 0) {
            bytes_put(&f->in, buf, (size_t)n);
            moved = true;
            continue;
        }
        if (n == 0) {
            fake_close(f);
            return true;
        }
        break;
    }
    while (f->fd >= 0) {
        if (f->mode == FAKE_STARTUP) {
            if (f->in.len < 4)
                break;
            uint32_t len = get_u32(f->in.d);
            if (len < 8 || len > 10000) {
                fprintf(stderr, "fake server: startup packet of %u bytes\n", len);
                abort();
            }
            if (f->in.len < len)
                break;
            if (get_u32(f->in.d + 4) != 196608) {
                fprintf(stderr, "fake server: startup code %u\n", get_u32(f->in.d + 4));
                abort();
            }
            bytes_consume(&f->in, len);
            fake_login(f);
            continue;
        }
        if (f->in.len < 5)
            break;
        uint32_t len = get_u32(f->in.d + 1);
        if (len < 4 || len > MAX_PACKET) {
            fprintf(stderr, "fake server: message '%c' of length %u\n", f->in.d[0], len);
            abort();
        }
        if (f->in.len < 1 + (size_t)len)
            break;
        if (trace)
            fprintf(stderr, "server %d <- '%c' %u\n", (int)(f - fakes), f->in.d[0], len);
        fake_message(f, f->in.d[0], f->in.d + 5, len - 4);
        if (f->fd == -2) {
            f->fd = -1;
            fake_close(f);
            return true;
        }
        bytes_consume(&f->in, 1 + len);
    }
    if (f->fd >= 0 && !f->held && f->out.len) {
        ssize_t n = write(f->fd, f->out.d, f->out.len);
        if (n > 0) {
            bytes_consume(&f->out, (size_t)n);
            moved = true;
        }
    }
    return moved;
}

static bool fake_accept(void)
{
    bool moved = false;
    for (;;) {
        int fd = accept4(listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            return moved;
        moved = true;
        struct fake *f = NULL;
        for (size_t i = 0; i < MAX_FAKES && !f; i++)
            if (fakes[i].fd < 0)
                f = &fakes[i];
        if (!f) {
            close(fd); /* the pooler sees a server that hung up at once */
            continue;
        }
        f->fd = fd;
        f->mode = FAKE_STARTUP;
    }
}

/* ---- the clients ---- */

struct fclient {
    int fd;            /* our end of the socketpair, -1 when closed */
    struct bytes pend; /* queued, not yet written */
    struct bytes in;   /* read, not yet parsed */
    bool ssl_answer_due;
    bool dead;
    size_t received;
};

static struct fclient clients[N_CLIENTS];

static bool backend_type(uint8_t t)
{
    return t && strchr("RSKZEN123CDTIntsGHWdcAVv", t) != NULL;
}

/* Reads what the pooler sent this client and checks its framing and whose results they are. */
static bool client_service(int k)
{
    struct fclient *c = &clients[k];
    bool moved = false;
    if (c->fd < 0)
        return false;
    for (;;) {
        uint8_t buf[4096];
        ssize_t n = read(c->fd, buf, sizeof(buf));
        if (n > 0) {
            moved = true;
            c->received += (size_t)n;
            if (c->in.len < CLIENT_IN_CAP)
                bytes_put(&c->in, buf, (size_t)n);
            continue;
        }
        if (n == 0) {
            c->dead = true;
            close(c->fd);
            c->fd = -1;
            moved = true;
        }
        break;
    }
    for (;;) {
        if (c->ssl_answer_due) {
            if (!c->in.len)
                break;
            if (c->in.d[0] == 'N' || c->in.d[0] == 'S') {
                bytes_consume(&c->in, 1);
                c->ssl_answer_due = false;
                continue;
            }
            c->ssl_answer_due = false; /* an error instead: framed as usual */
        }
        if (c->in.len < 5)
            break;
        uint8_t type = c->in.d[0];
        uint32_t len = get_u32(c->in.d + 1);
        if (!backend_type(type) || len < 4 || len > 1024 * 1024) {
            fprintf(stderr, "client %d: bad backend message 0x%02x len %u\n", k, type, len);
            abort();
        }
        if (c->in.len < 1 + (size_t)len)
            break;
        if (trace)
            fprintf(stderr, "client %d <- '%c' %u\n", k, type, len);
        if (type == 'C') {
            const char *tag = (const char *)c->in.d + 5;
            size_t tlen = strnlen(tag, len - 4);
            for (const char *m = tag; (m = memmem(m, tlen - (size_t)(m - tag), "/*c", 3)); m++) {
                if (m + 3 < tag + tlen && m[3] != '0' + k) {
                    fprintf(stderr, "client %d got another client's result: %.*s\n", k, (int)tlen,
                            tag);
                    abort();
                }
            }
        }
        bytes_consume(&c->in, 1 + len);
    }
    if (c->in.len >= CLIENT_IN_CAP)
        c->in.len = 0; /* a giant message: framing is checked on what fits */
    return moved;
}

static void client_write(int k, size_t n)
{
    struct fclient *c = &clients[k];
    if (c->fd < 0 || !c->pend.len)
        return;
    if (n > c->pend.len)
        n = c->pend.len;
    ssize_t w = write(c->fd, c->pend.d, n);
    if (w > 0)
        bytes_consume(&c->pend, (size_t)w);
}

static const char *const queries[] = {
    "SELECT 1",
    "BEGIN",
    "COMMIT",
    "ROLLBACK",
    "SELECT ERR",
    "COPY t FROM STDIN",
    "SET search_path = a",
    "RESET ALL",
    "DISCARD ALL",
    "DEALLOCATE ALL",
    "PREPARE x AS SELECT 1",
    "",
    "SELECT 1; SELECT 2",
    "SET application_name = 'z'",
    "LISTEN x",
    "SET LOCAL work_mem = '1MB'",
};
static const char *const names[] = {"", "s1", "s2", "pgw_x"};

static void query_text(char *out, size_t len, int k, uint8_t pick)
{
    snprintf(out, len, "%s /*c%d*/", queries[pick % (sizeof(queries) / sizeof(queries[0]))], k);
}

/* Input bytes sent as they are must not contain the harness's ownership marker ("/*c" and a
 * client number, which the fake server echoes in its answers): a marker the input made up
 * would look like another client's result. */
static void scrub_markers(uint8_t *p, size_t n)
{
    for (size_t i = 1; i < n; i++)
        if (p[i - 1] == '/' && p[i] == '*')
            p[i] = '+';
}

/* Queues one message chosen by the input on client k. */
static void client_queue(struct input *in, int k)
{
    struct bytes *b = &clients[k].pend;
    if (b->len > PEND_CAP)
        return;
    uint8_t kind = take(in);
    char text[200];
    uint8_t name_pick = take(in);
    const char *name = names[name_pick % 4];
    size_t at;
    switch (kind % 18) {
    case 0:
    case 1:
        query_text(text, sizeof(text), k, take(in));
        msg_str(b, 'Q', text);
        return;
    case 2:
        query_text(text, sizeof(text), k, take(in));
        at = msg_begin(b, 'P');
        put_str(b, name);
        bytes_put(b, text, strlen(text));
        /* The name byte's top bits: sometimes a Parse longer than pkt_buf (4 to 16 kB of
         * trailing spaces), which a named statement's rewrite holds whole in a grown buffer. */
        for (size_t pad = name_pick >= 0xc0 ? (size_t)((name_pick >> 4) - 11) * 4096 : 0; pad;
             pad--)
            bytes_put(b, " ", 1);
        bytes_put(b, "", 1);
        put_u16(b, 0);
        msg_end(b, at);
        return;
    case 3:
        at = msg_begin(b, 'B');
        put_str(b, "");
        put_str(b, name);
        put_u16(b, 0);
        put_u16(b, 0);
        put_u16(b, 0);
        msg_end(b, at);
        return;
    case 4:
        at = msg_begin(b, 'D');
        bytes_put(b, take(in) & 1 ? "S" : "P", 1);
        put_str(b, name);
        msg_end(b, at);
        return;
    case 5:
        at = msg_begin(b, 'E');
        put_str(b, "");
        put_u32(b, 0);
        msg_end(b, at);
        return;
    case 6:
    case 7:
        msg_empty(b, 'S');
        return;
    case 8:
        msg_empty(b, 'H');
        return;
    case 9:
        at = msg_begin(b, 'C');
        bytes_put(b, take(in) & 1 ? "S" : "P", 1);
        put_str(b, name);
        msg_end(b, at);
        return;
    case 10:
        at = msg_begin(b, 'd');
        bytes_put(b, "1\t2\n", 4);
        msg_end(b, at);
        return;
    case 11:
        msg_empty(b, 'c');
        return;
    case 12:
        msg_str(b, 'f', "client gave up");
        return;
    case 13:
        at = msg_begin(b, 'F');
        put_u32(b, 1598); /* pg_catalog.random() */
        put_u16(b, 0);
        put_u16(b, 0);
        put_u16(b, 0);
        msg_end(b, at);
        return;
    case 14:
        if (take(in) & 1)
            msg_empty(b, 'X');
        return;
    case 15: { /* a startup packet where a message is due, or a second SSLRequest */
        at = b->len;
        put_u32(b, 0);
        put_u32(b, take(in) & 1 ? 80877103 : 196608);
        put_str(b, "user");
        put_str(b, "u");
        bytes_put(b, "", 1);
        uint32_t len = (uint32_t)(b->len - at);
        uint8_t x[4] = {(uint8_t)(len >> 24), (uint8_t)(len >> 16), (uint8_t)(len >> 8),
                        (uint8_t)len};
        memcpy(b->d + at, x, 4);
        return;
    }
    case 16: { /* a message header with any type and length, and a few bytes */
        uint8_t raw[12];
        size_t n = 5 + take(in) % 8;
        for (size_t i = 0; i < n; i++)
            raw[i] = take(in);
        scrub_markers(raw, n);
        bytes_put(b, raw, n);
        return;
    }
    default: { /* a well-framed message of a type chosen by the input */
        uint8_t type = take(in);
        uint8_t raw[16];
        size_t n = take(in) % 16;
        for (size_t i = 0; i < n; i++)
            raw[i] = take(in);
        scrub_markers(raw, n);
        at = msg_begin(b, type);
        bytes_put(b, raw, n);
        msg_end(b, at);
        return;
    }
    }
}

/* ---- the pooler, set up as serve_main does without listeners, HTTP or manager ---- */

static struct pooler p;

static bool pooler_up(void)
{
    memset(&p, 0, sizeof(p));
    p.cfg = calloc(1, sizeof(*p.cfg));
    char err[512];
    if (!p.cfg || !pooler_config_load_string(config_text, "fuzz.ini", p.cfg, err, sizeof(err))) {
        fprintf(stderr, "fuzz_session: config: %s\n", err);
        abort();
    }
    objects_init_pooler_lists(&p);
    iobuf_cache_init(&p.bufs, (uint32_t)p.cfg->pkt_buf);
    p.cancel_buckets = 256;
    p.cancel_table = calloc(p.cancel_buckets, sizeof(*p.cancel_table));
    p.loop = net_loop_new();
    if (!p.cancel_table || !p.loop || !prepared_registry_init(&p.stmts))
        abort();
    return true;
}

static void pooler_down(void)
{
    objects_close_all(&p);
    net_timer_free(p.reaper);
    net_timer_free(p.flusher);
    net_loop_free(p.loop);
    iobuf_cache_destroy(&p.bufs);
    prepared_registry_destroy(&p.stmts);
    free(p.cancel_table);
    pooler_config_free(p.cfg);
    free(p.cfg);
}

static void check_server(struct server *s)
{
    if (s->owed.n > OWED_MAX_ENTRIES || s->owed.n_alts > OWED_MAX_ALTS ||
        s->owed.head >= s->owed.cap + (s->owed.cap == 0)) {
        fprintf(stderr, "server %llu: owed n=%u alts=%u head=%u cap=%u\n",
                (unsigned long long)s->id, s->owed.n, s->owed.n_alts, s->owed.head, s->owed.cap);
        abort();
    }
    if (s->client && s->client->server != s) {
        fprintf(stderr, "server %llu: its client is linked to another server\n",
                (unsigned long long)s->id);
        abort();
    }
}

static void check_invariants(void)
{
    int servers = 0;
    for (struct plist *n = p.pools.next; n != &p.pools; n = n->next) {
        struct pool *pool = plist_entry(n, struct pool, node);
        struct plist *slists[] = {&pool->idle_servers, &pool->active_servers, &pool->tested_servers,
                                  &pool->login_servers, &pool->canceling_servers};
        for (size_t i = 0; i < 5; i++)
            for (struct plist *m = slists[i]->next; m != slists[i]; m = m->next) {
                check_server(plist_entry(m, struct server, node));
                servers++;
            }
        for (struct plist *m = pool->active_clients.next; m != &pool->active_clients; m = m->next) {
            struct client *c = plist_entry(m, struct client, node);
            if (c->server && c->server->client != c) {
                fprintf(stderr, "client %llu: its server is linked to another client\n",
                        (unsigned long long)c->id);
                abort();
            }
        }
    }
    /* Each connection borrows at most one buffer. */
    if (p.bufs.n_used > (size_t)(N_CLIENTS + servers + 2)) {
        fprintf(stderr, "%zu buffers lent to %d servers and %d clients\n", p.bufs.n_used, servers,
                N_CLIENTS);
        abort();
    }
    if (p.n_clients > N_CLIENTS) {
        fprintf(stderr, "%d clients counted\n", p.n_clients);
        abort();
    }
}

/* Runs the loop, the fake server and the clients until nothing moves. */
static void pump(void)
{
    int quiet = 0;
    for (int round = 0; round < MAX_ROUNDS; round++) {
        if (!net_loop_run_once(p.loop))
            abort();
        bool moved = fake_accept();
        for (size_t i = 0; i < MAX_FAKES; i++)
            if (fakes[i].fd >= 0)
                moved |= fake_service(&fakes[i]);
        for (int k = 0; k < N_CLIENTS; k++)
            moved |= client_service(k);
        check_invariants();
        if (moved)
            quiet = 0;
        else if (++quiet >= 3)
            return;
    }
    /* Still moving after MAX_ROUNDS turns: only a ping-pong without end does that here. */
    fprintf(stderr, "fuzz_session: no quiet after %d loop turns\n", MAX_ROUNDS);
    abort();
}

static void server_action(struct input *in)
{
    uint8_t op = take(in);
    struct fake *f = &fakes[(op >> 4) % MAX_FAKES];
    if (f->fd < 0)
        return;
    size_t at;
    switch (op % 6) {
    case 0:
    case 1:
        f->held = !f->held;
        return;
    case 2:
        at = msg_begin(&f->out, 'S');
        put_str(&f->out, "application_name");
        put_str(&f->out, "changed");
        msg_end(&f->out, at);
        return;
    case 3:
        at = msg_begin(&f->out, 'N');
        put_str(&f->out, "SNOTICE");
        put_str(&f->out, "C00000");
        put_str(&f->out, "Mout of the blue");
        bytes_put(&f->out, "", 1);
        msg_end(&f->out, at);
        return;
    case 4:
        fake_close(f); /* the backend died */
        return;
    default:
        fake_error(f, "57P01", "terminating connection due to administrator command");
        f->held = false;
        (void)fake_service(f);
        fake_close(f);
        return;
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    snprintf(dir, sizeof(dir), "/tmp/pgw-fuzz-session-%d", (int)getpid());
    if (mkdir(dir, 0700) != 0 && errno != EEXIST)
        abort();
    char path[128];
    snprintf(path, sizeof(path), "%s/users.txt", dir);
    FILE *fp = fopen(path, "w");
    if (!fp)
        abort();
    fputs("\"u\" \"\"\n", fp);
    fclose(fp);
    snprintf(config_text, sizeof(config_text),
             "[databases]\n"
             "db = host=%s port=%d dbname=db\n"
             "[pgbouncer]\n"
             "auth_type = trust\n"
             "auth_file = %s\n"
             "pool_mode = transaction\n"
             "default_pool_size = 2\n"
             "max_prepared_statements = 4\n"
             "pkt_buf = 4096\n"
             "max_packet_size = %d\n",
             dir, FAKE_PORT, path, MAX_PACKET);
    char err[256], sock_path[256];
    listen_fd = net_listen_unix(dir, FAKE_PORT, 64, 0777, (gid_t)-1, sock_path, sizeof(sock_path),
                                err, sizeof(err));
    if (listen_fd < 0) {
        fprintf(stderr, "fuzz_session: %s\n", err);
        abort();
    }
    for (size_t i = 0; i < MAX_FAKES; i++)
        fakes[i].fd = -1;
    trace = getenv("FUZZ_SESSION_TRACE") != NULL;
    static FILE *devnull;
    devnull = fopen("/dev/null", "w");
    log_configure(LOG_LEVEL_ERROR, LOG_FORMAT_TEXT, getenv("FUZZ_SESSION_LOG") ? stderr : devnull);
    signal(SIGPIPE, SIG_IGN);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct input in = {data, size};
    pooler_up();
    uint8_t setup = take(&in);
    for (int k = 0; k < N_CLIENTS; k++) {
        int sv[2];
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0)
            abort();
        memset(&clients[k], 0, sizeof(clients[k]));
        clients[k].fd = sv[0];
        struct bytes *b = &clients[k].pend;
        if (setup & (1u << k)) { /* SSLRequest first: the pooler without TLS answers N */
            put_u32(b, 8);
            put_u32(b, 80877103);
            clients[k].ssl_answer_due = true;
        }
        size_t at = b->len;
        put_u32(b, 0);
        put_u32(b, 196608);
        put_str(b, "user");
        put_str(b, "u");
        put_str(b, "database");
        put_str(b, "db");
        bytes_put(b, "", 1);
        uint32_t len = (uint32_t)(b->len - at);
        uint8_t x[4] = {(uint8_t)(len >> 24), (uint8_t)(len >> 16), (uint8_t)(len >> 8),
                        (uint8_t)len};
        memcpy(b->d + at, x, 4);
        struct net_addr addr = {.family = AF_UNIX};
        /* The client has already sent its first bytes when accepted, or not: either way. */
        if (setup & (4u << k))
            client_write(k, clients[k].pend.len);
        (void)objects_client_new(&p, sv[1], &addr);
    }
    pump();

    while (in.left) {
        uint8_t op = take(&in);
        int k = (op >> 7) & 1;
        switch (op % 8) {
        case 0:
        case 1:
        case 2:
            client_queue(&in, k);
            break;
        case 3: /* some of the queued bytes reach the pooler: messages split anywhere */
            client_write(k, 1 + take(&in) % 32);
            pump();
            break;
        case 4:
            client_write(k, SIZE_MAX);
            pump();
            break;
        case 5:
            server_action(&in);
            pump();
            break;
        case 6: /* every held answer goes out */
            for (size_t i = 0; i < MAX_FAKES; i++)
                fakes[i].held = false;
            pump();
            break;
        default:
            if ((op >> 3) % 4 == 0 && clients[k].fd >= 0) { /* the client hangs up */
                close(clients[k].fd);
                clients[k].fd = -1;
                pump();
            }
            break;
        }
    }
    /* The end: everything queued is sent and every held answer released. */
    for (size_t i = 0; i < MAX_FAKES; i++)
        fakes[i].held = false;
    for (int k = 0; k < N_CLIENTS; k++)
        client_write(k, SIZE_MAX);
    pump();

    for (int k = 0; k < N_CLIENTS; k++) {
        if (clients[k].fd >= 0)
            close(clients[k].fd);
        bytes_free(&clients[k].pend);
        bytes_free(&clients[k].in);
    }
    for (size_t i = 0; i < MAX_FAKES; i++)
        if (fakes[i].fd >= 0)
            fake_close(&fakes[i]);
    pooler_down();
    /* Connections the pooler opened that were never accepted. */
    for (int fd; (fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC)) >= 0;)
        close(fd);
    return 0;
}
