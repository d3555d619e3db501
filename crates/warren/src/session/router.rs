//! Routing of server-opened channels (`forwarded-tcpip`, `forwarded-streamlocal`) to the
//! remote forward that asked for them. The handler runs inside russh's session loop, so a
//! route is a non-blocking hand-off into a bounded queue; no route or a full queue rejects.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use russh::Channel;
use russh::client::{ChannelOpenHandle, Msg};
use tokio::sync::mpsc;

/// How the server names a remote forward's listener in a channel open.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RouteKey {
    /// The bind address as requested and the port as bound.
    Tcp(String, u32),
    /// The socket path.
    Unix(String),
}

/// A channel the server opened for a remote forward, not yet accepted.
pub struct Incoming {
    /// The channel (data flows once `reply` accepts it).
    pub channel: Channel<Msg>,
    /// Accept or reject; dropping it rejects.
    pub reply: ChannelOpenHandle,
    /// Who connected to the remote ingress, as the server reports it.
    pub originator: String,
}

/// A channel no remote forward took.
pub enum Unrouted {
    /// For a listener no remote forward of this host requested.
    NoRoute(Box<Incoming>),
    /// Its forward has too many channels waiting for their egress.
    Saturated(Box<Incoming>),
}

/// The routes of one host, shared by its sessions' handlers and its remote forwards.
#[derive(Default)]
pub struct RemoteRouter {
    routes: Mutex<HashMap<RouteKey, mpsc::Sender<Incoming>>>,
}

impl RemoteRouter {
    /// Sends channels for `key` to `queue` (replacing an older route for the same key).
    pub fn register(&self, key: RouteKey, queue: mpsc::Sender<Incoming>) {
        self.lock().insert(key, queue);
    }

    /// Forgets `key`.
    pub fn unregister(&self, key: &RouteKey) {
        self.lock().remove(key);
    }

    /// Hands `incoming` to its forward without waiting; gives it back when there is no route
    /// (a listener warren never asked for) or the forward's queue is full.
    pub fn route(&self, key: &RouteKey, incoming: Incoming) -> Result<(), Unrouted> {
        let Some(queue) = self.lock().get(key).cloned() else {
            return Err(Unrouted::NoRoute(Box::new(incoming)));
        };
        queue.try_send(incoming).map_err(|e| match e {
            mpsc::error::TrySendError::Full(i) | mpsc::error::TrySendError::Closed(i) => {
                Unrouted::Saturated(Box::new(i))
            }
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<RouteKey, mpsc::Sender<Incoming>>> {
        self.routes.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A shared router.
pub type SharedRouter = Arc<RemoteRouter>;
