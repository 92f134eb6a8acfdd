/* PostgreSQL v3 framing, startup packets, and builders/parsers for the handful of messages
 * the pooler handles itself. Every bounds check compares a length against the bytes that
 * remain (len > end - pos), never pos + len > end, so no input can overflow it. */
#include "proto/wire.h"

#include <string.h>

enum wire_header_result wire_parse_header(const uint8_t *p, size_t avail, uint32_t max_body,
                                          uint8_t *type, uint32_t *body_len)
{
    if (avail < WIRE_HEADER_LEN)
        return WIRE_HEADER_INCOMPLETE;
    uint32_t len = wire_get_u32(p + 1);
    if (len < 4 || (uint64_t)len - 4 > (uint64_t)max_body)
        return WIRE_HEADER_BAD_LENGTH;
    *type = p[0];
    *body_len = len - 4;
    return WIRE_HEADER_OK;
}

bool wire_startup_length(const uint8_t *p, size_t avail, uint32_t *len)
{
    if (avail < 4)
        return false;
    *len = wire_get_u32(p);
    return true;
}

/* Finds the NUL ending the string at pos; returns its index or -1. */
static long find_nul(const uint8_t *p, size_t pos, size_t end)
{
    const void *z = memchr(p + pos, 0, end - pos);
    return z ? (long)((const uint8_t *)z - p) : -1;
}

enum wire_startup_kind wire_parse_startup(const uint8_t *pkt, size_t len, struct wire_startup *out)
{
    memset(out, 0, sizeof(*out));
    out->kind = WIRE_STARTUP_MALFORMED;
    if (len < WIRE_STARTUP_HEADER_LEN || len > WIRE_MAX_STARTUP_LEN || wire_get_u32(pkt) != len)
        return out->kind;
    uint32_t code = wire_get_u32(pkt + 4);
    out->version = code;
    if (code == WIRE_SSL_REQUEST_CODE || code == WIRE_GSSENC_REQUEST_CODE) {
        if (len != WIRE_STARTUP_HEADER_LEN)
            return out->kind;
        out->kind = code == WIRE_SSL_REQUEST_CODE ? WIRE_STARTUP_SSL : WIRE_STARTUP_GSSENC;
        return out->kind;
    }
    if (code == WIRE_CANCEL_REQUEST_CODE) {
        /* 3.0 keys are 4 bytes; 3.2 allows 4..256. */
        if (len < 16 || len - 12 > 256)
            return out->kind;
        out->cancel_pid = wire_get_u32(pkt + 8);
        out->cancel_key = pkt + 12;
        out->cancel_key_len = len - 12;
        out->kind = WIRE_STARTUP_CANCEL;
        return out->kind;
    }
    if (WIRE_PROTOCOL_MAJOR(code) != 3) {
        out->kind = WIRE_STARTUP_BAD_VERSION;
        return out->kind;
    }
    /* key\0value\0 ... \0 */
    size_t pos = WIRE_STARTUP_HEADER_LEN;
    for (;;) {
        if (pos >= len)
            return out->kind; /* missing final terminator */
        if (pkt[pos] == 0) {
            if (pos + 1 != len)
                return out->kind; /* bytes after the terminator */
            break;
        }
        long kz = find_nul(pkt, pos, len);
        if (kz < 0 || (size_t)kz + 1 >= len)
            return out->kind;
        long vz = find_nul(pkt, (size_t)kz + 1, len);
        if (vz < 0)
            return out->kind;
        if (out->n_params == WIRE_MAX_STARTUP_PARAMS)
            return out->kind;
        const char *key = (const char *)pkt + pos;
        if (wire_startup_get(out, key) != NULL)
            return out->kind; /* duplicate key */
        out->params[out->n_params].key = key;
        out->params[out->n_params].value = (const char *)pkt + kz + 1;
        out->n_params++;
        pos = (size_t)vz + 1;
    }
    out->kind = WIRE_STARTUP_MESSAGE;
    return out->kind;
}

const char *wire_startup_get(const struct wire_startup *st, const char *key)
{
    for (size_t i = 0; i < st->n_params; i++)
        if (strcmp(st->params[i].key, key) == 0)
            return st->params[i].value;
    return NULL;
}

