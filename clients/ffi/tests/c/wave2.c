/*
 * wave2.c: the wave-2 API of libturnstile, called from C against the real
 * broker ($TURNSTILE_SOCKET): the size-versioned options, counted permits,
 * detach and re-attach with the resume token, yield requests (the holder's
 * callback, a decline, a revoke), the stalled mark, the wave-2 watch event
 * kinds, status as JSON, history, and the new functions' answers to
 * invalid handles.
 *
 * Built with `cc` and run (also under valgrind) by tests/c_wave2.rs. Prints
 * one "ok: ..." line per check; exits 0 when all pass, 1 at the first
 * failure (saying which), 64 on a usage error.
 */

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "turnstile.h"

#define PATIENCE_MS 30000u

#define CHECK(cond, ...)                                                      \
    do {                                                                      \
        if (!(cond)) {                                                        \
            printf("FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);            \
            printf(__VA_ARGS__);                                              \
            printf(" (last error: %s)\n", ts_last_error_message());           \
            fflush(stdout);                                                   \
            exit(1);                                                          \
        }                                                                     \
    } while (0)

#define OK(call)                                                              \
    do {                                                                      \
        ts_error e_ = (call);                                                 \
        CHECK(e_ == TS_OK, "%s returned %s", #call, ts_error_name(e_));       \
    } while (0)

#define EXPECT(code, call)                                                    \
    do {                                                                      \
        ts_error e_ = (call);                                                 \
        CHECK(e_ == (code), "%s returned %s, expected %s", #call,             \
              ts_error_name(e_), ts_error_name(code));                        \
    } while (0)

static void pass(const char *what) {
    printf("ok: %s\n", what);
    fflush(stdout);
}

/* Something a callback thread tells the main thread. */
typedef struct {
    pthread_mutex_t lock;
    pthread_cond_t changed;
    int count;
    uint64_t lease_id;
    char text[256];
    uint32_t within_ms;
    bool revoke;
    ts_lost_reason reason;
} signal_t;

static void signal_init(signal_t *s) {
    memset(s, 0, sizeof *s);
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->changed, NULL);
}

static void signal_destroy(signal_t *s) {
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->changed);
}

/* Waits until the signal has been raised `count` times in all. */
static void signal_wait(signal_t *s, int count, const char *what) {
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += PATIENCE_MS / 1000;
    pthread_mutex_lock(&s->lock);
    while (s->count < count) {
        if (pthread_cond_timedwait(&s->changed, &s->lock, &until) != 0) {
            pthread_mutex_unlock(&s->lock);
            CHECK(0, "timed out waiting for %s", what);
        }
    }
    pthread_mutex_unlock(&s->lock);
}

static void on_yield(void *data, uint64_t lease_id, const ts_yield_request *r) {
    signal_t *s = data;
    pthread_mutex_lock(&s->lock);
    s->lease_id = lease_id;
    snprintf(s->text, sizeof s->text, "%s|%s", r->requester_name, r->reason);
    s->within_ms = r->within_ms;
    s->revoke = r->revoke;
    s->count++;
    pthread_cond_broadcast(&s->changed);
    pthread_mutex_unlock(&s->lock);
}

static void on_lost(void *data, uint64_t lease_id, ts_lost_reason reason,
                    const char *detail) {
    signal_t *s = data;
    pthread_mutex_lock(&s->lock);
    s->lease_id = lease_id;
    s->reason = reason;
    snprintf(s->text, sizeof s->text, "%s", detail);
    s->count++;
    pthread_cond_broadcast(&s->changed);
    pthread_mutex_unlock(&s->lock);
}

/* Takes watch events until a change of `kind` on `resource`; its detail
 * and state are copied out (each may be NULL). */
static void expect_event(ts_watch *w, ts_event_kind kind, const char *resource,
                         char *detail, size_t detail_len, char *state,
                         size_t state_len) {
    for (;;) {
        ts_watch_event ev;
        ts_error e = ts_watch_next(w, PATIENCE_MS, &ev);
        CHECK(e == TS_OK, "no %d event on %s: %s", (int)kind, resource,
              ts_error_name(e));
        if (ev.item == TS_WATCH_CHANGE && ev.kind == kind &&
            strcmp(ev.resource, resource) == 0) {
            if (detail) snprintf(detail, detail_len, "%s", ev.detail);
            if (state) snprintf(state, state_len, "%s", ev.state_json);
            return;
        }
    }
}

static ts_client *connect_as(const char *name) {
    ts_client *c = NULL;
    OK(ts_connect(NULL, name, 5000, &c));
    return c;
}

/* The options: their size says which fields the caller knows. */
static void options_are_versioned_by_size(ts_client *c) {
    ts_acquire_options o = TS_ACQUIRE_OPTIONS_INIT;
    CHECK(o.struct_size == sizeof o, "TS_ACQUIRE_OPTIONS_INIT sets struct_size");
    ts_acquire_options i;
    memset(&i, 0xab, sizeof i);
    OK(ts_acquire_options_init(&i, sizeof i));
    CHECK(i.struct_size == sizeof i && i.flags == 0 && i.purpose == NULL &&
              i.on_yield == NULL && i.permits == 0,
          "ts_acquire_options_init zeroes the defaults");
    EXPECT(TS_ERR_INVALID_ARGUMENT, ts_acquire_options_init(&i, 8));
    EXPECT(TS_ERR_INVALID_ARGUMENT, ts_acquire_options_init(NULL, sizeof i));

    /* A caller built against version 1 (fields up to on_lost_data): what
     * lies beyond is not read, however wrong it would be. */
    ts_acquire_options v1 = TS_ACQUIRE_OPTIONS_INIT;
    v1.struct_size = (uint32_t)offsetof(ts_acquire_options, permits);
    v1.flags = TS_ACQUIRE_SHARED;
    v1.permits = 5;
    v1.capacity = 2; /* 5 permits of 2 would be refused, if read */
    ts_lease *l = NULL;
    OK(ts_acquire(c, "versioned", &v1, PATIENCE_MS, &l));
    OK(ts_lease_release(l, PATIENCE_MS));

    /* A size between two versions is garbage. */
    o.struct_size = (uint32_t)offsetof(ts_acquire_options, capacity);
    EXPECT(TS_ERR_INVALID_ARGUMENT, ts_acquire(c, "versioned", &o, PATIENCE_MS, &l));
    CHECK(l == NULL, "out is NULL on failure");

    /* A newer caller's larger struct: fine while what it adds is zero. */
    struct {
        ts_acquire_options known;
        uint64_t newer[2];
    } big;
    memset(&big, 0, sizeof big);
    big.known.struct_size = sizeof big;
    OK(ts_acquire(c, "versioned", &big.known, PATIENCE_MS, &l));
    OK(ts_lease_release(l, PATIENCE_MS));
    big.newer[1] = 1;
    EXPECT(TS_ERR_INVALID_ARGUMENT, ts_acquire(c, "versioned", &big.known, PATIENCE_MS, &l));
    CHECK(strstr(ts_last_error_message(), "newer") != NULL, "says why: %s",
          ts_last_error_message());
    pass("ts_acquire_options: version 1 callers, sizes between versions, newer callers");
}

/* Counted permits: a semaphore of 3. */
typedef struct {
    size_t ahead;
    uint32_t first_permits;
    uint32_t position;
} queue_seen;

static int32_t give_up_when_queued(void *data, const ts_queue_update *q) {
    queue_seen *seen = data;
    seen->ahead = q->ahead_count;
    seen->first_permits = q->ahead_count > 0 ? q->ahead[0].permits : 0;
    seen->position = q->position;
    return 1; /* leave the queue */
}

static void permits_make_a_semaphore(ts_client *c) {
    ts_acquire_options o = TS_ACQUIRE_OPTIONS_INIT;
    o.flags = TS_ACQUIRE_SHARED;
    o.capacity = 3;
    o.permits = 2;
    o.purpose = "two downloads";
    ts_lease *two = NULL, *one = NULL, *more = NULL;
    OK(ts_acquire(c, "downloads", &o, PATIENCE_MS, &two));
    o.permits = 1;
    o.purpose = "one download";
    OK(ts_acquire(c, "downloads", &o, PATIENCE_MS, &one));

    /* Full: a fourth permit waits (or is busy). */
    o.flags = TS_ACQUIRE_SHARED | TS_ACQUIRE_NO_WAIT;
    EXPECT(TS_ERR_BUSY, ts_acquire(c, "downloads", &o, PATIENCE_MS, &more));
    queue_seen seen = {0, 0, 0};
    o.flags = TS_ACQUIRE_SHARED;
    o.on_queue = give_up_when_queued;
    o.on_queue_data = &seen;
    EXPECT(TS_ERR_CANCELLED, ts_acquire(c, "downloads", &o, PATIENCE_MS, &more));
    CHECK(seen.position == 1 && seen.ahead == 2 && seen.first_permits == 2,
          "queued behind both holders: position %" PRIu32 ", %zu ahead, first with %" PRIu32
          " permits",
          seen.position, seen.ahead, seen.first_permits);

    /* More than the capacity, or another capacity: refused. */
    o.on_queue = NULL;
    o.permits = 4;
    EXPECT(TS_ERR_INVALID_ARGUMENT, ts_acquire(c, "downloads", &o, PATIENCE_MS, &more));
    o.permits = 1;
    o.capacity = 5;
    EXPECT(TS_ERR_INVALID_ARGUMENT, ts_acquire(c, "downloads", &o, PATIENCE_MS, &more));
    CHECK(strstr(ts_last_error_message(), "3") != NULL, "names the capacity: %s",
          ts_last_error_message());

    /* Status shows the semaphore. */
    const char *names[] = {"downloads"};
    const char *json = NULL;
    OK(ts_status(c, names, 1, PATIENCE_MS, &json));
    CHECK(strstr(json, "\"capacity\":3") && strstr(json, "\"permits_held\":3") &&
              strstr(json, "\"permits\":2"),
          "status JSON: %s", json);

    OK(ts_lease_release(two, PATIENCE_MS));
    OK(ts_lease_release(one, PATIENCE_MS));
    pass("permits and capacity: a semaphore of 3, full, refused, shown in status");
}

/* Detach, then take the lease back from another connection. */
static void a_detached_lease_is_reattached(ts_watch *w) {
    ts_client *first = connect_as("wave2-first-life");
    ts_acquire_options o = TS_ACQUIRE_OPTIONS_INIT;
    o.detach_grace_ms = 20000;
    o.purpose = "survives a restart";
    ts_lease *l = NULL;
    OK(ts_acquire(first, "session", &o, PATIENCE_MS, &l));
    expect_event(w, TS_EVENT_GRANTED, "session", NULL, 0, NULL, 0);
    ts_lease_details d;
    OK(ts_lease_get_details(l, &d));
    const char *t = NULL;
    OK(ts_lease_resume_token(l, &t));
    char token[256];
    CHECK(strlen(t) > 32 && strlen(t) < sizeof token, "a resume token: %s", t);
    snprintf(token, sizeof token, "%s", t);
    CHECK(strtoull(token, NULL, 10) == d.lease_id, "the token starts with the lease id: %s",
          token);

    /* Let go of it: the connection closes once the client is closed too. */
    OK(ts_lease_detach(l));
    EXPECT(TS_ERR_INVALID_HANDLE, ts_lease_release(l, 10));
    OK(ts_client_close(first));
    char state[4096];
    expect_event(w, TS_EVENT_DETACHED, "session", NULL, 0, state, sizeof state);
    CHECK(strstr(state, "\"detached\":true"), "the state shows it detached: %s", state);

    ts_client *second = connect_as("wave2-second-life");
    ts_lease *back = NULL;
    EXPECT(TS_ERR_INVALID_ARGUMENT, ts_reattach(second, "not a token", NULL, PATIENCE_MS, &back));
    char wrong[256];
    snprintf(wrong, sizeof wrong, "%s", token);
    char *hex = strchr(wrong, ':') + 1;
    hex[0] = hex[0] == '0' ? '1' : '0';
    EXPECT(TS_ERR_NOT_FOUND, ts_reattach(second, wrong, NULL, PATIENCE_MS, &back));
    CHECK(back == NULL, "out is NULL on failure");

    OK(ts_reattach(second, token, NULL, PATIENCE_MS, &back));
    expect_event(w, TS_EVENT_REATTACHED, "session", NULL, 0, NULL, 0);
    ts_lease_details again;
    OK(ts_lease_get_details(back, &again));
    CHECK(again.lease_id == d.lease_id && again.fencing_token == d.fencing_token,
          "the same lease: %" PRIu64 "/%" PRIu64, again.lease_id, again.fencing_token);
    OK(ts_lease_report_progress(back, 1, 2, "resumed", PATIENCE_MS));
    OK(ts_lease_check(back, NULL));
    OK(ts_lease_release(back, PATIENCE_MS));

    /* Without a grace there is no token. */
    ts_lease *plain = NULL;
    OK(ts_acquire(second, "session", NULL, PATIENCE_MS, &plain));
    OK(ts_lease_resume_token(plain, &t));
    CHECK(strcmp(t, "") == 0, "no grace, no token: %s", t);
    OK(ts_lease_release(plain, PATIENCE_MS));
    OK(ts_client_close(second));
    pass("detach_grace: detached, watched, re-attached with its token; wrong tokens refused");
}

/* Yield: ask, decline, then revoke. */
static void yield_requests_reach_the_holder(ts_client *c, ts_watch *w) {
    signal_t yields, lost;
    signal_init(&yields);
    signal_init(&lost);
    ts_client *holder = connect_as("wave2-printer-job");
    ts_acquire_options o = TS_ACQUIRE_OPTIONS_INIT;
    o.purpose = "long print";
    o.on_yield = on_yield;
    o.on_yield_data = &yields;
    o.on_lost = on_lost;
    o.on_lost_data = &lost;
    ts_lease *l = NULL;
    OK(ts_acquire(holder, "printer", &o, PATIENCE_MS, &l));
    ts_lease_details d;
    OK(ts_lease_get_details(l, &d));

    uint32_t asked = 99;
    OK(ts_request_yield_asked(c, "printer", 5000, "urgent page", 0, PATIENCE_MS, &asked));
    CHECK(asked == 1, "the broker asked the one holder: %" PRIu32, asked);
    signal_wait(&yields, 1, "the yield callback");
    char detail[512];
    expect_event(w, TS_EVENT_YIELD_REQUESTED, "printer", detail, sizeof detail, NULL, 0);
    CHECK(strstr(detail, "urgent page"), "the watchers see the reason: %s", detail);
    pthread_mutex_lock(&yields.lock);
    CHECK(yields.lease_id == d.lease_id && !yields.revoke && yields.within_ms == 5000 &&
              strcmp(yields.text, "wave2|urgent page") == 0,
          "the holder hears who asks and why: %s", yields.text);
    pthread_mutex_unlock(&yields.lock);

    OK(ts_lease_decline_yield(l, "almost done", PATIENCE_MS));
    expect_event(w, TS_EVENT_YIELD_DECLINED, "printer", detail, sizeof detail, NULL, 0);
    CHECK(strstr(detail, "almost done"), "the watchers see why it declined: %s", detail);
    OK(ts_lease_check(l, NULL));

    OK(ts_request_yield(c, "printer", 200, "now", TS_YIELD_REVOKE, PATIENCE_MS));
    signal_wait(&yields, 2, "the second yield callback");
    pthread_mutex_lock(&yields.lock);
    CHECK(yields.revoke, "the holder hears it is a revoke");
    pthread_mutex_unlock(&yields.lock);
    signal_wait(&lost, 1, "the revoke");
    expect_event(w, TS_EVENT_REVOKED, "printer", NULL, 0, NULL, 0);
    pthread_mutex_lock(&lost.lock);
    CHECK(lost.reason == TS_LOST_REVOKED && lost.lease_id == d.lease_id,
          "lost as revoked: %d %s", (int)lost.reason, lost.text);
    pthread_mutex_unlock(&lost.lock);
    ts_lost_reason why = TS_LOST_CONNECTION;
    EXPECT(TS_ERR_LOST, ts_lease_check(l, &why));
    CHECK(why == TS_LOST_REVOKED, "check says revoked: %d", (int)why);
    EXPECT(TS_ERR_LOST, ts_lease_release(l, PATIENCE_MS));
    EXPECT(TS_ERR_INVALID_ARGUMENT, ts_request_yield(c, "printer", 0, NULL, 0x10, PATIENCE_MS));
    asked = 99;
    OK(ts_request_yield_asked(c, "nothing-held", 0, NULL, 0, PATIENCE_MS, &asked));
    CHECK(asked == 0, "nobody holds nothing-held: %" PRIu32 " asked", asked);
    OK(ts_request_yield_asked(c, "nothing-held", 0, NULL, 0, PATIENCE_MS, NULL));
    OK(ts_client_close(holder));
    signal_destroy(&yields);
    signal_destroy(&lost);
    pass("yield: the holder's callback, a decline, a revoke (lost, revoked)");
}

/* A holder that keeps its lease alive without progress is marked stalled. */
static void a_silent_holder_is_stalled(ts_client *c, ts_watch *w) {
    ts_acquire_options o = TS_ACQUIRE_OPTIONS_INIT;
    o.stall_after_ms = 300;
    o.purpose = "hangs";
    ts_lease *l = NULL;
    OK(ts_acquire(c, "stuck", &o, PATIENCE_MS, &l));
    char state[4096];
    expect_event(w, TS_EVENT_STALLED, "stuck", NULL, 0, state, sizeof state);
    CHECK(strstr(state, "\"stalled\":true"), "the state shows it: %s", state);
    const char *names[] = {"stuck"};
    const char *json = NULL;
    OK(ts_status(c, names, 1, PATIENCE_MS, &json));
    CHECK(strstr(json, "\"stalled\":true"), "status shows it: %s", json);
    OK(ts_lease_report_progress(l, 1, 3, "moving again", PATIENCE_MS));
    expect_event(w, TS_EVENT_PROGRESS, "stuck", NULL, 0, state, sizeof state);
    CHECK(strstr(state, "\"stalled\":false"), "progress clears it: %s", state);
    OK(ts_lease_release(l, PATIENCE_MS));
    pass("stall_after: the stalled mark in watch events and status, cleared by progress");
}

/* History: the leases that ended, read entry by entry. */
static void history_lists_ended_leases(ts_client *c) {
    ts_acquire_options o = TS_ACQUIRE_OPTIONS_INIT;
    o.purpose = "for the record";
    ts_lease *l = NULL;
    OK(ts_acquire(c, "ledger", &o, PATIENCE_MS, &l));
    ts_lease_details d;
    OK(ts_lease_get_details(l, &d));
    OK(ts_lease_release(l, PATIENCE_MS));

    ts_history *h = (ts_history *)(uintptr_t)0x10;
    size_t count = 99;
    bool truncated = true;
    OK(ts_get_history(c, "ledger", 0, 0, PATIENCE_MS, &h, &count, &truncated));
    CHECK(count >= 1 && !truncated, "%zu entries, truncated %d", count, (int)truncated);
    const ts_history_entry *last = NULL;
    OK(ts_history_get_entry(h, count - 1, &last));
    CHECK(last->lease_id == d.lease_id && last->fencing_token == d.fencing_token &&
              last->ended_by == TS_EVENT_RELEASED && !last->timed_out &&
              strcmp(last->purpose, "for the record") == 0 &&
              strcmp(last->holder_name, "wave2") == 0 && last->granted_at_ms > 0 &&
              last->ended_at_ms >= last->granted_at_ms,
          "the released lease, newest last: %" PRIu64 " ended by %d", last->lease_id,
          (int)last->ended_by);
    EXPECT(TS_ERR_INVALID_ARGUMENT, ts_history_get_entry(h, count, &last));
    CHECK(last == NULL, "entry_out is NULL past the end");
    OK(ts_history_free(h));
    EXPECT(TS_ERR_INVALID_HANDLE, ts_history_free(h));
    pass("history: the released lease, newest last, read through ts_history_get_entry");
}

/* The new functions answer invalid handles with an error, not a crash. */
static void new_functions_refuse_invalid_handles(ts_client *c) {
    ts_lease *forged = (ts_lease *)(uintptr_t)0xdead0;
    ts_lease *out = NULL;
    const char *t = NULL;
    EXPECT(TS_ERR_INVALID_HANDLE, ts_reattach(NULL, "1:00:x", NULL, 10, &out));
    EXPECT(TS_ERR_INVALID_HANDLE, ts_request_yield(NULL, "x", 0, NULL, 0, 10));
    EXPECT(TS_ERR_INVALID_HANDLE, ts_lease_decline_yield(forged, NULL, 10));
    EXPECT(TS_ERR_INVALID_HANDLE, ts_lease_decline_yield(NULL, NULL, 10));
    EXPECT(TS_ERR_INVALID_HANDLE, ts_lease_detach(forged));
    EXPECT(TS_ERR_INVALID_HANDLE, ts_lease_detach(NULL));
    EXPECT(TS_ERR_INVALID_HANDLE, ts_lease_resume_token(forged, &t));
    CHECK(t == NULL, "token_out is NULL on failure");
    EXPECT(TS_ERR_INVALID_HANDLE, ts_lease_resume_token((ts_lease *)c, &t));
    EXPECT(TS_ERR_INVALID_ARGUMENT, ts_reattach(c, NULL, NULL, 10, &out));
    EXPECT(TS_ERR_INVALID_ARGUMENT, ts_request_yield(c, NULL, 0, NULL, 0, 10));
    const ts_history_entry *entry = NULL;
    EXPECT(TS_ERR_INVALID_HANDLE, ts_history_get_entry(NULL, 0, &entry));
    EXPECT(TS_ERR_INVALID_HANDLE, ts_history_get_entry((ts_history *)c, 0, &entry));
    EXPECT(TS_ERR_INVALID_HANDLE, ts_history_free(NULL));
    ts_history *h = NULL;
    EXPECT(TS_ERR_INVALID_HANDLE, ts_get_history(NULL, "x", 0, 0, 10, &h, NULL, NULL));
    EXPECT(TS_ERR_INVALID_ARGUMENT, ts_get_history(c, NULL, 0, 0, 10, &h, NULL, NULL));
    pass("the wave-2 functions: NULL, forged and wrong-kind handles are errors");
}

int main(int argc, char **argv) {
    (void)argv;
    if (argc > 1) {
        fprintf(stderr, "usage: wave2   (socket: $TURNSTILE_SOCKET)\n");
        return 64;
    }
    ts_client *c = connect_as("wave2");
    ts_watch *w = NULL;
    OK(ts_watch_open(c, NULL, 0, NULL, NULL, &w));

    options_are_versioned_by_size(c);
    permits_make_a_semaphore(c);
    a_detached_lease_is_reattached(w);
    yield_requests_reach_the_holder(c, w);
    a_silent_holder_is_stalled(c, w);
    history_lists_ended_leases(c);
    new_functions_refuse_invalid_handles(c);

    OK(ts_watch_close(w));
    OK(ts_client_close(c));
    CHECK(ts_open_handles() == 0, "every handle freed: %zu open", ts_open_handles());
    printf("wave2: all passed\n");
    return 0;
}
