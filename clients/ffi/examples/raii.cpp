// raii.cpp: libturnstile from C++, handles owned by std::unique_ptr, errors
// turned into exceptions. Built and run by tests/c_agent.rs:
//
//   c++ -std=c++17 -Iclients/ffi/include clients/ffi/examples/raii.cpp
//       -Ltarget/debug -lturnstile -Wl,-rpath,"$PWD/target/debug" -o raii   (one line)
//   TURNSTILE_SOCKET=/path/to/turnstile.sock ./raii

#include <cstdio>
#include <memory>
#include <stdexcept>
#include <string>

#include "turnstile.h"

namespace turnstile {

struct ClientCloser { void operator()(ts_client *c) const { ts_client_close(c); } };
struct LeaseReleaser { void operator()(ts_lease *l) const { ts_lease_release(l, 5000); } };
struct WatchCloser { void operator()(ts_watch *w) const { ts_watch_close(w); } };
using Client = std::unique_ptr<ts_client, ClientCloser>;
using Lease = std::unique_ptr<ts_lease, LeaseReleaser>;
using Watch = std::unique_ptr<ts_watch, WatchCloser>;

struct Error : std::runtime_error {
    ts_error code;
    Error(ts_error e)
        : std::runtime_error(std::string(ts_error_name(e)) + ": " + ts_last_error_message()), code(e) {}
};

static void check(ts_error e) {
    if (e != TS_OK) throw Error(e);
}

Client connect(const char *name) {
    ts_client *c = nullptr;
    check(ts_connect(nullptr, name, 5000, &c));
    return Client(c);
}

Lease acquire(ts_client *c, const char *resource, uint32_t flags, const char *purpose) {
    ts_acquire_options o;
    check(ts_acquire_options_init(&o, sizeof o));
    o.flags = flags;
    o.purpose = purpose;
    o.on_queue = [](void *, const ts_queue_update *q) -> int32_t {  // captureless lambda
        std::printf("position %u\n", q->position);
        return 0;
    };
    ts_lease *l = nullptr;
    check(ts_acquire(c, resource, &o, TS_WAIT_FOREVER, &l));
    return Lease(l);
}

}  // namespace turnstile

int main() {
    try {
        auto client = turnstile::connect("raii.cpp");
        const char *names[] = {"cpp"};
        ts_watch *w = nullptr;
        turnstile::check(ts_watch_open(client.get(), names, 1, nullptr, nullptr, &w));
        turnstile::Watch watch(w);
        ts_watch_event ev;
        turnstile::check(ts_watch_next(watch.get(), 30000, &ev));  // the snapshot
        {
            auto lease = turnstile::acquire(client.get(), "cpp", 0, "c++ job");
            turnstile::check(ts_lease_report_progress(lease.get(), 1, 2, "half way", 5000));
            // A second exclusive request from the same program is refused at once.
            try {
                turnstile::acquire(client.get(), "cpp", TS_ACQUIRE_NO_WAIT, "again");
                std::puts("unexpected: granted twice");
                return 1;
            } catch (const turnstile::Error &e) {
                if (e.code != TS_ERR_BUSY) throw;
                std::printf("busy as expected: %s\n", e.what());
            }
        }  // released here
        int granted = 0, released = 0;
        while (!released) {
            turnstile::check(ts_watch_next(watch.get(), 30000, &ev));
            granted |= ev.kind == TS_EVENT_GRANTED;
            released |= ev.kind == TS_EVENT_RELEASED;
        }
        std::printf("watched: granted %d, released %d\n", granted, released);
        std::puts("raii: ok");
        return 0;
    } catch (const std::exception &e) {
        std::fprintf(stderr, "raii: %s\n", e.what());
        return 1;
    }
}
