//! The metrics of issue 17, read the way Prometheus reads them: every scrape is parsed by the
//! Prometheus project's own OpenMetrics parser (`metrics_parse.py`), so a family with the
//! wrong type, a histogram without its `+Inf` bucket or a missing `# EOF` fails here.
//!
//! What it proves, against the real sshd with real bytes:
//! - every family of the contract is there with its type and labels once a host is up;
//! - 10 MiB echoed through a local forward move `warren_forward_bytes_total` by exactly 10 MiB
//!   each way, the connection counter by one and the channel-open histogram by one;
//! - a killed session is one session lost as `closed`, a frozen one as `keepalive`;
//! - a rejected key counts connect failures of class `auth`;
//! - keepalive round trips fill their histogram and `keepalive_rtt_ms` in status;
//! - `probe_interval` on a local and on a remote forward: `ok`, `failing` with the egress named
//!   (status, table, systemd summary, `warren_forward_probe_up`) when the egress goes away, `ok`
//!   again when it is back; a forward without probes has none;
//! - `warren run` serves `GET /metrics` (OpenMetrics content type, 404, 405) on TCP port 0 and
//!   on a Unix socket of mode 0600;
//! - `warren check` keeps `metrics_listen` on loopback unless `metrics_allow_public`.
//!
//! Scrapes of an in-process daemon use `warren::metrics::render`, what the HTTP server sends.

use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};
use tokio::process::Command;
use tokio_util::sync::CancellationToken;
use warren::session::HostState;

use crate::harness::{
    EchoServer, KeyKind, MIB, SshServer, Transport, UserKey, push_through, run_warren, tail,
    wait_for, with_timeout, within,
};
use crate::support::{
    Files, Fixture, TestDaemon, forward_table, host_table, ingress, status_json, with_setting,
};

/// Bound for a whole test.
const LIMIT: Duration = Duration::from_secs(60);
/// Bound for one step that should be quick (a session coming up, a probe changing state).
const STEP: Duration = Duration::from_secs(15);
/// How often a wait on the metrics scrapes again (each scrape runs the parser).
const SCRAPE_EVERY: Duration = Duration::from_millis(50);
/// The bytes pushed through a forward whose counters are checked.
const TRANSFER: u64 = 10 * MIB;
/// `keepalive_interval` and `keepalive_count_max` of the frozen-session test.
const KEEPALIVE: Duration = Duration::from_millis(500);
const COUNT_MAX: u32 = 2;
/// Slack on top of the dead-session bound, for a loaded machine.
const MARGIN: Duration = Duration::from_secs(3);
/// `probe_interval` of the probe tests, as written in the file.
const PROBE_INTERVAL: &str = "1s";
/// The OpenMetrics content type `GET /metrics` answers with.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// `warren check`'s exit code for a configuration with errors (EX_CONFIG).
const EXIT_CONFIG: i32 = 78;
/// The system interpreter, which Debian's `python3-prometheus-client` installs for.
const PYTHON: &str = "/usr/bin/python3";
const PARSER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/e2e/metrics_parse.py"
);

/// The families of the contract: OpenMetrics name (a counter's without `_total`), type, and
/// the labels of each of its series (a histogram's buckets add `le`).
const FAMILIES: &[(&str, &str, &[&str])] = &[
    ("warren_host_up", "gauge", &["host"]),
    ("warren_host_state", "gauge", &["host", "state"]),
    (
        "warren_host_connect_failures",
        "counter",
        &["host", "class"],
    ),
    ("warren_host_sessions_lost", "counter", &["host", "reason"]),
    ("warren_keepalive_rtt_seconds", "histogram", &["host"]),
    ("warren_channel_open_seconds", "histogram", &["host"]),
    (
        "warren_channel_open_failures",
        "counter",
        &["host", "reason"],
    ),
    ("warren_forward_ready", "gauge", &["forward"]),
    ("warren_forward_connections_active", "gauge", &["forward"]),
    ("warren_forward_connections", "counter", &["forward"]),
    (
        "warren_forward_connections_refused",
        "counter",
        &["forward", "reason"],
    ),
    ("warren_forward_bytes", "counter", &["forward", "direction"]),
    ("warren_forward_probe_up", "gauge", &["forward"]),
];
const HOST_STATES: [&str; 5] = ["idle", "connecting", "up", "backoff", "failed"];
const FAILURE_CLASSES: [&str; 4] = ["network", "host-key", "auth", "config"];
const LOSS_REASONS: [&str; 4] = ["keepalive", "write-stall", "closed", "hop"];
const OPEN_FAILURES: [&str; 4] = ["no-session", "refused", "timeout", "session-ended"];

// --- the parsed exposition -----------------------------------------------------------------------

/// One family as `metrics_parse.py` prints it.
#[derive(Debug, Deserialize)]
struct Family {
    name: String,
    #[serde(rename = "type")]
    kind: String,
    samples: Vec<Sample>,
}

/// One sample.
#[derive(Debug, Deserialize)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    #[serde(deserialize_with = "number")]
    value: f64,
}

