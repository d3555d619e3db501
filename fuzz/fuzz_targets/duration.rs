//! Fuzzes `parse_duration` and `format_duration`.
//!
//! Properties: nothing panics; whatever is accepted is at most 30 days, a whole number of
//! milliseconds, and reads back the same once formatted; any duration up to 30 days made
//! from the input's first bytes survives `format` then `parse`.

#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use warren::config::{MAX_DURATION, format_duration, parse_duration};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(d) = parse_duration(text)
    {
        assert!(d <= MAX_DURATION, "{text:?} gave {d:?}");
        assert_eq!(d.subsec_nanos() % 1_000_000, 0, "{text:?} gave {d:?}");
        assert_eq!(parse_duration(&format_duration(d)), Ok(d), "{text:?}");
    }
    let mut ms = [0u8; 8];
    let n = data.len().min(8);
    ms[..n].copy_from_slice(&data[..n]);
    let max_ms = u64::try_from(MAX_DURATION.as_millis()).unwrap_or(u64::MAX);
    let d = Duration::from_millis(u64::from_le_bytes(ms) % (max_ms + 1));
    assert_eq!(parse_duration(&format_duration(d)), Ok(d), "{d:?}");
});
