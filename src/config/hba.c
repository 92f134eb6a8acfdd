/* pg_hba.conf and ident map parsing and matching (see hba.h).
 *
 *   text --lines--> fields (whitespace-separated; "quoted" text; a field is a comma list, a
 *   trailing comma continues it) --> rule (type, databases, users, address, method, options)
 *   request --first rule whose type, database, user and address match--> method */
#include "config/hba.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>

/* Bounds: a file is read whole, so its size is bounded; an @file holds names only. */
#define HBA_MAX_FILE   (1024 * 1024)
#define HBA_MAX_ITEMS  4096 /* items of one field */
#define HBA_MAX_FIELDS 64

/* One item of a field: its text, and whether it was quoted (a quoted keyword is a name). */
struct item {
    char *text; /* owned */
    bool quoted;
};

struct field {
    struct item *items; /* owned */
    size_t n;
};

static void fields_free(struct field *f, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        for (size_t k = 0; k < f[i].n; k++)
            free(f[i].items[k].text);
        free(f[i].items);
    }
}

static void set_err(char *err, size_t err_len, const char *name, int line, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static void set_err(char *err, size_t err_len, const char *name, int line, const char *fmt, ...)
{
    int n = snprintf(err, err_len, "%s:%d: ", name, line);
    if (n < 0 || (size_t)n >= err_len)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err + n, err_len - (size_t)n, fmt, ap);
    va_end(ap);
}

static bool add_item(struct field *f, const char *text, size_t len, bool quoted)
{
    if (f->n >= HBA_MAX_ITEMS)
        return false;
    struct item *grown = realloc(f->items, (f->n + 1) * sizeof(*grown));
    if (!grown)
        return false;
    f->items = grown;
    char *copy = strndup(text, len);
    if (!copy)
        return false;
    f->items[f->n++] = (struct item){copy, quoted};
    return true;
}

/* Splits one line (NUL-terminated, no newline) into fields. False with why on a bad line. */
static bool split_line(const char *line, struct field *fields, size_t *n_fields, const char **why)
{
    *n_fields = 0;
    const char *p = line;
    bool continues = false; /* the last item ended with ',' */
    for (;;) {
        while (*p == ' ' || *p == '\t' || *p == '\r')
            p++;
        if (*p == '\0' || *p == '#')
            break;
        if (*p == ',' && !continues && *n_fields > 0) {
            /* "a , b": a comma after a space continues the list before it (PgBouncer). */
            p++;
            continues = true;
            continue;
        }
        if (!continues) {
            if (*n_fields >= HBA_MAX_FIELDS) {
                *why = "too many fields";
                return false;
            }
            fields[(*n_fields)++] = (struct field){NULL, 0};
        }
        struct field *f = &fields[*n_fields - 1];
        /* One whitespace-separated token: items separated by commas, each maybe quoted. */
        continues = false;
        for (;;) {
            char text[1024];
            size_t len = 0;
            bool quoted = false;
            while (*p && *p != ' ' && *p != '\t' && *p != '\r' && *p != ',' && *p != '#') {
                if (*p == '"') {
                    quoted = true;
                    const char *end = strchr(p + 1, '"');
                    if (!end) {
                        *why = "unterminated quote";
                        return false;
                    }
                    size_t k = (size_t)(end - p - 1);
                    if (len + k >= sizeof(text)) {
                        *why = "name too long";
                        return false;
                    }
                    memcpy(text + len, p + 1, k);
                    len += k;
                    p = end + 1;
                } else {
                    if (len + 1 >= sizeof(text)) {
                        *why = "name too long";
                        return false;
                    }
                    text[len++] = *p++;
                }
            }
            if (len > 0 || quoted) {
                if (!add_item(f, text, len, quoted)) {
                    *why = "out of memory or too many names";
                    return false;
                }
            }
            if (*p != ',')
                break;
            p++;
            if (*p == '\0' || *p == ' ' || *p == '\t' || *p == '\r' || *p == '#') {
                continues = true; /* "a, b": the list goes on in the next token */
                break;
            }
        }
    }
    if (continues) {
        *why = "a list ends with a comma";
        return false;
    }
    return true;
}

