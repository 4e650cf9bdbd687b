/* Unit tests for the wire codec (common/eb_proto, common/eb_frames).
 *
 * - every message kind: encode -> decode -> every field compared;
 * - every rejection class, each checked for its status code and the field path in the message;
 * - the hex examples in docs/protocol.md decode, and re-encode to the same bytes, so the doc and
 *   the codec agree;
 * - framing over a real inproc DEALER/ROUTER pair.
 *
 * The same program regenerates the doc examples and the fuzz seed corpus:
 *   test_proto --doc-examples            prints the ```hex blocks pasted into docs/protocol.md
 *   test_proto --write-corpus DIR        writes tests/fuzz/corpus seeds (format: fuzz_proto.c)
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>
#include <zmq.h>

#include "eb_frames.h"
#include "eb_proto.h"
#include "eb_test.h"

/* ---- sample messages (also the doc examples) ---------------------------------------------- */

static const uint8_t HASH_A[32] = {0x9f, 0x86, 0xd0, 0x81, 0x88, 0x4c, 0x7d, 0x65, 0x9a, 0x2f, 0xea,
                                   0xa0, 0xc5, 0x5a, 0xd0, 0x15, 0xa3, 0xbf, 0x4f, 0x1b, 0x2b, 0x0b,
                                   0x82, 0x2c, 0xd1, 0x5d, 0x6c, 0x15, 0xb0, 0xf0, 0x0a, 0x08};
static const uint64_t BID = 0x5eedf00dcafe0001ull;

/* Item frame sizes that go with a sample. */
typedef struct sample {
    const char *name;
    eb_proto_msg msg;
    size_t sizes[8];
    size_t n_frames;
    /* storage the message points into */
    eb_proto_input inputs[4];
    eb_proto_result results[4];
    eb_proto_match matches[4];
    eb_proto_model_desc models[4];
    eb_proto_item items[4];
    eb_proto_item_result item_results[4];
    uint8_t health[256];
} sample;

/* The health map of the REPLY example, built with msgpack-c. */
static size_t sample_health(uint8_t *out, size_t cap)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 2);
    msgpack_pack_str_with_body(&pk, "uptime_s", 8);
    msgpack_pack_uint32(&pk, 42);
    msgpack_pack_str_with_body(&pk, "redis", 5);
    msgpack_pack_str_with_body(&pk, "ok", 2);
    size_t n = sb.size <= cap ? sb.size : 0;
    memcpy(out, sb.data, n);
    msgpack_sbuffer_destroy(&sb);
    return n;
}

/* Fill s with the sample number i (0..N_SAMPLES-1); false past the end. */
static bool make_sample(int i, sample *s)
{
    memset(s, 0, sizeof *s);
    eb_proto_msg *m = &s->msg;
    switch (i) {
    case 0:
        s->name = "register";
        eb_proto_msg_init(m, EB_MSG_C_REGISTER);
        m->u.reg.segment = "/embroker-1000-4242-00112233aabbccdd";
        m->u.reg.size = 64 << 20;
        return true;
    case 1:
        s->name = "challenge";
        eb_proto_msg_init(m, EB_MSG_C_CHALLENGE);
        m->bid = BID;
        m->u.challenge.segment = "/embroker-1000-4242-00112233aabbccdd";
        for (int j = 0; j < 32; j++)
            m->u.challenge.nonce[j] = (uint8_t)(0xa0 + j);
        return true;
    case 2:
        s->name = "prove";
        eb_proto_msg_init(m, EB_MSG_C_PROVE);
        m->u.prove.segment = "/embroker-1000-4242-00112233aabbccdd";
        return true;
    case 3:
        s->name = "registered";
        eb_proto_msg_init(m, EB_MSG_C_REGISTERED);
        m->bid = BID;
        m->u.registered.segment = "/embroker-1000-4242-00112233aabbccdd";
        m->u.registered.seg = 7;
        m->u.registered.epoch = 1;
        return true;
    case 4:
        s->name = "registered-denied";
        eb_proto_msg_init(m, EB_MSG_C_REGISTERED);
        m->bid = BID;
        m->u.registered.segment = "/embroker-1000-4242-00112233aabbccdd";
        m->u.registered.status = EB_ERR_DENIED;
        m->u.registered.error = "nonce not found in segment header";
        return true;
    case 5: /* an image in shared memory */
        s->name = "request-embed-image-shm";
        eb_proto_msg_init(m, EB_MSG_C_REQUEST);
        m->u.request.id = 1;
        m->u.request.op = EB_OP_EMBED_IMAGE;
        m->u.request.model = "siglip";
        s->inputs[0] = (eb_proto_input){.kind = EB_INPUT_IMAGE, .format = EB_FORMAT_JPEG,
                                        .source = EB_SOURCE_SHM, .seg = 7, .epoch = 1,
                                        .off = 4096, .len = 48213};
        m->u.request.n_inputs = 1;
        m->u.request.inputs = s->inputs;
        m->u.request.options.deadline_ms = 2000;
        return true;
    case 6: /* inline raw pixels and an inline PNG with a client hash, bulk */
        s->name = "request-embed-image-inline";
        eb_proto_msg_init(m, EB_MSG_C_REQUEST);
        m->u.request.id = 2;
        m->u.request.op = EB_OP_EMBED_IMAGE;
        m->u.request.model = "siglip";
        s->inputs[0] = (eb_proto_input){.kind = EB_INPUT_RAW_RGB8, .width = 2, .height = 2,
                                        .source = EB_SOURCE_INLINE, .frame = 0, .len = 12};
        s->inputs[1] = (eb_proto_input){.kind = EB_INPUT_IMAGE, .format = EB_FORMAT_PNG,
                                        .source = EB_SOURCE_INLINE, .frame = 1, .len = 70,
                                        .has_hash = true};
        memcpy(s->inputs[1].hash, HASH_A, 32);
        m->u.request.n_inputs = 2;
        m->u.request.inputs = s->inputs;
        m->u.request.options.priority = EB_PRIORITY_BULK;
        m->u.request.options.normalize = false;
        s->sizes[0] = 12;
        s->sizes[1] = 70;
        s->n_frames = 2;
        return true;
    case 7:
        s->name = "request-embed-text";
        eb_proto_msg_init(m, EB_MSG_C_REQUEST);
        m->u.request.id = 3;
        m->u.request.op = EB_OP_EMBED_TEXT;
        m->u.request.model = "qwen3";
        s->inputs[0] = (eb_proto_input){.kind = EB_INPUT_TEXT, .text = "red shoe", .text_len = 8};
        s->inputs[1] = (eb_proto_input){.kind = EB_INPUT_TEXT, .text = "caf\xc3\xa9",
                                        .text_len = 5};
        m->u.request.n_inputs = 2;
        m->u.request.inputs = s->inputs;
        m->u.request.options.instruction = "Represent this product";
        m->u.request.options.output_dim = 512;
        m->u.request.options.return_embedding = false;
        return true;
    case 8:
        s->name = "request-scan";
        eb_proto_msg_init(m, EB_MSG_C_REQUEST);
        m->u.request.id = 4;
        m->u.request.op = EB_OP_SCAN;
        m->u.request.model = "siglip";
        m->u.request.text_model = "qwen3";
        s->inputs[0] = (eb_proto_input){.kind = EB_INPUT_IMAGE, .format = EB_FORMAT_AUTO,
                                        .source = EB_SOURCE_SHM, .seg = 7, .epoch = 1, .off = 0,
                                        .len = 1000};
        s->inputs[1] = (eb_proto_input){.kind = EB_INPUT_TEXT, .text = "shoe", .text_len = 4};
        m->u.request.n_inputs = 2;
        m->u.request.inputs = s->inputs;
        eb_proto_options *o = &m->u.request.options;
        o->deadline_ms = 500;
        o->k = 10;
        o->template_name = "fashion";
        o->source_type = "catalog";
        o->store = true;
        o->product_id = "scan-123";
        o->text_weight = 0.5;
        o->image_weight = 1.0;
        o->return_embedding = false;
        return true;
    case 9:
        s->name = "request-health";
        eb_proto_msg_init(m, EB_MSG_C_REQUEST);
        m->u.request.id = 5;
        m->u.request.op = EB_OP_HEALTH;
        return true;
    case 10:
        s->name = "request-delete";
        eb_proto_msg_init(m, EB_MSG_C_REQUEST);
        m->u.request.id = 6;
        m->u.request.op = EB_OP_DELETE;
        m->u.request.options.product_id = "P-100";
        m->u.request.options.template_name = "fashion";
        return true;
    case 11: /* embed reply: one success (4 dims for brevity), one failure */
        s->name = "reply-embed";
        eb_proto_msg_init(m, EB_MSG_C_REPLY);
        m->bid = BID;
        m->u.reply.id = 2;
        s->results[0] = (eb_proto_result){.status = 0, .has_hash = true, .dims = 4,
                                          .worker = "w1", .model_rev = "3c1f"};
        memcpy(s->results[0].hash, HASH_A, 32);
        s->results[1] = (eb_proto_result){.status = EB_ERR_DECODE,
                                          .error = "png: bad IHDR", .cached = false};
        m->u.reply.n_results = 2;
        m->u.reply.results = s->results;
        m->u.reply.timings.us[EB_STAGE_QUEUE] = 12;
        m->u.reply.timings.us[EB_STAGE_INFER] = 2900;
        m->u.reply.timings.us[EB_STAGE_TOTAL] = 3400;
        s->sizes[0] = 16;
        s->sizes[1] = 0;
        s->n_frames = 2;
        return true;
    case 12:
        s->name = "reply-scan";
        eb_proto_msg_init(m, EB_MSG_C_REPLY);
        m->bid = BID;
        m->u.reply.id = 4;
        s->results[0] = (eb_proto_result){.status = 0, .has_hash = true, .dims = 768,
                                          .cached = true, .model_rev = "3c1f"};
        memcpy(s->results[0].hash, HASH_A, 32);
        m->u.reply.n_results = 1;
        m->u.reply.results = s->results;
        s->matches[0] = (eb_proto_match){"P-100", 0.93, "fashion", "catalog"};
        s->matches[1] = (eb_proto_match){"P-7", 0.5, NULL, NULL};
        m->u.reply.n_matches = 2;
        m->u.reply.matches = s->matches;
        m->u.reply.store_id = "st-0001";
        m->u.reply.timings.us[EB_STAGE_CACHE] = 150;
        m->u.reply.timings.us[EB_STAGE_SEARCH] = 800;
        m->u.reply.timings.us[EB_STAGE_TOTAL] = 1100;
        return true;
    case 13:
        s->name = "reply-error";
        eb_proto_msg_init(m, EB_MSG_C_REPLY);
        m->bid = BID;
        m->u.reply.id = 9;
        m->u.reply.status = EB_ERR_TOO_LARGE;
        m->u.reply.error = "request.inputs[0].shm.len 40000000 exceeds max_input_bytes 33554432";
        return true;
    case 14:
        s->name = "reply-health";
        eb_proto_msg_init(m, EB_MSG_C_REPLY);
        m->bid = BID;
        m->u.reply.id = 5;
        m->u.reply.health_len = sample_health(s->health, sizeof s->health);
        m->u.reply.health = s->health;
        m->u.reply.has_search_error = true;
        m->u.reply.search_error = (eb_proto_error){EB_ERR_UNAVAILABLE, "postgres down"};
        m->u.reply.has_deleted = true;
        m->u.reply.deleted = 3;
        return true;
    case 15:
        s->name = "cancel";
        eb_proto_msg_init(m, EB_MSG_C_CANCEL);
        m->u.cancel.id = 4;
        return true;
    case 16:
        s->name = "client-heartbeat";
        eb_proto_msg_init(m, EB_MSG_C_HEARTBEAT);
        return true;
    case 17:
        s->name = "broker-heartbeat";
        eb_proto_msg_init(m, EB_MSG_C_HEARTBEAT);
        m->from_broker = true;
        m->bid = BID;
        return true;
    case 18:
        s->name = "client-disconnect";
        eb_proto_msg_init(m, EB_MSG_C_DISCONNECT);
        m->u.disconnect.reason = "bye";
        return true;
    case 19:
        s->name = "ready";
        eb_proto_msg_init(m, EB_MSG_W_READY);
        m->u.ready.worker_id = "host1:4242:cuda0";
        m->u.ready.backend = "cuda";
        m->u.ready.device = "NVIDIA H200";
        m->u.ready.max_batch_items = 64;
        s->models[0] = (eb_proto_model_desc){"siglip", "3c1f", "p1", 768, EB_INPUT_IMAGE};
        s->models[1] = (eb_proto_model_desc){"qwen3", "77ab", "t1", 1024, EB_INPUT_TEXT};
        m->u.ready.n_models = 2;
        m->u.ready.models = s->models;
        return true;
    case 20:
        s->name = "credit";
        eb_proto_msg_init(m, EB_MSG_W_CREDIT);
        m->u.credit.credit = 64;
        return true;
    case 21:
        s->name = "worker-request";
        eb_proto_msg_init(m, EB_MSG_W_REQUEST);
        m->bid = BID;
        m->u.batch.batch_id = 17;
        m->u.batch.model = "siglip";
        s->items[0] = (eb_proto_item){.item_id = 100, .kind = EB_INPUT_IMAGE,
                                      .format = EB_FORMAT_JPEG, .source = EB_SOURCE_SHM,
                                      .segment = "/embroker-1000-4242-00112233aabbccdd", .epoch = 1,
                                      .off = 4096, .len = 48213, .normalize = true};
        s->items[1] = (eb_proto_item){.item_id = 101, .kind = EB_INPUT_RAW_RGB8, .width = 2,
                                      .height = 2, .source = EB_SOURCE_INLINE, .frame = 0,
                                      .len = 12, .normalize = false};
        s->items[2] = (eb_proto_item){.item_id = 102, .kind = EB_INPUT_TEXT, .text = "shoe",
                                      .text_len = 4, .normalize = true, .instruction = "Query",
                                      .output_dim = 256};
        m->u.batch.n_items = 3;
        m->u.batch.items = s->items;
        s->sizes[0] = 12;
        s->n_frames = 1;
        return true;
    case 22:
        s->name = "worker-reply";
        eb_proto_msg_init(m, EB_MSG_W_REPLY);
        m->u.batch_reply.batch_id = 17;
        s->item_results[0] = (eb_proto_item_result){.item_id = 100, .has_hash = true, .dims = 4};
        memcpy(s->item_results[0].hash, HASH_A, 32);
        eb_proto_timings_clear(&s->item_results[0].timings);
        s->item_results[0].timings.us[EB_STAGE_COPY] = 20;
        s->item_results[0].timings.us[EB_STAGE_HASH] = 35;
        s->item_results[0].timings.us[EB_STAGE_DECODE] = 900;
        s->item_results[0].timings.us[EB_STAGE_PREPROCESS] = 300;
        s->item_results[0].timings.us[EB_STAGE_INFER] = 2500;
        s->item_results[1] = (eb_proto_item_result){.item_id = 101, .status = EB_ERR_STALE,
                                                    .error = "segment epoch 1 is gone"};
        eb_proto_timings_clear(&s->item_results[1].timings);
        m->u.batch_reply.n_items = 2;
        m->u.batch_reply.items = s->item_results;
        s->sizes[0] = 16;
        s->sizes[1] = 0;
        s->n_frames = 2;
        return true;
    case 23:
        s->name = "worker-heartbeat";
        eb_proto_msg_init(m, EB_MSG_W_HEARTBEAT);
        m->u.heartbeat = (eb_proto_heartbeat){true, true, true, 3};
        return true;
    case 24:
        s->name = "broker-worker-heartbeat";
        eb_proto_msg_init(m, EB_MSG_W_HEARTBEAT);
        m->from_broker = true;
        m->bid = BID;
        return true;
    case 25:
        s->name = "release-segment";
        eb_proto_msg_init(m, EB_MSG_W_RELEASE_SEGMENT);
        m->bid = BID;
        m->u.release.segment = "/embroker-1000-4242-00112233aabbccdd";
        return true;
    case 26:
        s->name = "worker-disconnect";
        eb_proto_msg_init(m, EB_MSG_W_DISCONNECT);
        m->from_broker = true;
        m->bid = BID;
        m->u.disconnect.reason = "shutting down";
        return true;
    default: return false;
    }
}

