//! Property tests of `parse_duration` and `format_duration`: nothing panics, nothing over
//! 30 days is accepted, a sum of parts is exactly the parsed total (checked against a
//! reference that sums in `u128` milliseconds), and every duration up to 30 days survives
//! `format` then `parse`.

use proptest::prelude::*;

use super::*;

const MAX_MS: u64 = 30 * 24 * 3600 * 1000;

/// Milliseconds up to 30 days, often at the ends of the range.
fn up_to_30_days() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => 0..=MAX_MS,
        1 => Just(MAX_MS),
        1 => MAX_MS - 3_600_000..=MAX_MS,
        1 => 0u64..=2_000,
    ]
}

/// One `NUMBER UNIT` part, written as text, and its value in milliseconds when the unit is
/// one `parse_duration` takes (`None` for a unit it must refuse). A part never lacks its unit:
/// the next part's digits would run into it.
fn part() -> impl Strategy<Value = (String, Option<u128>)> {
    let number = prop_oneof![
        4 => 0u64..100,
        2 => 0u64..100_000,
        1 => Just(u64::MAX),
        1 => any::<u64>(),
    ];
    let unit = prop_oneof![
        4 => prop::sample::select(vec![("ms", 1u128), ("s", 1000), ("m", 60_000), ("h", 3_600_000)])
            .prop_map(|(u, ms)| (u.to_string(), Some(ms))),
        1 => prop::sample::select(vec!["x", "S", "M", "hh", "sm", "d", "µs", "ns", "min", ".5s"])
            .prop_map(|u| (u.to_string(), None)),
    ];
    (number, unit).prop_map(|(n, (u, ms))| (format!("{n}{u}"), ms.map(|ms| u128::from(n) * ms)))
}

/// Up to four parts, optionally padded with whitespace.
fn near_valid() -> impl Strategy<Value = (String, Vec<Option<u128>>)> {
    let pad = prop::sample::select(vec!["", " ", "\t", "\n "]);
    (pad.clone(), prop::collection::vec(part(), 1..5), pad).prop_map(|(l, parts, r)| {
        let text = parts.iter().map(|(t, _)| t.as_str()).collect::<String>();
        (
            format!("{l}{text}{r}"),
            parts.into_iter().map(|(_, v)| v).collect(),
        )
    })
}

/// A few characters changed in a valid duration.
fn mutated() -> impl Strategy<Value = String> {
    let edits = prop::collection::vec(
        (
            any::<prop::sample::Index>(),
            prop::sample::select(vec!['0', '9', 'm', 's', 'h', ' ', '-', '.', '+', 'é']),
            0u8..3,
        ),
        1..4,
    );
    (up_to_30_days(), edits).prop_map(|(ms, edits)| {
        let mut chars: Vec<char> = format_duration(Duration::from_millis(ms)).chars().collect();
        for (at, c, op) in edits {
            let i = at.index(chars.len() + 1);
            match op {
                0 => chars.insert(i, c),
                1 if i < chars.len() => chars[i] = c,
                _ if i < chars.len() => drop(chars.remove(i)),
                _ => chars.push(c),
            }
        }
        chars.into_iter().collect()
    })
}

fn check_accepted(text: &str) {
    if let Ok(d) = parse_duration(text) {
        assert!(d <= MAX_DURATION, "{text:?} gave {d:?}");
        assert_eq!(d.subsec_nanos() % 1_000_000, 0, "{text:?} gave {d:?}");
        // Whatever is accepted is written back in a form that reads the same.
        assert_eq!(parse_duration(&format_duration(d)), Ok(d), "{text:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn arbitrary_text_never_panics_and_stays_within_30_days(text in any::<String>()) {
        check_accepted(&text);
    }

    #[test]
    fn mutated_durations_never_panic(text in mutated()) {
        check_accepted(&text);
    }

    #[test]
    fn parts_sum_to_the_total((text, parts) in near_valid()) {
        let got = parse_duration(&text);
        // The reference: every unit known and every prefix sum at most 30 days (the parser
        // stops at the first part that goes over).
        let mut total: u128 = 0;
        let mut over = false;
        let mut bad_unit = false;
        for p in &parts {
            match p {
                None => { bad_unit = true; break; }
                Some(ms) => {
                    total += ms;
                    if total > u128::from(MAX_MS) { over = true; break; }
                }
            }
        }
        if bad_unit || over {
            prop_assert!(got.is_err(), "{:?} gave {:?}", text, got);
            if over {
                let e = got.unwrap_err();
                prop_assert!(e.contains("longer than 30 days") || e.contains("too large"), "{}", e);
            }
        } else {
            let ms = u64::try_from(total).unwrap_or(u64::MAX);
            prop_assert_eq!(got, Ok(Duration::from_millis(ms)), "{:?}", text);
        }
    }

    #[test]
    fn format_then_parse_is_the_identity_up_to_30_days(ms in up_to_30_days()) {
        let d = Duration::from_millis(ms);
        let text = format_duration(d);
        prop_assert_eq!(parse_duration(&text), Ok(d), "{}", text);
        // And the text is the canonical one: formatting again gives it back.
        prop_assert_eq!(format_duration(parse_duration(&text).unwrap_or_default()), text);
    }

    #[test]
    fn whole_seconds_round_trip_too(secs in 0..=MAX_MS / 1000) {
        let d = Duration::from_secs(secs);
        prop_assert_eq!(parse_duration(&format_duration(d)), Ok(d));
    }

    #[test]
    fn a_trailing_number_without_unit_is_refused(ms in up_to_30_days(), n in 0u32..1000) {
        let text = format!("{}{n}", format_duration(Duration::from_millis(ms)));
        prop_assert!(parse_duration(&text).is_err(), "{}", text);
    }

    #[test]
    fn anything_longer_than_30_days_is_refused(
        ms in prop_oneof![Just(MAX_MS + 1), MAX_MS + 1..=MAX_MS + 3_600_000, MAX_MS + 1..=u64::MAX / 2],
    ) {
        let text = format!("{ms}ms");
        prop_assert!(parse_duration(&text).is_err(), "{}", text);
    }
}
