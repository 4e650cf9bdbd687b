/* test_broker_core — the broker's building blocks without sockets to a real peer: the event
 * loop (eb_loop), the identity map (eb_idmap), the item queues (eb_queue) and the worker
 * registry's LRU choice (eb_workers). The black-box tests of embrokerd are in
 * tests/integration/test_broker.c.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <zmq.h>

#include "eb_clock.h"
#include "eb_idmap.h"
#include "eb_loop.h"
#include "eb_queue.h"
#include "eb_workers.h"

/* ---- eb_loop ------------------------------------------------------------------------------ */

typedef struct timer_rec {
    eb_loop_timer t;
    int id;
    int *order;
    int *n;
} timer_rec;

static void record_timer(eb_loop *loop, eb_loop_timer *timer, void *arg)
{
    (void)loop, (void)timer;
    timer_rec *r = arg;
    r->order[(*r->n)++] = r->id;
}

/* Timers fire in deadline order, once, and a stopped timer never fires. */
static void test_loop_timers_order(void **state)
{
    (void)state;
    eb_loop *loop = eb_loop_new();
    assert_non_null(loop);
    int order[16], n = 0;
    timer_rec recs[6];
    int64_t now = eb_now_us();
    int64_t offsets_ms[6] = {30, 5, 20, 10, 25, 15};
    for (int i = 0; i < 6; i++) {
        recs[i] = (timer_rec){.id = i, .order = order, .n = &n};
        eb_loop_timer_init(&recs[i].t, record_timer, &recs[i]);
        assert_int_equal(eb_loop_timer_start(loop, &recs[i].t, now + offsets_ms[i] * 1000),
                         EB_OK);
    }
    eb_loop_timer_stop(loop, &recs[2].t); /* 20 ms: never fires */
    assert_false(eb_loop_timer_armed(&recs[2].t));
    /* Re-arming moves a timer: 25 ms -> 1 ms. */
    assert_int_equal(eb_loop_timer_start(loop, &recs[4].t, now + 1000), EB_OK);
    assert_int_equal(eb_loop_timer_count(loop), 5);
    int64_t until = now + 200000;
    while (n < 5 && eb_now_us() < until)
        assert_int_equal(eb_loop_run_once(loop, 50000), EB_OK);
    assert_int_equal(n, 5);
    int expect[5] = {4, 1, 3, 5, 0};
    assert_memory_equal(order, expect, sizeof expect);
    assert_int_equal(eb_loop_timer_count(loop), 0);
    eb_loop_destroy(&loop);
    assert_null(loop);
}

/* Many timers with random deadlines come out sorted (heap invariants). */
static void test_loop_timers_many(void **state)
{
    (void)state;
    eb_loop *loop = eb_loop_new();
    enum { N = 500 };
    static timer_rec recs[N];
    static int order[N];
    int n = 0;
    int64_t base = eb_now_us() - 1000000; /* all due */
    srand(7);
    int64_t when[N];
    for (int i = 0; i < N; i++) {
        recs[i] = (timer_rec){.id = i, .order = order, .n = &n};
        eb_loop_timer_init(&recs[i].t, record_timer, &recs[i]);
        when[i] = base + (rand() % 100000);
        eb_loop_timer_start(loop, &recs[i].t, when[i]);
    }
    for (int i = 0; i < N; i += 3) /* stop a third of them */
        eb_loop_timer_stop(loop, &recs[i].t);
    assert_int_equal(eb_loop_run_once(loop, 0), EB_OK);
    assert_int_equal(n, N - (N + 2) / 3);
    for (int k = 1; k < n; k++)
        assert_true(when[order[k - 1]] <= when[order[k]]);
    for (int k = 0; k < n; k++)
        assert_true(order[k] % 3 != 0);
    eb_loop_destroy(&loop);
}

typedef struct fd_ctx {
    int calls;
    int fd;
    bool remove_self;
    char got;
} fd_ctx;

static void on_readable(eb_loop *loop, void *socket, int fd, short revents, void *arg)
{
    (void)socket;
    fd_ctx *c = arg;
    assert_true(revents & ZMQ_POLLIN);
    assert_int_equal(fd, c->fd);
    c->calls++;
    assert_int_equal(read(fd, &c->got, 1), 1);
    if (c->remove_self)
        assert_int_equal(eb_loop_remove(loop, NULL, fd), EB_OK);
}

static int g_hook_calls;
static void count_hook(eb_loop *loop, void *arg)
{
    (void)loop, (void)arg;
    g_hook_calls++;
}

/* Plain fds are polled beside ZMQ sockets; an entry may remove itself; the hook runs once per
 * iteration. */
