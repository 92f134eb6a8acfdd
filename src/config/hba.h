/* auth_hba_file and auth_ident_file: which authentication method a client gets, decided from
 * how it connects (unix socket, TCP with or without TLS), its address, the database and the
 * user, in pg_hba.conf syntax as PgBouncer reads it. First matching line wins; no match is a
 * refusal. Pure: files in, decisions out.
 *
 * Supported, as in PgBouncer: record types local, host, hostssl, hostnossl; databases all,
 * sameuser, replication, names, @file, lists; users all, names, @file, lists; addresses all,
 * IPv4/IPv6 CIDR or address + netmask; methods trust, reject, password, md5, scram-sha-256,
 * cert, peer; the map= option (cert, peer). A line naming a +group is skipped (role membership
 * needs the server; PgBouncer skips it too) and counted in n_skipped. Refused with the line's
 * number: samerole/samegroup, samehost/samenet, host names, other methods and options. */
#ifndef PGWARDEN_CONFIG_HBA_H
#define PGWARDEN_CONFIG_HBA_H

#include <stdbool.h>
#include <stddef.h>

#include "common/cidr.h"

enum hba_conn {
    HBA_LOCAL,     /* unix socket */
    HBA_HOST,      /* TCP, with or without TLS */
    HBA_HOSTSSL,   /* TCP with TLS */
    HBA_HOSTNOSSL, /* TCP without TLS */
};

enum hba_method {
    HBA_TRUST,
    HBA_REJECT,
    HBA_PASSWORD,
    HBA_MD5,
    HBA_SCRAM,
    HBA_CERT,
    HBA_PEER,
};

/* A database or user field: keywords and names (names owned). */
struct hba_names {
    bool all;
    bool sameuser;    /* databases only: the database named like the user */
    bool replication; /* databases only: a replication connection */
    char **names;
    size_t n;
};

struct hba_rule {
    int line;
    enum hba_conn conn;
    struct hba_names databases;
    struct hba_names users;
    bool any_addr; /* "all", or local */
    struct cidr addr;
    enum hba_method method;
    char *map; /* owned: map= for cert and peer, NULL when none */
};

struct hba {
    struct hba_rule *rules; /* owned */
    size_t n;
    size_t n_skipped;       /* lines skipped because they name a +group */
    int first_skipped_line; /* the first of them (0 = none) */
};

/* What the pooler knows of a connecting client. */
struct hba_request {
    bool unix_socket;
    bool tls;
    int family;                /* AF_INET or AF_INET6 (TCP) */
    const unsigned char *addr; /* 4 or 16 bytes (TCP) */
    const char *database;
    const char *user;
    bool replication;
};

/* Loads an HBA file (@file names are relative to its directory). False with "file:line:
 * reason" in err, out left empty. */
bool hba_load(const char *path, struct hba *out, char *err, size_t err_len)
    __attribute__((warn_unused_result));
/* The same from text; dir resolves @file names (NULL: @file is refused). */
bool hba_parse(const char *text, const char *name, const char *dir, struct hba *out, char *err,
               size_t err_len) __attribute__((warn_unused_result));
void hba_free(struct hba *hba);

/* The first rule matching the request, or NULL (refuse the client). */
const struct hba_rule *hba_match(const struct hba *hba, const struct hba_request *req);
const char *hba_method_name(enum hba_method method);
/* The method a request must pass: its first matching rule's (returned in *rule), or
 * HBA_REJECT with *rule NULL when no line matches. */
enum hba_method hba_decide(const struct hba *hba, const struct hba_request *req,
                           const struct hba_rule **rule);

/* The ident map (auth_ident_file): "map system-user database-user" lines. */
struct ident_entry {
    char *map, *system_user, *db_user; /* owned; db_user "all" matches any */
};
struct ident_map {
    struct ident_entry *entries; /* owned */
    size_t n;
};
bool hba_ident_load(const char *path, struct ident_map *out, char *err, size_t err_len)
    __attribute__((warn_unused_result));
bool hba_ident_parse(const char *text, const char *name, struct ident_map *out, char *err,
                     size_t err_len) __attribute__((warn_unused_result));
void hba_ident_free(struct ident_map *map);
/* True when the map lets system_user log in as db_user. */
bool hba_ident_allows(const struct ident_map *map, const char *map_name, const char *system_user,
                      const char *db_user);
/* Whether the identity the connection proved (system_user: the peer's Unix user name or the
 * certificate's common name; NULL when there is none) may log in as db_user: the same name
 * without map_name, else through map_name in map (map may be NULL: nothing is allowed). */
bool hba_identity_ok(const struct ident_map *map, const char *map_name, const char *system_user,
                     const char *db_user);
/* The first map= name of hba that map does not define (borrowed), or NULL when all are. */
const char *hba_missing_map(const struct hba *hba, const struct ident_map *map);

#endif
