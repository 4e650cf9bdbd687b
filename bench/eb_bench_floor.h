/* eb_bench_floor — the floor the broker is measured against: the same four hops through a plain
 * zmq_proxy relay (client -> relay -> echo worker -> relay -> client), with the relay and the
 * echo worker in their own processes like embrokerd and embroker-worker. The echo worker does
 * no work: it answers each request with a reply of a fixed size, so what remains is the cost of
 * ZeroMQ, the kernel and the process hops. */
#ifndef EB_BENCH_FLOOR_H
#define EB_BENCH_FLOOR_H

#include <stddef.h>
#include <sys/types.h>

typedef struct eb_floor {
    pid_t relay_pid, worker_pid;
    char frontend[512]; /* endpoint clients connect a DEALER to */
} eb_floor;

/* Start the relay and one echo worker with ipc endpoints in `dir`; the echo worker replies with
 * `reply_bytes` bytes. Returns 0, or -1 with a message on stderr. */
int eb_floor_start(eb_floor *floor, const char *dir, size_t reply_bytes);

/* Kill both processes and wait for them. */
void eb_floor_stop(eb_floor *floor);

#endif
