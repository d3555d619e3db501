//! What a host's supervisor and its channel opens count, for the metrics endpoint: failed
//! attempts by class, sessions lost by reason, keepalive round trips and channel opens.
//! Atomics only (the data path never waits for a scrape).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::error::FailureClass;
use crate::stats::Histogram;

/// Why a session that was up ended without being asked to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LossReason {
    /// Keepalives went unanswered.
    Keepalive,
    /// Nothing could be written to the server for the inactivity timeout.
    WriteStall,
    /// The server or the network closed it.
    Closed,
    /// The jump hop it ran through went down.
    Hop,
}

impl LossReason {
    /// Every reason, in the order the counters keep them.
    pub const ALL: [Self; 4] = [Self::Keepalive, Self::WriteStall, Self::Closed, Self::Hop];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Keepalive => "keepalive",
            Self::WriteStall => "write-stall",
            Self::Closed => "closed",
            Self::Hop => "hop",
        }
    }
}

/// Why a channel open for a connection failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenFailure {
    /// No session within `connect_timeout`.
    NoSession,
    /// The server refused (its connect to the egress failed, or policy).
    Refused,
    /// The server did not answer within `connect_timeout`.
    Timeout,
    /// Every session tried ended first.
    SessionEnded,
}

impl OpenFailure {
    /// Every reason, in the order the counters keep them.
    pub const ALL: [Self; 4] = [
        Self::NoSession,
        Self::Refused,
        Self::Timeout,
        Self::SessionEnded,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoSession => "no-session",
            Self::Refused => "refused",
            Self::Timeout => "timeout",
            Self::SessionEnded => "session-ended",
        }
    }
}

/// The counters of one host.
#[derive(Debug, Default)]
pub struct HostCounters {
    connect_failures: [AtomicU64; 4],
    sessions_lost: [AtomicU64; 4],
    open_failures: [AtomicU64; 4],
    /// Keepalive round trips.
    pub keepalive_rtt: Histogram,
    /// Time from asking for a channel to having it, for connections.
    pub channel_open: Histogram,
    /// The last round trip, in microseconds (0 before the first).
    last_rtt_micros: AtomicU64,
}

fn class_index(class: FailureClass) -> usize {
    match class {
        FailureClass::Network => 0,
        FailureClass::HostKey => 1,
        FailureClass::Auth => 2,
        FailureClass::Config => 3,
    }
}

/// The failure classes in counter order.
pub const CLASSES: [FailureClass; 4] = [
    FailureClass::Network,
    FailureClass::HostKey,
    FailureClass::Auth,
    FailureClass::Config,
];

fn bump(counters: &[AtomicU64; 4], i: usize) {
    if let Some(c) = counters.get(i) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

fn read(counters: &[AtomicU64; 4], i: usize) -> u64 {
    counters.get(i).map_or(0, |c| c.load(Ordering::Relaxed))
}

impl HostCounters {
    /// An attempt failed with `class`.
    pub fn connect_failed(&self, class: FailureClass) {
        bump(&self.connect_failures, class_index(class));
    }

    /// Attempts failed with `class` so far.
    pub fn connect_failures(&self, class: FailureClass) -> u64 {
        read(&self.connect_failures, class_index(class))
    }

    /// A session was lost for `reason`.
    pub fn session_lost(&self, reason: LossReason) {
        bump(&self.sessions_lost, reason as usize);
    }

    /// Sessions lost for `reason` so far.
    pub fn sessions_lost(&self, reason: LossReason) -> u64 {
        read(&self.sessions_lost, reason as usize)
    }

    /// A channel open failed for `reason`.
    pub fn open_failed(&self, reason: OpenFailure) {
        bump(&self.open_failures, reason as usize);
    }

    /// Channel opens failed for `reason` so far.
    pub fn open_failures(&self, reason: OpenFailure) -> u64 {
        read(&self.open_failures, reason as usize)
    }

    /// A keepalive round trip took `rtt`.
    pub fn round_trip(&self, rtt: Duration) {
        self.keepalive_rtt.observe(rtt);
        let micros = u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX).max(1);
        self.last_rtt_micros.store(micros, Ordering::Relaxed);
    }

    /// The last keepalive round trip, if one was measured.
    pub fn last_rtt(&self) -> Option<Duration> {
        match self.last_rtt_micros.load(Ordering::Relaxed) {
            0 => None,
            micros => Some(Duration::from_micros(micros)),
        }
    }
}
