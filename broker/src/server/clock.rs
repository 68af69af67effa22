//! The broker's time base: monotonic milliseconds since start for the core
//! (a wall-clock jump changes no expiry), and the wall-clock instant that
//! corresponds to the start, for display only.
//!
//! Core time does not run while the broker itself does not: time the
//! broker spent stopped (SIGSTOP, a suspended VM, a blocked core task) is
//! taken out of it once noticed ([`Clock::skip`]), so that a lease kept
//! alive on time never expires because the broker failed to listen
//! (etcd's lessor extends its leases after its own unavailability for the
//! same reason).
//!
//! It reads tokio's clock, so a test with paused tokio time moves it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::core::Millis;

/// The start instant and its wall-clock time.
#[derive(Clone, Copy)]
pub struct Clock {
    start: tokio::time::Instant,
    wall_at_start_ms: u64,
    /// Time the broker was stopped, taken out of core time.
    skipped_ms: u64,
    /// Core time held for one entry into the core (see [`Clock::hold`]).
    held: Option<Millis>,
}

impl Clock {
    /// Starts the time base now.
    pub fn start() -> Clock {
        let wall_at_start_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Clock {
            start: tokio::time::Instant::now(),
            wall_at_start_ms,
            skipped_ms: 0,
            held: None,
        }
    }

    /// Holds core time where it is now until [`Clock::release`]: one entry
    /// into the core (a batch of requests) reads the clock once instead of
    /// at every step (issue 14: reading it was 2-4 % of a request's
    /// instructions). The core never waits within an entry, so the time
    /// it sees does not go stale.
    pub fn hold(&mut self) {
        self.held = None;
        self.held = Some(self.now());
    }

    /// Lets core time run again.
    pub fn release(&mut self) {
        self.held = None;
    }

    /// Monotonic milliseconds since start, less the time skipped.
    pub fn now(&self) -> Millis {
        if let Some(at) = self.held {
            return at;
        }
        (self.start.elapsed().as_millis() as u64).saturating_sub(self.skipped_ms)
    }

    /// The tokio instant of a core time, for sleeping until a deadline.
    pub fn instant(&self, at: Millis) -> tokio::time::Instant {
        self.start + Duration::from_millis(at.saturating_add(self.skipped_ms))
    }

    /// Wall-clock unix milliseconds of a core time (of one after the last
    /// skip: earlier times shift by what was skipped since).
    pub fn wall_ms(&self, at: Millis) -> u64 {
        self.wall_at_start_ms + at + self.skipped_ms
    }

    /// The broker was not running for `stopped`: core time stands still
    /// for it, so every deadline moves that much later in real time. Core
    /// time never goes back: only the part not yet seen by the core is
    /// skipped.
    pub fn skip(&mut self, stopped: Duration, seen: Millis) {
        self.held = None;
        let now = self.now();
        let unseen = now.saturating_sub(seen);
        self.skipped_ms += (stopped.as_millis() as u64).min(unseen);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn skipped_time_moves_deadlines_and_never_turns_core_time_back() {
        let mut clock = Clock::start();
        tokio::time::advance(Duration::from_millis(500)).await;
        let seen = clock.now();
        assert_eq!(seen, 500);
        let deadline = clock.instant(1000);
        tokio::time::advance(Duration::from_millis(3000)).await;
        // Stopped for 3 s, of which the core saw nothing.
        clock.skip(Duration::from_millis(2900), seen);
        assert_eq!(clock.now(), 600);
        assert_eq!(clock.instant(1000), deadline + Duration::from_millis(2900));
        // A skip larger than what the core has not seen stops at it.
        let seen = clock.now();
        clock.skip(Duration::from_secs(10), seen);
        assert_eq!(clock.now(), seen);
    }

    #[tokio::test(start_paused = true)]
    async fn held_time_stands_still_until_released() {
        let mut clock = Clock::start();
        tokio::time::advance(Duration::from_millis(40)).await;
        clock.hold();
        tokio::time::advance(Duration::from_millis(25)).await;
        assert_eq!(clock.now(), 40);
        clock.release();
        assert_eq!(clock.now(), 65);
    }
}
