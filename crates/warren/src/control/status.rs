//! The status document of SPEC section 4: built from the running daemon, printed as JSON for
//! machines or as aligned tables for people.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

use std::collections::BTreeMap;

use crate::config::{ForwardSpec, Route};
use crate::forward::{ForwardRuntime, ForwardState};
use crate::session::{HostHandle, HostState, HostStatus};

/// The whole status as one JSON document: `{"hosts":[...],"forwards":[...]}`.
pub fn document(hosts: &BTreeMap<String, HostHandle>, forwards: &[ForwardRuntime]) -> Value {
    let host_docs: Vec<Value> = hosts
        .iter()
        .map(|(name, h)| {
            let s = h.status();
            let via = match &h.config().route {
                Route::Direct => json!([]),
                Route::Jump(hops) => json!(hops),
                Route::ProxyCommand(cmd) => json!([format!("proxy_command: {cmd}")]),
            };
            json!({
                "name": name,
                "state": state_name(&s),
                "retry_at": retry_at(&s).map(rfc3339),
                "since": rfc3339(s.since),
                "via": via,
                "last_error": s.last_error.as_ref().map(|e| json!({"class": e.class.as_str(), "message": e.message})),
                "reconnects": s.reconnects,
            })
        })
        .collect();
    let forward_docs: Vec<Value> = forwards
        .iter()
        .map(|f| {
            let own = f.status();
            let host_up = hosts.get(&f.config.host).is_some_and(|h| h.status().state == HostState::Up);
            let state = match (&f.config.spec, own.state) {
                (_, ForwardState::Failed) => "failed",
                (ForwardSpec::Remote { .. }, ForwardState::Ready) if host_up => "ready",
                (ForwardSpec::Remote { .. }, _) => "waiting",
                (_, _) if host_up => "ready",
                _ => "waiting",
            };
            let listen = match (&own.remote_listen, &f.bound) {
                (Some(remote), _) => remote.to_string(),
                (None, Some(bound)) => bound.to_string(),
                (None, None) => f.config.spec.listen_text(),
            };
            let c = &f.counters;
            json!({
                "name": f.config.name,
                "host": f.config.host,
                "type": f.config.spec.kind_name(),
                "listen": listen,
                "connect": match &f.config.spec { ForwardSpec::Dynamic { .. } => Value::Null, s => json!(s.connect_text()) },
                "state": state,
                "active": c.active.load(Ordering::Relaxed),
                "total": c.total.load(Ordering::Relaxed),
                "refused": c.refused.load(Ordering::Relaxed),
                "bytes_in": c.bytes_in.load(Ordering::Relaxed),
                "bytes_out": c.bytes_out.load(Ordering::Relaxed),
                "last_error": own.last_error,
            })
        })
        .collect();
    json!({ "hosts": host_docs, "forwards": forward_docs })
}

fn state_name(s: &HostStatus) -> &'static str {
    match s.state {
        HostState::Connecting => "connecting",
        HostState::Up => "up",
        HostState::Backoff { .. } => "backoff",
        HostState::Failed { .. } => "failed",
    }
}

