/* Admin console replies: result sets with typed columns, errors and notices. */
#include "admin/reply.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "proto/wire.h"

#define OID_INT8    20
#define OID_INT4    23
#define OID_TEXT    25
#define OID_NUMERIC 1700

static const struct {
    const char *suffix;
    enum reply_type type;
    uint32_t oid;
    int16_t size;
} TYPES[] = {
    {"", REPLY_TEXT, OID_TEXT, -1},
    {":i", REPLY_INT4, OID_INT4, 4},
    {":q", REPLY_INT8, OID_INT8, 8},
    {":n", REPLY_NUMERIC, OID_NUMERIC, -1},
};

void reply_begin(struct reply *r, struct console_out *o, const char *const *specs, int n)
{
    if (n > REPLY_MAX_COLS)
        n = REPLY_MAX_COLS;
    r->o = o;
    r->ncols = n;
    r->rows = 0;
    r->row_cols = 0;
    struct wire_buf *b = &o->buf;
    size_t m = wire_msg_begin(b, WIRE_BE_ROW_DESCRIPTION);
    wire_put_u16(b, (uint16_t)n);
    for (int i = 0; i < n; i++) {
        const char *spec = specs[i];
        const char *colon = strrchr(spec, ':');
        size_t name_len = colon ? (size_t)(colon - spec) : strlen(spec);
        size_t t = 0;
        for (size_t k = 1; colon && k < sizeof(TYPES) / sizeof(TYPES[0]); k++)
            if (!strcmp(colon, TYPES[k].suffix))
                t = k;
        r->types[i] = TYPES[t].type;
        char name[64];
        snprintf(name, sizeof(name), "%.*s", (int)name_len, spec);
        wire_put_cstr(b, name);
        wire_put_u32(b, 0);
        wire_put_u16(b, 0);
        wire_put_u32(b, TYPES[t].oid);
        wire_put_u16(b, (uint16_t)TYPES[t].size);
        wire_put_u32(b, 0xFFFFFFFF);
        wire_put_u16(b, 0);
    }
    wire_msg_end(b, m);
}

void reply_row(struct reply *r)
{
    r->row_at = wire_msg_begin(&r->o->buf, WIRE_BE_DATA_ROW);
    wire_put_u16(&r->o->buf, (uint16_t)r->ncols);
    r->row_cols = 0;
}

void reply_text(struct reply *r, const char *v)
{
    struct wire_buf *b = &r->o->buf;
    if (!v) {
        wire_put_u32(b, 0xFFFFFFFF);
    } else {
        wire_put_u32(b, (uint32_t)strlen(v));
        wire_put_bytes(b, v, strlen(v));
    }
    if (++r->row_cols == r->ncols) {
        wire_msg_end(b, r->row_at);
        r->rows++;
    }
}

void reply_int(struct reply *r, int64_t v)
{
    char text[32];
    snprintf(text, sizeof(text), "%" PRId64, v);
    reply_text(r, text);
}

void reply_double(struct reply *r, double v, int decimals)
{
    char text[48];
    snprintf(text, sizeof(text), "%.*f", decimals, v);
    reply_text(r, text);
}

void reply_complete(struct console_out *o, const char *tag)
{
    size_t m = wire_msg_begin(&o->buf, WIRE_BE_COMMAND_COMPLETE);
    wire_put_cstr(&o->buf, tag);
    wire_msg_end(&o->buf, m);
}

void reply_end(struct reply *r, const char *tag)
{
    reply_complete(r->o, tag);
}

void reply_error(struct console_out *o, const char *sqlstate, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    wire_build_error(&o->buf, "ERROR", sqlstate, msg);
}

void reply_notice_detail(struct console_out *o, const char *message, const char *detail)
{
    struct wire_buf *b = &o->buf;
    size_t m = wire_msg_begin(b, WIRE_BE_NOTICE);
    const struct {
        uint8_t code;
        const char *value;
    } fields[] = {{'S', "NOTICE"}, {'V', "NOTICE"}, {'C', "00000"}, {'M', message}, {'D', detail}};
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
        wire_put_u8(b, fields[i].code);
        wire_put_cstr(b, fields[i].value);
    }
    wire_put_u8(b, 0);
    wire_msg_end(b, m);
}

void reply_format_time(int64_t us, char *out, size_t len)
{
    if (us <= 0) {
        snprintf(out, len, "%s", "");
        return;
    }
    time_t t = (time_t)(us / 1000000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, len, "%Y-%m-%d %H:%M:%S UTC", &tm);
}