/// A sample value: a JSON number, or `inf`/`nan` as a string.
fn number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::Number(n) => n
            .as_f64()
            .ok_or_else(|| serde::de::Error::custom("not an f64")),
        serde_json::Value::String(s) => s.parse().map_err(serde::de::Error::custom),
        other => Err(serde::de::Error::custom(format!("not a value: {other}"))),
    }
}

/// A scrape: the parsed families, and the text they came from (for messages).
struct Metrics {
    families: Vec<Family>,
    text: String,
}

impl Metrics {
    /// The family called `name`.
    fn family(&self, name: &str) -> anyhow::Result<&Family> {
        self.families
            .iter()
            .find(|f| f.name == name)
            .with_context(|| format!("no family {name} in:\n{}", self.text))
    }

    /// The samples called `name` whose labels include every one of `labels`.
    fn samples(&self, name: &str, labels: &[(&str, &str)]) -> Vec<&Sample> {
        self.families
            .iter()
            .flat_map(|f| &f.samples)
            .filter(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .collect()
    }

    /// The value of the one sample called `name` with `labels` (among others).
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> anyhow::Result<f64> {
        match self.samples(name, labels).as_slice() {
            [one] => Ok(one.value),
            [] => bail!("no sample {name}{labels:?} in:\n{}", self.text),
            several => bail!("{} samples {name}{labels:?}: {several:?}", several.len()),
        }
    }

    /// Whether the one sample called `name` with `labels` has the value `want`.
    fn is(&self, name: &str, labels: &[(&str, &str)], want: f64) -> bool {
        self.value(name, labels).is_ok_and(|v| v == want)
    }

    /// How much sample `name` with `labels` moved from `before` to this scrape.
    fn moved(&self, before: &Metrics, name: &str, labels: &[(&str, &str)]) -> anyhow::Result<f64> {
        Ok(self.value(name, labels)? - before.value(name, labels)?)
    }
}

/// Parses `text` with `metrics_parse.py`; text the OpenMetrics parser rejects is an error.
async fn parse(text: String) -> anyhow::Result<Metrics> {
    let mut child = Command::new(PYTHON)
        .arg(PARSER)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("start {PYTHON} {PARSER}"))?;
    let mut stdin = child.stdin.take().context("stdin pipe")?;
    let write = async move {
        stdin.write_all(text.as_bytes()).await?;
        drop(stdin);
        std::io::Result::Ok(text)
    };
    let (text, out) = within(STEP, "metrics_parse.py", async {
        tokio::join!(write, child.wait_with_output())
    })
    .await?;
    let (text, out) = (text.context("write to metrics_parse.py")?, out?);
    if !out.status.success() {
        bail!(
            "the exposition does not parse ({}): {}\n--- the text:\n{text}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let families = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "metrics_parse.py printed no JSON: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })?;
    Ok(Metrics { families, text })
}

/// The metrics of an in-process daemon, as `GET /metrics` would send them, parsed.
async fn scrape(d: &TestDaemon) -> anyhow::Result<Metrics> {
    parse(warren::metrics::render(&d.daemon().watch_control_state())).await
}

/// Scrapes with `scrape` until a scrape satisfies `pred`, for up to `limit`; that scrape.
async fn wait_metrics<F, Fut>(
    limit: Duration,
    what: &str,
    mut scrape: F,
    pred: impl Fn(&Metrics) -> bool,
) -> anyhow::Result<Metrics>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Metrics>>,
{
    let deadline = Instant::now() + limit;
    loop {
        let m = scrape().await?;
        if pred(&m) {
            return Ok(m);
        }
        if Instant::now() >= deadline {
            bail!(
                "timed out after {limit:?} waiting until {what}; last scrape:\n{}",
                m.text
            );
        }
        tokio::time::sleep(SCRAPE_EVERY).await;
    }
}

/// [`wait_metrics`] on an in-process daemon.
async fn wait_daemon(
    d: &TestDaemon,
    limit: Duration,
    what: &str,
    pred: impl Fn(&Metrics) -> bool,
) -> anyhow::Result<Metrics> {
    wait_metrics(limit, what, || scrape(d), pred).await
}

/// Fails unless `name{labels}` is `want` for `value` of each of `values`, and 0 for the rest.
fn only(
    m: &Metrics,
    name: &str,
    labels: &[(&str, &str)],
    key: &str,
    values: &[&str],
    want: &[(&str, f64)],
) -> anyhow::Result<()> {
    for v in values {
        let mut with = labels.to_vec();
        with.push((key, v));
        let expected = want.iter().find(|(w, _)| w == v).map_or(0.0, |(_, n)| *n);
        let got = m.value(name, &with)?;
        ensure!(
            got == expected,
            "{name}{with:?} is {got}, expected {expected}; scrape:\n{}",
            m.text
        );
    }
    Ok(())
}

// --- status of an in-process daemon --------------------------------------------------------------

