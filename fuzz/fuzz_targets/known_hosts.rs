//! Fuzzes the known_hosts reader one line at a time (markers, host patterns, `|1|` hashed
//! names, key type and blob) and the `SHA256:` pins of `host_key_fingerprints`.
//!
//! The input is a line, then after the first newline a host name to look up (on port 22 and
//! on a port taken from the input). Properties: nothing panics; a blank or comment line is
//! never an error; a pin that parses is written back exactly as it was given (trimmed).

#![no_main]

use libfuzzer_sys::fuzz_target;
use warren::hostkey::{Fingerprint, known_hosts_line_matches};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (line, host) = text.split_once('\n').unwrap_or((text, "host.example.com"));
    let port = u16::from_le_bytes([
        data.first().copied().unwrap_or(0),
        data.get(1).copied().unwrap_or(0),
    ]);
    for port in [22, port] {
        let got = known_hosts_line_matches(line, host, port);
        let trimmed = line.trim_start_matches([' ', '\t']);
        if trimmed.is_empty() || trimmed.starts_with('#') {
            assert_eq!(got, Ok(None), "{line:?}");
        }
    }
    if let Ok(pin) = text.parse::<Fingerprint>() {
        assert_eq!(pin.to_string(), text.trim());
    }
});
