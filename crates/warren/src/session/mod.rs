//! One supervised SSH session per host: establishing it (transport, handshake, host key,
//! authentication), keeping it, replacing it, and opening channels on it for forwards.

mod algorithms;
mod auth;
mod backoff;
mod chain;
mod connect;
mod counters;
mod error;
mod handle;
mod handler;
mod kbd_interactive;
mod keys;
mod live;
mod proxy_command;
mod router;
mod state;
mod supervisor;
mod transport;

#[cfg(test)]
mod proptests;

pub use backoff::Backoff;
pub use chain::{HostChanges, Supervisors};
pub use counters::{CLASSES, HostCounters, LossReason, OpenFailure};
pub use error::{FailureClass, SessionError};
pub use handle::HostHandle;
pub use keys::load_key;
pub use live::{OpenError, Session};
pub use router::{Incoming, RouteKey};
pub use state::{HostState, HostStatus, LastError};