/// A control socket served for an in-process daemon, so that `warren status` reads it like a
/// running daemon's. Stopped on drop.
struct Control {
    path: String,
    stop: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Control {
    async fn serve(d: &TestDaemon) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("control.sock");
        let socket = warren::control::ControlSocket::bind(&path, None).await?;
        let stop = CancellationToken::new();
        tokio::spawn(socket.serve(d.daemon().watch_control_state(), None, stop.clone()));
        Ok(Control {
            path: path.display().to_string(),
            stop,
            _dir: dir,
        })
    }

    /// `warren status --json`.
    async fn json(&self) -> anyhow::Result<serde_json::Value> {
        status_json(&self.path)
            .await
            .context("warren status --json answered nothing")
    }

    /// `warren status` (the table for people).
    async fn table(&self) -> anyhow::Result<String> {
        let out = run_warren(&["status", "-s", &self.path], &[], STEP).await?;
        ensure!(out.status.success(), "warren status: {out:?}");
        Ok(String::from_utf8(out.stdout)?)
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The forward called `name` in a status document.
fn forward_doc<'a>(
    doc: &'a serde_json::Value,
    name: &str,
) -> anyhow::Result<&'a serde_json::Value> {
    doc["forwards"]
        .as_array()
        .and_then(|fs| fs.iter().find(|f| f["name"] == name))
        .with_context(|| format!("no forward {name} in {doc}"))
}

// --- set-ups -------------------------------------------------------------------------------------

/// A fixture and a daemon whose host `h` (from `table`) carries local forward `f` from the
/// returned address to the fixture's echo server, its session up.
async fn local_forward(
    table: impl Fn(&Fixture) -> String,
) -> anyhow::Result<(Fixture, std::net::SocketAddr, TestDaemon)> {
    let fixture = Fixture::start().await?;
    let (listener, addr) = ingress();
    let toml = table(&fixture)
        + &forward_table(
            "f",
            "h",
            "local",
            &addr.to_string(),
            Some(&fixture.echo.addr().to_string()),
        );
    let d = TestDaemon::start(&toml, vec![listener]).await?;
    d.wait_up("h", STEP).await?;
    Ok((fixture, addr, d))
}

/// `host_table` for the fixture's server and key.
fn plain_host(f: &Fixture) -> String {
    host_table("h", &f.server, &f.key)
}

/// Pushes `len` bytes through a fresh connection to `addr` and checks the echo by digest.
async fn echo_through(addr: std::net::SocketAddr, len: u64) -> anyhow::Result<()> {
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connect to {addr}"))?;
    within(STEP, "an echo round trip", push_through(stream, len))
        .await??
        .check_echoed()
}

// --- the families --------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_family_is_exposed_with_its_type_and_labels_once_a_host_is_up() {
    with_timeout(LIMIT, async {
        let (_fixture, _addr, d) = local_forward(plain_host).await?;
        let m = wait_daemon(&d, STEP, "forward f is ready", |m| {
            m.is("warren_forward_ready", &[("forward", "f")], 1.0)
        })
        .await?;
        ensure!(
            m.text.ends_with("# EOF\n"),
            "OpenMetrics ends with # EOF:\n{}",
            m.text
        );

        for (name, kind, labels) in FAMILIES {
            let family = m.family(name)?;
            assert_eq!(family.kind, *kind, "type of {name}");
            let names: &[&str] = match *kind {
                "counter" => &["_total"],
                "histogram" => &["_bucket", "_count", "_sum"],
                _ => &[""],
            };
            for s in &family.samples {
                ensure!(
                    names.iter().any(|n| s.name == format!("{name}{n}")),
                    "{name} ({kind}) has a sample {}",
                    s.name
                );
                let mut want: Vec<&str> = labels.to_vec();
                if s.name.ends_with("_bucket") {
                    want.push("le");
                }
                want.sort_unstable();
                let got: Vec<&str> = s.labels.keys().map(String::as_str).collect();
                assert_eq!(got, want, "labels of {s:?}");
            }
        }
        // One series per host / forward / label value (no probe on f: no probe series).
        let count = |name: &str| m.family(name).map(|f| f.samples.len());
        assert_eq!(count("warren_host_up")?, 1);
        assert_eq!(count("warren_host_state")?, HOST_STATES.len());
        assert_eq!(
            count("warren_host_connect_failures")?,
            FAILURE_CLASSES.len()
        );
        assert_eq!(count("warren_host_sessions_lost")?, LOSS_REASONS.len());
        assert_eq!(count("warren_channel_open_failures")?, OPEN_FAILURES.len());
        assert_eq!(count("warren_forward_bytes")?, 2);
        assert_eq!(count("warren_forward_probe_up")?, 0);

        let h = [("host", "h")];
        assert_eq!(m.value("warren_host_up", &h)?, 1.0);
        only(
            &m,
            "warren_host_state",
            &h,
            "state",
            &HOST_STATES,
            &[("up", 1.0)],
        )?;
        only(
            &m,
            "warren_host_connect_failures_total",
            &h,
            "class",
            &FAILURE_CLASSES,
            &[],
        )?;
        only(
            &m,
            "warren_host_sessions_lost_total",
            &h,
            "reason",
            &LOSS_REASONS,
            &[],
        )?;
        only(
            &m,
            "warren_channel_open_failures_total",
            &h,
            "reason",
            &OPEN_FAILURES,
            &[],
        )?;
        for hist in [
            "warren_keepalive_rtt_seconds",
            "warren_channel_open_seconds",
        ] {
            let inf = m.value(&format!("{hist}_bucket"), &[("host", "h"), ("le", "+Inf")])?;
            assert_eq!(inf, m.value(&format!("{hist}_count"), &h)?, "{hist}");
        }
        let f = [("forward", "f")];
        assert_eq!(m.value("warren_forward_ready", &f)?, 1.0);
        assert_eq!(m.value("warren_forward_connections_active", &f)?, 0.0);
        assert_eq!(m.value("warren_forward_connections_total", &f)?, 0.0);
        assert_eq!(
            m.value(
                "warren_forward_connections_refused_total",
                &[("forward", "f"), ("reason", "limit")]
            )?,
            0.0
        );
        only(
            &m,
            "warren_forward_bytes_total",
            &f,
            "direction",
            &["in", "out"],
            &[],
        )?;
        d.stop(Duration::from_secs(1)).await;
        Ok(())
    })
    .await;
}

