//! Fuzzes the configuration file: TOML, stage one (raw structs with positions) and stage two
//! (validation), as `warren check` runs them, on text alone (no file is read: inputs that
//! mention `ssh_config`, which names a file to read, are skipped).
//!
//! Properties: nothing panics; every problem has a line and column inside the text, in order;
//! an accepted config holds only settings the daemon can use (durations up to 30 days and
//! not zero, reconnect_min <= reconnect_max, keepalive count 1-1000, forwards on known hosts).

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use warren::config::{Config, ConfigError, Env, MAX_DURATION};

fuzz_target!(|data: &[u8]| {
    let Ok(src) = std::str::from_utf8(data) else {
        return;
    };
    if src.contains("ssh_config") {
        return;
    }
    let env = Env {
        home: Some("/nonexistent/home".into()),
        user: "op".into(),
        is_root: false,
        runtime_directory: Some("/run/warren".into()),
        xdg_runtime_dir: None,
        xdg_config_home: None,
    };
    match Config::parse(src, Path::new("/etc/warren/w.toml"), &env) {
        Err(ConfigError::Invalid { problems, .. }) => {
            assert!(!problems.is_empty());
            let lines: Vec<&str> = src.split('\n').collect();
            let mut last = (0, 0);
            for p in &problems {
                assert!(
                    (1..=lines.len()).contains(&p.line),
                    "{p} in {} lines",
                    lines.len()
                );
                let width = lines[p.line - 1].chars().count();
                assert!(
                    (1..=width + 1).contains(&p.column),
                    "{p} in a line of {width}"
                );
                assert!((p.line, p.column) >= last, "problems out of order");
                last = (p.line, p.column);
            }
        }
        Err(e) => panic!("unexpected error {e}"),
        Ok(config) => {
            assert!(config.daemon.shutdown_grace <= MAX_DURATION);
            for h in config.hosts.values() {
                for d in [
                    h.connect_timeout,
                    h.keepalive_interval,
                    h.reconnect_min,
                    h.reconnect_max,
                ] {
                    assert!(!d.is_zero() && d <= MAX_DURATION, "{d:?}");
                }
                assert!(h.reconnect_min <= h.reconnect_max);
                assert!((1..=1000).contains(&h.keepalive_count_max));
                assert_ne!(h.port, 0);
            }
            for f in &config.forwards {
                assert!(config.hosts.contains_key(&f.host), "{}", f.host);
                let _ = (f.spec.listen_text(), f.spec.connect_text());
            }
            let _ = config.active_hosts();
        }
    }
});