static bool keyword(const struct item *it, const char *word)
{
    return !it->quoted && !strcmp(it->text, word);
}

static char *read_file(const char *path, char *err, size_t err_len, const char *what)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        snprintf(err, err_len, "%s %s: %s", what, path, strerror(errno));
        return NULL;
    }
    if (!S_ISREG(st.st_mode) || st.st_size > HBA_MAX_FILE) {
        snprintf(err, err_len, "%s %s: not a regular file of at most 1 MB", what, path);
        return NULL;
    }
    FILE *f = fopen(path, "re");
    if (!f) {
        snprintf(err, err_len, "%s %s: %s", what, path, strerror(errno));
        return NULL;
    }
    char *text = malloc((size_t)st.st_size + 1);
    size_t got = text ? fread(text, 1, (size_t)st.st_size, f) : 0;
    fclose(f);
    if (!text) {
        snprintf(err, err_len, "out of memory reading %s", path);
        return NULL;
    }
    text[got] = '\0';
    return text;
}

/* Adds the names an @file holds (separated by whitespace, commas or newlines; # comments). */
static bool add_names_from_file(struct hba_names *names, const char *dir, const char *file,
                                const char **why)
{
    if (!dir) {
        *why = "@file is not available here";
        return false;
    }
    char path[4096], err[256];
    snprintf(path, sizeof(path), "%s%s%s", file[0] == '/' ? "" : dir, file[0] == '/' ? "" : "/",
             file);
    char *text = read_file(path, err, sizeof(err), "@file");
    if (!text) {
        *why = "cannot read an @file";
        return false;
    }
    bool ok = true;
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line && ok; line = strtok_r(NULL, "\n", &save)) {
        char *hash = strchr(line, '#');
        if (hash)
            *hash = '\0';
        char *save2 = NULL;
        for (char *name = strtok_r(line, " \t\r,", &save2); name && ok;
             name = strtok_r(NULL, " \t\r,", &save2)) {
            if (name[0] == '@' || name[0] == '+') {
                *why = "an @file may hold names only";
                ok = false;
                break;
            }
            char **grown = realloc(names->names, (names->n + 1) * sizeof(*grown));
            if (!grown || names->n >= HBA_MAX_ITEMS || !(grown[names->n] = strdup(name))) {
                if (grown)
                    names->names = grown;
                *why = "out of memory or too many names";
                ok = false;
                break;
            }
            names->names = grown;
            names->n++;
        }
    }
    free(text);
    return ok;
}

static void names_free(struct hba_names *names)
{
    for (size_t i = 0; i < names->n; i++)
        free(names->names[i]);
    free(names->names);
    memset(names, 0, sizeof(*names));
}

/* read_names' reason for a +group name: the line is skipped, not refused (see add_rule). */
static const char SKIP_GROUP[] = "+group";

/* A database (for_db) or user field. */
static bool read_names(const struct field *f, bool for_db, const char *dir, struct hba_names *out,
                       const char **why)
{
    memset(out, 0, sizeof(*out));
    for (size_t i = 0; i < f->n; i++) {
        const struct item *it = &f->items[i];
        if (keyword(it, "all")) {
            out->all = true;
        } else if (for_db && keyword(it, "sameuser")) {
            out->sameuser = true;
        } else if (for_db && keyword(it, "replication")) {
            out->replication = true;
        } else if (!it->quoted &&
                   (!strcmp(it->text, "samerole") || !strcmp(it->text, "samegroup"))) {
            *why = "samerole and samegroup are not supported (role membership is the server's)";
            return false;
        } else if (!it->quoted && it->text[0] == '+') {
            *why = SKIP_GROUP;
            return false;
        } else if (!it->quoted && it->text[0] == '@') {
            if (!add_names_from_file(out, dir, it->text + 1, why))
                return false;
        } else {
            char **grown = realloc(out->names, (out->n + 1) * sizeof(*grown));
            if (!grown) {
                *why = "out of memory";
                return false;
            }
            out->names = grown;
            if (!(out->names[out->n] = strdup(it->text))) {
                *why = "out of memory";
                return false;
            }
            out->n++;
        }
    }
    return true;
}

