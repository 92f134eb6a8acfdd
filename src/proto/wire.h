/* PostgreSQL protocol v3 framing and the few messages the pooler itself reads or writes.
 * Pure code over byte ranges: no I/O, no allocation, no knowledge of connection state.
 * On the hot path only wire_parse_header runs; everything else is for startup, login and the
 * rare messages whose contents matter (ReadyForQuery, ParameterStatus, ErrorResponse). */
#ifndef PGWARDEN_PROTO_WIRE_H
#define PGWARDEN_PROTO_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A regular message: 1 type byte + int32 length (which counts itself, not the type byte). */
#define WIRE_HEADER_LEN 5
/* Startup-phase packets have no type byte: int32 length + int32 code. */
#define WIRE_STARTUP_HEADER_LEN 8
/* Largest startup packet accepted (PostgreSQL uses 10000). */
#define WIRE_MAX_STARTUP_LEN    10000
#define WIRE_MAX_STARTUP_PARAMS 64

#define WIRE_PROTOCOL(major, minor) (((uint32_t)(major) << 16) | (uint32_t)(minor))
#define WIRE_PROTOCOL_MAJOR(v)      ((v) >> 16)
#define WIRE_PROTOCOL_MINOR(v)      ((v)&0xffff)
#define WIRE_PROTOCOL_3_0           WIRE_PROTOCOL(3, 0)
#define WIRE_CANCEL_REQUEST_CODE    80877102u
#define WIRE_SSL_REQUEST_CODE       80877103u
#define WIRE_GSSENC_REQUEST_CODE    80877104u

/* Frontend (client -> server) message types. */
enum wire_fe_type {
    WIRE_FE_BIND = 'B',
    WIRE_FE_CLOSE = 'C',
    WIRE_FE_COPY_DATA = 'd',
    WIRE_FE_COPY_DONE = 'c',
    WIRE_FE_COPY_FAIL = 'f',
    WIRE_FE_DESCRIBE = 'D',
    WIRE_FE_EXECUTE = 'E',
    WIRE_FE_FLUSH = 'H',
    WIRE_FE_FUNCTION_CALL = 'F',
    WIRE_FE_PARSE = 'P',
    WIRE_FE_PASSWORD = 'p', /* also SASLInitialResponse and SASLResponse */
    WIRE_FE_QUERY = 'Q',
    WIRE_FE_SYNC = 'S',
    WIRE_FE_TERMINATE = 'X',
};

/* Backend (server -> client) message types. */
enum wire_be_type {
    WIRE_BE_AUTH = 'R',
    WIRE_BE_BACKEND_KEY_DATA = 'K',
    WIRE_BE_BIND_COMPLETE = '2',
    WIRE_BE_CLOSE_COMPLETE = '3',
    WIRE_BE_COMMAND_COMPLETE = 'C',
    WIRE_BE_COPY_BOTH_RESPONSE = 'W',
    WIRE_BE_COPY_DATA = 'd',
    WIRE_BE_COPY_DONE = 'c',
    WIRE_BE_COPY_IN_RESPONSE = 'G',
    WIRE_BE_COPY_OUT_RESPONSE = 'H',
    WIRE_BE_DATA_ROW = 'D',
    WIRE_BE_EMPTY_QUERY = 'I',
    WIRE_BE_ERROR = 'E',
    WIRE_BE_FUNCTION_CALL_RESPONSE = 'V',
    WIRE_BE_NEGOTIATE_PROTOCOL = 'v',
    WIRE_BE_NO_DATA = 'n',
    WIRE_BE_NOTICE = 'N',
    WIRE_BE_NOTIFICATION = 'A',
    WIRE_BE_PARAMETER_DESCRIPTION = 't',
    WIRE_BE_PARAMETER_STATUS = 'S',
    WIRE_BE_PARSE_COMPLETE = '1',
    WIRE_BE_PORTAL_SUSPENDED = 's',
    WIRE_BE_READY_FOR_QUERY = 'Z',
    WIRE_BE_ROW_DESCRIPTION = 'T',
};

