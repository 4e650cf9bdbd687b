/* eb_loop — one zmq_poll loop over ZMQ sockets, plain fds and a heap of timers.
 *
 * The idea is Redis's ae.c with zmq_poll as the multiplexer: a table of watched entries, an
 * array of zmq_pollitem_t rebuilt only when the table changes, and a binary min-heap of
 * intrusive timers whose earliest deadline bounds the poll timeout. Callbacks may add, change or
 * remove entries and timers; removed entries are tombstoned during an iteration and compacted
 * afterwards so the arrays never shift under the dispatch loop.
 */
#include "eb_loop.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <zmq.h>

#include "eb_clock.h"
#include "eb_log.h"

typedef struct loop_entry {
    void *socket; /* NULL for fds */
    int fd;       /* -1 for sockets */
    short events;
    bool removed;
    eb_loop_io_fn fn;
    void *arg;
} loop_entry;

struct eb_loop {
    loop_entry *entries;
    zmq_pollitem_t *items; /* parallel to entries while !items_dirty */
    size_t n_entries, cap_entries;
    bool items_dirty;
    bool in_dispatch;
    bool has_tombstones;

    eb_loop_timer **heap;
    size_t n_heap, cap_heap;

    eb_loop_hook_fn hook;
    void *hook_arg;
    bool stop;
};

/* ---- timer heap ------------------------------------------------------------------------- */

static void heap_swap(eb_loop *loop, size_t a, size_t b)
{
    eb_loop_timer *t = loop->heap[a];
    loop->heap[a] = loop->heap[b];
    loop->heap[b] = t;
    loop->heap[a]->heap_index = a;
    loop->heap[b]->heap_index = b;
}

static void heap_up(eb_loop *loop, size_t i)
{
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (loop->heap[parent]->when_us <= loop->heap[i]->when_us)
            break;
        heap_swap(loop, i, parent);
        i = parent;
    }
}

static void heap_down(eb_loop *loop, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < loop->n_heap && loop->heap[l]->when_us < loop->heap[m]->when_us)
            m = l;
        if (r < loop->n_heap && loop->heap[r]->when_us < loop->heap[m]->when_us)
            m = r;
        if (m == i)
            return;
        heap_swap(loop, i, m);
        i = m;
    }
}

static void heap_remove(eb_loop *loop, size_t i)
{
    eb_loop_timer *t = loop->heap[i];
    size_t last = loop->n_heap - 1;
    if (i != last) {
        heap_swap(loop, i, last);
        loop->n_heap--;
        heap_down(loop, i);
        heap_up(loop, i);
    } else {
        loop->n_heap--;
    }
    t->heap_index = SIZE_MAX;
}

/* ---- entries ---------------------------------------------------------------------------- */

static loop_entry *find_entry(eb_loop *loop, void *socket, int fd)
{
    for (size_t i = 0; i < loop->n_entries; i++) {
        loop_entry *e = &loop->entries[i];
        if (e->removed)
            continue;
        if (socket ? e->socket == socket : (e->socket == NULL && e->fd == fd))
            return e;
    }
    return NULL;
}

static eb_status add_entry(eb_loop *loop, void *socket, int fd, short events, eb_loop_io_fn fn,
                           void *arg)
{
    if (!fn || (!socket && fd < 0))
        return EB_ERR_INVALID;
    if (find_entry(loop, socket, fd))
        return EB_ERR_INVALID;
    if (loop->n_entries == loop->cap_entries) {
        size_t cap = loop->cap_entries ? loop->cap_entries * 2 : 8;
        loop_entry *e = realloc(loop->entries, cap * sizeof *e);
        if (!e)
            return EB_ERR_NOMEM;
        loop->entries = e;
        zmq_pollitem_t *it = realloc(loop->items, cap * sizeof *it);
        if (!it)
            return EB_ERR_NOMEM;
        loop->items = it;
        loop->cap_entries = cap;
    }
    loop->entries[loop->n_entries++] = (loop_entry){
        .socket = socket, .fd = socket ? -1 : fd, .events = events, .fn = fn, .arg = arg};
    loop->items_dirty = true;
    return EB_OK;
}

static void compact_entries(eb_loop *loop)
{
    size_t j = 0;
    for (size_t i = 0; i < loop->n_entries; i++)
        if (!loop->entries[i].removed)
            loop->entries[j++] = loop->entries[i];
    loop->n_entries = j;
    loop->has_tombstones = false;
    loop->items_dirty = true;
}

static void rebuild_items(eb_loop *loop)
{
    for (size_t i = 0; i < loop->n_entries; i++) {
        loop_entry *e = &loop->entries[i];
        loop->items[i] = (zmq_pollitem_t){
            .socket = e->socket, .fd = e->socket ? 0 : e->fd, .events = e->events, .revents = 0};
    }
    loop->items_dirty = false;
}

/* ---- public ----------------------------------------------------------------------------- */

eb_loop *eb_loop_new(void)
{
    return calloc(1, sizeof(eb_loop));
}

void eb_loop_destroy(eb_loop **loop)
{
    if (!loop || !*loop)
        return;
    eb_loop *l = *loop;
    for (size_t i = 0; i < l->n_heap; i++)
        l->heap[i]->heap_index = SIZE_MAX;
    free(l->heap);
    free(l->entries);
    free(l->items);
    free(l);
    *loop = NULL;
}

eb_status eb_loop_add_socket(eb_loop *loop, void *socket, short events, eb_loop_io_fn fn,
                             void *arg)
{
    if (!socket)
        return EB_ERR_INVALID;
    return add_entry(loop, socket, -1, events, fn, arg);
}