static const struct {
    const char *name;
    enum hba_conn conn;
} CONNS[] = {
    {"local", HBA_LOCAL},
    {"host", HBA_HOST},
    {"hostssl", HBA_HOSTSSL},
    {"hostnossl", HBA_HOSTNOSSL},
};

static const struct {
    const char *name;
    enum hba_method method;
} METHODS[] = {
    {"trust", HBA_TRUST}, {"reject", HBA_REJECT},       {"password", HBA_PASSWORD},
    {"md5", HBA_MD5},     {"scram-sha-256", HBA_SCRAM}, {"cert", HBA_CERT},
    {"peer", HBA_PEER},
};

const char *hba_method_name(enum hba_method method)
{
    for (size_t i = 0; i < sizeof(METHODS) / sizeof(METHODS[0]); i++)
        if (METHODS[i].method == method)
            return METHODS[i].name;
    return "?";
}

static bool one_item(const struct field *f, const char **why)
{
    if (f->n != 1) {
        *why = "expected one value, not a list";
        return false;
    }
    return true;
}

static void rule_free(struct hba_rule *r)
{
    names_free(&r->databases);
    names_free(&r->users);
    free(r->map);
}

/* Builds a rule from one line's fields. */
static bool read_rule(struct field *fields, size_t n, const char *dir, struct hba_rule *r,
                      const char **why)
{
    size_t at = 0;
    if (!one_item(&fields[at], why))
        return false;
    size_t k = 0;
    while (k < sizeof(CONNS) / sizeof(CONNS[0]) && !keyword(&fields[at].items[0], CONNS[k].name))
        k++;
    if (k == sizeof(CONNS) / sizeof(CONNS[0])) {
        *why = "unknown record type (use local, host, hostssl, hostnossl)";
        return false;
    }
    r->conn = CONNS[k].conn;
    at++;
    size_t need = r->conn == HBA_LOCAL ? 4 : 5;
    if (n < need) {
        *why = "too few fields";
        return false;
    }
    if (!read_names(&fields[at++], true, dir, &r->databases, why) ||
        !read_names(&fields[at++], false, dir, &r->users, why))
        return false;
    if (r->conn == HBA_LOCAL) {
        r->any_addr = true;
    } else {
        if (!one_item(&fields[at], why))
            return false;
        const struct item *a = &fields[at++].items[0];
        if (keyword(a, "all")) {
            r->any_addr = true;
        } else if (keyword(a, "samehost") || keyword(a, "samenet")) {
            *why = "samehost and samenet are not supported";
            return false;
        } else if (strchr(a->text, '/')) {
            if (!cidr_parse(a->text, &r->addr)) {
                *why = "not an IPv4 or IPv6 address block";
                return false;
            }
        } else {
            /* "address netmask" in two fields */
            if (at >= n || !one_item(&fields[at], why) ||
                !cidr_parse_with_mask(a->text, fields[at].items[0].text, &r->addr)) {
                *why = "not an address block (host names are not supported)";
                return false;
            }
            at++;
        }
    }
    if (at >= n || !one_item(&fields[at], why)) {
        *why = "no authentication method";
        return false;
    }
    size_t m = 0;
    while (m < sizeof(METHODS) / sizeof(METHODS[0]) &&
           !keyword(&fields[at].items[0], METHODS[m].name))
        m++;
    if (m == sizeof(METHODS) / sizeof(METHODS[0])) {
        *why = "unknown or unsupported authentication method";
        return false;
    }
    r->method = METHODS[m].method;
    if (r->method == HBA_PEER && r->conn != HBA_LOCAL) {
        *why = "peer works over the unix socket only (local lines)";
        return false;
    }
    /* PgBouncer takes cert on host lines too (a connection without TLS then fails it); only a
     * unix socket can never carry a certificate. */
    if (r->method == HBA_CERT && r->conn == HBA_LOCAL) {
        *why = "cert needs TLS (host or hostssl lines)";
        return false;
    }
    for (at++; at < n; at++) {
        if (!one_item(&fields[at], why))
            return false;
        const char *opt = fields[at].items[0].text;
        if (strncmp(opt, "map=", 4) != 0 || !opt[4] ||
            (r->method != HBA_CERT && r->method != HBA_PEER)) {
            *why = "unsupported option (only map= with cert or peer)";
            return false;
        }
        free(r->map);
        if (!(r->map = strdup(opt + 4))) {
            *why = "out of memory";
            return false;
        }
    }
    return true;
}

