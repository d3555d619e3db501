//! One supervised SSH session per host: establishing it (transport, handshake, host key,
//! authentication), keeping it, replacing it, and opening channels on it for forwards.

mod auth;
mod backoff;
mod chain;
mod connect;
mod error;
mod handler;
mod host;
mod router;
mod transport;

#[cfg(test)]
mod proptests;

pub use auth::load_key;
pub use backoff::Backoff;
pub use chain::{Supervisors, spawn_hosts};
pub use error::{FailureClass, SessionError};
pub use host::{HostHandle, HostState, HostStatus, LastError, OpenError, Session};
pub use router::{Incoming, RouteKey};
