//! The broker's time base: monotonic milliseconds since start for the core
//! (a wall-clock jump changes no expiry), and the wall-clock time of each
//! core time, for display only (leases' `granted_at`, history lines).
//!
//! Core time does not run while the broker itself does not: time the
//! broker spent stopped (SIGSTOP, a suspended VM, a blocked core task) is
//! taken out of it once noticed ([`Clock::skip`]), so that a lease kept
//! alive on time never expires because the broker failed to listen
//! (etcd's lessor extends its leases after its own unavailability for the
//! same reason).
//!
//! The wall-clock time of a core time is what the wall clock read when the
//! core was at that time: core time plus an offset, which grows at every
//! skip (core time stood still, the wall clock did not) and follows the
//! wall clock wherever it parts from the monotonic one, checked every
//! [`RESYNC_EVERY_MS`] of core time: a suspend of the machine (the
//! monotonic clock, `CLOCK_MONOTONIC` on Linux, stands still through it,
//! so no skip is seen) or the wall clock set. Each change of the offset
//! is kept with the core time it applies from ([`SEGMENTS`] of them), so
//! that a time from before it keeps the wall-clock time it had: a lease
//! granted before a 20 s SIGSTOP showed a `granted_at` 20 s late, a hold
//! 20 s short. Past [`SEGMENTS`] changes, times older than the oldest
//! kept take its offset.
//!
//! It reads tokio's clock, so a test with paused tokio time moves it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::core::Millis;

/// Changes of the offset between core time and the wall clock kept (see
/// the module documentation).
const SEGMENTS: usize = 16;

/// The wall clock is compared with core time at the first entry into the
/// core this long (in core time) after the last comparison: a lease
/// granted within it after a suspend may show the wall-clock time from
/// before the suspend.
const RESYNC_EVERY_MS: Millis = 100;

/// A wall clock and the monotonic one parting by less than this is
/// rounding and the time between two reads, not a jump: ignored.
const RESYNC_THRESHOLD_MS: i64 = 1000;

/// From core time `from` on (until the next one), a core time's wall-clock
/// time is the core time plus `offset` (unix milliseconds).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Segment {
    from: Millis,
    offset: i64,
}

/// The start instant and the wall-clock time of every core time since.
#[derive(Clone, Copy)]
pub struct Clock {
    start: tokio::time::Instant,
    /// Time the broker was stopped, taken out of core time.
    skipped_ms: u64,
    /// Core time held for one entry into the core (see [`Clock::hold`]).
    held: Option<Millis>,
    /// The offsets, oldest first; `segments[..kept]` are in use, and the
    /// first applies to every time before the second.
    segments: [Segment; SEGMENTS],
    kept: usize,
    /// The core time of the last comparison with the wall clock.
    resynced_at: Millis,
    /// Reads the wall clock, in unix milliseconds (tests set their own).
    wall: fn() -> i64,
}