/* Authentication request codes inside an 'R' message. */
enum wire_auth_code {
    WIRE_AUTH_OK = 0,
    WIRE_AUTH_CLEARTEXT = 3,
    WIRE_AUTH_MD5 = 5,
    WIRE_AUTH_SASL = 10,
    WIRE_AUTH_SASL_CONTINUE = 11,
    WIRE_AUTH_SASL_FINAL = 12,
};

/* Transaction status byte of ReadyForQuery. */
enum wire_xact_status {
    WIRE_XACT_IDLE = 'I',
    WIRE_XACT_IN_BLOCK = 'T',
    WIRE_XACT_FAILED = 'E',
};

enum wire_header_result {
    WIRE_HEADER_OK,         /* *type and *len (body length, without the 4 length bytes) set */
    WIRE_HEADER_INCOMPLETE, /* fewer than WIRE_HEADER_LEN bytes available */
    WIRE_HEADER_BAD_LENGTH, /* length field < 4 or body longer than max_body */
};

/* Reads a regular message header from avail bytes at p. max_body bounds the body length
 * (max_packet_size); the comparison is done in 64 bits so no value can overflow. */
enum wire_header_result wire_parse_header(const uint8_t *p, size_t avail, uint32_t max_body,
                                          uint8_t *type, uint32_t *body_len);

/* ---- startup phase ---- */

enum wire_startup_kind {
    WIRE_STARTUP_MESSAGE,     /* protocol 3.x StartupMessage */
    WIRE_STARTUP_SSL,         /* SSLRequest */
    WIRE_STARTUP_GSSENC,      /* GSSENCRequest */
    WIRE_STARTUP_CANCEL,      /* CancelRequest */
    WIRE_STARTUP_BAD_VERSION, /* a protocol major version other than 3 */
    WIRE_STARTUP_MALFORMED,   /* bad length, missing terminator, too many parameters */
};

struct wire_startup_param {
    const char *key;   /* borrowed from the packet */
    const char *value; /* borrowed from the packet */
};

struct wire_startup {
    enum wire_startup_kind kind;
    uint32_t version; /* the code field: protocol version or request code */
    size_t n_params;
    struct wire_startup_param params[WIRE_MAX_STARTUP_PARAMS];
    /* CancelRequest: */
    uint32_t cancel_pid;
    const uint8_t *cancel_key; /* borrowed */
    size_t cancel_key_len;
};

/* Reads the length of a startup-phase packet (first 4 bytes, counting themselves).
 * Returns false when fewer than 4 bytes are available. */
bool wire_startup_length(const uint8_t *p, size_t avail, uint32_t *len);

/* Parses one whole startup-phase packet (len bytes including the length field). The packet
 * bytes must stay alive while out's borrowed pointers are used. Keys are never empty;
 * duplicate keys are MALFORMED. */
enum wire_startup_kind wire_parse_startup(const uint8_t *pkt, size_t len, struct wire_startup *out);

/* Value of a startup parameter, or NULL. */
const char *wire_startup_get(const struct wire_startup *st, const char *key);

/* ---- building messages (appends into a caller-owned buffer) ---- */

struct wire_buf;
/* Makes room for at least need more bytes when an append does not fit (may replace data and
 * cap); false when it cannot, and the buffer overflows. The owner of a growable buffer
 * supplies it and owns the bytes: wire itself never allocates. */
typedef bool (*wire_grow_fn)(struct wire_buf *b, size_t need);

struct wire_buf {
    uint8_t *data; /* borrowed; owned by the grow function's user when grow is set */
    size_t len;
    size_t cap;
    bool overflow;     /* set when an append did not fit; len is then unchanged */
    wire_grow_fn grow; /* NULL: the capacity is fixed */
};

void wire_buf_init(struct wire_buf *b, uint8_t *data, size_t cap);
/* An empty buffer (no bytes yet) that grows through grow as messages are appended. */
void wire_buf_init_growable(struct wire_buf *b, wire_grow_fn grow);