static void test_loop_fds(void **state)
{
    (void)state;
    eb_loop *loop = eb_loop_new();
    int p1[2], p2[2];
    assert_int_equal(pipe(p1), 0);
    assert_int_equal(pipe(p2), 0);
    fd_ctx a = {.fd = p1[0]}, b = {.fd = p2[0], .remove_self = true};
    assert_int_equal(eb_loop_add_fd(loop, p1[0], ZMQ_POLLIN, on_readable, &a), EB_OK);
    assert_int_equal(eb_loop_add_fd(loop, p2[0], ZMQ_POLLIN, on_readable, &b), EB_OK);
    assert_int_equal(eb_loop_add_fd(loop, p2[0], ZMQ_POLLIN, on_readable, &b), EB_ERR_INVALID);
    eb_loop_set_hook(loop, count_hook, NULL);
    g_hook_calls = 0;
    assert_int_equal(write(p1[1], "x", 1), 1);
    assert_int_equal(write(p2[1], "yz", 2), 2);
    assert_int_equal(eb_loop_run_once(loop, 100000), EB_OK);
    assert_int_equal(a.calls, 1);
    assert_int_equal(a.got, 'x');
    assert_int_equal(b.calls, 1);
    assert_int_equal(g_hook_calls, 1);
    /* b removed itself: its second byte is never delivered. */
    assert_int_equal(eb_loop_run_once(loop, 20000), EB_OK);
    assert_int_equal(b.calls, 1);
    assert_int_equal(eb_loop_remove(loop, NULL, p2[0]), EB_ERR_NOT_FOUND);
    /* Interest can be switched off and on. */
    assert_int_equal(eb_loop_set_events(loop, NULL, p1[0], 0), EB_OK);
    assert_int_equal(write(p1[1], "w", 1), 1);
    assert_int_equal(eb_loop_run_once(loop, 20000), EB_OK);
    assert_int_equal(a.calls, 1);
    assert_int_equal(eb_loop_set_events(loop, NULL, p1[0], ZMQ_POLLIN), EB_OK);
    assert_int_equal(eb_loop_run_once(loop, 100000), EB_OK);
    assert_int_equal(a.calls, 2);
    assert_int_equal(a.got, 'w');
    close(p1[0]), close(p1[1]), close(p2[0]), close(p2[1]);
    eb_loop_destroy(&loop);
}

/* ---- eb_idmap ----------------------------------------------------------------------------- */

/* Against a plain array as the reference: insert, overwrite, remove (backward shift) and look
 * up thousands of keys, including keys that differ in one byte and in length. */
static void test_idmap_reference(void **state)
{
    (void)state;
    eb_idmap *m = eb_idmap_new();
    assert_non_null(m);
    enum { N = 3000 };
    static uint8_t keys[N][12];
    static size_t lens[N];
    static intptr_t present[N];
    srand(11);
    /* Unique keys of lengths 5..12 that share long prefixes. */
    for (int i = 0; i < N; i++) {
        lens[i] = 5 + (size_t)(i % 8);
        memset(keys[i], 0xee, sizeof keys[i]);
        memcpy(keys[i] + lens[i] - 4, &i, 4);
    }
    for (int round = 0; round < 20000; round++) {
        int i = rand() % N;
        int op = rand() % 3;
        if (op < 2) {
            intptr_t v = round + 1;
            assert_int_equal(eb_idmap_put(m, keys[i], lens[i], (void *)v), EB_OK);
            present[i] = v;
        } else {
            void *old = eb_idmap_remove(m, keys[i], lens[i]);
            assert_true((intptr_t)old == present[i]);
            present[i] = 0;
        }
        if (round % 1000 == 0) {
            size_t count = 0;
            for (int k = 0; k < N; k++) {
                assert_true((intptr_t)eb_idmap_get(m, keys[k], lens[k]) == present[k]);
                count += present[k] != 0;
            }
            assert_int_equal(eb_idmap_count(m), count);
        }
    }
    assert_null(eb_idmap_get(m, "", 0));
    assert_int_equal(eb_idmap_put(m, "k", 1, NULL), EB_ERR_INVALID);
    eb_idmap_destroy(&m);
    assert_null(m);
}

/* ---- eb_queue ----------------------------------------------------------------------------- */

static void test_queue_order_and_removal(void **state)
{
    (void)state;
    eb_queue q;
    eb_queue_init(&q);
    eb_item items[5];
    memset(items, 0, sizeof items);
    for (int i = 0; i < 5; i++) {
        items[i].index = (uint32_t)i;
        eb_queue_push_back(&q, &items[i]);
        assert_int_equal(items[i].state, EB_ITEM_QUEUED);
    }
    eb_queue_remove(&q, &items[2]); /* from the middle */
    eb_queue_remove(&q, &items[4]); /* the tail */
    eb_queue_push_front(&q, &items[4]); /* a requeue goes first */
    assert_int_equal(eb_queue_count(&q), 4);
    uint32_t expect[4] = {4, 0, 1, 3};
    for (int k = 0; k < 4; k++)
        assert_int_equal(eb_queue_pop(&q)->index, expect[k]);
    assert_null(eb_queue_pop(&q));
    assert_int_equal(eb_queue_count(&q), 0);
    /* An item is finished once: the second outcome is refused. */
    assert_true(eb_item_finish(&items[0], EB_ERR_DEADLINE, "late"));
    assert_false(eb_item_finish(&items[0], 0, NULL));
    assert_int_equal(items[0].status, EB_ERR_DEADLINE);
    assert_string_equal(items[0].error, "late");
    eb_item_release(&items[0], NULL);
    assert_int_equal(items[0].state, EB_ITEM_NEW);
    assert_null(items[0].error);
}

