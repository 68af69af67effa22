/*
 * agent.c: the PCMWIN-like agent in C, on libturnstile.
 *
 * It initialises under a SHARED lease on "pcm". Started while the service
 * runs a job (an EXCLUSIVE lease on "pcm"), it queues instead of timing
 * out: it prints its position, who is ahead and how far the job has got,
 * each time that changes, and initialises the moment the job ends.
 *
 * Build and run (from the repository root, after `cargo build -p turnstile-ffi`):
 *
 *   cc -std=c11 -Wall -Iclients/ffi/include clients/ffi/examples/agent.c \
 *      -Ltarget/debug -lturnstile -Wl,-rpath,"$PWD/target/debug" -o agent
 *   TURNSTILE_SOCKET=/path/to/turnstile.sock ./agent alice
 *
 * Exit status: 0 initialised, 1 failed (the reason is printed), 64 usage.
 */

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "turnstile.h"

/* Each change of our place in the queue: where we stand, and the job. */
static int32_t on_queue(void *user_data, const ts_queue_update *q) {
    const char *user = user_data;
    printf("agent[%s]: queued: position %" PRIu32, user, q->position);
    if (q->estimated_wait_ms > 0) {
        printf(", about %" PRIu32 " ms to wait", q->estimated_wait_ms);
    }
    printf("\n");
    for (size_t i = 0; i < q->ahead_count; i++) {
        const ts_lease_info *l = &q->ahead[i];
        printf("agent[%s]:   ahead: %s \"%s\" by %s (pid %" PRIu32 ")",
               user, l->position == 0 ? "holder" : "waiter", l->purpose,
               l->holder_name, l->holder_pid);
        if (l->has_progress) {
            printf(", progress %" PRIu32 "/%" PRIu32 " %s", l->progress_done,
                   l->progress_total, l->progress_message);
        }
        printf("\n");
    }
    fflush(stdout);
    return 0; /* keep waiting */
}

/* Called on the library's callback thread if the lease is lost. */
static void on_lost(void *user_data, uint64_t lease_id, ts_lost_reason reason,
                    const char *detail) {
    printf("agent[%s]: lease %" PRIu64 " lost (reason %d): %s\n",
           (const char *)user_data, lease_id, (int)reason, detail);
    fflush(stdout);
}

static int fail(const char *what, ts_error e) {
    fprintf(stderr, "agent: %s failed: %s: %s\n", what, ts_error_name(e),
            ts_last_error_message());
    return 1;
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "--version") == 0) {
        printf("libturnstile %s\n", ts_version());
        return 0;
    }
    if (argc > 2) {
        fprintf(stderr, "usage: agent [USER]   (socket: $TURNSTILE_SOCKET)\n");
        return 64;
    }
    const char *user = argc > 1 ? argv[1] : "user";
    char name[128];
    snprintf(name, sizeof name, "pcmwin[%s]", user);

    ts_client *client = NULL;
    ts_error e = ts_connect(NULL, name, 5000, &client);
    if (e != TS_OK) return fail("connect", e);

    ts_acquire_options opts = TS_ACQUIRE_OPTIONS_INIT;
    opts.flags = TS_ACQUIRE_SHARED;
    opts.purpose = "initialise";
    opts.on_queue = on_queue;
    opts.on_queue_data = (void *)user;
    opts.on_lost = on_lost;
    opts.on_lost_data = (void *)user;

    printf("agent[%s]: waiting for pcm\n", user);
    fflush(stdout);
    ts_lease *lease = NULL;
    e = ts_acquire(client, "pcm", &opts, TS_WAIT_FOREVER, &lease);
    if (e != TS_OK) {
        /* The message first: any later call, the close too, replaces it. */
        int status = fail("acquire pcm", e);
        ts_client_close(client);
        return status;
    }
    ts_lease_details d;
    ts_lease_get_details(lease, &d);
    printf("agent[%s]: granted: lease %" PRIu64 ", fencing token %" PRIu64 "\n",
           user, d.lease_id, d.fencing_token);

    /* The initialisation itself, under the lease. */
    ts_lease_report_progress(lease, 1, 1, "initialising", 5000);
    printf("agent[%s]: initialised\n", user);
    fflush(stdout);

    e = ts_lease_release(lease, 5000);
    int status = e == TS_OK ? 0 : fail("release", e);
    ts_client_close(client);
    return status;
}
