/* fuzz_proto — libFuzzer target for the wire codec (common/eb_proto, eb_frames' header check).
 *
 * Input layout (the seeds in tests/fuzz/corpus/ are valid messages written this way by
 * `test_proto --write-corpus`):
 *   byte 0     selector: bits 0-3 command byte, bit 4 worker channel, bit 5 sent by the broker
 *   byte 1     item frame count (mod 9)
 *   2 bytes    little-endian size of each item frame
 *   rest       msgpack body
 * The body is decoded as the selected command; then the whole input is also fed, as a body with
 * no frames, to every decoder (both channels, every command byte 0..15, both directions), to the
 * header parser and to the msgpack-to-JSON renderer. Every successful decode is re-encoded and
 * decoded again (the encoder's output must always be accepted) and freed.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "eb_proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void decode_one(eb_proto_channel ch, uint8_t cmd, bool from_broker, const uint8_t *body,
                       size_t len, const size_t *sizes, size_t n_frames,
                       const eb_proto_limits *lim)
{
    eb_proto_msg msg;
    char err[256];
    uint64_t rid;
    if (eb_proto_decode(ch, cmd, from_broker, body, len, sizes, n_frames, lim, &msg, &rid, err,
                        sizeof err) != EB_OK)
        return;
    eb_proto_buf buf;
    if (eb_proto_encode(&msg, &buf, err, sizeof err) == EB_OK) {
        eb_proto_msg again;
        /* The encoder canonicalises (defaults omitted), so the re-encoded body must decode with
         * the same frames. */
        if (eb_proto_decode(ch, cmd, from_broker, buf.data, buf.len, sizes, n_frames, lim, &again,
                            NULL, err, sizeof err) != EB_OK)
            abort();
        eb_proto_msg_free(&again);
        eb_proto_buf_free(&buf);
    }
    if (msg.kind == EB_MSG_C_REPLY && msg.u.reply.health) {
        char *json = NULL;
        if (eb_proto_msgpack_to_json(msg.u.reply.health, msg.u.reply.health_len, &json) == EB_OK)
            free(json);
    }
    eb_proto_msg_free(&msg);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    eb_proto_limits lim;
    eb_proto_limits_default(&lim);
    lim.max_batch_items = 16; /* small limits reach the limit checks more often */
    lim.max_text_bytes = 64;
    lim.max_k = 20;

    if (size >= 2) {
        uint8_t sel = data[0];
        size_t n_frames = data[1] % 9;
        size_t sizes[8];
        size_t pos = 2;
        if (size >= pos + 2 * n_frames) {
            for (size_t i = 0; i < n_frames; i++, pos += 2)
                sizes[i] = (size_t)data[pos] | (size_t)data[pos + 1] << 8;
            eb_proto_channel ch = sel & 0x10 ? EB_PROTO_CHANNEL_WORKER : EB_PROTO_CHANNEL_CLIENT;
            decode_one(ch, sel & 0x0f, sel & 0x20, data + pos, size - pos, sizes, n_frames,
                       NULL);
            decode_one(ch, sel & 0x0f, sel & 0x20, data + pos, size - pos, sizes, n_frames,
                       &lim);
        }
    }
    for (int ch = EB_PROTO_CHANNEL_CLIENT; ch <= EB_PROTO_CHANNEL_WORKER; ch++)
        for (uint8_t cmd = 0; cmd < 16; cmd++)
            for (int from = 0; from < 2; from++)
                decode_one((eb_proto_channel)ch, cmd, from, data, size, NULL, 0, &lim);

    eb_proto_channel ch;
    char err[128];
    (void)eb_proto_parse_header(data, size, &ch, err, sizeof err);
    char *json = NULL;
    if (eb_proto_msgpack_to_json(data, size, &json) == EB_OK)
        free(json);
    (void)eb_proto_utf8_valid(data, size);
    return 0;
}