fn retry_at(s: &HostStatus) -> Option<SystemTime> {
    match s.state {
        HostState::Backoff { retry_at } | HostState::Failed { retry_at } => Some(retry_at),
        _ => None,
    }
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// The document as the tables of SPEC section 4.
pub fn render_table(doc: &Value, now: SystemTime) -> String {
    let empty = Vec::new();
    let mut hosts = vec![
        ["HOST", "STATE", "SINCE", "VIA", "LAST ERROR"]
            .map(String::from)
            .to_vec(),
    ];
    for h in doc["hosts"].as_array().unwrap_or(&empty) {
        let mut state = text(&h["state"]);
        if let Some(at) = h["retry_at"]
            .as_str()
            .and_then(|t| humantime::parse_rfc3339(t).ok())
        {
            state = format!(
                "{state} {}",
                short_duration(at.duration_since(now).unwrap_or_default())
            );
        }
        let since = h["since"]
            .as_str()
            .and_then(|t| humantime::parse_rfc3339(t).ok())
            .map_or("-".into(), |t| {
                short_duration(now.duration_since(t).unwrap_or_default())
            });
        let via: Vec<String> = h["via"]
            .as_array()
            .unwrap_or(&empty)
            .iter()
            .map(text)
            .collect();
        let via = if via.is_empty() {
            "direct".to_string()
        } else {
            via.join(",")
        };
        let error = match &h["last_error"] {
            Value::Object(e) => format!("{}: {}", text(&e["class"]), text(&e["message"])),
            _ => "-".into(),
        };
        hosts.push(vec![text(&h["name"]), state, since, via, error]);
    }
    let mut fwds = vec![
        [
            "FORWARD", "TYPE", "LISTEN", "CONNECT", "STATE", "ACTIVE", "TOTAL", "IN", "OUT",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for f in doc["forwards"].as_array().unwrap_or(&empty) {
        let num = |k: &str| f[k].as_u64().unwrap_or(0);
        fwds.push(vec![
            text(&f["name"]),
            text(&f["type"]),
            text(&f["listen"]),
            if f["connect"].is_null() {
                "-".into()
            } else {
                text(&f["connect"])
            },
            text(&f["state"]),
            num("active").to_string(),
            num("total").to_string(),
            human_bytes(num("bytes_in")),
            human_bytes(num("bytes_out")),
        ]);
    }
    let mut out = String::new();
    table(&mut out, &hosts);
    out.push('\n');
    table(&mut out, &fwds);
    out
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn table(out: &mut String, rows: &[Vec<String>]) {
    let cols = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .map(|r| r.get(c).map_or(0, |s| s.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == row.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<w$}  ", w = widths[c]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
}

/// `2h13m`, `12s`, `4s`.
pub fn short_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{}s", s / 60, s % 60),
        3600..86400 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{}h", s / 86400, (s % 86400) / 3600),
    }
}

/// `1.2GB`, `80MB`, `220kB`, `17B` (decimal units, as the SPEC's example).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [(&str, f64); 4] = [("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)];
    for (unit, size) in UNITS {
        #[allow(clippy::cast_precision_loss)] // display only
        let v = n as f64 / size;
        if v >= 1.0 {
            return if v < 10.0 {
                format!("{v:.1}{unit}")
            } else {
                format!("{v:.0}{unit}")
            };
        }
    }
    format!("{n}B")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations_read_like_the_spec() {
        assert_eq!(human_bytes(17), "17B");
        assert_eq!(human_bytes(220_000), "220kB");
        assert_eq!(human_bytes(3_100_000), "3.1MB");
        assert_eq!(human_bytes(80_000_000), "80MB");
        assert_eq!(human_bytes(1_200_000_000), "1.2GB");
        assert_eq!(short_duration(Duration::from_secs(4)), "4s");
        assert_eq!(short_duration(Duration::from_secs(7980)), "2h13m");
        assert_eq!(short_duration(Duration::from_secs(90)), "1m30s");
    }

    #[test]
    fn tables_are_aligned() {
        let now = SystemTime::now();
        let doc = json!({
            "hosts": [
                {"name": "bastion", "state": "up", "since": rfc3339(now - Duration::from_secs(7980)), "via": [], "last_error": null, "reconnects": 0, "retry_at": null},
                {"name": "db", "state": "backoff", "since": rfc3339(now - Duration::from_secs(12)), "via": ["bastion"],
                 "last_error": {"class": "network", "message": "connection refused"}, "reconnects": 3, "retry_at": rfc3339(now + Duration::from_secs(4))},
            ],
            "forwards": [
                {"name": "orders-db", "host": "db", "type": "local", "listen": "127.0.0.1:5432", "connect": "127.0.0.1:5432",
                 "state": "waiting", "active": 0, "total": 1830, "bytes_in": 1_200_000_000u64, "bytes_out": 80_000_000, "last_error": null},
            ],
        });
        let t = render_table(&doc, now);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "HOST     STATE       SINCE  VIA      LAST ERROR");
        assert_eq!(lines[1], "bastion  up          2h13m  direct   -");
        assert!(lines[2].starts_with("db       backoff "), "{t}");
        assert!(
            lines[2].ends_with("bastion  network: connection refused"),
            "{t}"
        );
        assert_eq!(
            lines[4],
            "FORWARD    TYPE   LISTEN          CONNECT         STATE    ACTIVE  TOTAL  IN     OUT"
        );
        assert_eq!(
            lines[5],
            "orders-db  local  127.0.0.1:5432  127.0.0.1:5432  waiting  0       1830   1.2GB  80MB"
        );
    }
}