/* ---- comparison --------------------------------------------------------------------------- */

static void str_eq(const char *a, const char *b)
{
    if (!a || !b) {
        assert_ptr_equal(a, b);
        return;
    }
    assert_string_equal(a, b);
}

static void timings_eq(const eb_proto_timings *a, const eb_proto_timings *b)
{
    for (int i = 0; i < EB_STAGE_COUNT; i++)
        assert_int_equal(a->us[i], b->us[i]);
}

static void options_eq(const eb_proto_options *a, const eb_proto_options *b)
{
    assert_int_equal(a->deadline_ms, b->deadline_ms);
    assert_int_equal(a->priority, b->priority);
    assert_int_equal(a->normalize, b->normalize);
    assert_int_equal(a->return_embedding, b->return_embedding);
    assert_int_equal(a->k, b->k);
    str_eq(a->template_name, b->template_name);
    str_eq(a->source_type, b->source_type);
    assert_int_equal(a->store, b->store);
    str_eq(a->product_id, b->product_id);
    str_eq(a->instruction, b->instruction);
    assert_int_equal(a->output_dim, b->output_dim);
    assert_true(a->text_weight == b->text_weight);
    assert_true(a->image_weight == b->image_weight);
}

static void input_eq(const eb_proto_input *a, const eb_proto_input *b)
{
    assert_int_equal(a->kind, b->kind);
    assert_int_equal(a->format, b->format);
    assert_int_equal(a->width, b->width);
    assert_int_equal(a->height, b->height);
    assert_int_equal(a->source, b->source);
    if (a->source == EB_SOURCE_SHM) {
        assert_int_equal(a->seg, b->seg);
        assert_int_equal(a->epoch, b->epoch);
        assert_int_equal(a->off, b->off);
    }
    if (a->source == EB_SOURCE_INLINE)
        assert_int_equal(a->frame, b->frame);
    if (a->source != EB_SOURCE_NONE)
        assert_int_equal(a->len, b->len);
    str_eq(a->text, b->text);
    assert_int_equal(a->text_len, b->text_len);
    assert_int_equal(a->has_hash, b->has_hash);
    if (a->has_hash)
        assert_memory_equal(a->hash, b->hash, 32);
}

