//! Fuzzes the forward address parsers (`HOST:PORT`, `[IPV6]:PORT`, `PORT`, socket paths) in
//! their three roles: local ingress, egress, remote ingress.
//!
//! Properties: nothing panics; an accepted address is written (`Display`) in a form that
//! parses to the same address; an egress never has port 0 (an ingress may: the kernel picks).

#![no_main]

use std::path::PathBuf;

use libfuzzer_sys::fuzz_target;
use warren::config::{BindAddr, Endpoint, parse_bind, parse_egress, parse_remote_bind};

fn expand(s: &str) -> PathBuf {
    match s.strip_prefix("~/") {
        Some(rest) => PathBuf::from("/home/u").join(rest),
        None => PathBuf::from(s),
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(b) = parse_bind(text, &expand) {
        assert_eq!(
            parse_bind(&b.to_string(), &expand),
            Ok(b.clone()),
            "{text:?}"
        );
    }
    if let Ok(e) = parse_egress(text, &expand) {
        assert_eq!(
            parse_egress(&e.to_string(), &expand),
            Ok(e.clone()),
            "{text:?}"
        );
        assert!(!matches!(e, Endpoint::Tcp { port: 0, .. }), "{text:?}");
    }
    if let Ok(e) = parse_remote_bind(text, &expand) {
        assert_eq!(
            parse_remote_bind(&e.to_string(), &expand),
            Ok(e),
            "{text:?}"
        );
    }
});
