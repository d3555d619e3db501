//! The forward kinds — `local` (-L), `remote` (-R), `dynamic` (-D) and `remote-dynamic`
//! (-R PORT), the last two proxies that speak SOCKS and HTTP CONNECT (`proxy`) — each carrying
//! its connections over its host's session; their life from bind to drain (`lifecycle`); and
//! what they share: the context a forward runs in, listeners, copying, counters, readiness.

pub mod copy;
pub mod dynamic;
pub mod http_connect;
pub mod lifecycle;
pub mod listener;
pub mod local;
pub mod probe;
pub mod proxy;
pub mod remote;
pub mod remote_dynamic;
pub mod socks;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::warn;

use crate::config::{BindAddr, Endpoint, ForwardConfig};
use crate::session::HostHandle;

/// What a running forward of any kind works with.
#[derive(Clone)]
pub struct Context {
    /// The forward: settings, status, counters.
    pub forward: ForwardRuntime,
    /// The supervisor of its host, whose session carries it.
    pub host: HostHandle,
    /// Fires to stop accepting (a remote forward cancels its listener).
    pub stop: CancellationToken,
    /// Fires to close its open connections.
    pub cut: CancellationToken,
    /// Tracks connection tasks, so that shutdown can let them finish.
    pub connections: TaskTracker,
}

/// Per-forward counters, shared by its accept loop and connections, read by status.
#[derive(Debug, Default)]
pub struct Counters {
    /// Connections open now.
    pub active: AtomicU64,
    /// Connections accepted so far.
    pub total: AtomicU64,
    /// Bytes from the ingress side towards the egress.
    pub bytes_in: AtomicU64,
    /// Bytes from the egress side back to the ingress.
    pub bytes_out: AtomicU64,
    /// Connections refused because `max_connections` were open.
    pub refused: AtomicU64,
    /// The last connection was refused: the next refusal is not logged again (one line per
    /// burst); cleared by the next connection admitted.
    refusing: AtomicBool,
}

impl Counters {
    /// Counts one connection as active until the returned guard drops, or refuses it (`None`,
    /// counted in `refused`) when `limit` connections are open already. Called by the one
    /// task that accepts for the forward, so the check and the count cannot interleave.
    pub fn admit(self: &Arc<Self>, limit: Option<u32>) -> Option<ActiveGuard> {
        if let Some(limit) = limit
            && self.active.load(Ordering::Relaxed) >= u64::from(limit)
        {
            self.refused.fetch_add(1, Ordering::Relaxed);
            if !self.refusing.swap(true, Ordering::Relaxed) {
                warn!(
                    max_connections = limit,
                    "forward full: connections refused until one closes"
                );
            }
            return None;
        }
        self.refusing.store(false, Ordering::Relaxed);
        self.total.fetch_add(1, Ordering::Relaxed);
        self.active.fetch_add(1, Ordering::Relaxed);
        Some(ActiveGuard(self.clone()))
    }
}

/// Decrements `active` on drop.
#[derive(Debug)]
pub struct ActiveGuard(Arc<Counters>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Whether a forward can carry connections now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardState {
    /// Carrying connections (its session is up and, for a remote forward, the server listens).
    Ready,
    /// Waiting for its session (local and dynamic ingresses keep accepting meanwhile).
    Waiting,
    /// Something failed for this forward alone (for example the server refused its listener).
    Failed,
}

/// Whether a forward carries connections now, from its own state and its host's: the one
/// rule behind status, `STATUS=` and readiness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// Connections are carried.
    Ready,
    /// Waiting for its session (or, for a remote forward, for the server's listener).
    Waiting,
    /// Failed on its own (an ingress that cannot be bound, a listener the server refused).
    Failed,
}

impl Readiness {
    /// The word status shows.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ready => "ready",
            Self::Waiting => "waiting",
            Self::Failed => "failed",
        }
    }
}

/// What a forward reports about itself beyond its host's state.
#[derive(Debug, Clone)]
pub struct ForwardStatus {
    /// Own state; a local or dynamic forward follows its host and stays `Waiting` here.
    pub state: ForwardState,
    /// The last error of this forward alone.
    pub last_error: Option<String>,
    /// For a remote forward: the listener as the server bound it (the real port for port 0).
    pub remote_listen: Option<Endpoint>,
    /// The egress probe's state, for a forward with `probe_interval` (after its first probe).
    pub probe: Option<ProbeStatus>,
}

/// What the last probes of a forward's egress found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeStatus {
    /// Whether the egress answers.
    pub state: ProbeState,
    /// Since when it has been in this state.
    pub since: std::time::SystemTime,
    /// Why the last probe failed, while failing.
    pub last_error: Option<String>,
}

/// Whether a forward's egress answers its probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeState {
    /// It answers.
    Ok,
    /// It does not.
    Failing,
}

impl ProbeState {
    /// `ok` or `failing`, as status shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Failing => "failing",
        }
    }
}

/// A running forward: its settings, where it actually listens, and its counters.
#[derive(Debug, Clone)]
pub struct ForwardRuntime {
    /// The forward as configured.
    pub config: ForwardConfig,
    /// The ingress as bound (for a local or dynamic forward).
    pub bound: Option<BindAddr>,
    /// Traffic counters.
    pub counters: Arc<Counters>,
    /// Own state (remote forwards; failures).
    pub status: Arc<Mutex<ForwardStatus>>,
}

impl ForwardRuntime {
    /// A forward that has not started yet.
    pub fn new(config: ForwardConfig, bound: Option<BindAddr>) -> Self {
        Self {
            config,
            bound,
            counters: Arc::new(Counters::default()),
            status: Arc::new(Mutex::new(ForwardStatus {
                state: ForwardState::Waiting,
                last_error: None,
                remote_listen: None,
                probe: None,
            })),
        }
    }

    /// A copy of its own status.
    pub fn status(&self) -> ForwardStatus {
        self.status
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Changes its own status.
    pub fn set_status(&self, f: impl FnOnce(&mut ForwardStatus)) {
        f(&mut self.status.lock().unwrap_or_else(PoisonError::into_inner));
    }

    /// Whether it carries connections, given whether its host's session is up. A local or
    /// dynamic ingress follows its host; one on the server (remote, remote-dynamic) also
    /// needs the server's listener.
    pub fn readiness(&self, host_up: bool) -> Readiness {
        let on_server = self.config.spec.remote_listen().is_some();
        match self.status().state {
            ForwardState::Failed => Readiness::Failed,
            ForwardState::Ready if on_server && host_up => Readiness::Ready,
            _ if on_server => Readiness::Waiting,
            _ if host_up => Readiness::Ready,
            _ => Readiness::Waiting,
        }
    }
}