static void msg_eq(const eb_proto_msg *a, const eb_proto_msg *b)
{
    assert_int_equal(a->kind, b->kind);
    assert_int_equal(a->from_broker, b->from_broker);
    if (a->from_broker)
        assert_int_equal(a->bid, b->bid);
    switch (a->kind) {
    case EB_MSG_C_REGISTER:
        str_eq(a->u.reg.segment, b->u.reg.segment);
        assert_int_equal(a->u.reg.size, b->u.reg.size);
        break;
    case EB_MSG_C_CHALLENGE:
        str_eq(a->u.challenge.segment, b->u.challenge.segment);
        assert_memory_equal(a->u.challenge.nonce, b->u.challenge.nonce, 32);
        break;
    case EB_MSG_C_PROVE: str_eq(a->u.prove.segment, b->u.prove.segment); break;
    case EB_MSG_C_REGISTERED:
        str_eq(a->u.registered.segment, b->u.registered.segment);
        assert_int_equal(a->u.registered.status, b->u.registered.status);
        str_eq(a->u.registered.error, b->u.registered.error);
        assert_int_equal(a->u.registered.seg, b->u.registered.seg);
        assert_int_equal(a->u.registered.epoch, b->u.registered.epoch);
        break;
    case EB_MSG_C_REQUEST: {
        const eb_proto_request *x = &a->u.request, *y = &b->u.request;
        assert_int_equal(x->id, y->id);
        assert_int_equal(x->op, y->op);
        str_eq(x->model, y->model);
        str_eq(x->text_model, y->text_model);
        assert_int_equal(x->n_inputs, y->n_inputs);
        for (uint32_t i = 0; i < x->n_inputs; i++)
            input_eq(&x->inputs[i], &y->inputs[i]);
        options_eq(&x->options, &y->options);
        break;
    }
    case EB_MSG_C_REPLY: {
        const eb_proto_reply *x = &a->u.reply, *y = &b->u.reply;
        assert_int_equal(x->id, y->id);
        assert_int_equal(x->status, y->status);
        str_eq(x->error, y->error);
        assert_int_equal(x->n_results, y->n_results);
        for (uint32_t i = 0; i < x->n_results; i++) {
            const eb_proto_result *p = &x->results[i], *q = &y->results[i];
            assert_int_equal(p->status, q->status);
            str_eq(p->error, q->error);
            assert_int_equal(p->has_hash, q->has_hash);
            if (p->has_hash)
                assert_memory_equal(p->hash, q->hash, 32);
            assert_int_equal(p->dims, q->dims);
            str_eq(p->worker, q->worker);
            assert_int_equal(p->cached, q->cached);
            str_eq(p->model_rev, q->model_rev);
        }
        timings_eq(&x->timings, &y->timings);
        assert_int_equal(x->n_matches, y->n_matches);
        for (uint32_t i = 0; i < x->n_matches; i++) {
            str_eq(x->matches[i].product_id, y->matches[i].product_id);
            assert_true(x->matches[i].score == y->matches[i].score);
            str_eq(x->matches[i].template_name, y->matches[i].template_name);
            str_eq(x->matches[i].source_type, y->matches[i].source_type);
        }
        assert_int_equal(x->has_search_error, y->has_search_error);
        if (x->has_search_error) {
            assert_int_equal(x->search_error.code, y->search_error.code);
            str_eq(x->search_error.message, y->search_error.message);
        }
        str_eq(x->store_id, y->store_id);
        assert_int_equal(x->has_deleted, y->has_deleted);
        assert_int_equal(x->deleted, y->deleted);
        assert_int_equal(x->health_len, y->health_len);
        if (x->health_len)
            assert_memory_equal(x->health, y->health, x->health_len);
        break;
    }
    case EB_MSG_C_CANCEL: assert_int_equal(a->u.cancel.id, b->u.cancel.id); break;
    case EB_MSG_C_HEARTBEAT:
    case EB_MSG_W_HEARTBEAT:
        assert_int_equal(a->u.heartbeat.has_state, b->u.heartbeat.has_state);
        assert_int_equal(a->u.heartbeat.warm, b->u.heartbeat.warm);
        assert_int_equal(a->u.heartbeat.healthy, b->u.heartbeat.healthy);
        assert_int_equal(a->u.heartbeat.inflight_items, b->u.heartbeat.inflight_items);
        break;
    case EB_MSG_C_DISCONNECT:
    case EB_MSG_W_DISCONNECT: str_eq(a->u.disconnect.reason, b->u.disconnect.reason); break;
    case EB_MSG_W_READY: {
        const eb_proto_ready *x = &a->u.ready, *y = &b->u.ready;
        str_eq(x->worker_id, y->worker_id);
        str_eq(x->backend, y->backend);
        str_eq(x->device, y->device);
        assert_int_equal(x->max_batch_items, y->max_batch_items);
        assert_int_equal(x->n_models, y->n_models);
        for (uint32_t i = 0; i < x->n_models; i++) {
            str_eq(x->models[i].name, y->models[i].name);
            str_eq(x->models[i].model_rev, y->models[i].model_rev);
            str_eq(x->models[i].preproc_rev, y->models[i].preproc_rev);
            assert_int_equal(x->models[i].dims, y->models[i].dims);
            assert_int_equal(x->models[i].input, y->models[i].input);
        }
        break;
    }
    case EB_MSG_W_CREDIT: assert_int_equal(a->u.credit.credit, b->u.credit.credit); break;
    case EB_MSG_W_REQUEST: {
        const eb_proto_batch *x = &a->u.batch, *y = &b->u.batch;
        assert_int_equal(x->batch_id, y->batch_id);
        str_eq(x->model, y->model);
        assert_int_equal(x->n_items, y->n_items);
        for (uint32_t i = 0; i < x->n_items; i++) {
            const eb_proto_item *p = &x->items[i], *q = &y->items[i];
            assert_int_equal(p->item_id, q->item_id);
            assert_int_equal(p->kind, q->kind);
            assert_int_equal(p->format, q->format);
            assert_int_equal(p->width, q->width);
            assert_int_equal(p->height, q->height);
            assert_int_equal(p->source, q->source);
            str_eq(p->segment, q->segment);
            assert_int_equal(p->epoch, q->epoch);
            assert_int_equal(p->off, q->off);
            assert_int_equal(p->len, q->len);
            assert_int_equal(p->frame, q->frame);
            str_eq(p->text, q->text);
            assert_int_equal(p->text_len, q->text_len);
            assert_int_equal(p->normalize, q->normalize);
            str_eq(p->instruction, q->instruction);
            assert_int_equal(p->output_dim, q->output_dim);
        }
        break;
    }
    case EB_MSG_W_REPLY: {
        const eb_proto_batch_reply *x = &a->u.batch_reply, *y = &b->u.batch_reply;
        assert_int_equal(x->batch_id, y->batch_id);
        assert_int_equal(x->n_items, y->n_items);
        for (uint32_t i = 0; i < x->n_items; i++) {
            const eb_proto_item_result *p = &x->items[i], *q = &y->items[i];
            assert_int_equal(p->item_id, q->item_id);
            assert_int_equal(p->status, q->status);
            str_eq(p->error, q->error);
            assert_int_equal(p->has_hash, q->has_hash);
            if (p->has_hash)
                assert_memory_equal(p->hash, q->hash, 32);
            assert_int_equal(p->dims, q->dims);
            timings_eq(&p->timings, &q->timings);
        }
        break;
    }
    case EB_MSG_W_RELEASE_SEGMENT: str_eq(a->u.release.segment, b->u.release.segment); break;
    default: fail_msg("unexpected kind %d", (int)a->kind);
    }
}

/* ---- helpers ----------------------------------------------------------------------------- */

static eb_status decode_sample(const sample *s, const eb_proto_buf *body, eb_proto_msg *out,
                               char *err, size_t err_len)
{
    eb_proto_channel ch;
    uint8_t cmd;
    assert_true(eb_proto_kind_wire(s->msg.kind, &ch, &cmd));
    return eb_proto_decode(ch, cmd, s->msg.from_broker, body->data, body->len, s->sizes,
                           s->n_frames, NULL, out, NULL, err, err_len);
}

/* Decode a client REQUEST body with default limits. */
static eb_status decode_request(const void *body, size_t len, const size_t *sizes, size_t n,
                                eb_proto_msg *out, char *err, size_t err_len)
{
    return eb_proto_decode(EB_PROTO_CHANNEL_CLIENT, EB_PROTO_C_REQUEST, false, body, len, sizes, n,
                           NULL, out, NULL, err, err_len);
}

/* A msgpack writer for hand-made (often wrong) bodies. */
typedef struct mp {
    msgpack_sbuffer sb;
    msgpack_packer pk;
} mp;

static void mp_init(mp *m)
{
    msgpack_sbuffer_init(&m->sb);
    msgpack_packer_init(&m->pk, &m->sb, msgpack_sbuffer_write);
}

static void mp_s(mp *m, const char *s) { msgpack_pack_str_with_body(&m->pk, s, strlen(s)); }
static void mp_u(mp *m, uint64_t v) { msgpack_pack_uint64(&m->pk, v); }
static void mp_done(mp *m) { msgpack_sbuffer_destroy(&m->sb); }

/* {"id": 77, "op": "embed_image", "model": "siglip", "inputs": [ {kind image, shm{seg 1,
 * epoch 1, off 0, len}} ] } with the input written by `input` (NULL = default input). */
static void request_with_input(mp *m, void (*input)(mp *m))
{
    mp_init(m);
    msgpack_pack_map(&m->pk, 4);
    mp_s(m, "id");
    mp_u(m, 77);
    mp_s(m, "op");
    mp_s(m, "embed_image");
    mp_s(m, "model");
    mp_s(m, "siglip");
    mp_s(m, "inputs");
    msgpack_pack_array(&m->pk, 1);
    if (input) {
        input(m);
    } else {
        msgpack_pack_map(&m->pk, 2);
        mp_s(m, "kind");
        mp_s(m, "image");
        mp_s(m, "frame");
        mp_u(m, 0);
    }
}

static void expect(eb_status got, eb_status want, const char *err, const char *needle)
{
    if (got != want || !strstr(err, needle))
        fail_msg("got %s (%d) \"%s\", want %s containing \"%s\"", eb_status_str(got), got, err,
                 eb_status_str(want), needle);
}

/* ---- round trips ------------------------------------------------------------------------- */

static void test_round_trip_every_kind(void **state)
{
    (void)state;
    bool covered[EB_MSG_KIND_COUNT] = {0};
    sample s;
    for (int i = 0; make_sample(i, &s); i++) {
        eb_proto_buf body;
        char err[256] = "";
        eb_status st = eb_proto_encode(&s.msg, &body, err, sizeof err);
        if (st != EB_OK)
            fail_msg("encode %s: %s", s.name, err);
        eb_proto_msg out;
        st = decode_sample(&s, &body, &out, err, sizeof err);
        if (st != EB_OK)
            fail_msg("decode %s: %s", s.name, err);
        msg_eq(&s.msg, &out);
        /* decoded strings are copies: nothing points into the body */
        memset(body.data, 0xee, body.len);
        msg_eq(&s.msg, &out);
        /* and re-encoding the decoded message gives the same bytes */
        eb_proto_buf again;
        assert_int_equal(eb_proto_encode(&out, &again, err, sizeof err), EB_OK);
        eb_proto_buf_free(&body);
        assert_int_equal(eb_proto_encode(&s.msg, &body, err, sizeof err), EB_OK);
        assert_int_equal(again.len, body.len);
        assert_memory_equal(again.data, body.data, body.len);
        eb_proto_buf_free(&again);
        eb_proto_buf_free(&body);
        eb_proto_msg_free(&out);
        assert_null(out.arena);
        covered[s.msg.kind] = true;
    }
    for (int k = EB_MSG_NONE + 1; k < EB_MSG_KIND_COUNT; k++)
        if (!covered[k])
            fail_msg("no round-trip sample for %s", eb_proto_kind_name((eb_proto_kind)k));
}