/* ---- builders ---- */

void wire_buf_init(struct wire_buf *b, uint8_t *data, size_t cap)
{
    b->data = data;
    b->len = 0;
    b->cap = cap;
    b->overflow = false;
    b->grow = NULL;
}

void wire_buf_init_growable(struct wire_buf *b, wire_grow_fn grow)
{
    wire_buf_init(b, NULL, 0);
    b->grow = grow;
}

void wire_put_bytes(struct wire_buf *b, const void *p, size_t n)
{
    if (b->overflow)
        return;
    if (n > b->cap - b->len && !(b->grow && b->grow(b, n))) {
        b->overflow = true;
        return;
    }
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
}

void wire_put_u8(struct wire_buf *b, uint8_t v)
{
    wire_put_bytes(b, &v, 1);
}

void wire_put_u16(struct wire_buf *b, uint16_t v)
{
    uint8_t x[2] = {(uint8_t)(v >> 8), (uint8_t)v};
    wire_put_bytes(b, x, 2);
}

void wire_put_u32(struct wire_buf *b, uint32_t v)
{
    uint8_t x[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
    wire_put_bytes(b, x, 4);
}

void wire_put_cstr(struct wire_buf *b, const char *s)
{
    wire_put_bytes(b, s, strlen(s) + 1);
}

size_t wire_msg_begin(struct wire_buf *b, uint8_t type)
{
    size_t start = b->len;
    wire_put_u8(b, type);
    wire_put_u32(b, 0);
    return start;
}

void wire_msg_end(struct wire_buf *b, size_t start)
{
    if (b->overflow)
        return;
    uint32_t len = (uint32_t)(b->len - start - 1);
    b->data[start + 1] = (uint8_t)(len >> 24);
    b->data[start + 2] = (uint8_t)(len >> 16);
    b->data[start + 3] = (uint8_t)(len >> 8);
    b->data[start + 4] = (uint8_t)len;
}

static void auth_msg(struct wire_buf *b, uint32_t code, const void *data, size_t len)
{
    size_t m = wire_msg_begin(b, WIRE_BE_AUTH);
    wire_put_u32(b, code);
    wire_put_bytes(b, data, len);
    wire_msg_end(b, m);
}

void wire_build_auth_ok(struct wire_buf *b)
{
    auth_msg(b, WIRE_AUTH_OK, NULL, 0);
}

void wire_build_auth_cleartext(struct wire_buf *b)
{
    auth_msg(b, WIRE_AUTH_CLEARTEXT, NULL, 0);
}

void wire_build_auth_md5(struct wire_buf *b, const uint8_t salt[4])
{
    auth_msg(b, WIRE_AUTH_MD5, salt, 4);
}

void wire_build_auth_sasl(struct wire_buf *b, const char *mechanism)
{
    size_t m = wire_msg_begin(b, WIRE_BE_AUTH);
    wire_put_u32(b, WIRE_AUTH_SASL);
    wire_put_cstr(b, mechanism);
    wire_put_u8(b, 0);
    wire_msg_end(b, m);
}

void wire_build_auth_sasl_continue(struct wire_buf *b, const void *data, size_t len)
{
    auth_msg(b, WIRE_AUTH_SASL_CONTINUE, data, len);
}

void wire_build_auth_sasl_final(struct wire_buf *b, const void *data, size_t len)
{
    auth_msg(b, WIRE_AUTH_SASL_FINAL, data, len);
}

/* ErrorResponse and NoticeResponse share their field layout. */
static void build_report(struct wire_buf *b, uint8_t type, const char *severity,
                         const char *sqlstate, const char *message)
{
    size_t m = wire_msg_begin(b, type);
    wire_put_u8(b, 'S');
    wire_put_cstr(b, severity);
    wire_put_u8(b, 'V');
    wire_put_cstr(b, severity);
    wire_put_u8(b, 'C');
    wire_put_cstr(b, sqlstate);
    wire_put_u8(b, 'M');
    wire_put_cstr(b, message);
    wire_put_u8(b, 0);
    wire_msg_end(b, m);
}

void wire_build_error(struct wire_buf *b, const char *severity, const char *sqlstate,
                      const char *message)
{
    build_report(b, WIRE_BE_ERROR, severity, sqlstate, message);
}

void wire_build_notice(struct wire_buf *b, const char *severity, const char *sqlstate,
                       const char *message)
{
    build_report(b, WIRE_BE_NOTICE, severity, sqlstate, message);
}

void wire_build_parameter_status(struct wire_buf *b, const char *name, const char *value)
{
    size_t m = wire_msg_begin(b, WIRE_BE_PARAMETER_STATUS);
    wire_put_cstr(b, name);
    wire_put_cstr(b, value);
    wire_msg_end(b, m);
}

void wire_build_backend_key(struct wire_buf *b, uint32_t pid, uint32_t key)
{
    size_t m = wire_msg_begin(b, WIRE_BE_BACKEND_KEY_DATA);
    wire_put_u32(b, pid);
    wire_put_u32(b, key);
    wire_msg_end(b, m);
}

void wire_build_ready(struct wire_buf *b, uint8_t status)
{
    size_t m = wire_msg_begin(b, WIRE_BE_READY_FOR_QUERY);
    wire_put_u8(b, status);
    wire_msg_end(b, m);
}

void wire_build_negotiate_protocol(struct wire_buf *b, uint32_t newest_minor,
                                   const char *const *unsupported, size_t n_unsupported)
{
    size_t m = wire_msg_begin(b, WIRE_BE_NEGOTIATE_PROTOCOL);
    wire_put_u32(b, newest_minor);
    wire_put_u32(b, (uint32_t)n_unsupported);
    for (size_t i = 0; i < n_unsupported; i++)
        wire_put_cstr(b, unsupported[i]);
    wire_msg_end(b, m);
}

void wire_build_startup(struct wire_buf *b, const struct wire_startup_param *params, size_t n)
{
    size_t start = b->len;
    wire_put_u32(b, 0);
    wire_put_u32(b, WIRE_PROTOCOL_3_0);
    for (size_t i = 0; i < n; i++) {
        wire_put_cstr(b, params[i].key);
        wire_put_cstr(b, params[i].value);
    }
    wire_put_u8(b, 0);
    if (b->overflow)
        return;
    uint32_t len = (uint32_t)(b->len - start);
    b->data[start] = (uint8_t)(len >> 24);
    b->data[start + 1] = (uint8_t)(len >> 16);
    b->data[start + 2] = (uint8_t)(len >> 8);
    b->data[start + 3] = (uint8_t)len;
}

void wire_build_query(struct wire_buf *b, const char *sql)
{
    size_t m = wire_msg_begin(b, WIRE_FE_QUERY);
    wire_put_cstr(b, sql);
    wire_msg_end(b, m);
}

void wire_build_password(struct wire_buf *b, const char *password)
{
    size_t m = wire_msg_begin(b, WIRE_FE_PASSWORD);
    wire_put_cstr(b, password);
    wire_msg_end(b, m);
}

void wire_build_sasl_initial(struct wire_buf *b, const char *mechanism, const void *data,
                             size_t len)
{
    size_t m = wire_msg_begin(b, WIRE_FE_PASSWORD);
    wire_put_cstr(b, mechanism);
    wire_put_u32(b, (uint32_t)len);
    wire_put_bytes(b, data, len);
    wire_msg_end(b, m);
}

void wire_build_sasl_response(struct wire_buf *b, const void *data, size_t len)
{
    size_t m = wire_msg_begin(b, WIRE_FE_PASSWORD);
    wire_put_bytes(b, data, len);
    wire_msg_end(b, m);
}

void wire_build_terminate(struct wire_buf *b)
{
    size_t m = wire_msg_begin(b, WIRE_FE_TERMINATE);
    wire_msg_end(b, m);
}

void wire_build_cancel(struct wire_buf *b, uint32_t pid, uint32_t key)
{
    wire_put_u32(b, 16);
    wire_put_u32(b, WIRE_CANCEL_REQUEST_CODE);
    wire_put_u32(b, pid);
    wire_put_u32(b, key);
}

/* ---- parsers ---- */

bool wire_parse_error(const uint8_t *body, size_t len, struct wire_error *out)
{
    memset(out, 0, sizeof(*out));
    size_t pos = 0;
    while (pos < len) {
        uint8_t code = body[pos++];
        if (code == 0)
            return true;
        long z = pos < len ? find_nul(body, pos, len) : -1;
        if (z < 0)
            return false;
        const char *v = (const char *)body + pos;
        if (code == 'V' || (code == 'S' && out->severity == NULL))
            out->severity = v;
        else if (code == 'C')
            out->sqlstate = v;
        else if (code == 'M')
            out->message = v;
        pos = (size_t)z + 1;
    }
    return true; /* tolerate a missing final terminator */
}

bool wire_parse_parameter_status(const uint8_t *body, size_t len, const char **name,
                                 const char **value)
{
    if (len == 0)
        return false;
    long z1 = find_nul(body, 0, len);
    if (z1 < 0 || (size_t)z1 + 1 >= len)
        return false;
    long z2 = find_nul(body, (size_t)z1 + 1, len);
    if (z2 < 0 || (size_t)z2 + 1 != len)
        return false;
    *name = (const char *)body;
    *value = (const char *)body + z1 + 1;
    return true;
}

bool wire_parse_ready(const uint8_t *body, size_t len, uint8_t *status)
{
    if (len != 1)
        return false;
    if (body[0] != WIRE_XACT_IDLE && body[0] != WIRE_XACT_IN_BLOCK && body[0] != WIRE_XACT_FAILED)
        return false;
    *status = body[0];
    return true;
}

bool wire_parse_data_row_int(const uint8_t *body, size_t len, long long *out)
{
    if (len < 6 || (body[0] << 8 | body[1]) < 1)
        return false;
    uint32_t n =
        (uint32_t)body[2] << 24 | (uint32_t)body[3] << 16 | (uint32_t)body[4] << 8 | body[5];
    if (n == 0xFFFFFFFFu || n == 0 || n > 20 || n > len - 6)
        return false; /* NULL, empty, or not a number that fits */
    long long v = 0;
    bool neg = body[6] == '-';
    for (uint32_t i = neg ? 1 : 0; i < n; i++) {
        if (body[6 + i] < '0' || body[6 + i] > '9' || v > 100000000000LL)
            return false;
        v = v * 10 + (body[6 + i] - '0');
    }
    if (neg && n == 1)
        return false;
    *out = neg ? -v : v;
    return true;
}

bool wire_parse_backend_key(const uint8_t *body, size_t len, uint32_t *pid, uint32_t *key)
{
    if (len != 8)
        return false;
    *pid = wire_get_u32(body);
    *key = wire_get_u32(body + 4);
    return true;
}

bool wire_parse_auth(const uint8_t *body, size_t len, uint32_t *code, const uint8_t **data,
                     size_t *data_len)
{
    if (len < 4)
        return false;
    *code = wire_get_u32(body);
    *data = body + 4;
    *data_len = len - 4;
    return true;
}

bool wire_sasl_offers(const uint8_t *data, size_t len, const char *name)
{
    size_t pos = 0;
    while (pos < len && data[pos] != 0) {
        long z = find_nul(data, pos, len);
        if (z < 0)
            return false;
        if (strcmp((const char *)data + pos, name) == 0)
            return true;
        pos = (size_t)z + 1;
    }
    return false;
}

bool wire_parse_sasl_initial(const uint8_t *body, size_t len, const char **mechanism,
                             const uint8_t **data, size_t *data_len)
{
    if (len == 0)
        return false;
    long z = find_nul(body, 0, len);
    if (z < 0)
        return false;
    size_t pos = (size_t)z + 1;
    if (len - pos < 4)
        return false;
    uint32_t n = wire_get_u32(body + pos);
    pos += 4;
    *mechanism = (const char *)body;
    if (n == 0xFFFFFFFFu) {
        *data = NULL;
        *data_len = 0;
        return pos == len;
    }
    if (n != len - pos) /* the inner length must match the rest exactly */
        return false;
    *data = body + pos;
    *data_len = n;
    return true;
}
