/* eb_loop — the broker's one event loop: ZMQ sockets, plain file descriptors and timers.
 *
 * Everything the broker does happens in callbacks run by this loop on one thread: messages on
 * the ZMQ sockets, the signal self-pipe, later the hiredis and libpq sockets (eb_loop_add_fd with the
 * events they want, changed with eb_loop_set_events as their write interest comes and goes),
 * and timers (heartbeats, request deadlines, supervisor restarts). Nothing in a callback may
 * block: sockets are read with ZMQ_DONTWAIT, fds are non-blocking.
 *
 * Timers are intrusive (the caller embeds an eb_loop_timer in its own struct), kept in a binary
 * min-heap: start/stop are O(log n) and allocate nothing once the heap has grown, so a timer per
 * request deadline is cheap.
 *
 * Not thread-safe: use a loop from the thread that runs it.
 */
#ifndef EB_LOOP_H
#define EB_LOOP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "eb_status.h"

typedef struct eb_loop eb_loop;
typedef struct eb_loop_timer eb_loop_timer;

/* Called when a socket or fd is ready. `socket` is the ZMQ socket (NULL for an fd), `fd` the
 * file descriptor (-1 for a ZMQ socket), revents the ZMQ_POLLIN/ZMQ_POLLOUT/ZMQ_POLLERR bits. */
typedef void (*eb_loop_io_fn)(eb_loop *loop, void *socket, int fd, short revents, void *arg);

/* Called when a timer expires; the timer is disarmed before the call (restart it to repeat). */
typedef void (*eb_loop_timer_fn)(eb_loop *loop, eb_loop_timer *timer, void *arg);

/* Called once per loop iteration after all ready callbacks and due timers ran (the broker uses
 * it to dispatch batches once per burst of messages rather than once per message). */
typedef void (*eb_loop_hook_fn)(eb_loop *loop, void *arg);

struct eb_loop_timer {
    int64_t when_us;   /* eb_now_us() at which it fires */
    size_t heap_index; /* position in the heap; SIZE_MAX when not armed */
    eb_loop_timer_fn fn;
    void *arg;
};

/* A new loop, or NULL when out of memory. Free with eb_loop_destroy. */
eb_loop *eb_loop_new(void);

/* Free the loop (not the sockets, fds or timers registered in it); sets *loop to NULL.
 * NULL-safe. */
void eb_loop_destroy(eb_loop **loop);

/* Watch ZMQ `socket` for `events` (ZMQ_POLLIN and/or ZMQ_POLLOUT). EB_ERR_INVALID when it is
 * already watched, EB_ERR_NOMEM. */
eb_status eb_loop_add_socket(eb_loop *loop, void *socket, short events, eb_loop_io_fn fn,
                             void *arg);

/* Watch file descriptor `fd` (ZMQ_POLLIN/ZMQ_POLLOUT; 0 = registered but idle). Same errors. */
eb_status eb_loop_add_fd(eb_loop *loop, int fd, short events, eb_loop_io_fn fn, void *arg);

/* Change the events watched on a registered socket (fd ignored) or fd (socket NULL).
 * EB_ERR_NOT_FOUND when it is not registered. Safe inside callbacks. */
eb_status eb_loop_set_events(eb_loop *loop, void *socket, int fd, short events);

/* Stop watching a socket (fd ignored) or fd (socket NULL). Safe inside callbacks, including the
 * entry's own: a removed entry is never called again. EB_ERR_NOT_FOUND when not registered. */
eb_status eb_loop_remove(eb_loop *loop, void *socket, int fd);

/* Prepare a timer (not armed). */
void eb_loop_timer_init(eb_loop_timer *timer, eb_loop_timer_fn fn, void *arg);

/* Arm (or re-arm) `timer` to fire at monotonic time when_us (eb_now_us() scale; a time in the
 * past fires on the next iteration). The timer memory must stay valid until it fires or is
 * stopped. EB_ERR_NOMEM when the heap cannot grow (the timer is then not armed). */
eb_status eb_loop_timer_start(eb_loop *loop, eb_loop_timer *timer, int64_t when_us);

/* Disarm `timer`; harmless when not armed. */
void eb_loop_timer_stop(eb_loop *loop, eb_loop_timer *timer);

/* True while `timer` is armed. */
bool eb_loop_timer_armed(const eb_loop_timer *timer);

/* Set the once-per-iteration hook (NULL to clear). */
void eb_loop_set_hook(eb_loop *loop, eb_loop_hook_fn fn, void *arg);

/* Run one iteration: wait up to max_wait_us (-1 = until the next timer or event, 0 = do not
 * wait) for events, run ready callbacks, due timers and the hook. EB_ERR_IO when zmq_poll
 * fails other than by EINTR (the reason is logged). */
eb_status eb_loop_run_once(eb_loop *loop, int64_t max_wait_us);

/* Run iterations until eb_loop_stop is called (from a callback). EB_OK then, or the first
 * EB_ERR_IO from eb_loop_run_once. */
eb_status eb_loop_run(eb_loop *loop);

/* Make eb_loop_run return after the current iteration. */
void eb_loop_stop(eb_loop *loop);

/* Number of armed timers (for health and tests). */
size_t eb_loop_timer_count(const eb_loop *loop);

#endif