static void test_defaults_when_absent(void **state)
{
    (void)state;
    mp m;
    request_with_input(&m, NULL);
    size_t sz = 10;
    eb_proto_msg out;
    char err[256] = "";
    assert_int_equal(decode_request(m.sb.data, m.sb.size, &sz, 1, &out, err, sizeof err), EB_OK);
    const eb_proto_request *r = &out.u.request;
    assert_int_equal(r->id, 77);
    assert_int_equal(r->op, EB_OP_EMBED_IMAGE);
    assert_int_equal(r->inputs[0].format, EB_FORMAT_AUTO);
    assert_int_equal(r->inputs[0].source, EB_SOURCE_INLINE);
    assert_int_equal(r->inputs[0].len, 10);
    assert_true(r->options.normalize);
    assert_true(r->options.return_embedding);
    assert_int_equal(r->options.priority, EB_PRIORITY_INTERACTIVE);
    assert_int_equal(r->options.k, 0);
    assert_true(r->options.text_weight < 0);
    eb_proto_msg_free(&out);
    mp_done(&m);
}

static void extra_fields_input(mp *m)
{
    msgpack_pack_map(&m->pk, 4);
    mp_s(m, "kind");
    mp_s(m, "image");
    mp_s(m, "future_field"); /* unknown: nested value skipped */
    msgpack_pack_map(&m->pk, 1);
    mp_s(m, "x");
    msgpack_pack_array(&m->pk, 3);
    msgpack_pack_nil(&m->pk);
    msgpack_pack_double(&m->pk, 1.5);
    msgpack_pack_bin_with_body(&m->pk, "ab", 2);
    mp_s(m, "frame");
    mp_u(m, 0);
    msgpack_pack_int64(&m->pk, -5); /* a non-string key is an error, checked below */
    mp_u(m, 1);
}

static void test_unknown_fields_ignored(void **state)
{
    (void)state;
    /* unknown top-level key with a nested value */
    mp m;
    mp_init(&m);
    msgpack_pack_map(&m.pk, 5);
    mp_s(&m, "zz_new");
    msgpack_pack_map(&m.pk, 1);
    mp_s(&m, "deep");
    msgpack_pack_array(&m.pk, 2);
    mp_u(&m, 1);
    mp_s(&m, "two");
    mp_s(&m, "id");
    mp_u(&m, 5);
    mp_s(&m, "op");
    mp_s(&m, "health");
    mp_s(&m, "bid"); /* a bid from a client is ignored */
    mp_u(&m, 1);
    mp_s(&m, "options");
    msgpack_pack_map(&m.pk, 1);
    mp_s(&m, "zz_opt");
    msgpack_pack_true(&m.pk);
    eb_proto_msg out;
    char err[256] = "";
    assert_int_equal(decode_request(m.sb.data, m.sb.size, NULL, 0, &out, err, sizeof err), EB_OK);
    assert_int_equal(out.u.request.id, 5);
    assert_int_equal(out.u.request.op, EB_OP_HEALTH);
    eb_proto_msg_free(&out);
    mp_done(&m);

    request_with_input(&m, extra_fields_input);
    size_t sz = 10;
    expect(decode_request(m.sb.data, m.sb.size, &sz, 1, &out, err, sizeof err), EB_ERR_PROTOCOL,
           err, "request.inputs[0] has a negative integer key");
    mp_done(&m);
}

/* ---- rejections -------------------------------------------------------------------------- */

static void test_reject_wrong_type(void **state)
{
    (void)state;
    mp m;
    mp_init(&m);
    msgpack_pack_map(&m.pk, 2);
    mp_s(&m, "id");
    mp_s(&m, "77");
    mp_s(&m, "op");
    mp_s(&m, "health");
    eb_proto_msg out;
    char err[256] = "";
    expect(decode_request(m.sb.data, m.sb.size, NULL, 0, &out, err, sizeof err), EB_ERR_PROTOCOL,
           err, "request.id is a string, expected an unsigned integer");
    assert_int_equal(out.kind, EB_MSG_NONE); /* zeroed on failure */
    mp_done(&m);

    /* the body itself must be a map */
    uint8_t arr[] = {0x90};
    expect(decode_request(arr, 1, NULL, 0, &out, err, sizeof err), EB_ERR_PROTOCOL, err,
           "request is a array, expected a map");
}

static void test_reject_missing_field(void **state)
{
    (void)state;
    mp m;
    mp_init(&m);
    msgpack_pack_map(&m.pk, 1);
    mp_s(&m, "id");
    mp_u(&m, 1);
    eb_proto_msg out;
    char err[256] = "";
    uint64_t rid = 0;
    eb_status st = eb_proto_decode(EB_PROTO_CHANNEL_CLIENT, EB_PROTO_C_REQUEST, false, m.sb.data,
                                   m.sb.size, NULL, 0, NULL, &out, &rid, err, sizeof err);
    expect(st, EB_ERR_PROTOCOL, err, "request lacks the required key \"op\"");
    assert_int_equal(rid, 1); /* the broker can still address its error reply */
    mp_done(&m);

    /* embed ops need a model */
    mp_init(&m);
    msgpack_pack_map(&m.pk, 3);
    mp_s(&m, "id");
    mp_u(&m, 1);
    mp_s(&m, "op");
    mp_s(&m, "embed_text");
    mp_s(&m, "inputs");
    msgpack_pack_array(&m.pk, 0);
    expect(decode_request(m.sb.data, m.sb.size, NULL, 0, &out, err, sizeof err), EB_ERR_PROTOCOL,
           err, "lacks the required key \"model\"");
    mp_done(&m);

    /* a broker message without "bid" */
    mp_init(&m);
    msgpack_pack_map(&m.pk, 1);
    mp_s(&m, "name");
    mp_s(&m, "/seg");
    st = eb_proto_decode(EB_PROTO_CHANNEL_WORKER, EB_PROTO_W_RELEASE_SEGMENT, true, m.sb.data,
                         m.sb.size, NULL, 0, NULL, &out, NULL, err, sizeof err);
    expect(st, EB_ERR_PROTOCOL, err, "release lacks the required key \"bid\"");
    mp_done(&m);
}

static void big_shm_input(mp *m)
{
    msgpack_pack_map(&m->pk, 2);
    mp_s(m, "kind");
    mp_s(m, "image");
    mp_s(m, "shm");
    msgpack_pack_map(&m->pk, 4);
    mp_s(m, "seg");
    mp_u(m, 1);
    mp_s(m, "epoch");
    mp_u(m, 1);
    mp_s(m, "off");
    mp_u(m, 0);
    mp_s(m, "len");
    mp_u(m, 40000000);
}

static void overflow_shm_input(mp *m)
{
    msgpack_pack_map(&m->pk, 2);
    mp_s(m, "kind");
    mp_s(m, "image");
    mp_s(m, "shm");
    msgpack_pack_map(&m->pk, 4);
    mp_s(m, "seg");
    mp_u(m, 1);
    mp_s(m, "epoch");
    mp_u(m, 1);
    mp_s(m, "off");
    mp_u(m, UINT64_MAX - 5);
    mp_s(m, "len");
    mp_u(m, 10);
}

static void test_reject_oversize(void **state)
{
    (void)state;
    mp m;
    eb_proto_msg out;
    char err[256] = "";
    request_with_input(&m, big_shm_input);
    expect(decode_request(m.sb.data, m.sb.size, NULL, 0, &out, err, sizeof err),
           EB_ERR_TOO_LARGE, err,
           "request.inputs[0].shm.len 40000000 exceeds max_input_bytes 33554432");
    mp_done(&m);

    request_with_input(&m, overflow_shm_input);
    expect(decode_request(m.sb.data, m.sb.size, NULL, 0, &out, err, sizeof err), EB_ERR_INVALID,
           err, "request.inputs[0].shm.len 10 plus off");
    mp_done(&m);

    /* an inline frame above max_input_bytes */
    request_with_input(&m, NULL);
    size_t sz = (32u << 20) + 1;
    expect(decode_request(m.sb.data, m.sb.size, &sz, 1, &out, err, sizeof err), EB_ERR_TOO_LARGE,
           err, "request.inputs[0].frame 0: item frame of 33554433 bytes exceeds max_input_bytes");

    /* the whole message above max_message_bytes (limits lowered) */
    eb_proto_limits lim;
    eb_proto_limits_default(&lim);
    lim.max_message_bytes = 1000;
    sz = 1000;
    eb_status st = eb_proto_decode(EB_PROTO_CHANNEL_CLIENT, EB_PROTO_C_REQUEST, false, m.sb.data,
                                   m.sb.size, &sz, 1, &lim, &out, NULL, err, sizeof err);
    expect(st, EB_ERR_TOO_LARGE, err, "exceeds max_message_bytes 1000");
    lim.max_message_bytes = 1 << 20;
    lim.max_body_bytes = 8;
    st = eb_proto_decode(EB_PROTO_CHANNEL_CLIENT, EB_PROTO_C_REQUEST, false, m.sb.data, m.sb.size,
                         &sz, 1, &lim, &out, NULL, err, sizeof err);
    expect(st, EB_ERR_TOO_LARGE, err, "exceeds max_body_bytes 8");
    mp_done(&m);

    /* a text over max_text_bytes */
    size_t n = (64u << 10) + 1;
    char *big = malloc(n);
    assert_non_null(big);
    memset(big, 'a', n);
    mp_init(&m);
    msgpack_pack_map(&m.pk, 4);
    mp_s(&m, "id");
    mp_u(&m, 1);
    mp_s(&m, "op");
    mp_s(&m, "embed_text");
    mp_s(&m, "model");
    mp_s(&m, "qwen3");
    mp_s(&m, "inputs");
    msgpack_pack_array(&m.pk, 1);
    msgpack_pack_map(&m.pk, 2);
    mp_s(&m, "kind");
    mp_s(&m, "text");
    mp_s(&m, "text");
    msgpack_pack_str_with_body(&m.pk, big, n);
    expect(decode_request(m.sb.data, m.sb.size, NULL, 0, &out, err, sizeof err),
           EB_ERR_TOO_LARGE, err, "request.inputs[0].text is 65537 bytes, exceeds max_text_bytes");
    mp_done(&m);
    free(big);
}

