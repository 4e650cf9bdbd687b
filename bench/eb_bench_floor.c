/* eb_bench_floor — zmq_proxy relay + echo worker, each a forked child process. */
#include "eb_bench_floor.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zmq.h>

#include "eb_clock.h"

static void relay_main(const char *front, const char *back)
{
    void *ctx = zmq_ctx_new();
    void *f = zmq_socket(ctx, ZMQ_ROUTER), *b = zmq_socket(ctx, ZMQ_DEALER);
    if (zmq_bind(f, front) != 0 || zmq_bind(b, back) != 0) {
        fprintf(stderr, "floor relay: bind failed: %s\n", zmq_strerror(zmq_errno()));
        _exit(1);
    }
    zmq_proxy(f, b, NULL);
    _exit(0);
}

static void echo_main(const char *back, size_t reply_bytes)
{
    void *ctx = zmq_ctx_new();
    void *s = zmq_socket(ctx, ZMQ_DEALER);
    if (zmq_connect(s, back) != 0)
        _exit(1);
    char *reply = calloc(1, reply_bytes ? reply_bytes : 1);
    for (;;) {
        zmq_msg_t identity;
        zmq_msg_init(&identity);
        if (zmq_msg_recv(&identity, s, 0) < 0)
            _exit(1);
        int more = zmq_msg_more(&identity);
        while (more) { /* drop the request's frames: the reply replaces them */
            zmq_msg_t part;
            zmq_msg_init(&part);
            zmq_msg_recv(&part, s, 0);
            more = zmq_msg_more(&part);
            zmq_msg_close(&part);
        }
        zmq_msg_send(&identity, s, ZMQ_SNDMORE);
        zmq_send(s, reply, reply_bytes, 0);
    }
}

int eb_floor_start(eb_floor *floor, const char *dir, size_t reply_bytes)
{
    char back[512];
    snprintf(floor->frontend, sizeof floor->frontend, "ipc://%s/floor-front.sock", dir);
    snprintf(back, sizeof back, "ipc://%s/floor-back.sock", dir);
    floor->relay_pid = fork();
    if (floor->relay_pid == 0)
        relay_main(floor->frontend, back);
    floor->worker_pid = fork();
    if (floor->worker_pid == 0)
        echo_main(back, reply_bytes);
    if (floor->relay_pid < 0 || floor->worker_pid < 0) {
        perror("floor: fork");
        return -1;
    }
    eb_sleep_us(200000); /* let the relay bind and the worker connect */
    return 0;
}

void eb_floor_stop(eb_floor *floor)
{
    pid_t pids[2] = {floor->relay_pid, floor->worker_pid};
    for (int i = 0; i < 2; i++) {
        if (pids[i] > 0) {
            kill(pids[i], SIGKILL);
            waitpid(pids[i], NULL, 0);
        }
    }
    floor->relay_pid = floor->worker_pid = 0;
}
