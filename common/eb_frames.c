/* eb_frames — receive and send protocol messages as ZMQ multipart messages.
 *
 * The codec (eb_proto) works on one body buffer; this module is the thin layer between it and
 * the sockets. A received message is kept as its zmq_msg_t parts so the broker can forward item
 * frames (image bytes, embeddings) with zmq_msg_move instead of copying or re-encoding them.
 * Receiving drains every part of a multipart message even when it breaks a limit, so a hostile
 * peer can never leave the socket in the middle of a message.
 */
#include "eb_frames.h"
#include "eb_status.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void eb_frames_init(eb_frames *frames)
{
    memset(frames, 0, sizeof *frames);
}

void eb_frames_close(eb_frames *frames)
{
    if (!frames)
        return;
    for (size_t i = 0; i < frames->n; i++)
        zmq_msg_close(&frames->parts[i]);
    free(frames->parts);
    memset(frames, 0, sizeof *frames);
}

static void frames_clear(eb_frames *frames)
{
    for (size_t i = 0; i < frames->n; i++)
        zmq_msg_close(&frames->parts[i]);
    frames->n = 0;
    frames->total_bytes = 0;
}

eb_status eb_frames_recv(void *socket, int flags, size_t max_frames, uint64_t max_bytes,
                         eb_frames *frames, char *err, size_t err_len)
{
    frames_clear(frames);
    bool over = false;
    size_t count = 0;
    uint64_t bytes = 0;
    for (;;) {
        zmq_msg_t part;
        zmq_msg_init(&part);
        /* Only the first part may block or fail with EAGAIN: the rest of a multipart message
         * arrives atomically with it. */
        int rc = zmq_msg_recv(&part, socket, count == 0 ? flags : 0);
        if (rc < 0) {
            int e = zmq_errno();
            zmq_msg_close(&part);
            frames_clear(frames);
            if (count == 0 && e == EAGAIN)
                return EB_ERR_TIMEOUT;
            eb_set_err(err, err_len, "zmq_msg_recv failed after %zu parts: %s", count,
                       zmq_strerror(e));
            return EB_ERR_IO;
        }
        count++;
        bytes += zmq_msg_size(&part);
        bool more = zmq_msg_more(&part);
        if (!over && (count > max_frames || bytes > max_bytes)) {
            over = true;
            frames_clear(frames);
        }
        if (over) {
            zmq_msg_close(&part);
        } else {
            if (frames->n == frames->cap) {
                size_t cap = frames->cap ? frames->cap * 2 : 8;
                zmq_msg_t *p = realloc(frames->parts, cap * sizeof *p);
                if (!p) {
                    zmq_msg_close(&part);
                    frames_clear(frames);
                    over = true; /* drain the rest, then report */
                    max_frames = 0;
                    if (!more)
                        break;
                    continue;
                }
                frames->parts = p;
                frames->cap = cap;
            }
            zmq_msg_init(&frames->parts[frames->n]);
            zmq_msg_move(&frames->parts[frames->n], &part);
            zmq_msg_close(&part);
            frames->n++;
            frames->total_bytes = bytes;
        }
        if (!more)
            break;
    }
    if (over) {
        if (max_frames == 0 && count <= 1)
            eb_set_err(err, err_len, "out of memory receiving a message");
        else
            eb_set_err(err, err_len, "message of %zu frames and %llu bytes exceeds the limit of %zu "
                       "frames or %llu bytes; dropped", count, (unsigned long long)bytes,
                       max_frames, (unsigned long long)max_bytes);
        return EB_ERR_TOO_LARGE;
    }
    return EB_OK;
}

eb_status eb_frames_parse(const eb_frames *frames, bool has_identity, eb_frames_view *view,
                          char *err, size_t err_len)
{
    memset(view, 0, sizeof *view);
    size_t i = 0;
    if (has_identity) {
        if (frames->n < 1) {
            eb_set_err(err, err_len, "empty message");
            return EB_ERR_PROTOCOL;
        }
        view->identity = zmq_msg_data((zmq_msg_t *)&frames->parts[0]);
        view->identity_len = zmq_msg_size((zmq_msg_t *)&frames->parts[0]);
        i = 1;
    }
    if (frames->n < i + 3) {
        eb_set_err(err, err_len, "message has %zu frames after the identity, expected at least 3 "
                   "(header, command, body)", frames->n - i);
        return EB_ERR_PROTOCOL;
    }
    zmq_msg_t *parts = (zmq_msg_t *)frames->parts;
    eb_status st = eb_proto_parse_header(zmq_msg_data(&parts[i]), zmq_msg_size(&parts[i]),
                                         &view->channel, err, err_len);
    if (st != EB_OK)
        return st;
    if (zmq_msg_size(&parts[i + 1]) != 1) {
        eb_set_err(err, err_len, "command frame is %zu bytes, expected exactly 1",
                   zmq_msg_size(&parts[i + 1]));
        return EB_ERR_PROTOCOL;
    }
    view->command = *(const uint8_t *)zmq_msg_data(&parts[i + 1]);
    view->body = zmq_msg_data(&parts[i + 2]);
    view->body_len = zmq_msg_size(&parts[i + 2]);
    view->first_item = i + 3;
    view->n_items = frames->n - view->first_item;
    return EB_OK;
}

