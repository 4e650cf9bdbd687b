/* eb_frames — ZMQ multipart framing of protocol messages (docs/protocol.md, "Frames").
 *
 *   [identity]  only on a ROUTER socket (the broker); DEALER peers have no identity frame and no
 *               empty delimiter
 *   header      "EMB1C" / "EMB1W"
 *   command     1 byte
 *   body        msgpack (eb_proto_encode)
 *   items…      one frame per item, moved with zmq_msg_move, never re-encoded
 *
 * eb_frames holds one received multipart message as zmq_msg_t parts so item frames can be moved
 * on to another socket without copying. Not thread-safe (neither are ZMQ sockets).
 */
#ifndef EB_FRAMES_H
#define EB_FRAMES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <zmq.h>

#include "eb_proto.h"
#include "eb_status.h"

/* One received multipart message. Zero-initialise (or eb_frames_init) before first use. */
typedef struct eb_frames {
    zmq_msg_t *parts; /* parts[0..n-1], each initialised */
    size_t n;
    size_t cap;
    uint64_t total_bytes; /* sum of part sizes */
} eb_frames;

void eb_frames_init(eb_frames *frames);

/* Close every part and free the array; the struct is reusable afterwards. NULL-safe. */
void eb_frames_close(eb_frames *frames);

/* Receive one whole multipart message (closing what `frames` held before). flags: 0 or
 * ZMQ_DONTWAIT. When the message has more than max_frames parts or more than max_bytes in all,
 * the rest is still received and dropped (the socket stays in step) and EB_ERR_TOO_LARGE is
 * returned with a reason; `frames` is then empty. EB_ERR_TIMEOUT: nothing to receive
 * (EAGAIN). EB_ERR_IO: another zmq error (reason in err). */
eb_status eb_frames_recv(void *socket, int flags, size_t max_frames, uint64_t max_bytes,
                         eb_frames *frames, char *err, size_t err_len);

/* Where things are in a received message. Pointers point into `frames` parts. */
typedef struct eb_frames_view {
    const uint8_t *identity; /* ROUTER only, else NULL */
    size_t identity_len;
    eb_proto_channel channel;
    uint8_t command;
    const uint8_t *body;
    size_t body_len;
    size_t first_item; /* index in frames->parts of item frame 0 */
    size_t n_items;
} eb_frames_view;

/* Split a received message: has_identity is true on ROUTER sockets. EB_ERR_PROTOCOL with a
 * reason for too few frames, a bad header (eb_proto_parse_header), or a command frame that is
 * not exactly one byte. view->identity is set whenever the identity frame exists, even on
 * failure, so the broker can answer. */
eb_status eb_frames_parse(const eb_frames *frames, bool has_identity, eb_frames_view *view,
                          char *err, size_t err_len);

/* eb_frames_parse + eb_proto_decode (item frame sizes taken from the parts). Same errors as
 * both; on success *msg owns its memory (eb_proto_msg_free) and the item frames stay in
 * `frames` at view->first_item… for the caller to read or move. request_id as in
 * eb_proto_decode (may be NULL). */
eb_status eb_frames_decode(const eb_frames *frames, bool has_identity, bool from_broker,
                           const eb_proto_limits *limits, eb_frames_view *view, eb_proto_msg *msg,
                           uint64_t *request_id, char *err, size_t err_len);

/* Send identity (if identity != NULL), header, command, body and the item frames as one
 * multipart message. The items are moved out (each left as an empty, closed-safe zmq_msg_t
 * after the call, whether or not the send succeeded: the caller only has to zmq_msg_close them
 * as usual). flags: 0 or ZMQ_DONTWAIT (applied to every part). EB_ERR_BUSY when the first part
 * would block (EAGAIN) — nothing was sent; EB_ERR_UNAVAILABLE for EHOSTUNREACH (ROUTER_MANDATORY,
 * unknown peer); EB_ERR_IO otherwise. Reasons in err. */
eb_status eb_frames_send(void *socket, const void *identity, size_t identity_len,
                         eb_proto_channel channel, uint8_t command, const void *body,
                         size_t body_len, zmq_msg_t *items, size_t n_items, int flags, char *err,
                         size_t err_len);

/* Encode `msg` (eb_proto_encode) and send it with eb_frames_send. Same contract. */
eb_status eb_frames_send_msg(void *socket, const void *identity, size_t identity_len,
                             const eb_proto_msg *msg, zmq_msg_t *items, size_t n_items, int flags,
                             char *err, size_t err_len);

#endif