/* ---- eb_workers --------------------------------------------------------------------------- */

static eb_broker_worker *add_worker(eb_workers *w, const char *id, const char *model, uint32_t dims)
{
    /* The READY moves into the worker and keeps pointing at its model array. */
    static eb_proto_model_desc descs[16];
    static int n_descs;
    eb_proto_model_desc *desc = &descs[n_descs++ % 16];
    *desc = (eb_proto_model_desc){.name = model, .model_rev = "r", .preproc_rev = "p",
                                  .dims = dims, .input = EB_INPUT_IMAGE};
    eb_proto_msg ready;
    eb_proto_msg_init(&ready, EB_MSG_W_READY);
    ready.u.ready.worker_id = id;
    ready.u.ready.backend = "cpu";
    ready.u.ready.max_batch_items = 4;
    ready.u.ready.n_models = 1;
    ready.u.ready.models = desc;
    eb_broker_worker *out = NULL;
    char err[256];
    eb_status st = eb_workers_add(w, id, strlen(id), NULL, &ready, 256, eb_now_us(), &out, err,
                                  sizeof err);
    return st == EB_OK ? out : NULL;
}

static void test_workers_lru(void **state)
{
    (void)state;
    eb_workers w;
    assert_int_equal(eb_workers_init(&w, 8), EB_OK);
    eb_broker_worker *a = add_worker(&w, "a", "m", 8);
    eb_broker_worker *b = add_worker(&w, "b", "m", 8);
    eb_broker_worker *c = add_worker(&w, "c", "m", 8);
    assert_non_null(a);
    assert_non_null(b);
    assert_non_null(c);
    eb_broker_model *m = eb_workers_model(&w, "m");
    assert_non_null(m);
    assert_int_equal(m->n_workers, 3);
    /* No credit yet: nobody to pick. */
    assert_null(eb_workers_pick(m));
    eb_workers_add_credit(&w, a, 4);
    eb_workers_add_credit(&w, b, 4);
    eb_workers_add_credit(&w, c, 4);
    /* Use them in turn: each pick is the least recently used one. */
    eb_broker_worker *first = eb_workers_pick(m);
    eb_workers_used(&w, first, 1);
    eb_broker_worker *second = eb_workers_pick(m);
    assert_ptr_not_equal(second, first);
    eb_workers_used(&w, second, 1);
    eb_broker_worker *third = eb_workers_pick(m);
    assert_ptr_not_equal(third, first);
    assert_ptr_not_equal(third, second);
    eb_workers_used(&w, third, 1);
    assert_ptr_equal(eb_workers_pick(m), first);
    /* Credit is additive; spending it all takes the worker out of the ready list. */
    eb_workers_used(&w, first, 3);
    assert_int_equal(first->credit, 0);
    assert_ptr_equal(eb_workers_pick(m), second);
    eb_workers_add_credit(&w, first, 2);
    assert_int_equal(first->credit, 2);
    /* A model announced with other dimensions while workers serve it is refused. */
    assert_null(add_worker(&w, "d", "m", 16));
    assert_int_equal(m->n_workers, 3);
    /* Removal: gone from lookups and ready lists. */
    eb_broker_worker_ref(second);
    eb_workers_remove(&w, second);
    assert_true(second->removed);
    assert_null(eb_workers_find(&w, "b", 1));
    assert_int_equal(m->n_workers, 2);
    for (int k = 0; k < 4; k++) {
        eb_broker_worker *p = eb_workers_pick(m);
        assert_ptr_not_equal(p, second);
        eb_workers_used(&w, p, 0);
    }
    eb_broker_worker_unref(second);
    /* The live list is ordered by last activity. */
    eb_workers_touch(&w, eb_workers_oldest(&w), eb_now_us());
    assert_ptr_not_equal(eb_workers_oldest(&w), w.live_tail);
    eb_workers_fini(&w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_loop_timers_order),
        cmocka_unit_test(test_loop_timers_many),
        cmocka_unit_test(test_loop_fds),
        cmocka_unit_test(test_idmap_reference),
        cmocka_unit_test(test_queue_order_and_removal),
        cmocka_unit_test(test_workers_lru),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