// --- bytes and connections -----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_mib_through_a_local_forward_move_the_byte_and_connection_counters_exactly() {
    with_timeout(LIMIT, async {
        let (_fixture, addr, d) = local_forward(plain_host).await?;
        let f = [("forward", "f")];
        let h = [("host", "h")];
        let before = scrape(&d).await?;

        echo_through(addr, TRANSFER).await?;
        // The counters are final once the connection is closed on warren's side too.
        let after = wait_daemon(&d, STEP, "the connection to be closed", |m| {
            m.is("warren_forward_connections_active", &f, 0.0)
                && m.value("warren_forward_connections_total", &f).ok()
                    != before.value("warren_forward_connections_total", &f).ok()
        })
        .await?;

        #[allow(clippy::cast_precision_loss)] // 10 MiB is exact in an f64
        let mib = TRANSFER as f64;
        for direction in ["in", "out"] {
            let labels = [("forward", "f"), ("direction", direction)];
            assert_eq!(
                after.moved(&before, "warren_forward_bytes_total", &labels)?,
                mib,
                "bytes {direction}"
            );
        }
        assert_eq!(
            after.moved(&before, "warren_forward_connections_total", &f)?,
            1.0
        );
        // One connection, one channel opened for it (nothing else opens channels here).
        assert_eq!(
            after.moved(&before, "warren_channel_open_seconds_count", &h)?,
            1.0
        );
        ensure!(after.moved(&before, "warren_channel_open_seconds_sum", &h)? > 0.0);
        assert_eq!(
            after.moved(
                &before,
                "warren_channel_open_seconds_bucket",
                &[("host", "h"), ("le", "+Inf")]
            )?,
            1.0
        );
        assert_eq!(
            after.moved(
                &before,
                "warren_forward_connections_refused_total",
                &[("forward", "f"), ("reason", "limit")]
            )?,
            0.0
        );
        d.stop(Duration::from_secs(1)).await;
        Ok(())
    })
    .await;
}

