//! What a host's supervisor publishes about it: its state, since when, its last error and how
//! many sessions it has lost.

use std::time::{Duration, SystemTime};

use super::error::FailureClass;

/// The state of a host, as status shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostState {
    /// An on-demand host with no session, waiting for a connection to need one.
    Idle,
    /// An attempt is in progress.
    Connecting,
    /// The session is up.
    Up,
    /// Waiting before the next attempt, after a network failure.
    Backoff {
        /// When the next attempt starts.
        retry_at: SystemTime,
    },
    /// The last attempt failed in a way that needs a human (host key, auth, config);
    /// still retried, at `reconnect_max`.
    Failed {
        /// When the next attempt starts.
        retry_at: SystemTime,
    },
}

impl HostState {
    /// Every state's name, as status and the metrics show them.
    pub const NAMES: [&'static str; 5] = ["idle", "connecting", "up", "backoff", "failed"];

    /// Whether the host's forwards carry connections in this state: with a session up, or
    /// idle on demand (a connection opens one).
    pub fn carries_forwards(&self) -> bool {
        matches!(self, Self::Up | Self::Idle)
    }

    /// Its name.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::Connecting => "connecting",
            Self::Up => "up",
            Self::Backoff { .. } => "backoff",
            Self::Failed { .. } => "failed",
        }
    }

    /// Waiting `delay` before the next attempt: `Failed` when the failure needs a human,
    /// else `Backoff`.
    pub fn waiting(delay: Duration, needs_human: bool) -> Self {
        // Delays are at most 30 days (config::MAX_DURATION); checked all the same.
        let now = SystemTime::now();
        let retry_at = now.checked_add(delay).unwrap_or(now);
        if needs_human {
            Self::Failed { retry_at }
        } else {
            Self::Backoff { retry_at }
        }
    }
}

/// The last error of a host, with its class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastError {
    /// network, host-key, auth or config.
    pub class: FailureClass,
    /// The whole error chain, without secrets.
    pub message: String,
}

/// Everything status needs about one host.
#[derive(Debug, Clone)]
pub struct HostStatus {
    /// Current state.
    pub state: HostState,
    /// Since when the host has been up, or not up.
    pub since: SystemTime,
    /// The error that ended the last attempt or session, until a session is up again.
    pub last_error: Option<LastError>,
    /// Sessions lost or replaced so far.
    pub reconnects: u64,
    /// What the current session negotiated, while one is up.
    pub session: Option<SessionInfo>,
}

/// What a session negotiated with its server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionInfo {
    /// Key exchange method.
    pub kex: String,
    /// Cipher (client to server).
    pub cipher: String,
    /// MAC (client to server); `implicit` with an AEAD cipher.
    pub mac: String,
    /// The server's host key: `ALGORITHM SHA256:...`.
    pub host_key: String,
    /// The server's identification string (`SSH-2.0-OpenSSH_10.2`).
    pub server_version: String,
}

impl SessionInfo {
    /// Whether the key exchange resists a future quantum computer (ML-KEM or NTRU Prime
    /// hybrids), as OpenSSH 10.1 warns when it does not.
    pub fn post_quantum(&self) -> bool {
        self.kex.starts_with("mlkem") || self.kex.starts_with("sntrup")
    }
}

impl HostStatus {
    /// A host whose first attempt starts now.
    pub fn connecting() -> Self {
        Self {
            state: HostState::Connecting,
            since: SystemTime::now(),
            last_error: None,
            reconnects: 0,
            session: None,
        }
    }

    /// Moves to `state`; `since` changes when the host goes up or down, and the error is
    /// kept until a session is up.
    pub fn enter(&mut self, state: HostState, error: Option<LastError>) {
        let was_up = self.state == HostState::Up;
        let is_up = state == HostState::Up;
        if was_up != is_up {
            self.since = SystemTime::now();
        }
        self.state = state;
        if is_up {
            self.last_error = None;
        } else {
            self.session = None;
            if error.is_some() {
                self.last_error = error;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_moves_only_when_up_changes_and_the_error_stays_until_up() {
        let mut s = HostStatus::connecting();
        let t0 = s.since;
        let e = LastError {
            class: FailureClass::Network,
            message: "refused".into(),
        };
        s.enter(
            HostState::waiting(Duration::from_secs(1), false),
            Some(e.clone()),
        );
        assert_eq!(s.since, t0, "not up before, not up now");
        s.enter(HostState::Connecting, None);
        assert_eq!(s.last_error, Some(e), "kept while not up");
        s.enter(HostState::Up, None);
        assert!(s.since >= t0);
        assert_eq!(s.last_error, None);
        assert!(matches!(
            HostState::waiting(Duration::from_secs(5), true),
            HostState::Failed { .. }
        ));
    }
}
