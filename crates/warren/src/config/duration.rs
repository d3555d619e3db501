//! Durations written with a unit: `"500ms"`, `"15s"`, `"5m"`, `"1h"`, or sums like `"1m30s"`,
//! at most [`MAX_DURATION`].

use std::time::Duration;

/// The longest duration any setting takes: 30 days. Every sum, product or deadline the daemon
/// computes from settings (a backoff doubled, keepalive interval times count, `now + d`) stays
/// far from overflow below it, so no value `warren check` accepts can make one panic.
pub const MAX_DURATION: Duration = Duration::from_secs(30 * 24 * 3600);

/// Parses a duration; every number needs a unit so that `"15"` is never a guess.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("duration is empty; write it with a unit, for example \"15s\"".into());
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("duration needs a unit: \"{s}s\""));
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(format!(
                "invalid duration \"{s}\"; expected a number with a unit (ms, s, m, h), for example \"15s\""
            ));
        }
        let (number, after) = rest.split_at(digits);
        let unit_len = after.bytes().take_while(u8::is_ascii_alphabetic).count();
        let (unit, after) = after.split_at(unit_len);
        let value: u64 = number
            .parse()
            .map_err(|_| format!("duration \"{s}\" is too large"))?;
        let part = match unit {
            "ms" => Duration::from_millis(value),
            "s" => Duration::from_secs(value),
            "m" => Duration::from_secs(value.saturating_mul(60)),
            "h" => Duration::from_secs(value.saturating_mul(3600)),
            "" if after.is_empty() => return Err(format!("duration needs a unit: \"{s}s\"")),
            "" => {
                return Err(format!(
                    "invalid duration \"{s}\"; use whole numbers with a unit, for example \"1500ms\""
                ));
            }
            other => {
                return Err(format!(
                    "unknown unit \"{other}\" in duration \"{s}\"; use ms, s, m or h"
                ));
            }
        };
        total = total.saturating_add(part);
        if total > MAX_DURATION {
            return Err(format!(
                "duration \"{s}\" is longer than 30 days (720h), the most any setting takes"
            ));
        }
        rest = after;
    }
    Ok(total)
}

/// Formats a duration the way the config file writes it (`"1m30s"`, `"500ms"`).
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    if !ms.is_multiple_of(1000) {
        return format!("{ms}ms");
    }
    let mut secs = d.as_secs();
    let mut out = String::new();
    for (unit, size) in [("h", 3600), ("m", 60), ("s", 1)] {
        if secs >= size {
            out.push_str(&format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn a_bare_number_asks_for_a_unit() {
        assert_eq!(
            parse_duration("15"),
            Err("duration needs a unit: \"15s\"".to_string())
        );
        assert_eq!(
            parse_duration("1m30"),
            Err("duration needs a unit: \"1m30s\"".to_string())
        );
    }

    #[test]
    fn garbage_is_refused_with_the_reason() {
        assert!(parse_duration("").unwrap_err().contains("empty"));
        assert!(
            parse_duration("15x")
                .unwrap_err()
                .contains("unknown unit \"x\"")
        );
        assert!(
            parse_duration("s")
                .unwrap_err()
                .contains("invalid duration")
        );
        assert!(
            parse_duration("1.5s")
                .unwrap_err()
                .contains("whole numbers")
        );
        assert!(
            parse_duration("-1s")
                .unwrap_err()
                .contains("invalid duration")
        );
    }

    #[test]
    fn thirty_days_is_the_most() {
        assert_eq!(parse_duration("720h"), Ok(MAX_DURATION));
        assert_eq!(parse_duration("719h59m60s"), Ok(MAX_DURATION));
        for long in [
            "720h1ms",
            "721h",
            "90000000h",
            "18446744073709551615s",
            "43201m",
        ] {
            assert!(
                parse_duration(long)
                    .unwrap_err()
                    .contains("longer than 30 days"),
                "{long}"
            );
        }
        // A number too large for u64 is refused too, not wrapped.
        assert!(parse_duration("99999999999999999999999s").is_err());
    }

    #[test]
    fn format_round_trips() {
        for s in ["500ms", "15s", "1m30s", "1h", "0s", "2h5m"] {
            let d = parse_duration(s).unwrap();
            assert_eq!(format_duration(d), s);
        }
    }
}

#[cfg(test)]
#[path = "duration_proptests.rs"]
mod proptests;
