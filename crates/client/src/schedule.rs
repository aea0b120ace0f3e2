//! When the device syncs next: the schedule the app's background loop follows.
//!
//! DESIGN.md section 5: sync on start and on unlock, on regained connectivity and every few
//! minutes while unlocked; retry with exponential backoff and jitter. The loop itself (timers,
//! the device) is the shell's; the rule is here, pure, so it is tested without a clock.
//!
//! # Rules
//!
//! 1. After a sync that completed, the next is [`SYNC_INTERVAL`] later.
//! 2. After the `n`th failure in a row, the next try is `RETRY_BASE * 2^(n-1)`, capped at
//!    [`SYNC_INTERVAL`], times a jitter factor in `[0.5, 1.0)` ("equal jitter": devices that lost
//!    signal together do not all come back in the same second, and none waits longer than
//!    the cap).
//! 3. While failing, the server is probed (a cheap unauthenticated request) every
//!    [`PROBE_INTERVAL`] at most, and a sync starts as soon as it answers: that is how regained
//!    connectivity is noticed without waiting out a long backoff.
//! 4. Something the user did starts a sync now, whatever the schedule says: unlocking, pressing
//!    Sync now, signing a note (it should leave while there is signal), the system saying the
//!    network is back. A success resets the failure count.
//!
//! # Invariants
//!
//! - No wait is longer than [`SYNC_INTERVAL`], so an unlocked device never goes more than
//!   five minutes without trying (the "last synced" the clinician sees stays honest).
//! - No wait after a failure is shorter than half of [`RETRY_BASE`]: a dead server is not
//!   hammered.

use std::time::Duration;

/// How often an unlocked device syncs when all is well.
pub const SYNC_INTERVAL: Duration = Duration::from_secs(5 * 60);
/// The first retry after a failure (before jitter).
pub const RETRY_BASE: Duration = Duration::from_secs(5);
/// How often, at most, the server is probed while syncs fail.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(15);

/// The failures in a row since the last completed sync, and what they imply.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncSchedule {
    failures: u32,
}

impl SyncSchedule {
    /// Failures in a row since the last completed sync.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// A sync completed: the next one is a whole interval away.
    pub fn succeeded(&mut self) -> Duration {
        self.failures = 0;
        SYNC_INTERVAL
    }

    /// A sync failed: the wait before the next try. `jitter` is a uniform draw in `[0, 1)`
    /// (values outside are clamped), mapped onto the factor `[0.5, 1.0)`.
    pub fn failed(&mut self, jitter: f64) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let doublings = (self.failures - 1).min(16);
        let backoff = RETRY_BASE
            .saturating_mul(1u32 << doublings)
            .min(SYNC_INTERVAL);
        let factor = 0.5 + 0.5 * jitter.clamp(0.0, 0.999_999);
        backoff.mul_f64(factor)
    }

    /// While failing, how long until the next probe of the server within a wait of `wait`:
    /// `None` when the wait is short enough to simply wait it out.
    pub fn probe_every(&self, wait: Duration) -> Option<Duration> {
        (self.failures > 0 && wait > PROBE_INTERVAL).then_some(PROBE_INTERVAL)
    }
}

/// A jitter draw in `[0, 1)` from the operating system's generator (for the shell's loop).
pub fn jitter() -> f64 {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        return 0.5;
    }
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_completed_sync_waits_the_whole_interval_and_resets_the_failures() {
        let mut s = SyncSchedule::default();
        s.failed(0.0);
        s.failed(0.0);
        assert_eq!(s.failures(), 2);
        assert_eq!(s.succeeded(), Duration::from_secs(300));
        assert_eq!(s.failures(), 0);
        // The first failure after a success starts again from the base.
        assert_eq!(s.failed(0.0), Duration::from_millis(2500));
    }

    #[test]
    fn failures_double_the_wait_up_to_five_minutes() {
        // Without jitter's spread (the top of the range): 5, 10, 20, 40, 80, 160, 300, 300 s.
        let mut s = SyncSchedule::default();
        let tops: Vec<u64> = (0..8)
            .map(|_| s.failed(0.999_999).as_millis() as u64)
            .collect();
        let expected_secs = [5u64, 10, 20, 40, 80, 160, 300, 300];
        for (got, want) in tops.iter().zip(expected_secs) {
            // The factor is just under 1.0: within a millisecond of the backoff.
            assert!(want * 1000 - got <= 1, "got {got} ms, want about {want} s");
        }
        // A thousand failures later the wait is still capped and the count does not wrap.
        for _ in 0..1000 {
            assert!(s.failed(0.7) <= SYNC_INTERVAL);
        }
        assert_eq!(s.failures(), 1008);
    }

    #[test]
    fn jitter_spreads_each_wait_over_its_upper_half() {
        let mut low = SyncSchedule::default();
        let mut high = SyncSchedule::default();
        assert_eq!(low.failed(0.0), Duration::from_millis(2500));
        assert_eq!(high.failed(0.5), Duration::from_millis(3750));
        // Out-of-range draws are clamped, never a zero or a doubled wait.
        assert_eq!(
            SyncSchedule::default().failed(-3.0),
            Duration::from_millis(2500)
        );
        assert!(SyncSchedule::default().failed(7.0) < RETRY_BASE);
    }

    #[test]
    fn the_server_is_probed_during_long_waits_only_while_failing() {
        let mut s = SyncSchedule::default();
        assert_eq!(s.probe_every(SYNC_INTERVAL), None, "all is well: no probes");
        s.failed(0.5);
        assert_eq!(s.probe_every(Duration::from_secs(5)), None, "short wait");
        assert_eq!(
            s.probe_every(Duration::from_secs(160)),
            Some(Duration::from_secs(15))
        );
    }

    #[test]
    fn jitter_draws_are_in_the_unit_interval_and_vary() {
        let draws: Vec<f64> = (0..64).map(|_| jitter()).collect();
        assert!(draws.iter().all(|d| (0.0..1.0).contains(d)));
        let first = draws[0];
        assert!(draws.iter().any(|d| *d != first));
    }
}