static void test_reject_too_many_items(void **state)
{
    (void)state;
    mp m;
    mp_init(&m);
    msgpack_pack_map(&m.pk, 4);
    mp_s(&m, "id");
    mp_u(&m, 1);
    mp_s(&m, "op");
    mp_s(&m, "embed_text");
    mp_s(&m, "model");
    mp_s(&m, "qwen3");
    mp_s(&m, "inputs");
    msgpack_pack_array(&m.pk, 257);
    for (int i = 0; i < 257; i++) {
        msgpack_pack_map(&m.pk, 2);
        mp_s(&m, "kind");
        mp_s(&m, "text");
        mp_s(&m, "text");
        mp_s(&m, "x");
    }
    eb_proto_msg out;
    char err[256] = "";
    expect(decode_request(m.sb.data, m.sb.size, NULL, 0, &out, err, sizeof err),
           EB_ERR_TOO_LARGE, err, "request.inputs has 257 elements, exceeds max_batch_items 256");
    mp_done(&m);

    /* too many item frames */
    size_t sizes[300] = {0};
    uint8_t empty_map = 0x80;
    expect(decode_request(&empty_map, 1, sizes, 300, &out, err, sizeof err), EB_ERR_TOO_LARGE,
           err, "has 300 item frames, exceeds max_batch_items 256");

    /* an array header claiming 2^32-1 elements in a 9-byte body must not allocate */
    uint8_t liar[] = {0x81, 0xa6, 'i', 'n', 'p', 'u', 't', 's', 0xdd, 0xff, 0xff, 0xff, 0xff};
    expect(decode_request(liar, sizeof liar, NULL, 0, &out, err, sizeof err), EB_ERR_PROTOCOL, err,
           "claims 4294967295 elements");
}

static void two_frame_inputs(mp *m, uint32_t f0, uint32_t f1)
{
    mp_init(m);
    msgpack_pack_map(&m->pk, 4);
    mp_s(m, "id");
    mp_u(m, 1);
    mp_s(m, "op");
    mp_s(m, "embed_image");
    mp_s(m, "model");
    mp_s(m, "siglip");
    mp_s(m, "inputs");
    msgpack_pack_array(&m->pk, 2);
    uint32_t f[2] = {f0, f1};
    for (int i = 0; i < 2; i++) {
        msgpack_pack_map(&m->pk, 2);
        mp_s(m, "kind");
        mp_s(m, "image");
        mp_s(m, "frame");
        mp_u(m, f[i]);
    }
}

static void test_reject_bad_frame_refs(void **state)
{
    (void)state;
    mp m;
    eb_proto_msg out;
    char err[256] = "";
    size_t sizes[2] = {10, 20};

    two_frame_inputs(&m, 0, 2);
    expect(decode_request(m.sb.data, m.sb.size, sizes, 2, &out, err, sizeof err),
           EB_ERR_PROTOCOL, err,
           "request.inputs[1].frame 2 is out of range: the message has 2 item frames");
    mp_done(&m);

    two_frame_inputs(&m, 1, 1);
    expect(decode_request(m.sb.data, m.sb.size, sizes, 2, &out, err, sizeof err),
           EB_ERR_PROTOCOL, err, "request.inputs[1].frame 1: item frame 1 is referenced twice");
    mp_done(&m);

    two_frame_inputs(&m, 0, 1);
    size_t three[3] = {10, 20, 30};
    expect(decode_request(m.sb.data, m.sb.size, three, 3, &out, err, sizeof err),
           EB_ERR_PROTOCOL, err, "request leaves item frame 2 unreferenced");
    /* the same body with exactly its frames is fine */
    assert_int_equal(decode_request(m.sb.data, m.sb.size, sizes, 2, &out, err, sizeof err),
                     EB_OK);
    assert_int_equal(out.u.request.inputs[1].len, 20);
    eb_proto_msg_free(&out);
    /* an empty inline frame is not an input */
    size_t zero[2] = {10, 0};
    expect(decode_request(m.sb.data, m.sb.size, zero, 2, &out, err, sizeof err), EB_ERR_INVALID,
           err, "request.inputs[1] is empty");
    mp_done(&m);

    /* commands without items must not carry frames */
    uint8_t empty_map = 0x80;
    eb_status st = eb_proto_decode(EB_PROTO_CHANNEL_CLIENT, EB_PROTO_C_HEARTBEAT, false,
                                   &empty_map, 1, sizes, 1, NULL, &out, NULL, err, sizeof err);
    expect(st, EB_ERR_PROTOCOL, err, "heartbeat carries 1 item frames");

    /* worker replies: one frame per item, dims*4 bytes */
    sample s;
    assert_true(make_sample(22, &s));
    eb_proto_buf body;
    assert_int_equal(eb_proto_encode(&s.msg, &body, err, sizeof err), EB_OK);
    size_t bad[2] = {12, 0};
    st = eb_proto_decode(EB_PROTO_CHANNEL_WORKER, EB_PROTO_W_REPLY, false, body.data, body.len,
                         bad, 2, NULL, &out, NULL, err, sizeof err);
    expect(st, EB_ERR_PROTOCOL, err, "item frame 0 of 12 bytes for items[0] (status 0, dims 4)");
    st = eb_proto_decode(EB_PROTO_CHANNEL_WORKER, EB_PROTO_W_REPLY, false, body.data, body.len,
                         bad, 1, NULL, &out, NULL, err, sizeof err);
    expect(st, EB_ERR_PROTOCOL, err, "has 1 item frames for 2 items");
    eb_proto_buf_free(&body);
}

static void short_hash_input(mp *m)
{
    msgpack_pack_map(&m->pk, 3);
    mp_s(m, "kind");
    mp_s(m, "image");
    mp_s(m, "frame");
    mp_u(m, 0);
    mp_s(m, "hash");
    msgpack_pack_bin_with_body(&m->pk, HASH_A, 31);
}

static void str_hash_input(mp *m)
{
    msgpack_pack_map(&m->pk, 3);
    mp_s(m, "kind");
    mp_s(m, "image");
    mp_s(m, "frame");
    mp_u(m, 0);
    mp_s(m, "hash");
    msgpack_pack_str_with_body(&m->pk, (const char *)HASH_A, 32);
}

static void test_reject_bad_hash(void **state)
{
    (void)state;
    mp m;
    eb_proto_msg out;
    char err[256] = "";
    size_t sz = 5;
    request_with_input(&m, short_hash_input);
    expect(decode_request(m.sb.data, m.sb.size, &sz, 1, &out, err, sizeof err), EB_ERR_INVALID,
           err, "request.inputs[0].hash is 31 bytes, expected exactly 32");
    mp_done(&m);
    request_with_input(&m, str_hash_input);
    expect(decode_request(m.sb.data, m.sb.size, &sz, 1, &out, err, sizeof err), EB_ERR_PROTOCOL,
           err, "request.inputs[0].hash is a string, expected a bin");
    mp_done(&m);
}

