//! The status document: built from the running daemon as typed records, sent as JSON for
//! machines (`warren status --json`, the control protocol) and printed as aligned tables for
//! people.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::config::Route;
use crate::forward::ForwardRuntime;
use crate::session::{HostHandle, HostState, HostStatus};

/// The whole status: every host supervisor and every forward.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StatusDoc {
    /// Hosts, by name.
    pub hosts: Vec<HostDoc>,
    /// Forwards, in file order.
    pub forwards: Vec<ForwardDoc>,
}

/// One host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostDoc {
    /// Its name (`NAME via HOP,...` for an inner hop of someone else's chain).
    pub name: String,
    /// `connecting`, `up`, `backoff` or `failed`.
    pub state: String,
    /// When the next attempt starts (RFC 3339), in `backoff` and `failed`.
    pub retry_at: Option<String>,
    /// Since when it has been up, or not up (RFC 3339).
    pub since: String,
    /// The hops it is reached through (or `proxy_command: CMD`); empty when direct.
    pub via: Vec<String>,
    /// The error that ended the last attempt or session.
    pub last_error: Option<ErrorDoc>,
    /// Sessions lost or replaced so far.
    pub reconnects: u64,
    /// The last keepalive round trip in milliseconds (null before the first).
    pub keepalive_rtt_ms: Option<f64>,
    /// The current session's key exchange method (null while no session is up).
    pub kex: Option<String>,
    /// Its cipher.
    pub cipher: Option<String>,
    /// Its MAC (`implicit` with an AEAD cipher).
    pub mac: Option<String>,
    /// The server's host key: `ALGORITHM SHA256:...`.
    pub host_key: Option<String>,
    /// The server's identification string.
    pub server_version: Option<String>,
}

/// An error with its class.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDoc {
    /// `network`, `host-key`, `auth` or `config`.
    pub class: String,
    /// The whole error chain.
    pub message: String,
}

/// One forward.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ForwardDoc {
    /// Its name.
    pub name: String,
    /// The host whose session carries it.
    pub host: String,
    /// `local`, `remote` or `dynamic`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Where it listens (as bound: the real port for port 0).
    pub listen: String,
    /// Where it connects; none for a dynamic forward.
    pub connect: Option<String>,
    /// `ready`, `waiting` or `failed`.
    pub state: String,
    /// Connections open now.
    pub active: u64,
    /// Connections accepted so far.
    pub total: u64,
    /// Connections refused because `max_connections` were open.
    pub refused: u64,
    /// Bytes towards the egress.
    pub bytes_in: u64,
    /// Bytes back from the egress.
    pub bytes_out: u64,
    /// Its own last error.
    pub last_error: Option<String>,
    /// What its egress probe found (forwards with `probe_interval`).
    pub probe: Option<ProbeDoc>,
}

/// A forward's probe in the status document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeDoc {
    /// `ok` or `failing`.
    pub state: String,
    /// When it entered that state (RFC 3339).
    pub since: String,
    /// Why the last probe failed, while failing.
    pub last_error: Option<String>,
}

/// The status of `hosts` and `forwards` now.
pub fn document(hosts: &BTreeMap<String, HostHandle>, forwards: &[ForwardRuntime]) -> StatusDoc {
    let hosts_doc = hosts
        .iter()
        .map(|(name, h)| {
            let s = h.status();
            HostDoc {
                name: name.clone(),
                state: state_name(&s).into(),
                retry_at: retry_at(&s).map(rfc3339),
                since: rfc3339(s.since),
                via: match &h.config().route {
                    Route::Direct => Vec::new(),
                    Route::Jump(hops) => hops.clone(),
                    Route::ProxyCommand(cmd) => vec![format!("proxy_command: {cmd}")],
                },
                last_error: s.last_error.as_ref().map(|e| ErrorDoc {
                    class: e.class.as_str().into(),
                    message: e.message.clone(),
                }),
                reconnects: s.reconnects,
                keepalive_rtt_ms: h
                    .counters()
                    .last_rtt()
                    .map(|d| (d.as_secs_f64() * 1e6).round() / 1e3),
                kex: s.session.as_ref().map(|i| i.kex.clone()),
                cipher: s.session.as_ref().map(|i| i.cipher.clone()),
                mac: s.session.as_ref().map(|i| i.mac.clone()),
                host_key: s.session.as_ref().map(|i| i.host_key.clone()),
                server_version: s.session.as_ref().map(|i| i.server_version.clone()),
            }
        })
        .collect();
    let forwards_doc = forwards
        .iter()
        .map(|f| {
            let own = f.status();
            let host_up = hosts
                .get(&f.config.host)
                .is_some_and(|h| h.status().state.carries_forwards());
            let listen = match (&own.remote_listen, &f.bound) {
                (Some(remote), _) => remote.to_string(),
                (None, Some(bound)) => bound.to_string(),
                (None, None) => f.config.spec.listen_text(),
            };
            let c = &f.counters;
            ForwardDoc {
                name: f.config.name.clone(),
                host: f.config.host.clone(),
                kind: f.config.spec.kind_name().into(),
                listen,
                connect: if f.config.spec.is_dynamic() {
                    None
                } else {
                    Some(f.config.spec.connect_text())
                },
                state: f.readiness(host_up).as_str().into(),
                active: c.active.load(Ordering::Relaxed),
                total: c.total.load(Ordering::Relaxed),
                refused: c.refused.load(Ordering::Relaxed),
                bytes_in: c.bytes_in.load(Ordering::Relaxed),
                bytes_out: c.bytes_out.load(Ordering::Relaxed),
                last_error: own.last_error,
                probe: own.probe.map(|p| ProbeDoc {
                    state: p.state.as_str().into(),
                    since: rfc3339(p.since),
                    last_error: p.last_error,
                }),
            }
        })
        .collect();
    StatusDoc {
        hosts: hosts_doc,
        forwards: forwards_doc,
    }
}

