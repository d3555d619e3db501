//! One supervised SSH session per host: establishing it (transport, handshake, host key,
//! authentication), keeping it, replacing it, and opening channels on it for forwards.

mod auth;
mod backoff;
mod chain;
mod connect;
mod error;
mod handler;
mod host;
mod keys;
mod proxy_command;
mod router;
mod transport;

pub use backoff::Backoff;
pub use chain::{Supervisors, spawn_hosts};
pub use error::{FailureClass, SessionError};
pub use host::{HostHandle, HostState, HostStatus, LastError, OpenError, Session};
pub use keys::load_key;
pub use router::{Incoming, RouteKey};