// --- sessions lost -------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_session_counts_one_session_lost_as_closed() {
    with_timeout(LIMIT, async {
        let (fixture, addr, d) = local_forward(plain_host).await?;
        assert_eq!(
            fixture.server.kill_sessions().await?,
            1,
            "one session to kill"
        );
        d.wait_host("h", STEP, |s| s.state == HostState::Up && s.reconnects >= 1)
            .await?;
        let m = scrape(&d).await?;
        let h = [("host", "h")];
        assert_eq!(m.value("warren_host_up", &h)?, 1.0);
        only(
            &m,
            "warren_host_sessions_lost_total",
            &h,
            "reason",
            &LOSS_REASONS,
            &[("closed", 1.0)],
        )?;
        // The new session carries connections.
        echo_through(addr, MIB).await?;
        d.stop(Duration::from_secs(1)).await;
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_session_counts_one_session_lost_to_keepalive() {
    with_timeout(LIMIT, async {
        let fast = |f: &Fixture| {
            let t = with_setting(&plain_host(f), "keepalive_interval", "\"500ms\"");
            let t = with_setting(&t, "keepalive_count_max", &COUNT_MAX.to_string());
            with_setting(&t, "reconnect_max", "\"1s\"")
        };
        let (fixture, addr, d) = local_forward(fast).await?;
        let h = [("host", "h")];

        // No reply, no reset: only the keepalives can tell (new connections are parked).
        assert_eq!(fixture.server.freeze_sessions()?, 1);
        let bound = KEEPALIVE * (COUNT_MAX + 1) + MARGIN;
        d.wait_host("h", bound, |s| s.state != HostState::Up)
            .await
            .context("the frozen server must be noticed by keepalive")?;
        let m = scrape(&d).await?;
        assert_eq!(m.value("warren_host_up", &h)?, 0.0);
        assert_eq!(
            m.value("warren_host_state", &[("host", "h"), ("state", "up")])?,
            0.0
        );
        only(
            &m,
            "warren_host_sessions_lost_total",
            &h,
            "reason",
            &LOSS_REASONS,
            &[("keepalive", 1.0)],
        )?;

        // Thawed: up again, and the loss is still the one.
        fixture.server.thaw_sessions()?;
        d.wait_up("h", STEP).await?;
        echo_through(addr, MIB).await?;
        let m = scrape(&d).await?;
        assert_eq!(m.value("warren_host_up", &h)?, 1.0);
        only(
            &m,
            "warren_host_sessions_lost_total",
            &h,
            "reason",
            &LOSS_REASONS,
            &[("keepalive", 1.0)],
        )?;
        d.stop(Duration::from_secs(1)).await;
        Ok(())
    })
    .await;
}

// --- connect failures ----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_key_counts_connect_failures_of_class_auth() {
    with_timeout(LIMIT, async {
        let server = SshServer::start().await?;
        let accepted = UserKey::generate(KeyKind::Ed25519, None).await?;
        server.authorize(&accepted)?;
        let rejected = UserKey::generate(KeyKind::Ed25519, None).await?;
        let (listener, addr) = ingress();
        let toml = host_table("h", &server, &rejected)
            + &forward_table("f", "h", "local", &addr.to_string(), Some("127.0.0.1:9"));
        let d = TestDaemon::start(&toml, vec![listener]).await?;
        let h = [("host", "h")];
        let m = wait_daemon(&d, STEP, "an auth failure is counted", |m| {
            m.value(
                "warren_host_connect_failures_total",
                &[("host", "h"), ("class", "auth")],
            )
            .is_ok_and(|n| n >= 1.0)
        })
        .await?;
        for class in ["network", "host-key", "config"] {
            assert_eq!(
                m.value(
                    "warren_host_connect_failures_total",
                    &[("host", "h"), ("class", class)]
                )?,
                0.0,
                "class {class}"
            );
        }
        assert_eq!(m.value("warren_host_up", &h)?, 0.0);
        assert_eq!(
            m.value("warren_host_state", &[("host", "h"), ("state", "up")])?,
            0.0
        );
        assert_eq!(m.value("warren_forward_ready", &[("forward", "f")])?, 0.0);
        only(
            &m,
            "warren_host_sessions_lost_total",
            &h,
            "reason",
            &LOSS_REASONS,
            &[],
        )?;
        ensure!(!server.log_contains("Accepted publickey"));
        d.stop(Duration::from_secs(1)).await;
        Ok(())
    })
    .await;
}

// --- keepalive round trips -----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_round_trips_fill_the_rtt_histogram_and_status() {
    with_timeout(LIMIT, async {
        let every_second =
            |f: &Fixture| with_setting(&plain_host(f), "keepalive_interval", "\"1s\"");
        let (_fixture, _addr, d) = local_forward(every_second).await?;
        let h = [("host", "h")];
        let m = wait_daemon(&d, STEP, "two keepalive round trips", |m| {
            m.value("warren_keepalive_rtt_seconds_count", &h)
                .is_ok_and(|n| n >= 2.0)
        })
        .await?;
        let count = m.value("warren_keepalive_rtt_seconds_count", &h)?;
        let sum = m.value("warren_keepalive_rtt_seconds_sum", &h)?;
        ensure!(sum > 0.0, "round trips take time: sum {sum}");
        // Each is timed out after one interval, so none is longer.
        ensure!(
            sum <= count,
            "{count} round trips of at most 1 s sum to {sum}"
        );
        assert_eq!(
            m.value(
                "warren_keepalive_rtt_seconds_bucket",
                &[("host", "h"), ("le", "+Inf")]
            )?,
            count
        );
        assert_eq!(
            m.value(
                "warren_keepalive_rtt_seconds_bucket",
                &[("host", "h"), ("le", "1.0")]
            )?,
            count,
            "every round trip is within 1 s"
        );

        let control = Control::serve(&d).await?;
        let doc = control.json().await?;
        let rtt = &doc["hosts"][0]["keepalive_rtt_ms"];
        ensure!(
            rtt.as_f64().is_some_and(|ms| ms > 0.0 && ms <= 1000.0),
            "keepalive_rtt_ms is a number of milliseconds: {doc}"
        );
        let table = control.table().await?;
        let row = table
            .lines()
            .find(|l| l.starts_with("h "))
            .with_context(|| format!("no row for h in:\n{table}"))?;
        ensure!(
            row.split_whitespace().any(|cell| cell
                .strip_suffix("ms")
                .is_some_and(|ms| ms.parse::<f64>().is_ok())),
            "the RTT column shows milliseconds:\n{table}"
        );
        d.stop(Duration::from_secs(1)).await;
        Ok(())
    })
    .await;
}

// --- probes --------------------------------------------------------------------------------------

