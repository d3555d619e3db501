//! One function per subcommand; each returns the process exit code.

mod check;
mod connect;
mod reload;
mod run;
mod status;

pub use check::check;
pub use connect::{connect, to_toml as connect_config};
pub use reload::{reconnect, reload};
pub use run::run;
pub use status::status;

use std::path::PathBuf;

use crate::cli::ConfigArg;
use crate::config::Env;

/// The config file to use: `-c`, `$WARREN_CONFIG` (via clap), else the default of SPEC section 1.
pub fn config_path(arg: &ConfigArg, env: &Env) -> PathBuf {
    arg.config
        .clone()
        .unwrap_or_else(|| env.default_config_file())
}