/* Calls line_fn for every non-empty line of text, split into fields. False (with "name:line:
 * reason" in err) at the first line split_line or line_fn refuses. */
typedef bool (*line_fn)(struct field *fields, size_t n, int line_no, void *ctx, const char **why);

static bool each_line(const char *text, const char *name, line_fn fn, void *ctx, char *err,
                      size_t err_len)
{
    int line_no = 0;
    const char *p = text;
    while (*p) {
        line_no++;
        const char *end = strchr(p, '\n');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        char *line = strndup(p, len);
        p += len + (end ? 1 : 0);
        if (!line) {
            set_err(err, err_len, name, line_no, "out of memory");
            return false;
        }
        struct field fields[HBA_MAX_FIELDS];
        size_t n = 0;
        const char *why = NULL;
        bool ok = split_line(line, fields, &n, &why);
        free(line);
        if (ok && n > 0)
            ok = fn(fields, n, line_no, ctx, &why);
        fields_free(fields, n);
        if (!ok) {
            set_err(err, err_len, name, line_no, "%s", why);
            return false;
        }
    }
    return true;
}

struct hba_parsing {
    struct hba *out;
    const char *dir;
};

static bool add_rule(struct field *fields, size_t n, int line_no, void *ctx, const char **why)
{
    struct hba_parsing *hp = ctx;
    struct hba_rule r = {.line = line_no};
    bool ok = read_rule(fields, n, hp->dir, &r, why);
    if (!ok && *why == SKIP_GROUP) {
        /* Role membership lives in the server, so a pooler cannot tell who is in a +group.
         * PgBouncer skips such a line with a warning; so do we, and say so once per file. */
        rule_free(&r);
        if (hp->out->n_skipped++ == 0)
            hp->out->first_skipped_line = line_no;
        return true;
    }
    struct hba_rule *grown = ok ? realloc(hp->out->rules, (hp->out->n + 1) * sizeof(*grown)) : NULL;
    if (ok && !grown) {
        ok = false;
        *why = "out of memory";
    }
    if (!ok) {
        rule_free(&r);
        return false;
    }
    hp->out->rules = grown;
    hp->out->rules[hp->out->n++] = r;
    return true;
}

bool hba_parse(const char *text, const char *name, const char *dir, struct hba *out, char *err,
               size_t err_len)
{
    memset(out, 0, sizeof(*out));
    struct hba_parsing hp = {out, dir};
    if (each_line(text, name, add_rule, &hp, err, err_len))
        return true;
    hba_free(out);
    return false;
}

bool hba_load(const char *path, struct hba *out, char *err, size_t err_len)
{
    memset(out, 0, sizeof(*out));
    char *text = read_file(path, err, err_len, "auth_hba_file");
    if (!text)
        return false;
    char dir[4096];
    const char *slash = strrchr(path, '/');
    snprintf(dir, sizeof(dir), "%.*s", slash ? (int)(slash - path) : 1, slash ? path : ".");
    bool ok = hba_parse(text, path, dir, out, err, err_len);
    free(text);
    return ok;
}

void hba_free(struct hba *hba)
{
    for (size_t i = 0; i < hba->n; i++)
        rule_free(&hba->rules[i]);
    free(hba->rules);
    memset(hba, 0, sizeof(*hba));
}

enum hba_method hba_decide(const struct hba *hba, const struct hba_request *req,
                           const struct hba_rule **rule)
{
    *rule = hba_match(hba, req);
    return *rule ? (*rule)->method : HBA_REJECT;
}

bool hba_identity_ok(const struct ident_map *map, const char *map_name, const char *system_user,
                     const char *db_user)
{
    if (!system_user)
        return false;
    if (!map_name)
        return !strcmp(system_user, db_user);
    return map && hba_ident_allows(map, map_name, system_user, db_user);
}