/* Starts a regular message of type; returns its offset for wire_msg_end. */
size_t wire_msg_begin(struct wire_buf *b, uint8_t type);
void wire_msg_end(struct wire_buf *b, size_t start);
void wire_put_u8(struct wire_buf *b, uint8_t v);
void wire_put_u16(struct wire_buf *b, uint16_t v);
void wire_put_u32(struct wire_buf *b, uint32_t v);
void wire_put_bytes(struct wire_buf *b, const void *p, size_t n);
void wire_put_cstr(struct wire_buf *b, const char *s); /* with its NUL */

void wire_build_auth_ok(struct wire_buf *b);
void wire_build_auth_cleartext(struct wire_buf *b);
void wire_build_auth_md5(struct wire_buf *b, const uint8_t salt[4]);
void wire_build_auth_sasl(struct wire_buf *b, const char *mechanism);
void wire_build_auth_sasl_continue(struct wire_buf *b, const void *data, size_t len);
void wire_build_auth_sasl_final(struct wire_buf *b, const void *data, size_t len);
/* severity e.g. "FATAL"/"ERROR"; sets both S and V. */
void wire_build_error(struct wire_buf *b, const char *severity, const char *sqlstate,
                      const char *message);
/* NoticeResponse; severity e.g. "WARNING". */
void wire_build_notice(struct wire_buf *b, const char *severity, const char *sqlstate,
                       const char *message);
void wire_build_parameter_status(struct wire_buf *b, const char *name, const char *value);
void wire_build_backend_key(struct wire_buf *b, uint32_t pid, uint32_t key);
void wire_build_ready(struct wire_buf *b, uint8_t status);
void wire_build_negotiate_protocol(struct wire_buf *b, uint32_t newest_minor,
                                   const char *const *unsupported, size_t n_unsupported);
/* Frontend messages the pooler sends to servers. */
void wire_build_startup(struct wire_buf *b, const struct wire_startup_param *params, size_t n);
void wire_build_query(struct wire_buf *b, const char *sql);
void wire_build_password(struct wire_buf *b, const char *password);
void wire_build_sasl_initial(struct wire_buf *b, const char *mechanism, const void *data,
                             size_t len);
void wire_build_sasl_response(struct wire_buf *b, const void *data, size_t len);
void wire_build_terminate(struct wire_buf *b);
void wire_build_cancel(struct wire_buf *b, uint32_t pid, uint32_t key);

/* ---- parsing backend messages (body = bytes after the 5-byte header) ---- */

struct wire_error {
    const char *severity; /* borrowed; NULL when absent (servers may omit any field) */
    const char *sqlstate; /* borrowed; NULL when absent */
    const char *message;  /* borrowed; NULL when absent */
};

/* ErrorResponse / NoticeResponse fields. False when a field is not NUL-terminated. */
bool wire_parse_error(const uint8_t *body, size_t len, struct wire_error *out);
bool wire_parse_parameter_status(const uint8_t *body, size_t len, const char **name,
                                 const char **value);
bool wire_parse_ready(const uint8_t *body, size_t len, uint8_t *status);
/* DataRow whose first column is a decimal integer in text form (at most 11 digits, optional
 * minus); false for anything else (NULL, empty, not a number). */
bool wire_parse_data_row_int(const uint8_t *body, size_t len, long long *out);
/* Protocol 3.0 BackendKeyData: exactly 8 bytes. */
bool wire_parse_backend_key(const uint8_t *body, size_t len, uint32_t *pid, uint32_t *key);
/* 'R': the code and the bytes after it. */
bool wire_parse_auth(const uint8_t *body, size_t len, uint32_t *code, const uint8_t **data,
                     size_t *data_len);
/* AuthenticationSASL mechanism list contains name. */
bool wire_sasl_offers(const uint8_t *data, size_t len, const char *name);
/* 'p' SASLInitialResponse: mechanism and the client-first bytes (NULL/0 when length is -1). */
bool wire_parse_sasl_initial(const uint8_t *body, size_t len, const char **mechanism,
                             const uint8_t **data, size_t *data_len);

/* Big-endian helpers. */
static inline uint32_t wire_get_u32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

#endif