eb_status eb_frames_decode(const eb_frames *frames, bool has_identity, bool from_broker,
                           const eb_proto_limits *limits, eb_frames_view *view, eb_proto_msg *msg,
                           uint64_t *request_id, char *err, size_t err_len)
{
    memset(msg, 0, sizeof *msg);
    if (request_id)
        *request_id = 0;
    eb_status st = eb_frames_parse(frames, has_identity, view, err, err_len);
    if (st != EB_OK)
        return st;
    size_t sizes_small[16];
    size_t *sizes = sizes_small;
    if (view->n_items > sizeof sizes_small / sizeof sizes_small[0]) {
        sizes = malloc(view->n_items * sizeof *sizes);
        if (!sizes) {
            eb_set_err(err, err_len, "out of memory decoding a message of %zu item frames",
                       view->n_items);
            return EB_ERR_NOMEM;
        }
    }
    for (size_t j = 0; j < view->n_items; j++)
        sizes[j] = zmq_msg_size((zmq_msg_t *)&frames->parts[view->first_item + j]);
    st = eb_proto_decode(view->channel, view->command, from_broker, view->body, view->body_len,
                         sizes, view->n_items, limits, msg, request_id, err, err_len);
    if (sizes != sizes_small)
        free(sizes);
    return st;
}

static void close_items(zmq_msg_t *items, size_t from, size_t n)
{
    for (size_t j = from; j < n; j++) {
        zmq_msg_close(&items[j]);
        zmq_msg_init(&items[j]);
    }
}

static eb_status send_error(int e, bool first, char *err, size_t err_len)
{
    eb_set_err(err, err_len, "zmq send failed%s: %s", first ? "" : " mid-message",
               zmq_strerror(e));
    if (first && e == EAGAIN)
        return EB_ERR_BUSY;
    if (e == EHOSTUNREACH)
        return EB_ERR_UNAVAILABLE;
    return EB_ERR_IO;
}

eb_status eb_frames_send(void *socket, const void *identity, size_t identity_len,
                         eb_proto_channel channel, uint8_t command, const void *body,
                         size_t body_len, zmq_msg_t *items, size_t n_items, int flags, char *err,
                         size_t err_len)
{
    const char *header = channel == EB_PROTO_CHANNEL_WORKER ? EB_PROTO_WORKER_HEADER
                                                            : EB_PROTO_CLIENT_HEADER;
    bool first = true;
    int more = ZMQ_SNDMORE;
    if (identity) {
        if (zmq_send(socket, identity, identity_len, flags | more) < 0) {
            int e = zmq_errno();
            close_items(items, 0, n_items);
            return send_error(e, first, err, err_len);
        }
        first = false;
    }
    if (zmq_send(socket, header, EB_PROTO_HEADER_LEN, flags | more) < 0 ||
        (first = false, zmq_send(socket, &command, 1, flags | more) < 0) ||
        zmq_send(socket, body ? body : "", body_len, flags | (n_items ? more : 0)) < 0) {
        int e = zmq_errno();
        close_items(items, 0, n_items);
        return send_error(e, first, err, err_len);
    }
    for (size_t j = 0; j < n_items; j++) {
        if (zmq_msg_send(&items[j], socket, flags | (j + 1 < n_items ? more : 0)) < 0) {
            int e = zmq_errno();
            close_items(items, j, n_items);
            return send_error(e, false, err, err_len);
        }
        zmq_msg_init(&items[j]); /* sent: zmq_msg_send left it empty; keep it close-safe */
    }
    return EB_OK;
}

eb_status eb_frames_send_msg(void *socket, const void *identity, size_t identity_len,
                             const eb_proto_msg *msg, zmq_msg_t *items, size_t n_items, int flags,
                             char *err, size_t err_len)
{
    eb_proto_channel channel;
    uint8_t command;
    if (!eb_proto_kind_wire(msg->kind, &channel, &command)) {
        eb_set_err(err, err_len, "cannot send a message of kind %d", (int)msg->kind);
        close_items(items, 0, n_items);
        return EB_ERR_INVALID;
    }
    eb_proto_buf body;
    eb_status st = eb_proto_encode(msg, &body, err, err_len);
    if (st != EB_OK) {
        close_items(items, 0, n_items);
        return st;
    }
    st = eb_frames_send(socket, identity, identity_len, channel, command, body.data, body.len,
                        items, n_items, flags, err, err_len);
    eb_proto_buf_free(&body);
    return st;
}