static void test_utf8_validator(void **state)
{
    (void)state;
    struct {
        const char *s;
        size_t n;
        bool ok;
    } cases[] = {
        {"", 0, true},
        {"plain ascii", 11, true},
        {"caf\xc3\xa9", 5, true},
        {"\xe2\x82\xac", 3, true},             /* U+20AC */
        {"\xf0\x9f\x98\x80", 4, true},         /* U+1F600 */
        {"\xf4\x8f\xbf\xbf", 4, true},         /* U+10FFFF */
        {"\xed\x9f\xbf", 3, true},             /* U+D7FF */
        {"\xee\x80\x80", 3, true},             /* U+E000 */
        {"\xc0\xaf", 2, false},                /* overlong '/' */
        {"\xc1\xbf", 2, false},                /* overlong */
        {"\xe0\x80\xaf", 3, false},            /* overlong 3-byte */
        {"\xf0\x80\x80\xaf", 4, false},        /* overlong 4-byte */
        {"\xed\xa0\x80", 3, false},            /* U+D800 surrogate */
        {"\xed\xbf\xbf", 3, false},            /* U+DFFF surrogate */
        {"\xf4\x90\x80\x80", 4, false},        /* U+110000 */
        {"\xf5\x80\x80\x80", 4, false},        /* lead > F4 */
        {"\xff", 1, false},
        {"\x80", 1, false},                    /* stray continuation */
        {"\xc3", 1, false},                    /* truncated */
        {"\xe2\x82", 2, false},                /* truncated */
        {"a\xc3(", 3, false},                  /* bad continuation */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        if (eb_proto_utf8_valid(cases[i].s, cases[i].n) != cases[i].ok)
            fail_msg("utf8 case %zu: expected %s", i, cases[i].ok ? "valid" : "invalid");

    /* through the decoder: a text input with a surrogate */
    mp m;
    mp_init(&m);
    msgpack_pack_map(&m.pk, 4);
    mp_s(&m, "id");
    mp_u(&m, 1);
    mp_s(&m, "op");
    mp_s(&m, "embed_text");
    mp_s(&m, "model");
    mp_s(&m, "qwen3");
    mp_s(&m, "inputs");
    msgpack_pack_array(&m.pk, 1);
    msgpack_pack_map(&m.pk, 2);
    mp_s(&m, "kind");
    mp_s(&m, "text");
    mp_s(&m, "text");
    msgpack_pack_str_with_body(&m.pk, "a\xed\xa0\x80z", 5);
    eb_proto_msg out;
    char err[256] = "";
    expect(decode_request(m.sb.data, m.sb.size, NULL, 0, &out, err, sizeof err), EB_ERR_INVALID,
           err, "request.inputs[0].text is not valid UTF-8");
    mp_done(&m);
}

static void test_reject_bad_model_name(void **state)
{
    (void)state;
    assert_true(eb_proto_model_name_valid("siglip-so400m_v2.1", 18));
    assert_false(eb_proto_model_name_valid("SigLIP", 6));
    assert_false(eb_proto_model_name_valid("", 0));
    assert_false(eb_proto_model_name_valid("a/b", 3));
    char long_name[66];
    memset(long_name, 'a', 65);
    long_name[65] = 0;
    assert_true(eb_proto_model_name_valid(long_name, 64));
    assert_false(eb_proto_model_name_valid(long_name, 65));
    assert_true(eb_proto_segment_name_valid("/embroker-1000-ab", 17));
    assert_false(eb_proto_segment_name_valid("embroker", 8));
    assert_false(eb_proto_segment_name_valid("/a/b", 4));

    mp m;
    mp_init(&m);
    msgpack_pack_map(&m.pk, 3);
    mp_s(&m, "id");
    mp_u(&m, 1);
    mp_s(&m, "op");
    mp_s(&m, "scan");
    mp_s(&m, "model");
    mp_s(&m, "../etc");
    eb_proto_msg out;
    char err[256] = "";
    expect(decode_request(m.sb.data, m.sb.size, NULL, 0, &out, err, sizeof err), EB_ERR_INVALID,
           err, "request.model \"../etc\" is not a model name");
    mp_done(&m);

    /* READY with an uppercase model name */
    sample s;
    assert_true(make_sample(19, &s));
    s.models[1].name = "Qwen3";
    eb_proto_buf body;
    assert_int_equal(eb_proto_encode(&s.msg, &body, err, sizeof err), EB_OK);
    eb_status st = eb_proto_decode(EB_PROTO_CHANNEL_WORKER, EB_PROTO_W_READY, false, body.data,
                                   body.len, NULL, 0, NULL, &out, NULL, err, sizeof err);
    expect(st, EB_ERR_INVALID, err, "ready.models[1].name \"Qwen3\" is not a model name");
    eb_proto_buf_free(&body);
}

static void test_reject_truncated_and_trailing(void **state)
{
    (void)state;
    char err[256] = "";
    eb_proto_msg out;
    sample s;
    for (int i = 0; make_sample(i, &s); i++) {
        eb_proto_buf body;
        assert_int_equal(eb_proto_encode(&s.msg, &body, err, sizeof err), EB_OK);
        eb_proto_channel ch;
        uint8_t cmd;
        eb_proto_kind_wire(s.msg.kind, &ch, &cmd);
        /* every proper prefix fails cleanly */
        for (size_t n = 0; n < body.len; n++) {
            eb_status st = eb_proto_decode(ch, cmd, s.msg.from_broker, body.data, n, s.sizes,
                                           s.n_frames, NULL, &out, NULL, err, sizeof err);
            if (st == EB_OK)
                fail_msg("%s: prefix of %zu/%zu bytes decoded", s.name, n, body.len);
            assert_null(out.arena);
        }
        /* one extra byte after the map */
        uint8_t *longer = malloc(body.len + 1);
        assert_non_null(longer);
        memcpy(longer, body.data, body.len);
        longer[body.len] = 0xc0;
        eb_status st = eb_proto_decode(ch, cmd, s.msg.from_broker, longer, body.len + 1, s.sizes,
                                       s.n_frames, NULL, &out, NULL, err, sizeof err);
        expect(st, EB_ERR_PROTOCOL, err, "body has 1 trailing bytes after the map");
        free(longer);
        eb_proto_buf_free(&body);
    }
    /* the reserved byte */
    uint8_t reserved[] = {0x81, 0xa2, 'i', 'd', 0xc1};
    expect(decode_request(reserved, sizeof reserved, NULL, 0, &out, err, sizeof err),
           EB_ERR_PROTOCOL, err, "0xc1");
    uint8_t cut[] = {0x82, 0xa2, 'i', 'd', 0x01};
    expect(decode_request(cut, sizeof cut, NULL, 0, &out, err, sizeof err), EB_ERR_PROTOCOL, err,
           "truncated");
}

static void test_reject_header_and_command(void **state)
{
    (void)state;
    char err[256] = "";
    eb_proto_channel ch = 0;
    assert_int_equal(eb_proto_parse_header("EMB1C", 5, &ch, err, sizeof err), EB_OK);
    assert_int_equal(ch, EB_PROTO_CHANNEL_CLIENT);
    assert_int_equal(eb_proto_parse_header("EMB1W", 5, &ch, err, sizeof err), EB_OK);
    assert_int_equal(ch, EB_PROTO_CHANNEL_WORKER);
    expect(eb_proto_parse_header("EMB2C", 5, &ch, err, sizeof err), EB_ERR_PROTOCOL, err,
           "version 2 is not supported, this side speaks EMB1C");
    expect(eb_proto_parse_header("MDPC01", 6, &ch, err, sizeof err), EB_ERR_PROTOCOL, err,
           "\"MDPC01\" (6 bytes) is not \"EMB1C\" or \"EMB1W\"");
    expect(eb_proto_parse_header("EMB1C\n", 6, &ch, err, sizeof err), EB_ERR_PROTOCOL, err,
           "\\x0a");
    expect(eb_proto_parse_header("EMB1X", 5, &ch, err, sizeof err), EB_ERR_PROTOCOL, err,
           "is not");

    uint8_t empty_map = 0x80;
    eb_proto_msg out;
    eb_status st = eb_proto_decode(EB_PROTO_CHANNEL_CLIENT, 0x42, false, &empty_map, 1, NULL, 0,
                                   NULL, &out, NULL, err, sizeof err);
    expect(st, EB_ERR_PROTOCOL, err, "unknown command byte 0x42 on the client channel");
    st = eb_proto_decode(EB_PROTO_CHANNEL_WORKER, 0x00, false, &empty_map, 1, NULL, 0, NULL, &out,
                         NULL, err, sizeof err);
    expect(st, EB_ERR_PROTOCOL, err, "unknown command byte 0x00 on the worker channel");
    /* a broker-only command sent to the broker */
    st = eb_proto_decode(EB_PROTO_CHANNEL_CLIENT, EB_PROTO_C_REPLY, false, &empty_map, 1, NULL, 0,
                         NULL, &out, NULL, err, sizeof err);
    expect(st, EB_ERR_PROTOCOL, err, "reply (command REPLY 0x06) is only sent by the broker");
    st = eb_proto_decode(EB_PROTO_CHANNEL_WORKER, EB_PROTO_W_READY, true, &empty_map, 1, NULL, 0,
                         NULL, &out, NULL, err, sizeof err);
    expect(st, EB_ERR_PROTOCOL, err, "only sent to the broker");
    /* the encoder refuses the same mistake */
    eb_proto_msg m;
    eb_proto_msg_init(&m, EB_MSG_C_REPLY);
    m.from_broker = false;
    eb_proto_buf body;
    expect(eb_proto_encode(&m, &body, err, sizeof err), EB_ERR_INVALID, err,
           "only sent by the broker");
    /* and a required string left NULL */
    eb_proto_msg_init(&m, EB_MSG_C_REGISTER);
    m.u.reg.size = 10;
    expect(eb_proto_encode(&m, &body, err, sizeof err), EB_ERR_INVALID, err,
           "cannot encode REGISTER: name is NULL");
    assert_null(body.data);
}

static void k_request(mp *m, int64_t k)
{
    mp_init(m);
    msgpack_pack_map(&m->pk, 4);
    mp_s(m, "id");
    mp_u(m, 1);
    mp_s(m, "op");
    mp_s(m, "scan");
    mp_s(m, "inputs");
    msgpack_pack_array(&m->pk, 1);
    msgpack_pack_map(&m->pk, 2);
    mp_s(m, "kind");
    mp_s(m, "text");
    mp_s(m, "text");
    mp_s(m, "shoe");
    mp_s(m, "options");
    msgpack_pack_map(&m->pk, 1);
    mp_s(m, "k");
    msgpack_pack_int64(&m->pk, k);
}

static void test_reject_ranges(void **state)
{
    (void)state;
    mp m;
    eb_proto_msg out;
    char err[256] = "";
    k_request(&m, 0);
    expect(decode_request(m.sb.data, m.sb.size, NULL, 0, &out, err, sizeof err), EB_ERR_INVALID,
           err, "request.options.k 0 is out of range 1..1000");
    mp_done(&m);
    k_request(&m, -3);
    expect(decode_request(m.sb.data, m.sb.size, NULL, 0, &out, err, sizeof err), EB_ERR_INVALID,
           err, "request.options.k -3 is out of range 1..1000");
    mp_done(&m);
    k_request(&m, 1001);
    expect(decode_request(m.sb.data, m.sb.size, NULL, 0, &out, err, sizeof err), EB_ERR_INVALID,
           err, "request.options.k 1001 is out of range 1..1000");
    mp_done(&m);
    k_request(&m, 1000);
    assert_int_equal(decode_request(m.sb.data, m.sb.size, NULL, 0, &out, err, sizeof err), EB_OK);
    assert_int_equal(out.u.request.options.k, 1000);
    assert_false(out.u.request.options.return_embedding); /* scan's default */
    eb_proto_msg_free(&out);
    mp_done(&m);

    /* deadline */
    mp_init(&m);
    msgpack_pack_map(&m.pk, 3);
    mp_s(&m, "id");
    mp_u(&m, 1);
    mp_s(&m, "op");
    mp_s(&m, "health");
    mp_s(&m, "options");
    msgpack_pack_map(&m.pk, 1);
    mp_s(&m, "deadline_ms");
    mp_u(&m, 3600001);
    expect(decode_request(m.sb.data, m.sb.size, NULL, 0, &out, err, sizeof err), EB_ERR_INVALID,
           err, "request.options.deadline_ms 3600001 is out of range 0..3600000");
    mp_done(&m);

    /* unknown op and unknown input kind: a newer peer */
    mp_init(&m);
    msgpack_pack_map(&m.pk, 2);
    mp_s(&m, "id");
    mp_u(&m, 1);
    mp_s(&m, "op");
    mp_s(&m, "transmogrify");
    expect(decode_request(m.sb.data, m.sb.size, NULL, 0, &out, err, sizeof err),
           EB_ERR_UNSUPPORTED, err, "request.op \"transmogrify\" is not one of embed_image, "
           "embed_text, scan, health, delete");
    mp_done(&m);

    /* duplicate key */
    mp_init(&m);
    msgpack_pack_map(&m.pk, 3);
    mp_s(&m, "id");
    mp_u(&m, 1);
    mp_s(&m, "op");
    mp_s(&m, "health");
    mp_s(&m, "id");
    mp_u(&m, 2);
    expect(decode_request(m.sb.data, m.sb.size, NULL, 0, &out, err, sizeof err), EB_ERR_PROTOCOL,
           err, "request has the key \"id\" twice");
    mp_done(&m);

    /* op rules: scan with two images; delete without product */
    sample s;
    assert_true(make_sample(8, &s));
    s.inputs[1] = s.inputs[0];
    s.inputs[1].off = 2000;
    eb_proto_buf body;
    assert_int_equal(eb_proto_encode(&s.msg, &body, err, sizeof err), EB_OK);
    expect(decode_request(body.data, body.len, NULL, 0, &out, err, sizeof err), EB_ERR_INVALID,
           err, "request has 2 image and 0 text inputs: op scan takes one image");
    eb_proto_buf_free(&body);
    assert_true(make_sample(10, &s));
    s.msg.u.request.options.product_id = NULL;
    assert_int_equal(eb_proto_encode(&s.msg, &body, err, sizeof err), EB_OK);
    expect(decode_request(body.data, body.len, NULL, 0, &out, err, sizeof err), EB_ERR_INVALID,
           err, "op delete needs it");
    eb_proto_buf_free(&body);

    /* raw_rgb8 whose len is not width*height*3 */
    assert_true(make_sample(6, &s));
    s.sizes[0] = 13;
    s.inputs[0].len = 13;
    assert_int_equal(eb_proto_encode(&s.msg, &body, err, sizeof err), EB_OK);
    expect(decode_request(body.data, body.len, s.sizes, 2, &out, err, sizeof err), EB_ERR_INVALID,
           err, "request.inputs[0] is 2x2 raw_rgb8 and needs 12 bytes, but len is 13");
    eb_proto_buf_free(&body);

    /* a text input that also names a frame */
    assert_true(make_sample(7, &s));
    s.inputs[0].source = EB_SOURCE_INLINE; /* the encoder ignores the source of text inputs */
    assert_int_equal(eb_proto_encode(&s.msg, &body, err, sizeof err), EB_OK);
    assert_int_equal(decode_request(body.data, body.len, NULL, 0, &out, err, sizeof err), EB_OK);
    assert_int_equal(out.u.request.inputs[0].source, EB_SOURCE_NONE);
    eb_proto_msg_free(&out);
    eb_proto_buf_free(&body);

    /* a status that is not a status */
    mp_init(&m);
    msgpack_pack_map(&m.pk, 3);
    mp_s(&m, "bid");
    mp_u(&m, 1);
    mp_s(&m, "id");
    mp_u(&m, 1);
    mp_s(&m, "status");
    mp_u(&m, 5);
    eb_status st = eb_proto_decode(EB_PROTO_CHANNEL_CLIENT, EB_PROTO_C_REPLY, true, m.sb.data,
                                   m.sb.size, NULL, 0, NULL, &out, NULL, err, sizeof err);
    expect(st, EB_ERR_INVALID, err, "reply.status 5 is not a status code");
    mp_done(&m);
}

/* ---- doc examples -------------------------------------------------------------------------- */

static void print_hex_block(FILE *f, const sample *s, const eb_proto_buf *body)
{
    eb_proto_channel ch;
    uint8_t cmd;
    eb_proto_kind_wire(s->msg.kind, &ch, &cmd);
    fprintf(f, "```hex name=%s channel=%s command=0x%02x from=%s frames=", s->name,
            ch == EB_PROTO_CHANNEL_CLIENT ? "client" : "worker", cmd,
            s->msg.from_broker ? "broker" : "peer");
    if (s->n_frames == 0)
        fprintf(f, "-");
    for (size_t i = 0; i < s->n_frames; i++)
        fprintf(f, "%s%zu", i ? "," : "", s->sizes[i]);
    fprintf(f, "\n");
    for (size_t i = 0; i < body->len; i++)
        fprintf(f, "%02x%s", body->data[i], (i + 1) % 32 == 0 || i + 1 == body->len ? "\n" : " ");
    fprintf(f, "```\n");
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static void test_doc_examples_decode(void **state)
{
    (void)state;
    char path[4096];
    size_t len = 0;
    char *doc = (char *)eb_test_read_file(eb_test_path(path, sizeof path, "docs/protocol.md"),
                                          &len);
    if (!doc)
        fail_msg("cannot read %s", path);
    char *text = realloc(doc, len + 1);
    assert_non_null(text);
    text[len] = '\0';
    int blocks = 0;
    bool seen_kind[EB_MSG_KIND_COUNT] = {0};
    for (char *p = strstr(text, "```hex "); p; p = strstr(p, "```hex ")) {
        char name[64] = "", chan[16] = "", from[16] = "", frames[128] = "";
        unsigned cmd = 0;
        if (sscanf(p, "```hex name=%63s channel=%15s command=0x%x from=%15s frames=%127s", name,
                   chan, &cmd, from, frames) != 5)
            fail_msg("malformed hex fence near: %.60s", p);
        char *line_end = strchr(p, '\n');
        char *end = line_end ? strstr(line_end, "```") : NULL;
        if (!end)
            fail_msg("unterminated hex block %s", name);
        uint8_t *bytes = malloc((size_t)(end - line_end));
        size_t n = 0;
        for (char *q = line_end; q < end; q++) {
            if (hexval(*q) >= 0 && hexval(q[1]) >= 0) {
                bytes[n++] = (uint8_t)(hexval(*q) << 4 | hexval(q[1]));
                q++;
            }
        }
        size_t sizes[16];
        size_t n_frames = 0;
        if (strcmp(frames, "-") != 0)
            for (char *t = strtok(frames, ","); t && n_frames < 16; t = strtok(NULL, ","))
                sizes[n_frames++] = strtoul(t, NULL, 10);
        eb_proto_channel ch = strcmp(chan, "worker") == 0 ? EB_PROTO_CHANNEL_WORKER
                                                          : EB_PROTO_CHANNEL_CLIENT;
        eb_proto_msg out;
        char err[256] = "";
        eb_status st = eb_proto_decode(ch, (uint8_t)cmd, strcmp(from, "broker") == 0, bytes, n,
                                       sizes, n_frames, NULL, &out, NULL, err, sizeof err);
        if (st != EB_OK)
            fail_msg("doc example %s does not decode: %s", name, err);
        seen_kind[out.kind] = true;
        /* and the codec writes exactly the doc's bytes */
        eb_proto_buf again;
        assert_int_equal(eb_proto_encode(&out, &again, err, sizeof err), EB_OK);
        if (again.len != n || memcmp(again.data, bytes, n) != 0)
            fail_msg("doc example %s differs from what the encoder writes", name);
        /* and it is the current sample of that name */
        sample s;
        for (int i = 0; make_sample(i, &s); i++)
            if (strcmp(s.name, name) == 0)
                msg_eq(&s.msg, &out);
        eb_proto_buf_free(&again);
        eb_proto_msg_free(&out);
        free(bytes);
        blocks++;
        p = end + 3;
    }
    free(text);
    assert_true(blocks >= 20);
    for (int k = EB_MSG_NONE + 1; k < EB_MSG_KIND_COUNT; k++)
        if (!seen_kind[k])
            fail_msg("docs/protocol.md has no example of %s", eb_proto_kind_name((eb_proto_kind)k));
}

/* ---- helpers of the module ----------------------------------------------------------------- */

static void test_msgpack_to_json(void **state)
{
    (void)state;
    uint8_t buf[256];
    size_t n = sample_health(buf, sizeof buf);
    char *json = NULL;
    assert_int_equal(eb_proto_msgpack_to_json(buf, n, &json), EB_OK);
    assert_string_equal(json, "{\"uptime_s\":42,\"redis\":\"ok\"}");
    free(json);

    mp m;
    mp_init(&m);
    msgpack_pack_array(&m.pk, 6);
    msgpack_pack_nil(&m.pk);
    msgpack_pack_true(&m.pk);
    msgpack_pack_int64(&m.pk, -7);
    msgpack_pack_double(&m.pk, 0.25);
    msgpack_pack_bin_with_body(&m.pk, "\x01\xff", 2);
    msgpack_pack_str_with_body(&m.pk, "q\"\n", 3);
    assert_int_equal(eb_proto_msgpack_to_json(m.sb.data, m.sb.size, &json), EB_OK);
    assert_string_equal(json, "[null,true,-7,0.25,\"01ff\",\"q\\\"\\u000a\"]");
    free(json);
    assert_int_equal(eb_proto_msgpack_to_json(m.sb.data, m.sb.size - 1, &json), EB_ERR_PROTOCOL);
    assert_null(json);
    mp_done(&m);

    /* scalar keys are quoted; container keys are refused (escaping them level by level would
     * grow the output exponentially: a fuzzer finding) */
    uint8_t int_key[] = {0x81, 0x05, 0xc3};
    assert_int_equal(eb_proto_msgpack_to_json(int_key, sizeof int_key, &json), EB_OK);
    assert_string_equal(json, "{\"5\":true}");
    free(json);
    uint8_t map_key[] = {0x81, 0x81, 0xa1, 'a', 0x01, 0x02};
    assert_int_equal(eb_proto_msgpack_to_json(map_key, sizeof map_key, &json), EB_ERR_PROTOCOL);

    /* nesting deeper than EB_PROTO_MAX_DEPTH */
    uint8_t deep[64];
    memset(deep, 0x91, sizeof deep);
    deep[63] = 0xc0;
    assert_int_equal(eb_proto_msgpack_to_json(deep, sizeof deep, &json), EB_ERR_PROTOCOL);
}

static void test_limits_from_config(void **state)
{
    (void)state;
    eb_proto_limits l;
    eb_proto_limits_default(&l);
    assert_int_equal(l.max_message_bytes, 64u << 20);
    assert_int_equal(l.max_input_bytes, 32u << 20);
    assert_int_equal(l.max_batch_items, 256);
    assert_int_equal(l.max_text_bytes, 64u << 10);
    assert_int_equal(l.max_k, 1000);
    eb_config *cfg = eb_config_new();
    assert_non_null(cfg);
    assert_int_equal(eb_config_set(cfg, "max_batch_items", "32", EB_CONFIG_FLAG), EB_OK);
    assert_int_equal(eb_config_set(cfg, "max_input_bytes", "1M", EB_CONFIG_FLAG), EB_OK);
    char err[256] = "";
    assert_int_equal(eb_proto_limits_from_config(cfg, &l, err, sizeof err), EB_OK);
    assert_int_equal(l.max_batch_items, 32);
    assert_int_equal(l.max_input_bytes, 1u << 20);
    assert_int_equal(l.max_message_bytes, 64u << 20);
    assert_int_equal(eb_config_set(cfg, "max_k", "zero", EB_CONFIG_FLAG), EB_OK);
    assert_int_equal(eb_proto_limits_from_config(cfg, &l, err, sizeof err), EB_ERR_INVALID);
    assert_non_null(strstr(err, "max_k"));
    assert_int_equal(l.max_k, 1000);
    assert_int_equal(l.max_batch_items, 32);
    eb_config_destroy(&cfg);
}

static void test_kind_table(void **state)
{
    (void)state;
    for (int k = EB_MSG_NONE + 1; k < EB_MSG_KIND_COUNT; k++) {
        eb_proto_channel ch;
        uint8_t cmd;
        assert_true(eb_proto_kind_wire((eb_proto_kind)k, &ch, &cmd));
        assert_int_equal(eb_proto_kind_of(ch, cmd), k);
    }
    assert_int_equal(eb_proto_kind_of(EB_PROTO_CHANNEL_WORKER, EB_PROTO_W_READY), EB_MSG_W_READY);
    assert_int_equal(eb_proto_kind_of(EB_PROTO_CHANNEL_CLIENT, 0), EB_MSG_NONE);
    assert_false(eb_proto_kind_wire(EB_MSG_NONE, NULL, NULL));
    assert_string_equal(eb_proto_op_str(EB_OP_SCAN), "scan");
    eb_proto_op op;
    assert_true(eb_proto_op_from_str("delete", 6, &op));
    assert_int_equal(op, EB_OP_DELETE);
    assert_false(eb_proto_op_from_str("del", 3, &op));
    assert_string_equal(eb_proto_stage_str(EB_STAGE_STORE_ENQUEUE), "store_enqueue");
    assert_string_equal(eb_proto_format_str(EB_FORMAT_WEBP), "webp");
    assert_string_equal(eb_proto_input_kind_str(EB_INPUT_RAW_RGB8), "raw_rgb8");
    assert_string_equal(eb_proto_priority_str(EB_PRIORITY_BULK), "bulk");
}

/* ---- framing over real sockets ------------------------------------------------------------ */

static void test_frames_over_inproc(void **state)
{
    (void)state;
    void *ctx = zmq_ctx_new();
    void *router = zmq_socket(ctx, ZMQ_ROUTER);
    void *dealer = zmq_socket(ctx, ZMQ_DEALER);
    int zero = 0;
    zmq_setsockopt(router, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(dealer, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(dealer, ZMQ_ROUTING_ID, "cli-1", 5);
    assert_int_equal(zmq_bind(router, "inproc://proto-test"), 0);
    assert_int_equal(zmq_connect(dealer, "inproc://proto-test"), 0);

    /* client -> broker: a request with two inline frames */
    sample s;
    assert_true(make_sample(6, &s));
    zmq_msg_t items[2];
    zmq_msg_init_size(&items[0], 12);
    memset(zmq_msg_data(&items[0]), 7, 12);
    zmq_msg_init_size(&items[1], 70);
    memset(zmq_msg_data(&items[1]), 9, 70);
    char err[256] = "";
    assert_int_equal(eb_frames_send_msg(dealer, NULL, 0, &s.msg, items, 2, 0, err, sizeof err),
                     EB_OK);
    assert_int_equal(zmq_msg_size(&items[0]), 0); /* moved out */
    zmq_msg_close(&items[0]);
    zmq_msg_close(&items[1]);

    eb_frames fr;
    eb_frames_init(&fr);
    assert_int_equal(eb_frames_recv(router, 0, 300, 1 << 20, &fr, err, sizeof err), EB_OK);
    assert_int_equal(fr.n, 6); /* identity, header, command, body, 2 items */
    eb_frames_view v;
    eb_proto_msg msg;
    uint64_t rid = 0;
    assert_int_equal(eb_frames_decode(&fr, true, false, NULL, &v, &msg, &rid, err, sizeof err),
                     EB_OK);
    assert_int_equal(v.identity_len, 5);
    assert_memory_equal(v.identity, "cli-1", 5);
    assert_int_equal(v.channel, EB_PROTO_CHANNEL_CLIENT);
    assert_int_equal(v.n_items, 2);
    assert_int_equal(rid, 2);
    msg_eq(&s.msg, &msg);
    assert_int_equal(((uint8_t *)zmq_msg_data(&fr.parts[v.first_item + 1]))[69], 9);

    /* broker -> client: reply, moving the inline frame back as the "embedding" */
    sample r;
    assert_true(make_sample(13, &r));
    r.msg.u.reply.id = msg.u.request.id;
    zmq_msg_t back[1];
    zmq_msg_init(&back[0]);
    eb_proto_msg_free(&msg);
    assert_int_equal(eb_frames_send_msg(router, v.identity, v.identity_len, &r.msg, back, 0, 0,
                                        err, sizeof err),
                     EB_OK);
    zmq_msg_close(&back[0]);
    eb_frames_close(&fr);
    assert_int_equal(eb_frames_recv(dealer, 0, 300, 1 << 20, &fr, err, sizeof err), EB_OK);
    assert_int_equal(eb_frames_decode(&fr, false, true, NULL, &v, &msg, NULL, err, sizeof err),
                     EB_OK);
    assert_int_equal(msg.kind, EB_MSG_C_REPLY);
    assert_int_equal(msg.bid, BID);
    assert_int_equal(msg.u.reply.id, 2);
    assert_int_equal(msg.u.reply.status, EB_ERR_TOO_LARGE);
    eb_proto_msg_free(&msg);

    /* garbage: wrong header, then too many frames (drained, socket stays usable) */
    zmq_send(dealer, "EMB9C", 5, ZMQ_SNDMORE);
    zmq_send(dealer, "\x05", 1, ZMQ_SNDMORE);
    zmq_send(dealer, "\x80", 1, 0);
    assert_int_equal(eb_frames_recv(router, 0, 300, 1 << 20, &fr, err, sizeof err), EB_OK);
    expect(eb_frames_decode(&fr, true, false, NULL, &v, &msg, NULL, err, sizeof err),
           EB_ERR_PROTOCOL, err, "version 9 is not supported");
    assert_int_equal(v.identity_len, 5); /* still known, to answer */
    for (int i = 0; i < 10; i++)
        zmq_send(dealer, "x", 1, i < 9 ? ZMQ_SNDMORE : 0);
    expect(eb_frames_recv(router, 0, 4, 1 << 20, &fr, err, sizeof err), EB_ERR_TOO_LARGE, err,
           "exceeds the limit");
    assert_int_equal(fr.n, 0);
    zmq_send(dealer, "EMB1C", 5, ZMQ_SNDMORE);
    zmq_send(dealer, "\x07", 1, ZMQ_SNDMORE);
    zmq_send(dealer, "\x80", 1, 0);
    assert_int_equal(eb_frames_recv(router, 0, 300, 1 << 20, &fr, err, sizeof err), EB_OK);
    assert_int_equal(eb_frames_decode(&fr, true, false, NULL, &v, &msg, NULL, err, sizeof err),
                     EB_OK);
    assert_int_equal(msg.kind, EB_MSG_C_HEARTBEAT);
    eb_proto_msg_free(&msg);
    /* a command frame of two bytes */
    zmq_send(dealer, "EMB1C", 5, ZMQ_SNDMORE);
    zmq_send(dealer, "\x07\x07", 2, ZMQ_SNDMORE);
    zmq_send(dealer, "\x80", 1, 0);
    assert_int_equal(eb_frames_recv(router, 0, 300, 1 << 20, &fr, err, sizeof err), EB_OK);
    expect(eb_frames_decode(&fr, true, false, NULL, &v, &msg, NULL, err, sizeof err),
           EB_ERR_PROTOCOL, err, "command frame is 2 bytes");
    /* nothing left */
    assert_int_equal(eb_frames_recv(router, ZMQ_DONTWAIT, 300, 1 << 20, &fr, err, sizeof err),
                     EB_ERR_TIMEOUT);
    eb_frames_close(&fr);
    zmq_close(dealer);
    zmq_close(router);
    zmq_ctx_term(ctx);
}

/* ---- generators ---------------------------------------------------------------------------- */

static int print_doc_examples(void)
{
    sample s;
    for (int i = 0; make_sample(i, &s); i++) {
        eb_proto_buf body;
        char err[256];
        if (eb_proto_encode(&s.msg, &body, err, sizeof err) != EB_OK) {
            fprintf(stderr, "%s: %s\n", s.name, err);
            return 1;
        }
        printf("%s\n", s.name);
        print_hex_block(stdout, &s, &body);
        printf("\n");
        eb_proto_buf_free(&body);
    }
    return 0;
}

/* Seed format of tests/fuzz/fuzz_proto.c: selector byte (bits 0-3 command, bit 4 worker
 * channel, bit 5 from broker), frame count byte, 2-byte LE frame sizes, body. */
static int write_corpus(const char *dir)
{
    sample s;
    for (int i = 0; make_sample(i, &s); i++) {
        eb_proto_buf body;
        char err[256];
        if (eb_proto_encode(&s.msg, &body, err, sizeof err) != EB_OK)
            return 1;
        eb_proto_channel ch;
        uint8_t cmd;
        eb_proto_kind_wire(s.msg.kind, &ch, &cmd);
        char path[4096];
        snprintf(path, sizeof path, "%s/%s.bin", dir, s.name);
        FILE *f = fopen(path, "wb");
        if (!f)
            return 1;
        uint8_t head[2] = {(uint8_t)(cmd | (ch == EB_PROTO_CHANNEL_WORKER ? 0x10 : 0) |
                                     (s.msg.from_broker ? 0x20 : 0)),
                           (uint8_t)s.n_frames};
        fwrite(head, 1, 2, f);
        for (size_t j = 0; j < s.n_frames; j++) {
            uint8_t le[2] = {(uint8_t)s.sizes[j], (uint8_t)(s.sizes[j] >> 8)};
            fwrite(le, 1, 2, f);
        }
        fwrite(body.data, 1, body.len, f);
        fclose(f);
        eb_proto_buf_free(&body);
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "--doc-examples") == 0)
        return print_doc_examples();
    if (argc > 2 && strcmp(argv[1], "--write-corpus") == 0)
        return write_corpus(argv[2]);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_every_kind),
        cmocka_unit_test(test_defaults_when_absent),
        cmocka_unit_test(test_unknown_fields_ignored),
        cmocka_unit_test(test_reject_wrong_type),
        cmocka_unit_test(test_reject_missing_field),
        cmocka_unit_test(test_reject_oversize),
        cmocka_unit_test(test_reject_too_many_items),
        cmocka_unit_test(test_reject_bad_frame_refs),
        cmocka_unit_test(test_reject_bad_hash),
        cmocka_unit_test(test_utf8_validator),
        cmocka_unit_test(test_reject_bad_model_name),
        cmocka_unit_test(test_reject_truncated_and_trailing),
        cmocka_unit_test(test_reject_header_and_command),
        cmocka_unit_test(test_reject_ranges),
        cmocka_unit_test(test_doc_examples_decode),
        cmocka_unit_test(test_msgpack_to_json),
        cmocka_unit_test(test_limits_from_config),
        cmocka_unit_test(test_kind_table),
        cmocka_unit_test(test_frames_over_inproc),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
