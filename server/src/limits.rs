//! Sign-in limits: how often one source address and one username may try to sign in, and
//! how much Argon2 work unauthenticated requests may have running at once.
//!
//! # Rules
//!
//! - Every enrolment and sign-in again (the routes that check a password) is counted
//!   against its source address (the TCP peer; the federation is not behind a proxy that
//!   rewrites it) and against the username it names (trimmed, lower-cased). A refresh is
//!   not: it carries a 256-bit token, costs one SHA-256, and a device retrying through a
//!   cutting network must not be turned away. Each is a GCRA quota
//!   (`governor`): a burst, then one more every period. Past either, the answer is 429
//!   `rate_limited` with `Retry-After` (whole seconds until one more is allowed), before any
//!   password is looked at. The per-username quota slows a guesser who spreads over many
//!   addresses; the lockout ([`crate::auth::MAX_FAILURES`]) still caps the guesses.
//! - A username longer than [`MAX_USERNAME_CHARS`] is refused (400) before it is looked up,
//!   counted or logged, so neither the limiter's keys nor the logs grow with what a caller
//!   sends.
//! - Argon2 runs on tokio's blocking pool, which the SQLite store also uses: at most
//!   [`SignInLimitConfig::argon2_parallel`] verifications at once ([`Argon2Gate`]); a request
//!   that gets no place within [`SignInLimitConfig::argon2_wait`] is answered 503 `busy`
//!   with `Retry-After`, quickly, instead of queueing without bound.
//! - The limiters live in this node's memory: several nodes each apply them (a guesser
//!   spread over nodes gets each node's quota; the lockout is in the database and shared).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::sync::{Semaphore, SemaphorePermit};

/// Longest username accepted at sign-in (characters).
pub const MAX_USERNAME_CHARS: usize = 64;

/// Keys a limiter keeps before it forgets those whose quota is full again.
const KEYS_BEFORE_CLEANUP: usize = 10_000;

/// A quota: `burst` requests at once, then one more every `every`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub burst: u32,
    pub every: Duration,
}

impl Rate {
    fn quota(self) -> Quota {
        let burst = NonZeroU32::new(self.burst.max(1)).expect("at least 1");
        Quota::with_period(self.every.max(Duration::from_millis(1)))
            .expect("a period above zero")
            .allow_burst(burst)
    }
}

/// The numbers of the sign-in limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignInLimitConfig {
    /// Per source address, over enrolment and sign-in again.
    pub per_address: Rate,
    /// Per username, over enrolment and sign-in again.
    pub per_username: Rate,
    /// Argon2 verifications running at once.
    pub argon2_parallel: usize,
    /// How long a sign-in waits for a place before it is answered 503.
    pub argon2_wait: Duration,
}

impl Default for SignInLimitConfig {
    /// 30 requests at once from one address, then one every 2 s (a ward behind one address
    /// enrolling at the start of a shift fits); 10 per username, then one every 30 s; 4
    /// Argon2 verifications at once (19 MiB each), waiting up to 2 s for a place.
    fn default() -> Self {
        SignInLimitConfig {
            per_address: Rate {
                burst: 30,
                every: Duration::from_secs(2),
            },
            per_username: Rate {
                burst: 10,
                every: Duration::from_secs(30),
            },
            argon2_parallel: 4,
            argon2_wait: Duration::from_secs(2),
        }
    }
}

/// Why a sign-in request was turned away before its credentials were checked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Limited {
    /// Too many requests from this address or for this username: try again after this long.
    #[error("too many sign-in requests: try again in {} s", retry_after_secs(*.0))]
    TooMany(Duration),
    /// No place for the password check in time: the server is busy.
    #[error("the server is busy checking other sign-ins: try again in a moment")]
    Busy,
    /// The username is too long to be anyone's.
    #[error("username must be at most {MAX_USERNAME_CHARS} characters")]
    UsernameTooLong,
}

/// Whole seconds to put in `Retry-After` (at least 1).
pub fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
}

/// This node's sign-in limiters (one per server, in the API's state).
pub struct SignInLimits {
    by_address: DefaultKeyedRateLimiter<IpAddr>,
    by_username: DefaultKeyedRateLimiter<String>,
    clock: DefaultClock,
}

impl std::fmt::Debug for SignInLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignInLimits").finish_non_exhaustive()
    }
}

impl SignInLimits {
    pub fn new(config: SignInLimitConfig) -> SignInLimits {
        SignInLimits {
            by_address: RateLimiter::keyed(config.per_address.quota()),
            by_username: RateLimiter::keyed(config.per_username.quota()),
            clock: DefaultClock::default(),
        }
    }

