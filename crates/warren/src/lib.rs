//! warren: an always-on SSH tunnel daemon. The library holds every behaviour; the `warren`
//! binary only parses the command line and calls in here.
//!
//! # Module map
//!
//! From the command line down to the bytes:
//!
//! - [`cli`]: the command line (clap types; warren(1) and the completions come from them)
//!   and the exit codes. [`commands`]: one function per subcommand.
//! - [`config`]: the configuration file in two stages, raw TOML (`raw`) to a validated,
//!   typed [`config::Config`] (`validate/`: daemon, hosts, routes, ssh_config overlay,
//!   forwards); `diff` says which forwards a reload changes; `ssh_config/` reads OpenSSH's
//!   client config; `names`, `destination`, `address`, `duration` are the value grammars.
//! - [`daemon`]: binds every ingress, starts the host supervisors and the forwards, applies
//!   reloads (reporting what the supervisors and the forwards did), shuts down in order.
//! - [`session`]: one supervised SSH session per host. `supervisor` (the task; it takes a
//!   `Connector`, so its timing is tested in paused time), `handle` (what forwards hold),
//!   `state`, `live` (an established session), `chain` (the set of supervisors, jump chains
//!   sharing hops); bringing a session up: `connect`, `transport`, `proxy_command`, `auth`,
//!   `keys`, `handler` (host keys, server-opened channels); `router` (remote-forward channels).
//! - [`hostkey`]: known_hosts (with accept-new), host certificates, pins, the verify decision.
//! - [`forward`]: the forward kinds (`local`, `remote`, `dynamic` with `socks`), their
//!   `lifecycle` (bind, rebind, start, stop, drain), `listener`, `copy` (the data path),
//!   `probe` (egress checks), counters and readiness.
//! - [`control`]: the control socket, its typed `protocol` and the `status` document.
//! - [`metrics`]: the Prometheus families, read at scrape time from the host counters
//!   (`session::counters`) and forward counters, and their `http` endpoint; [`stats`] is
//!   the lock-free histogram they use.
//! - [`systemd`]: sd_notify (ready, reloading, stopping, status) and the watchdog.
//!   [`handover`]: sockets passed in by systemd's socket activation or by the warren an
//!   upgrade replaces; [`upgrade`]: handing them to the new process.
//! - [`logging`], [`secret`]: tracing set-up; secrets that never print.
#![forbid(unsafe_code)]

pub mod cli;
pub mod commands;
pub mod config;
pub mod control;
pub mod daemon;
pub mod forward;
pub mod handover;
pub mod hostkey;
pub mod logging;
pub mod metrics;
pub mod secret;
pub mod session;
pub mod stats;
pub mod systemd;
pub mod upgrade;