const char *hba_missing_map(const struct hba *hba, const struct ident_map *map)
{
    for (size_t i = 0; i < hba->n; i++) {
        const char *want = hba->rules[i].map;
        if (!want)
            continue;
        bool found = false;
        for (size_t k = 0; map && k < map->n && !found; k++)
            found = !strcmp(map->entries[k].map, want);
        if (!found)
            return want;
    }
    return NULL;
}

static bool names_match(const struct hba_names *names, const char *name)
{
    if (names->all)
        return true;
    for (size_t i = 0; i < names->n; i++)
        if (!strcmp(names->names[i], name))
            return true;
    return false;
}

static bool database_matches(const struct hba_names *dbs, const struct hba_request *req)
{
    if (req->replication)
        return dbs->replication; /* "all" does not cover replication, as in PostgreSQL */
    return names_match(dbs, req->database) || (dbs->sameuser && !strcmp(req->database, req->user));
}

static bool conn_matches(enum hba_conn conn, const struct hba_request *req)
{
    switch (conn) {
    case HBA_LOCAL:
        return req->unix_socket;
    case HBA_HOST:
        return !req->unix_socket;
    case HBA_HOSTSSL:
        return !req->unix_socket && req->tls;
    case HBA_HOSTNOSSL:
        return !req->unix_socket && !req->tls;
    }
    return false;
}

const struct hba_rule *hba_match(const struct hba *hba, const struct hba_request *req)
{
    for (size_t i = 0; i < hba->n; i++) {
        const struct hba_rule *r = &hba->rules[i];
        if (!conn_matches(r->conn, req) || !database_matches(&r->databases, req) ||
            !names_match(&r->users, req->user))
            continue;
        if (!r->any_addr &&
            (req->unix_socket || !req->addr || !cidr_contains(&r->addr, req->family, req->addr)))
            continue;
        return r;
    }
    return NULL;
}

/* ---- ident map ---- */

static bool add_ident(struct field *fields, size_t n, int line_no, void *ctx, const char **why)
{
    (void)line_no;
    struct ident_map *out = ctx;
    for (size_t i = 0; i < n; i++)
        if (!one_item(&fields[i], why))
            return false;
    if (n != 3) {
        *why = "expected: map-name system-username database-username";
        return false;
    }
    if (fields[1].items[0].text[0] == '/' || fields[2].items[0].text[0] == '+') {
        *why = "regular expressions and +group are not supported";
        return false;
    }
    struct ident_entry *grown = realloc(out->entries, (out->n + 1) * sizeof(*grown));
    if (!grown) {
        *why = "out of memory";
        return false;
    }
    out->entries = grown;
    struct ident_entry *e = &out->entries[out->n++];
    e->map = strdup(fields[0].items[0].text);
    e->system_user = strdup(fields[1].items[0].text);
    e->db_user = strdup(fields[2].items[0].text);
    if (!e->map || !e->system_user || !e->db_user) {
        *why = "out of memory";
        return false;
    }
    return true;
}

bool hba_ident_parse(const char *text, const char *name, struct ident_map *out, char *err,
                     size_t err_len)
{
    memset(out, 0, sizeof(*out));
    if (each_line(text, name, add_ident, out, err, err_len))
        return true;
    hba_ident_free(out);
    return false;
}

bool hba_ident_load(const char *path, struct ident_map *out, char *err, size_t err_len)
{
    memset(out, 0, sizeof(*out));
    char *text = read_file(path, err, err_len, "auth_ident_file");
    if (!text)
        return false;
    bool ok = hba_ident_parse(text, path, out, err, err_len);
    free(text);
    return ok;
}

void hba_ident_free(struct ident_map *map)
{
    for (size_t i = 0; i < map->n; i++) {
        free(map->entries[i].map);
        free(map->entries[i].system_user);
        free(map->entries[i].db_user);
    }
    free(map->entries);
    memset(map, 0, sizeof(*map));
}

bool hba_ident_allows(const struct ident_map *map, const char *map_name, const char *system_user,
                      const char *db_user)
{
    for (size_t i = 0; i < map->n; i++) {
        const struct ident_entry *e = &map->entries[i];
        if (!strcmp(e->map, map_name) && !strcmp(e->system_user, system_user) &&
            (!strcmp(e->db_user, "all") || !strcmp(e->db_user, db_user)))
            return true;
    }
    return false;
}