/// The system's wall clock in unix milliseconds (0 before 1970).
fn system_wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl Clock {
    /// Starts the time base now.
    pub fn start() -> Clock {
        Clock::start_with(system_wall_ms)
    }

    fn start_with(wall: fn() -> i64) -> Clock {
        let mut segments = [Segment::default(); SEGMENTS];
        segments[0].offset = wall();
        Clock {
            start: tokio::time::Instant::now(),
            skipped_ms: 0,
            held: None,
            segments,
            kept: 1,
            resynced_at: 0,
            wall,
        }
    }

    /// Holds core time where it is now until [`Clock::release`]: one entry
    /// into the core (a batch of requests) reads the clock once instead of
    /// at every step (issue 14: reading it was 2-4 % of a request's
    /// instructions). The core never waits within an entry, so the time
    /// it sees does not go stale. The wall clock is read only every
    /// [`RESYNC_EVERY_MS`] (the core task enters every 100 ms).
    pub fn hold(&mut self) {
        self.held = None;
        let now = self.now();
        if now >= self.resynced_at.saturating_add(RESYNC_EVERY_MS) {
            self.resync(now);
        }
        self.held = Some(now);
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

    /// Wall-clock unix milliseconds of a core time: what the wall clock
    /// read when the core was at that time (for a time before the oldest
    /// change of offset kept, with that change).
    pub fn wall_ms(&self, at: Millis) -> u64 {
        let kept = &self.segments[..self.kept];
        let offset = kept
            .iter()
            .rev()
            .find(|s| s.from <= at)
            .unwrap_or(&kept[0])
            .offset;
        u64::try_from(i64::try_from(at).unwrap_or(i64::MAX).saturating_add(offset)).unwrap_or(0)
    }

    /// The broker was not running for `stopped`: core time stands still
    /// for it, so every deadline moves that much later in real time. Core
    /// time never goes back: only the part not yet seen by the core is
    /// skipped, less a millisecond, so that the times seen before the
    /// skip (up to `seen`) and those after it never share a millisecond
    /// (their wall-clock times differ by what was skipped).
    pub fn skip(&mut self, stopped: Duration, seen: Millis) {
        self.held = None;
        let now = self.now();
        let unseen = now.saturating_sub(seen).saturating_sub(1);
        let skipped = (stopped.as_millis() as u64).min(unseen);
        if skipped == 0 {
            return;
        }
        self.skipped_ms += skipped;
        let offset = self.current_offset() + i64::try_from(skipped).unwrap_or(i64::MAX);
        self.change_offset(now - skipped, offset);
    }

    /// Compares the wall clock with core time `now` and follows it if they
    /// have parted (a suspend, the clock set).
    fn resync(&mut self, now: Millis) {
        self.resynced_at = now;
        let expected = i64::try_from(now)
            .unwrap_or(i64::MAX)
            .saturating_add(self.current_offset());
        let drift = (self.wall)().saturating_sub(expected);
        if drift.abs() >= RESYNC_THRESHOLD_MS {
            tracing::info!(
                "the wall clock is {drift} ms away from the broker's monotonic time (the \
                 machine was suspended, or the clock set): times shown from now on follow it"
            );
            self.change_offset(now, self.current_offset().saturating_add(drift));
        }
    }

    fn current_offset(&self) -> i64 {
        self.segments[self.kept - 1].offset
    }

    /// From core time `from` on, the offset is `offset`.
    fn change_offset(&mut self, from: Millis, offset: i64) {
        let segment = Segment { from, offset };
        if self.segments[self.kept - 1].from >= from {
            // Nothing was seen at a time in the last one: it is replaced.
            self.segments[self.kept - 1] = segment;
            return;
        }
        if self.kept == SEGMENTS {
            self.segments.copy_within(1.., 0);
            self.kept -= 1;
        }
        self.segments[self.kept] = segment;
        self.kept += 1;
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

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
        // A skip larger than what the core has not seen stops a
        // millisecond short of it.
        let seen = clock.now();
        tokio::time::advance(Duration::from_millis(50)).await;
        clock.skip(Duration::from_secs(10), seen);
        assert_eq!(clock.now(), seen + 1);
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

    thread_local! {
        /// The wall clock of the tests below, in unix milliseconds: one
        /// per test, each on a thread of its own (paused time runs on
        /// the test's thread).
        static WALL: Cell<i64> = const { Cell::new(0) };
    }

    fn test_wall() -> i64 {
        WALL.get()
    }

    fn set_wall(ms: i64) {
        WALL.set(ms);
    }

    fn move_wall(ms: i64) {
        WALL.set(WALL.get() + ms);
    }

    /// Moves tokio's time and the test's wall clock together, as a
    /// running machine does.
    async fn run_for(ms: u64) {
        tokio::time::advance(Duration::from_millis(ms)).await;
        move_wall(ms as i64);
    }

    /// One entry into the core: its time.
    fn enter(clock: &mut Clock) -> Millis {
        clock.hold();
        let now = clock.now();
        clock.release();
        now
    }

    #[tokio::test(start_paused = true)]
    async fn a_time_before_a_stop_keeps_its_wall_clock_time_and_one_after_it_is_real() {
        // Granted at core time 5000, then the broker is SIGSTOPped for
        // 20 s (noticed as a skip), then a waiter is granted: the first
        // grant keeps its wall-clock time (it showed 20 s late, its hold
        // 20 s short), the second has the real one, and so has now.
        set_wall(1_700_000_000_000);
        let start = test_wall();
        let mut clock = Clock::start_with(test_wall);
        run_for(5000).await;
        let granted = enter(&mut clock);
        assert_eq!(clock.wall_ms(granted), (start + 5000) as u64);
        run_for(20_000).await;
        clock.skip(Duration::from_millis(19_900), granted);
        run_for(1000).await;
        let second = enter(&mut clock);
        assert!(second < 5000 + 2000, "core time stood still: {second}");
        assert_eq!(clock.wall_ms(granted), (start + 5000) as u64);
        assert_eq!(clock.wall_ms(second), (start + 26_000) as u64);
        assert_eq!(
            clock.wall_ms(second) - clock.wall_ms(granted),
            21_000,
            "held for the real time"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_suspend_or_a_set_clock_is_followed_and_earlier_times_keep_theirs() {
        // Through a suspend the monotonic clock stands still and the wall
        // clock does not: times after it are shown at the real wall-clock
        // time (they were an hour early, forever), times before keep
        // theirs. A clock set back is followed the same way.
        set_wall(1_700_000_000_000);
        let start = test_wall();
        let mut clock = Clock::start_with(test_wall);
        run_for(2000).await;
        let before = enter(&mut clock);
        move_wall(3_600_000);
        run_for(RESYNC_EVERY_MS).await;
        let after = enter(&mut clock);
        assert_eq!(clock.wall_ms(before), (start + 2000) as u64);
        assert_eq!(clock.wall_ms(after), test_wall() as u64);
        // Set back by ten minutes.
        move_wall(-600_000);
        run_for(RESYNC_EVERY_MS).await;
        let set_back = enter(&mut clock);
        assert_eq!(clock.wall_ms(set_back), test_wall() as u64);
        assert_eq!(clock.wall_ms(after), (start + 3_600_000 + 2100) as u64);
        // Within the threshold, nothing changes: no offset is added.
        move_wall(RESYNC_THRESHOLD_MS - 1);
        run_for(RESYNC_EVERY_MS).await;
        let kept = clock.kept;
        enter(&mut clock);
        assert_eq!(clock.kept, kept);
    }

    #[tokio::test(start_paused = true)]
    async fn past_the_kept_changes_the_oldest_times_take_the_oldest_offset_kept() {
        set_wall(1_700_000_000_000);
        let mut clock = Clock::start_with(test_wall);
        let mut times = Vec::new();
        for _ in 0..SEGMENTS + 2 {
            run_for(1500).await;
            let seen = enter(&mut clock);
            times.push((seen, clock.wall_ms(seen)));
            run_for(5000).await;
            clock.skip(Duration::from_millis(4900), seen);
        }
        assert_eq!(clock.kept, SEGMENTS);
        // The last SEGMENTS - 1 times keep theirs exactly.
        for &(at, wall) in &times[times.len() - (SEGMENTS - 1)..] {
            assert_eq!(clock.wall_ms(at), wall);
        }
        // Older ones are shown later, never earlier.
        for &(at, wall) in &times[..times.len() - (SEGMENTS - 1)] {
            assert!(clock.wall_ms(at) >= wall);
        }
    }
}
