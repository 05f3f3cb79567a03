//! Time, in one place: every wall-clock reading of the rollout executor, the watch daemon
//! and the pointers they write goes through [`Clock`]. [`Clock::start`] follows tokio's
//! clock, so under `tokio::time::pause()` (the unit tests) bakes and gates of minutes run
//! in virtual time and the times they record move with it; [`Clock::system`] reads the
//! system's wall clock every time (a long-running daemon's leases are compared across
//! hosts, so they follow the system clock's corrections).

use std::time::SystemTime;

/// A wall clock.
#[derive(Debug, Clone, Copy)]
pub enum Clock {
    /// The system's clock, read each time.
    System,
    /// `wall` at tokio's instant `at`, moving with tokio's clock: real time normally,
    /// virtual time under `tokio::time::pause()`.
    Tokio {
        wall: SystemTime,
        at: tokio::time::Instant,
    },
}

impl Clock {
    /// The system's clock.
    pub fn system() -> Clock {
        Clock::System
    }

    /// Tokio's clock from now on.
    pub fn start() -> Clock {
        Clock::at(SystemTime::now())
    }

    /// Tokio's clock, reading `wall` now (tests).
    pub fn at(wall: SystemTime) -> Clock {
        Clock::Tokio {
            wall,
            at: tokio::time::Instant::now(),
        }
    }

    pub fn now(&self) -> SystemTime {
        match self {
            Clock::System => SystemTime::now(),
            Clock::Tokio { wall, at } => *wall + at.elapsed(),
        }
    }

    /// Now, in RFC 3339 to the second (UTC).
    pub fn rfc3339(&self) -> String {
        humantime::format_rfc3339_seconds(self.now()).to_string()
    }
}
