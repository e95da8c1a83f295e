//! Wall-clock time in Unix milliseconds, the one unit the ledger stores, behind a handle the
//! private tier is given in its config: the system clock in service, a [`ManualClock`] in tests
//! (lockouts, confirmation windows, reprint windows, mail dates), so tests move time instead of
//! sleeping.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

/// Now, in milliseconds since the Unix epoch, from the system clock.
pub fn now_ms() -> i64 {
    let now = time::OffsetDateTime::now_utc();
    i64::try_from(now.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

/// A source of the current time.
pub trait TimeSource: Send + Sync + std::fmt::Debug {
    /// Now, in milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
}

/// The system clock.
#[derive(Debug)]
struct SystemTime;

impl TimeSource for SystemTime {
    fn now_ms(&self) -> i64 {
        now_ms()
    }
}

/// A clock that moves only when told to.
#[derive(Debug)]
pub struct ManualClock {
    now_ms: AtomicI64,
}

impl ManualClock {
    /// Set the time, in Unix milliseconds.
    pub fn set_ms(&self, now_ms: i64) {
        self.now_ms.store(now_ms, Ordering::SeqCst);
    }

    /// Move the time forward by `ms` milliseconds.
    pub fn advance_ms(&self, ms: i64) {
        self.now_ms.fetch_add(ms, Ordering::SeqCst);
    }
}

impl TimeSource for ManualClock {
    fn now_ms(&self) -> i64 {
        self.now_ms.load(Ordering::SeqCst)
    }
}

/// The clock handle the server reads time from; cheap to clone.
#[derive(Clone, Debug)]
pub struct Clock(Arc<dyn TimeSource>);

impl Default for Clock {
    fn default() -> Self {
        Clock::system()
    }
}

impl Clock {
    /// The system clock.
    pub fn system() -> Clock {
        Clock(Arc::new(SystemTime))
    }

    /// A manual clock starting at `start_ms` (Unix ms), and the handle that moves it.
    pub fn manual(start_ms: i64) -> (Clock, Arc<ManualClock>) {
        let manual = Arc::new(ManualClock {
            now_ms: AtomicI64::new(start_ms),
        });
        (Clock(Arc::clone(&manual) as Arc<dyn TimeSource>), manual)
    }

    /// Any other source of time.
    pub fn from_source(source: Arc<dyn TimeSource>) -> Clock {
        Clock(source)
    }

    /// Now, in milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> i64 {
        self.0.now_ms()
    }

    /// Now, in seconds since the Unix epoch.
    pub fn now_unix(&self) -> i64 {
        self.now_ms().div_euclid(1000)
    }

    /// Today's date in UTC.
    pub fn today_utc(&self) -> time::Date {
        let nanos = i128::from(self.now_ms()) * 1_000_000;
        time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
            .date()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told() {
        let (clock, hand) = Clock::manual(86_400_000);
        assert_eq!(clock.now_ms(), 86_400_000);
        assert_eq!(clock.today_utc().to_string(), "1970-01-02");
        hand.advance_ms(1_500);
        assert_eq!(clock.now_ms(), 86_401_500);
        assert_eq!(clock.now_unix(), 86_401);
        hand.set_ms(0);
        assert_eq!(clock.clone().now_ms(), 0);
    }

    #[test]
    fn the_system_clock_is_near_now() {
        let delta = Clock::system().now_ms() - now_ms();
        assert!(delta.abs() < 5_000, "{delta}");
    }
}