eb_status eb_loop_add_fd(eb_loop *loop, int fd, short events, eb_loop_io_fn fn, void *arg)
{
    if (fd < 0)
        return EB_ERR_INVALID;
    return add_entry(loop, NULL, fd, events, fn, arg);
}

eb_status eb_loop_set_events(eb_loop *loop, void *socket, int fd, short events)
{
    loop_entry *e = find_entry(loop, socket, fd);
    if (!e)
        return EB_ERR_NOT_FOUND;
    e->events = events;
    if (!loop->items_dirty)
        loop->items[e - loop->entries].events = events;
    return EB_OK;
}

eb_status eb_loop_remove(eb_loop *loop, void *socket, int fd)
{
    loop_entry *e = find_entry(loop, socket, fd);
    if (!e)
        return EB_ERR_NOT_FOUND;
    e->removed = true;
    loop->has_tombstones = true;
    if (!loop->in_dispatch)
        compact_entries(loop);
    return EB_OK;
}

void eb_loop_timer_init(eb_loop_timer *timer, eb_loop_timer_fn fn, void *arg)
{
    timer->when_us = 0;
    timer->heap_index = SIZE_MAX;
    timer->fn = fn;
    timer->arg = arg;
}

eb_status eb_loop_timer_start(eb_loop *loop, eb_loop_timer *timer, int64_t when_us)
{
    if (timer->heap_index != SIZE_MAX) {
        timer->when_us = when_us;
        heap_down(loop, timer->heap_index);
        heap_up(loop, timer->heap_index);
        return EB_OK;
    }
    if (loop->n_heap == loop->cap_heap) {
        size_t cap = loop->cap_heap ? loop->cap_heap * 2 : 64;
        eb_loop_timer **h = realloc(loop->heap, cap * sizeof *h);
        if (!h)
            return EB_ERR_NOMEM;
        loop->heap = h;
        loop->cap_heap = cap;
    }
    timer->when_us = when_us;
    timer->heap_index = loop->n_heap;
    loop->heap[loop->n_heap++] = timer;
    heap_up(loop, timer->heap_index);
    return EB_OK;
}

void eb_loop_timer_stop(eb_loop *loop, eb_loop_timer *timer)
{
    if (timer->heap_index == SIZE_MAX || timer->heap_index >= loop->n_heap ||
        loop->heap[timer->heap_index] != timer)
        return;
    heap_remove(loop, timer->heap_index);
}

bool eb_loop_timer_armed(const eb_loop_timer *timer)
{
    return timer->heap_index != SIZE_MAX;
}

void eb_loop_set_hook(eb_loop *loop, eb_loop_hook_fn fn, void *arg)
{
    loop->hook = fn;
    loop->hook_arg = arg;
}

static void run_timers(eb_loop *loop)
{
    int64_t now = eb_now_us();
    /* Timers started by callbacks for "now or earlier" run in the next iteration at the
     * latest; bound the work of one pass so a timer re-arming itself in the past cannot spin
     * here forever. */
    size_t budget = loop->n_heap + 16;
    while (loop->n_heap > 0 && loop->heap[0]->when_us <= now && budget-- > 0) {
        eb_loop_timer *t = loop->heap[0];
        heap_remove(loop, 0);
        t->fn(loop, t, t->arg);
    }
}

eb_status eb_loop_run_once(eb_loop *loop, int64_t max_wait_us)
{
    if (loop->has_tombstones)
        compact_entries(loop);
    if (loop->items_dirty)
        rebuild_items(loop);

    long timeout_ms = -1;
    if (loop->n_heap > 0) {
        int64_t wait = loop->heap[0]->when_us - eb_now_us();
        if (wait < 0)
            wait = 0;
        timeout_ms = (long)((wait + 999) / 1000);
    }
    if (max_wait_us >= 0) {
        long cap = (long)((max_wait_us + 999) / 1000);
        if (timeout_ms < 0 || cap < timeout_ms)
            timeout_ms = cap;
    }

    size_t n = loop->n_entries;
    int rc = zmq_poll(loop->items, (int)n, timeout_ms);
    if (rc < 0) {
        if (zmq_errno() == EINTR)
            return EB_OK;
        eb_log_error("loop_poll_failed", "errno=%d reason=\"%s\"", zmq_errno(),
                     zmq_strerror(zmq_errno()));
        return EB_ERR_IO;
    }
    loop->in_dispatch = true;
    for (size_t i = 0; rc > 0 && i < n; i++) {
        short revents = loop->items[i].revents;
        if (!revents)
            continue;
        loop_entry *e = &loop->entries[i];
        if (e->removed)
            continue;
        /* Copy: the callback may add entries and move the array. */
        loop_entry entry = *e;
        /* Entries appended by callbacks land after index n; realloc keeps items[0..n). */
        entry.fn(loop, entry.socket, entry.fd, revents, entry.arg);
    }
    loop->in_dispatch = false;
    run_timers(loop);
    if (loop->hook)
        loop->hook(loop, loop->hook_arg);
    return EB_OK;
}

eb_status eb_loop_run(eb_loop *loop)
{
    loop->stop = false;
    while (!loop->stop) {
        eb_status st = eb_loop_run_once(loop, -1);
        if (st != EB_OK)
            return st;
    }
    return EB_OK;
}

void eb_loop_stop(eb_loop *loop)
{
    loop->stop = true;
}

size_t eb_loop_timer_count(const eb_loop *loop)
{
    return loop->n_heap;
}
