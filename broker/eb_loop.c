/* eb_loop — one poll() loop over ZMQ sockets, plain fds and a heap of timers.
 *
 * The idea is Redis's ae.c: a table of watched entries, an array of pollfds rebuilt only when the
 * table changes, and a binary min-heap of intrusive timers whose earliest deadline bounds the
 * poll timeout. Callbacks may add, change or remove entries and timers; removed entries are
 * tombstoned during an iteration and compacted afterwards so the arrays never shift under the
 * dispatch loop.
 *
 * ZMQ sockets are watched through their ZMQ_FD, the way zmq_poll does it, but with less asking:
 * zmq_poll polls every fd once without waiting, asks every socket for ZMQ_EVENTS, polls again
 * with the timeout and then asks every socket again. Here each socket is asked once before
 * sleeping (that also processes its pending commands, which is what re-arms its ZMQ_FD), the
 * sleep is one poll(), and afterwards only the sockets whose ZMQ_FD fired are asked again. Each
 * question costs libzmq two syscalls; at about two loop passes per request this saves about five
 * of the broker's sixty syscalls per request (strace -c, one client).
 */
#include "eb_loop.h"

#include <errno.h>
#include <poll.h>
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
    struct pollfd *pfds;   /* parallel to entries while !items_dirty (a socket's: its ZMQ_FD) */
    short *revents;        /* parallel to entries: ZMQ_POLLIN/ZMQ_POLLOUT/ZMQ_POLLERR found */
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
        struct pollfd *pf = realloc(loop->pfds, cap * sizeof *pf);
        if (!pf)
            return EB_ERR_NOMEM;
        loop->pfds = pf;
        short *rev = realloc(loop->revents, cap * sizeof *rev);
        if (!rev)
            return EB_ERR_NOMEM;
        loop->revents = rev;
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

/* poll() events for a plain fd watched for ZMQ_POLLIN/ZMQ_POLLOUT. */
static short fd_events(short events)
{
    return (short)(((events & ZMQ_POLLIN) ? POLLIN : 0) | ((events & ZMQ_POLLOUT) ? POLLOUT : 0));
}

static void rebuild_items(eb_loop *loop)
{
    for (size_t i = 0; i < loop->n_entries; i++) {
        loop_entry *e = &loop->entries[i];
        struct pollfd *p = &loop->pfds[i];
        p->revents = 0;
        if (e->socket) {
            /* A socket's ZMQ_FD turns readable when anything changed inside it, for reading and
             * for writing alike. */
            int zfd = -1;
            size_t len = sizeof zfd;
            if (!e->events || zmq_getsockopt(e->socket, ZMQ_FD, &zfd, &len) != 0)
                zfd = -1;
            p->fd = zfd;
            p->events = POLLIN;
        } else {
            p->fd = e->fd;
            p->events = fd_events(e->events);
        }
    }
    loop->items_dirty = false;
}

/* What a socket can do now, among the events it is watched for (asking also processes its
 * pending commands). */
static short socket_revents(void *socket, short events)
{
    uint32_t zev = 0;
    size_t len = sizeof zev;
    if (zmq_getsockopt(socket, ZMQ_EVENTS, &zev, &len) != 0)
        return ZMQ_POLLERR;
    return (short)(zev & (uint32_t)events & (ZMQ_POLLIN | ZMQ_POLLOUT));
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
    free(l->pfds);
    free(l->revents);
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
    loop->items_dirty = true; /* a socket may gain or lose its ZMQ_FD in the set */
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
    /* Sockets with something to do already make this a look, not a wait. */
    int ready = 0;
    for (size_t i = 0; i < n; i++) {
        loop_entry *e = &loop->entries[i];
        loop->revents[i] = e->socket && e->events ? socket_revents(e->socket, e->events) : 0;
        ready += loop->revents[i] != 0;
    }
    int rc = poll(loop->pfds, (nfds_t)n, ready ? 0 : (int)timeout_ms);
    if (rc < 0 && errno != EINTR) {
        eb_log_error("loop_poll_failed", "errno=%d reason=\"%s\"", errno, strerror(errno));
        return EB_ERR_IO;
    }
    for (size_t i = 0; rc > 0 && i < n; i++) {
        short pr = loop->pfds[i].revents;
        if (!pr)
            continue;
        loop_entry *e = &loop->entries[i];
        if (e->socket) {
            /* The ZMQ_FD only says that something changed: ask what. */
            if (!loop->revents[i] && e->events)
                loop->revents[i] = socket_revents(e->socket, e->events);
        } else {
            short r = 0;
            if (pr & POLLIN)
                r |= ZMQ_POLLIN;
            if (pr & POLLOUT)
                r |= ZMQ_POLLOUT;
            if (pr & ~(POLLIN | POLLOUT))
                r |= ZMQ_POLLERR;
            loop->revents[i] = r;
        }
    }
    loop->in_dispatch = true;
    for (size_t i = 0; i < n; i++) {
        short revents = loop->revents[i];
        if (!revents)
            continue;
        loop_entry *e = &loop->entries[i];
        if (e->removed)
            continue;
        /* Copy: the callback may add entries and move the array. */
        loop_entry entry = *e;
        /* Entries appended by callbacks land after index n; realloc keeps revents[0..n). */
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
