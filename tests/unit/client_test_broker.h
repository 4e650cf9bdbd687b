/* client_test_broker.h — a broker stand-in for the client library's unit tests: a real ZMQ
 * ROUTER on a loopback tcp port, in its own thread, that decodes every client message with the
 * real protocol code (eb_frames_decode, broker side) and answers each REQUEST with a REPLY built
 * by the test's `answer` callback. It lets the tests check what the library puts on the wire
 * (eb_proto_decode of the bytes it sent) and how it reads replies (matches, search_error,
 * store_id, deleted, timings) without the real broker, which the integration tests run.
 *
 * Included by test_client.c and test_backfill.c (static functions: one copy per program). */
#ifndef CLIENT_TEST_BROKER_H
#define CLIENT_TEST_BROKER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zmq.h>

#include "eb_frames.h"
#include "eb_proto.h"

typedef struct tbroker tbroker;

/* Fill `rep` (already eb_proto_msg_init'ed as a REPLY with id and bid set) for `req`; put item
 * frames into items[0..*n_items) (initialised zmq_msg_t; at most 8). Return false to send no
 * reply at all (a lost request). Runs on the broker thread with tb->mu held. */
typedef bool (*tbroker_answer_fn)(tbroker *tb, const eb_proto_request *req,
                                  const eb_frames *frames, const eb_frames_view *view,
                                  eb_proto_msg *rep, zmq_msg_t *items, size_t *n_items);

struct tbroker {
    void *zctx, *router;
    char endpoint[128];
    pthread_t thread;
    atomic_bool stop;
    pthread_mutex_t mu;
    tbroker_answer_fn answer;
    void *arg;                  /* the test's own state */
    int n_requests;             /* REQUESTs seen */
    eb_proto_msg last;          /* the last REQUEST, decoded (owned) */
    size_t last_n_items;
    size_t last_item_len[4];    /* sizes of its item frames */
    uint8_t last_item0[4096];   /* the first item frame's bytes (up to 4096) */
};

static void *tbroker_main(void *arg)
{
    tbroker *tb = arg;
    eb_frames frames;
    eb_frames_init(&frames);
    while (!atomic_load(&tb->stop)) {
        zmq_pollitem_t it = {.socket = tb->router, .events = ZMQ_POLLIN};
        if (zmq_poll(&it, 1, 20) <= 0)
            continue;
        char err[512];
        if (eb_frames_recv(tb->router, ZMQ_DONTWAIT, 64, 1u << 28, &frames, err, sizeof err) !=
            EB_OK)
            continue;
        eb_frames_view view;
        eb_proto_msg msg;
        if (eb_frames_decode(&frames, true, false, NULL, &view, &msg, NULL, err, sizeof err) !=
            EB_OK) {
            fprintf(stderr, "tbroker: undecodable client message: %s\n", err);
            eb_frames_close(&frames);
            continue;
        }
        if (msg.kind != EB_MSG_C_REQUEST) {
            eb_proto_msg_free(&msg);
            eb_frames_close(&frames);
            continue;
        }
        pthread_mutex_lock(&tb->mu);
        tb->n_requests++;
        eb_proto_msg_free(&tb->last);
        tb->last = msg;
        tb->last_n_items = view.n_items;
        for (size_t i = 0; i < view.n_items && i < 4; i++)
            tb->last_item_len[i] = zmq_msg_size(&frames.parts[view.first_item + i]);
        if (view.n_items) {
            size_t n = tb->last_item_len[0] < sizeof tb->last_item0 ? tb->last_item_len[0]
                                                                     : sizeof tb->last_item0;
            memcpy(tb->last_item0, zmq_msg_data(&frames.parts[view.first_item]), n);
        }
        eb_proto_msg rep;
        eb_proto_msg_init(&rep, EB_MSG_C_REPLY);
        rep.bid = 0x5eed;
        rep.u.reply.id = msg.u.request.id;
        zmq_msg_t items[8];
        size_t n_items = 0;
        bool send = tb->answer(tb, &tb->last.u.request, &frames, &view, &rep, items, &n_items);
        if (send && eb_frames_send_msg(tb->router, view.identity, view.identity_len, &rep, items,
                                       n_items, 0, err, sizeof err) != EB_OK)
            fprintf(stderr, "tbroker: reply not sent: %s\n", err);
        for (size_t i = 0; i < n_items; i++)
            zmq_msg_close(&items[i]);
        pthread_mutex_unlock(&tb->mu);
        eb_frames_close(&frames);
    }
    eb_frames_close(&frames);
    return NULL;
}

/* Start a broker stand-in; its endpoint is tb->endpoint. false on failure. */
static bool tbroker_start(tbroker *tb, tbroker_answer_fn answer, void *arg)
{
    memset(tb, 0, sizeof *tb);
    tb->answer = answer;
    tb->arg = arg;
    pthread_mutex_init(&tb->mu, NULL);
    tb->zctx = zmq_ctx_new();
    tb->router = zmq_socket(tb->zctx, ZMQ_ROUTER);
    int zero = 0;
    zmq_setsockopt(tb->router, ZMQ_LINGER, &zero, sizeof zero);
    if (zmq_bind(tb->router, "tcp://127.0.0.1:*") != 0)
        return false;
    size_t len = sizeof tb->endpoint;
    zmq_getsockopt(tb->router, ZMQ_LAST_ENDPOINT, tb->endpoint, &len);
    return pthread_create(&tb->thread, NULL, tbroker_main, tb) == 0;
}

static void tbroker_stop(tbroker *tb)
{
    atomic_store(&tb->stop, true);
    pthread_join(tb->thread, NULL);
    zmq_close(tb->router);
    zmq_ctx_term(tb->zctx);
    eb_proto_msg_free(&tb->last);
    pthread_mutex_destroy(&tb->mu);
}

#endif
