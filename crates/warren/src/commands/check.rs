//! `warren check`: validate the file, list every problem, bind and connect nothing.

use std::io::Write;

use crate::cli::{ConfigArg, exit};
use crate::config::{Config, Env};

/// Validates the configuration; prints a summary on `out` or every problem on `err`.
pub fn check(arg: &ConfigArg, env: &Env, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    let path = super::config_path(arg, env);
    match Config::load_with(&path, env) {
        Ok(cfg) => {
            let _ = writeln!(
                out,
                "{}: ok ({} hosts, {} forwards)",
                path.display(),
                cfg.hosts.len(),
                cfg.forwards.len()
            );
            exit::OK
        }
        Err(e) => {
            for line in e.lines() {
                let _ = writeln!(err, "{line}");
            }
            exit::CONFIG
        }
    }
}