/// A forward `probed` of `kind` with `probe_interval` to an echo server of its own, and a local
/// forward `plain` without probes: the probe is `ok`; `failing` (naming the egress) once the
/// egress is gone; `ok` again when an echo server listens on its port again. Status JSON,
/// the table, the summary and the metrics say so all along; `plain` has no probe anywhere.
async fn probe_fails_and_recovers(kind: &str) -> anyhow::Result<()> {
    let fixture = Fixture::start().await?;
    let egress = EchoServer::start(Transport::Tcp).await?;
    let egress_addr = egress.addr().tcp()?;
    let (probed_listener, probed_addr) = ingress();
    let (plain_listener, plain_addr) = ingress();
    let (probed_listen, mut listeners) = match kind {
        "local" => (probed_addr.to_string(), vec![probed_listener]),
        _ => ("127.0.0.1:0".to_string(), vec![]),
    };
    listeners.push(plain_listener);
    let toml = plain_host(&fixture)
        + &forward_table(
            "probed",
            "h",
            kind,
            &probed_listen,
            Some(&egress_addr.to_string()),
        )
        + &format!("probe_interval = \"{PROBE_INTERVAL}\"\n\n")
        + &forward_table(
            "plain",
            "h",
            "local",
            &plain_addr.to_string(),
            Some(&fixture.echo.addr().to_string()),
        );
    let d = TestDaemon::start(&toml, listeners).await?;
    d.wait_up("h", STEP).await?;
    let control = Control::serve(&d).await?;
    let probed = [("forward", "probed")];
    let both_ready = |m: &Metrics| {
        m.is("warren_forward_ready", &probed, 1.0)
            && m.is("warren_forward_ready", &[("forward", "plain")], 1.0)
    };

    // Up: the egress answers.
    let m = wait_daemon(&d, STEP, "the probe is ok", |m| {
        both_ready(m) && m.is("warren_forward_probe_up", &probed, 1.0)
    })
    .await?;
    ensure!(
        m.samples("warren_forward_probe_up", &[("forward", "plain")])
            .is_empty(),
        "a forward without probe_interval has no probe series:\n{}",
        m.text
    );
    let doc = control.json().await?;
    let probe = &forward_doc(&doc, "probed")?["probe"];
    assert_eq!(probe["state"], "ok", "{doc}");
    assert!(probe["last_error"].is_null(), "{doc}");
    let ok_since = humantime::parse_rfc3339(probe["since"].as_str().context("since")?)?;
    ensure!(
        forward_doc(&doc, "plain")?["probe"].is_null(),
        "no probe on plain: {doc}"
    );
    assert_eq!(d.daemon().summary(), "1/1 hosts up, 2/2 forwards ready");
    // Where a connection to `probed` goes in: its ingress, or the server's listener.
    let through: std::net::SocketAddr = match kind {
        "local" => probed_addr,
        _ => forward_doc(&doc, "probed")?["listen"]
            .as_str()
            .context("listen")?
            .parse()?,
    };
    echo_through(through, MIB).await?;

    // The egress goes away: its port refuses.
    drop(egress);
    let m = wait_daemon(&d, STEP, "the probe is failing", |m| {
        m.is("warren_forward_probe_up", &probed, 0.0)
    })
    .await?;
    ensure!(both_ready(&m), "a failing probe leaves the forward ready");
    let doc = control.json().await?;
    let probe = &forward_doc(&doc, "probed")?["probe"];
    assert_eq!(probe["state"], "failing", "{doc}");
    let error = probe["last_error"]
        .as_str()
        .context("a failing probe has an error")?;
    ensure!(
        error.contains(&egress_addr.to_string()),
        "the error names the egress {egress_addr}: {error:?}"
    );
    let failing_since = humantime::parse_rfc3339(probe["since"].as_str().context("since")?)?;
    ensure!(
        failing_since >= ok_since,
        "since moves with the state: {doc}"
    );
    assert_eq!(
        d.daemon().summary(),
        "1/1 hosts up, 2/2 forwards ready, 1 forward failing its probe"
    );
    assert_eq!(
        d.daemon().watch_control_state().borrow().summary(),
        d.daemon().summary()
    );
    let table = control.table().await?;
    let row = table
        .lines()
        .find(|l| l.starts_with("probed "))
        .with_context(|| format!("no probed row in:\n{table}"))?;
    ensure!(row.contains("ready (probe failing)"), "{table}");
    let plain_row = table
        .lines()
        .find(|l| l.starts_with("plain "))
        .with_context(|| format!("no plain row in:\n{table}"))?;
    ensure!(!plain_row.contains("probe"), "{table}");

    // Back on the same port (once the old listener is gone).
    let _egress = wait_for(STEP, "the egress port to be free again", || async {
        EchoServer::start_at(egress_addr.port()).ok()
    })
    .await?;
    wait_daemon(&d, STEP, "the probe is ok again", |m| {
        m.is("warren_forward_probe_up", &probed, 1.0)
    })
    .await?;
    let doc = control.json().await?;
    let probe = &forward_doc(&doc, "probed")?["probe"];
    assert_eq!(probe["state"], "ok", "{doc}");
    assert!(probe["last_error"].is_null(), "{doc}");
    assert_eq!(d.daemon().summary(), "1/1 hosts up, 2/2 forwards ready");
    echo_through(through, MIB).await?;
    d.stop(Duration::from_secs(1)).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_forward_probe_fails_when_its_egress_goes_and_recovers() {
    with_timeout(LIMIT, probe_fails_and_recovers("local")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_forward_probe_fails_when_its_egress_goes_and_recovers() {
    with_timeout(LIMIT, probe_fails_and_recovers("remote")).await;
}

// --- the HTTP endpoint of `warren run` -----------------------------------------------------------

/// An HTTP answer.
#[derive(Debug)]
struct Reply {
    status: u16,
    /// Header names in lower case.
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Sends one `METHOD PATH` request (`Connection: close`) on `stream` and reads the answer.
async fn http(
    mut stream: impl AsyncRead + AsyncWrite + Unpin,
    method: &str,
    path: &str,
) -> anyhow::Result<Reply> {
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: warren\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    within(STEP, "the HTTP answer", stream.read_to_end(&mut raw)).await??;
    let raw = String::from_utf8(raw)?;
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .with_context(|| format!("no end of head in {raw:?}"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .strip_prefix("HTTP/1.1 ")
        .and_then(|s| s.get(..3))
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let reply = Reply {
        status,
        headers,
        body: body.to_owned(),
    };
    let length = reply
        .header("content-length")
        .with_context(|| format!("no content-length: {reply:?}"))?;
    assert_eq!(length.parse::<usize>()?, reply.body.len(), "{reply:?}");
    Ok(reply)
}

/// Where `warren run` serves metrics: `listen=ADDR` of its `serving metrics at /metrics` line.
async fn metrics_address(warren: &crate::harness::WarrenProcess) -> anyhow::Result<String> {
    let line = warren
        .wait_for_stderr(STEP, |l| l.contains("serving metrics at /metrics"))
        .await?;
    line.split_whitespace()
        .find_map(|w| w.strip_prefix("listen="))
        .map(|a| a.trim_matches('"').to_owned())
        .with_context(|| format!("no listen= in {line:?}"))
}

/// `GET /metrics` over `connect()`, checked as a good answer and parsed.
async fn get_metrics<S, Fut>(connect: impl Fn() -> Fut) -> anyhow::Result<Metrics>
where
    S: AsyncRead + AsyncWrite + Unpin,
    Fut: Future<Output = std::io::Result<S>>,
{
    let reply = http(connect().await?, "GET", "/metrics").await?;
    ensure!(reply.status == 200, "{reply:?}");
    assert_eq!(
        reply.header("content-type"),
        Some(CONTENT_TYPE),
        "{reply:?}"
    );
    parse(reply.body).await
}

/// A `warren run` of host `h` with a local forward on a Unix ingress in `files`, with
/// `metrics_listen = LISTEN`; returns the process and the address it logged.
async fn run_with_metrics(
    fixture: &Fixture,
    files: &Files,
    listen: &str,
) -> anyhow::Result<(crate::harness::WarrenProcess, String)> {
    let rest = plain_host(fixture)
        + &forward_table(
            "f",
            "h",
            "local",
            &files.path("in.sock").display().to_string(),
            Some(&fixture.echo.addr().to_string()),
        );
    let config = files.config(&format!("metrics_listen = \"{listen}\""), &rest)?;
    let warren = files.spawn(&config)?;
    let at = metrics_address(&warren).await?;
    Ok((warren, at))
}

/// 1 MiB echoed through the forward's Unix ingress.
async fn echo_through_unix(path: &Path) -> anyhow::Result<()> {
    let stream = UnixStream::connect(path).await?;
    within(STEP, "an echo round trip", push_through(stream, MIB))
        .await??
        .check_echoed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warren_run_serves_get_metrics_on_tcp_port_0_and_404_and_405_otherwise() {
    with_timeout(LIMIT, async {
        let fixture = Fixture::start().await?;
        let files = Files::new()?;
        let (mut warren, at) = run_with_metrics(&fixture, &files, "127.0.0.1:0").await?;
        let at: std::net::SocketAddr = at.parse().with_context(|| format!("listen={at}"))?;
        ensure!(at.ip().is_loopback() && at.port() != 0, "bound at {at}");
        let connect = || TcpStream::connect(at);

        let m = wait_metrics(
            STEP,
            "host h up and forward f ready in GET /metrics",
            || get_metrics(connect),
            |m| {
                m.is("warren_host_up", &[("host", "h")], 1.0)
                    && m.is("warren_forward_ready", &[("forward", "f")], 1.0)
            },
        )
        .await?;
        ensure!(m.text.ends_with("# EOF\n"));
        for (name, kind, _) in FAMILIES {
            assert_eq!(m.family(name)?.kind, *kind, "type of {name}");
        }
        // What the endpoint serves is the running daemon's: bytes carried show.
        echo_through_unix(&files.path("in.sock")).await?;
        let f = [("forward", "f")];
        let after = wait_metrics(
            STEP,
            "the connection to be counted and closed",
            || get_metrics(connect),
            |a| {
                a.is("warren_forward_connections_total", &f, 1.0)
                    && a.is("warren_forward_connections_active", &f, 0.0)
            },
        )
        .await?;
        #[allow(clippy::cast_precision_loss)] // 1 MiB is exact in an f64
        let mib = MIB as f64;
        for direction in ["in", "out"] {
            let labels = [("forward", "f"), ("direction", direction)];
            assert_eq!(
                after.moved(&m, "warren_forward_bytes_total", &labels)?,
                mib,
                "bytes {direction}"
            );
        }

        let other = http(connect().await?, "GET", "/other").await?;
        assert_eq!(other.status, 404, "{other:?}");
        let post = http(connect().await?, "POST", "/metrics").await?;
        assert_eq!(post.status, 405, "{post:?}");
        assert_eq!(post.header("allow"), Some("GET, HEAD"), "{post:?}");

        warren.sigterm()?;
        assert_eq!(
            warren.wait_exit(STEP).await?,
            0,
            "{}",
            tail(&warren.stderr_text(), 40)
        );
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warren_run_serves_get_metrics_on_a_unix_socket_of_mode_0600() {
    with_timeout(LIMIT, async {
        let fixture = Fixture::start().await?;
        let files = Files::new()?;
        let sock = files.path("metrics.sock");
        let (mut warren, at) =
            run_with_metrics(&fixture, &files, &sock.display().to_string()).await?;
        assert_eq!(PathBuf::from(&at), sock, "the logged address");
        let meta = std::fs::metadata(&sock)?;
        ensure!(
            meta.file_type().is_socket(),
            "{} is a socket",
            sock.display()
        );
        assert_eq!(
            meta.permissions().mode() & 0o777,
            0o600,
            "mode of {}",
            sock.display()
        );

        let connect = || UnixStream::connect(&sock);
        let m = wait_metrics(
            STEP,
            "host h up in GET /metrics",
            || get_metrics(connect),
            |m| m.is("warren_host_up", &[("host", "h")], 1.0),
        )
        .await?;
        assert_eq!(m.value("warren_forward_ready", &[("forward", "f")])?, 1.0);
        let other = http(connect().await?, "GET", "/").await?;
        assert_eq!(other.status, 404, "{other:?}");

        warren.sigterm()?;
        assert_eq!(
            warren.wait_exit(STEP).await?,
            0,
            "{}",
            tail(&warren.stderr_text(), 40)
        );
        ensure!(!sock.exists(), "the socket file is removed on exit");
        Ok(())
    })
    .await;
}

// --- `warren check` ------------------------------------------------------------------------------

/// `warren check -c FILE` of a file whose `[daemon]` table has `daemon` lines (and a host and
/// forward that need no server): its exit code and stderr.
async fn check(daemon: &str) -> anyhow::Result<(i32, String, String)> {
    let files = Files::new()?;
    let rest = "[hosts.h]\nhostname = \"gw.example.com\"\nhost_key_policy = \"accept-new\"\n\n\
                [[forward]]\nname = \"socks\"\nhost = \"h\"\ntype = \"dynamic\"\n\
                listen = \"127.0.0.1:1080\"\n";
    let config = files.config(daemon, rest)?;
    let out = run_warren(
        &["check", "-c", &config.display().to_string()],
        &[("HOME", &files.home())],
        STEP,
    )
    .await?;
    Ok((
        crate::harness::exit_code(out.status),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_keeps_metrics_listen_on_loopback_unless_metrics_allow_public() {
    with_timeout(LIMIT, async {
        let (code, _, stderr) = check("metrics_listen = \"0.0.0.0:9187\"").await?;
        assert_eq!(code, EXIT_CONFIG, "{stderr}");
        ensure!(
            stderr.contains("`metrics_listen` 0.0.0.0:9187")
                && stderr.contains("metrics_allow_public = true"),
            "the error names both settings: {stderr}"
        );

        let (code, stdout, stderr) =
            check("metrics_listen = \"0.0.0.0:9187\"\nmetrics_allow_public = true").await?;
        assert_eq!(code, 0, "{stderr}");
        ensure!(stdout.contains(": ok ("), "{stdout}");

        for fine in [
            "127.0.0.1:0",
            "9187",
            "[::1]:9187",
            "/run/warren/metrics.sock",
        ] {
            let (code, _, stderr) = check(&format!("metrics_listen = \"{fine}\"")).await?;
            assert_eq!(code, 0, "metrics_listen = {fine:?}: {stderr}");
        }
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_rejects_a_malformed_metrics_listen_and_a_lone_metrics_allow_public() {
    with_timeout(LIMIT, async {
        let (code, _, stderr) = check("metrics_listen = \"nonsense\"").await?;
        assert_eq!(code, EXIT_CONFIG, "{stderr}");
        ensure!(stderr.contains("`metrics_listen`"), "{stderr}");

        let (code, _, stderr) = check("metrics_allow_public = true").await?;
        assert_eq!(code, EXIT_CONFIG, "{stderr}");
        ensure!(
            stderr.contains("`metrics_allow_public` without `metrics_listen`"),
            "{stderr}"
        );
        Ok(())
    })
    .await;
}
