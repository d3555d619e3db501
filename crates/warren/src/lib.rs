//! warren: an always-on SSH tunnel daemon. The library holds every behaviour;
//! the `warren` binary only parses the command line and calls in here.
#![forbid(unsafe_code)]

pub mod cli;
pub mod commands;
pub mod config;
pub mod control;
pub mod daemon;
pub mod forward;
pub mod hostkey;
pub mod logging;
pub mod secret;
pub mod session;
pub mod systemd;
