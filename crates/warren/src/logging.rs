//! Log set-up: text or JSON lines on stderr, colour only on a terminal, russh's `log`
//! records bridged into `tracing`.

use std::io::IsTerminal;

use tracing_log::AsLog as _;
use tracing_subscriber::EnvFilter;

use crate::cli::{LogArgs, LogFormat};

/// Installs the global subscriber. The filter comes from `--log-level`, else `$RUST_LOG`,
/// else `info`. Calling it twice is harmless (the second call does nothing).
pub fn init(args: &LogArgs) {
    let filter = args
        .log_level
        .clone()
        .or_else(|| std::env::var("RUST_LOG").ok().filter(|v| !v.is_empty()))
        .unwrap_or_else(|| "info".to_string());
    // russh is chatty at info about every packet-level event; keep it at warn unless asked.
    let filter = if filter.contains("russh") {
        filter
    } else {
        format!("{filter},russh=warn")
    };
    let filter = EnvFilter::try_new(&filter).unwrap_or_else(|_| EnvFilter::new("info,russh=warn"));
    // russh logs through `log` on every packet; records the filter would drop anyway are
    // cut off at `log`'s own level check instead of each going through the bridge.
    let log_level = filter
        .max_level_hint()
        .map_or(tracing_log::log::LevelFilter::Trace, |level| level.as_log());
    let _ = tracing_log::LogTracer::builder()
        .with_max_level(log_level)
        .init();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = match args.log_format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
    };
}
