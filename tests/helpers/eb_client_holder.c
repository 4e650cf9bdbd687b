/* eb_client_holder — test helper: connect to a broker, register a shared-memory segment, print
 * the segment's name on stdout and then sleep (heartbeating from the library's background
 * thread) until killed. tests/integration/test_e2e.c kills it with SIGKILL and watches the broker
 * reap the segment.
 *
 *   eb_client_holder RUN_DIR [HEARTBEAT_INTERVAL_MS]
 *
 * Prints "segment <name>" and flushes; exits 1 (with the reason on stderr) when it cannot connect
 * or the segment was not registered. */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "embroker.h"

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: eb_client_holder RUN_DIR [HEARTBEAT_INTERVAL_MS]\n");
        return 2;
    }
    embroker_options_t opt;
    embroker_options_default(&opt);
    opt.run_dir = argv[1];
    opt.broker = NULL;
    opt.shm_size = 1 << 20;
    if (argc > 2)
        opt.heartbeat_interval_ms = atoi(argv[2]);
    embroker_t *eb = NULL;
    char err[512];
    if (embroker_connect(&opt, &eb, err, sizeof err) != EB_OK) {
        fprintf(stderr, "eb_client_holder: %s\n", err);
        return 1;
    }
    if (!embroker_uses_shm(eb)) {
        fprintf(stderr, "eb_client_holder: segment not registered\n");
        return 1;
    }
    printf("segment %s\n", embroker_segment_name(eb));
    fflush(stdout);
    for (;;)
        pause();
}