fn state_name(s: &HostStatus) -> &'static str {
    s.state.name()
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

/// The document as two aligned tables, hosts then forwards; durations relative to `now`.
pub fn render_table(doc: &StatusDoc, now: SystemTime) -> String {
    let mut hosts = vec![
        ["HOST", "STATE", "SINCE", "RTT", "VIA", "LAST ERROR"]
            .map(String::from)
            .to_vec(),
    ];
    let parse = |t: &str| humantime::parse_rfc3339(t).ok();
    for h in &doc.hosts {
        let mut state = h.state.clone();
        if let Some(at) = h.retry_at.as_deref().and_then(parse) {
            state = format!(
                "{state} {}",
                short_duration(at.duration_since(now).unwrap_or_default())
            );
        }
        let since = parse(&h.since).map_or("-".into(), |t| {
            short_duration(now.duration_since(t).unwrap_or_default())
        });
        let via = if h.via.is_empty() {
            "direct".to_string()
        } else {
            h.via.join(",")
        };
        let error = h
            .last_error
            .as_ref()
            .map_or("-".into(), |e| format!("{}: {}", e.class, e.message));
        let rtt = h
            .keepalive_rtt_ms
            .map_or("-".into(), |ms| format!("{ms:.1}ms"));
        hosts.push(vec![h.name.clone(), state, since, rtt, via, error]);
    }
    let mut fwds = vec![
        [
            "FORWARD", "TYPE", "LISTEN", "CONNECT", "STATE", "ACTIVE", "TOTAL", "IN", "OUT",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for f in &doc.forwards {
        let state = match &f.probe {
            Some(p) if p.state != "ok" => format!("{} (probe {})", f.state, p.state),
            _ => f.state.clone(),
        };
        fwds.push(vec![
            f.name.clone(),
            f.kind.clone(),
            f.listen.clone(),
            f.connect.clone().unwrap_or_else(|| "-".into()),
            state,
            f.active.to_string(),
            f.total.to_string(),
            human_bytes(f.bytes_in),
            human_bytes(f.bytes_out),
        ]);
    }
    let mut out = String::new();
    table(&mut out, &hosts);
    out.push('\n');
    table(&mut out, &fwds);
    out
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

/// `1.2GB`, `80MB`, `220kB`, `17B` (decimal units).
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
        let doc = serde_json::json!({
            "hosts": [
                {"name": "bastion", "state": "up", "since": rfc3339(now - Duration::from_secs(7980)), "via": [], "last_error": null, "reconnects": 0, "retry_at": null, "keepalive_rtt_ms": 0.84},
                {"name": "db", "state": "backoff", "since": rfc3339(now - Duration::from_secs(12)), "via": ["bastion"],
                 "last_error": {"class": "network", "message": "connection refused"}, "reconnects": 3, "retry_at": rfc3339(now + Duration::from_secs(4))},
            ],
            "forwards": [
                {"name": "orders-db", "host": "db", "type": "local", "listen": "127.0.0.1:5432", "connect": "127.0.0.1:5432",
                 "state": "waiting", "active": 0, "total": 1830, "refused": 0, "bytes_in": 1_200_000_000u64, "bytes_out": 80_000_000, "last_error": null},
            ],
        });
        let t = render_table(&serde_json::from_value(doc).unwrap(), now);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0],
            "HOST     STATE       SINCE  RTT    VIA      LAST ERROR"
        );
        assert_eq!(lines[1], "bastion  up          2h13m  0.8ms  direct   -");
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
