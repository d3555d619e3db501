//! Fuzzes the OpenSSH client config reader: lexer, directives, `Host`/`Match` patterns, and
//! the resolution of a few host names, as `[daemon] ssh_config` uses them. Inputs with an
//! `Include` (which reads files) are skipped, so a run touches no file.
//!
//! Properties: nothing panics; an error names a line of the text; resolved values are in
//! range (no port 0, times up to 30 days) and each time reads back through warren's own
//! duration syntax, as the TOML side receives it.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use warren::config::ssh_config::{SshConfig, SshConfigError};
use warren::config::{MAX_DURATION, format_duration, parse_duration};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if text.to_ascii_lowercase().contains("include") {
        return;
    }
    let home = Path::new("/nonexistent/home");
    match SshConfig::parse(text, &home.join(".ssh/config"), Some(home)) {
        Err(SshConfigError::Invalid { line, .. }) => {
            assert!((1..=text.lines().count()).contains(&line), "line {line}");
        }
        Err(e) => panic!("unexpected error {e}"),
        Ok(config) => {
            // The names asked for: fixed ones and the words of the text itself, so that
            // patterns written in it get to match.
            let words = text.split_whitespace().filter(|w| w.len() < 64).take(8);
            for host in ["a", "db.example.com", "10.0.0.1"].into_iter().chain(words) {
                let r = config.resolve(host);
                assert_ne!(r.port, Some(0));
                for d in [r.server_alive_interval, r.connect_timeout]
                    .into_iter()
                    .flatten()
                {
                    assert!(d <= MAX_DURATION, "{d:?}");
                    assert_eq!(parse_duration(&format_duration(d)), Ok(d));
                }
            }
        }
    }
});
