/* libFuzzer target: the pgwarden:// target URI parser (console_source_parse_uri), fed the
 * input as it is and behind the scheme. An accepted URI must come out whole (fields
 * NUL-terminated, a host, a port in 1..65535, a console database) and survive a round trip:
 * written back with its user and password %-encoded, it parses to the same fields. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "inspect/console_source.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The longest input tried: longer ones only repeat what a long user or host already does. */
#define MAX_INPUT 2048

static void check(int ok)
{
    if (!ok)
        __builtin_trap();
}

static void check_terminated(const char *field, size_t cap)
{
    check(memchr(field, '\0', cap) != NULL);
}

/* %-encodes every byte but RFC 3986's unreserved ones. */
static void put_encoded(char **o, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
            strchr("-._~", *p) != NULL) {
            *(*o)++ = (char)*p;
        } else {
            *(*o)++ = '%';
            *(*o)++ = hex[*p >> 4];
            *(*o)++ = hex[*p & 15];
        }
    }
}

/* Writes u back as a URI. Brackets are needed for a host with a ':' (IPv6), and for one that
 * starts with '[' (only a bracketed host can). */
static void format_uri(const struct console_uri *u, char *out)
{
    char *o = out + sprintf(out, "%s", CONSOLE_SOURCE_SCHEME);
    if (u->has_user || u->has_password) {
        put_encoded(&o, u->user);
        if (u->has_password) {
            *o++ = ':';
            put_encoded(&o, u->password);
        }
        *o++ = '@';
    }
    bool bracket = strchr(u->host, ':') != NULL || u->host[0] == '[';
    sprintf(o, "%s%s%s:%s/%s", bracket ? "[" : "", u->host, bracket ? "]" : "", u->port,
            u->database);
}

static void check_uri(const char *uri)
{
    struct console_uri u, again;
    struct inspect_error err = {0};
    bool ok = console_source_parse_uri(uri, &u, &err);
    check_terminated(u.user, sizeof(u.user));
    check_terminated(u.password, sizeof(u.password));
    check_terminated(u.host, sizeof(u.host));
    check_terminated(u.port, sizeof(u.port));
    check_terminated(u.database, sizeof(u.database));
    if (!ok) {
        check(strcmp(err.code, "bad_input") == 0);
        check(strncmp(err.message, "the pgwarden:// target is malformed: ", 37) == 0);
        return;
    }
    check(u.host[0] != '\0' && strpbrk(u.host, "@/?#") == NULL);
    check(u.has_user == (u.user[0] != '\0'));
    check(u.has_password || u.password[0] == '\0');
    char *end;
    long port = strtol(u.port, &end, 10);
    check(*end == '\0' && port >= 1 && port <= 65535 && u.port[0] != '0');
    check(strcmp(u.database, "pgbouncer") == 0 || strcmp(u.database, "pgwarden") == 0);

    /* At most 3 bytes per user or password byte, plus the fixed parts. */
    char text[sizeof(CONSOLE_SOURCE_SCHEME) + 3 * sizeof(u.user) + 3 * sizeof(u.password) +
              sizeof(u.host) + sizeof(u.port) + sizeof(u.database) + 8];
    format_uri(&u, text);
    struct inspect_error err2 = {0};
    check(console_source_parse_uri(text, &again, &err2));
    check(strcmp(u.user, again.user) == 0 && strcmp(u.password, again.password) == 0);
    check(u.has_user == again.has_user && u.has_password == again.has_password);
    check(strcmp(u.host, again.host) == 0 && strcmp(u.port, again.port) == 0);
    check(strcmp(u.database, again.database) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char uri[sizeof(CONSOLE_SOURCE_SCHEME) + MAX_INPUT];
    const size_t scheme = strlen(CONSOLE_SOURCE_SCHEME);
    if (size > MAX_INPUT)
        return 0;
    memcpy(uri, data, size);
    uri[size] = '\0';
    check_uri(uri);
    memcpy(uri, CONSOLE_SOURCE_SCHEME, scheme);
    memcpy(uri + scheme, data, size);
    uri[scheme + size] = '\0';
    check_uri(uri);
    return 0;
}
