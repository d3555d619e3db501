//! Fuzzes the HTTP CONNECT parser of the dynamic ingresses over arbitrary bytes.
//!
//! Properties: nothing panics; an accepted head's `len` never exceeds its input, and parsing
//! only those `len` bytes accepts the same target (what follows belongs to the tunnel).

#![no_main]

use libfuzzer_sys::fuzz_target;
use warren::forward::http_connect::{authority, parse};

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((target, len))) = parse(data) {
        assert!(len <= data.len(), "len {len} > input {}", data.len());
        assert_eq!(parse(&data[..len]), Ok(Some((target, len))));
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = authority(text);
    }
});