    /// Count a request from `peer` (`None`: no address known, as in tests that call the
    /// router directly; they share one key).
    pub fn check_address(&self, peer: Option<SocketAddr>) -> Result<(), Limited> {
        let ip = peer.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |p| p.ip());
        self.check(&self.by_address, ip)
    }

    /// Check the username's length, then count a sign-in for it.
    pub fn check_username(&self, username: &str) -> Result<(), Limited> {
        let name = username.trim();
        if name.chars().count() > MAX_USERNAME_CHARS {
            return Err(Limited::UsernameTooLong);
        }
        self.check(&self.by_username, name.to_lowercase())
    }

    fn check<K>(&self, limiter: &DefaultKeyedRateLimiter<K>, key: K) -> Result<(), Limited>
    where
        K: std::hash::Hash + Eq + Clone,
    {
        if limiter.len() > KEYS_BEFORE_CLEANUP {
            limiter.retain_recent();
        }
        limiter
            .check_key(&key)
            .map_err(|not_until| Limited::TooMany(not_until.wait_time_from(self.clock.now())))
    }
}

/// At most so many Argon2 verifications at once; the others wait a little, then are refused.
#[derive(Debug, Clone)]
pub struct Argon2Gate {
    permits: Arc<Semaphore>,
    wait: Duration,
}

impl Argon2Gate {
    /// The gate [`SignInLimitConfig::argon2_parallel`] and [`SignInLimitConfig::argon2_wait`]
    /// describe.
    pub fn of(config: &SignInLimitConfig) -> Argon2Gate {
        Argon2Gate::new(config.argon2_parallel, config.argon2_wait)
    }

    pub fn new(parallel: usize, wait: Duration) -> Argon2Gate {
        Argon2Gate {
            permits: Arc::new(Semaphore::new(parallel.max(1))),
            wait,
        }
    }

    /// A place for one verification, or [`Limited::Busy`] after the wait.
    pub async fn enter(&self) -> Result<SemaphorePermit<'_>, Limited> {
        match tokio::time::timeout(self.wait, self.permits.acquire()).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(Limited::Busy),
        }
    }
}

/// A username as it may appear in a log line: at most [`MAX_USERNAME_CHARS`] characters,
/// control characters and quotes escaped (a name cannot forge a line or a field).
pub fn loggable(username: &str) -> String {
    username
        .chars()
        .take(MAX_USERNAME_CHARS)
        .collect::<String>()
        .escape_debug()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tight() -> SignInLimitConfig {
        SignInLimitConfig {
            per_address: Rate {
                burst: 3,
                every: Duration::from_secs(60),
            },
            per_username: Rate {
                burst: 2,
                every: Duration::from_secs(60),
            },
            argon2_parallel: 1,
            argon2_wait: Duration::from_millis(50),
        }
    }

    #[test]
    fn an_address_past_its_burst_is_told_when_to_come_back() {
        let limits = SignInLimits::new(tight());
        let peer: SocketAddr = "192.0.2.7:5000".parse().unwrap();
        for _ in 0..3 {
            limits.check_address(Some(peer)).unwrap();
        }
        let Err(Limited::TooMany(wait)) = limits.check_address(Some(peer)) else {
            panic!("the fourth request is limited");
        };
        assert!((59..=60).contains(&retry_after_secs(wait)), "{wait:?}");
        // Another address has its own quota; the port does not matter.
        limits
            .check_address(Some("192.0.2.8:5000".parse().unwrap()))
            .unwrap();
        assert!(
            limits
                .check_address(Some("192.0.2.7:6000".parse().unwrap()))
                .is_err()
        );
    }

    #[test]
    fn a_username_is_limited_whatever_its_case_and_spaces() {
        let limits = SignInLimits::new(tight());
        limits.check_username("nurse.demo").unwrap();
        limits.check_username(" Nurse.Demo ").unwrap();
        assert!(matches!(
            limits.check_username("NURSE.DEMO"),
            Err(Limited::TooMany(_))
        ));
        limits.check_username("gp.demo").unwrap();
    }

    #[test]
    fn a_username_too_long_is_refused_before_it_is_counted() {
        let limits = SignInLimits::new(tight());
        let long = "a".repeat(MAX_USERNAME_CHARS + 1);
        for _ in 0..5 {
            assert_eq!(limits.check_username(&long), Err(Limited::UsernameTooLong));
        }
        limits
            .check_username(&"a".repeat(MAX_USERNAME_CHARS))
            .unwrap();
    }

    #[tokio::test]
    async fn the_gate_refuses_quickly_when_full() {
        let gate = Argon2Gate::of(&tight());
        let held = gate.enter().await.unwrap();
        let started = std::time::Instant::now();
        assert_eq!(gate.enter().await.err(), Some(Limited::Busy));
        assert!(started.elapsed() < Duration::from_secs(1));
        drop(held);
        let _place = gate.enter().await.unwrap();
    }

    #[test]
    fn usernames_are_logged_escaped_and_truncated() {
        assert_eq!(
            loggable("nurse\n2026 INFO forged"),
            "nurse\\n2026 INFO forged"
        );
        assert_eq!(loggable(&"x".repeat(500)).len(), MAX_USERNAME_CHARS);
        assert_eq!(loggable("a\"b"), "a\\\"b");
    }
}
