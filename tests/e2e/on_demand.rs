//! On-demand hosts (`on_demand = true`, `idle_timeout`) through `warren run`: no session until
//! the first connection, which waits for the one it opens; one session shared while
//! connections are open; closed `idle_timeout` after the last, and opened again by the next.
//! A jump host used only by on-demand hosts follows them, lingering `HOP_LINGER` after its
//! last user. `warren check` refuses a remote forward of an on-demand host and an
//! `idle_timeout` without `on_demand`.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, ensure};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};
use tokio::time::Instant;
use warren::config::HOP_LINGER;

use crate::harness::{
    EchoServer, KeyKind, MIB, SessionCounts, SshServer, Transport, UserKey, WarrenProcess, hex,
    push_through, read_digest, run_warren, tail, wait_for, with_timeout, within, write_random,
};
use crate::support::{Files, Fixture, forward_table, host_table, host_table_with, status_json};

const LIMIT: Duration = Duration::from_secs(120);
/// Bound for one step that should be quick.
const STEP: Duration = Duration::from_secs(20);
/// The on-demand hosts' `idle_timeout`.
const IDLE: Duration = Duration::from_secs(2);
/// How much sooner the test may see a connection end than warren's forward does (the two
/// ends of one close race by a few milliseconds): the slack of the "not before" checks.
const SLACK: Duration = Duration::from_millis(250);
/// No session at all.
const NONE: SessionCounts = SessionCounts {
    accepted: 0,
    alive: 0,
};

/// The host settings that make a host on demand with `idle_timeout` [`IDLE`].
fn on_demand() -> String {
    format!("on_demand = true\nidle_timeout = \"{}s\"\n", IDLE.as_secs())
}

/// Entry `name` of the `key` list (`hosts` or `forwards`) of a status document.
fn entry<'a>(doc: &'a Value, key: &str, name: &str) -> Option<&'a Value> {
    doc[key].as_array()?.iter().find(|e| e["name"] == name)
}

/// Waits until every host in `hosts` is in `state` and every forward is ready; the document.
async fn wait_hosts(
    warren: &WarrenProcess,
    sock: &Path,
    hosts: &[&str],
    state: &str,
) -> anyhow::Result<Value> {
    let sock = sock.display().to_string();
    let what = format!("hosts {hosts:?} {state} and the forwards ready");
    wait_for(STEP, &what, || {
        let sock = sock.clone();
        async move {
            let doc = status_json(&sock).await?;
            let hosts_in = hosts
                .iter()
                .all(|h| entry(&doc, "hosts", h).is_some_and(|e| e["state"] == state));
            let ready = doc["forwards"]
                .as_array()?
                .iter()
                .all(|f| f["state"] == "ready");
            (hosts_in && ready).then_some(doc)
        }
    })
    .await
    .with_context(|| format!("warren stderr:\n{}", tail(&warren.stderr_text(), 40)))
}

/// Sends `len` random bytes on `stream` and reads as many back (an echo), at once, without
/// closing it; fails unless the same bytes came back.
async fn round_trip(stream: &mut UnixStream, len: u64) -> anyhow::Result<()> {
    let (mut reader, mut writer) = stream.split();
    let mut back = (&mut reader).take(len);
    let (sent, (received, digest)) = within(STEP, "an echo round trip", async {
        tokio::try_join!(
            write_random(&mut writer, len, rand::random()),
            read_digest(&mut back)
        )
    })
    .await??;
    ensure!(
        received == len && digest == sent,
        "echo mismatch on a held connection: sent {len} bytes ({}), received {received} ({})",
        hex(&sent),
        hex(&digest)
    );
    Ok(())
}

/// `len` random bytes echoed over a new connection to `ingress`, which then closes.
async fn echo_once(ingress: &Path, len: u64) -> anyhow::Result<()> {
    let stream = UnixStream::connect(ingress).await?;
    within(
        STEP,
        "an echo through a new connection",
        push_through(stream, len),
    )
    .await??
    .check_echoed()
}

/// `GET /metrics` from `warren run`'s metrics endpoint, as text.
async fn metrics_text(warren: &WarrenProcess) -> anyhow::Result<String> {
    let line = warren
        .wait_for_stderr(STEP, |l| l.contains("serving metrics at /metrics"))
        .await?;
    let at = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("listen="))
        .map(|a| a.trim_matches('"').to_owned())
        .with_context(|| format!("no listen= in {line:?}"))?;
    let mut stream = TcpStream::connect(&at).await?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: warren\r\nConnection: close\r\n\r\n")
        .await?;
    let mut raw = Vec::new();
    within(STEP, "the metrics", stream.read_to_end(&mut raw)).await??;
    Ok(String::from_utf8(raw)?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_on_demand_host_opens_its_session_for_connections_and_closes_it_when_idle() {
    with_timeout(LIMIT, async {
        let Fixture { server, key, echo } = Fixture::start().await?;
        let files = Files::new()?;
        let ingress = files.path("in.sock");
        let rest = host_table_with("h", &server, &key, &server.known_hosts_path(), &on_demand())
            + &forward_table(
                "f",
                "h",
                "local",
                &ingress.display().to_string(),
                Some(&echo.addr().to_string()),
            );
        let config = files.config("metrics_listen = \"127.0.0.1:0\"", &rest)?;
        let warren = files.spawn(&config)?;
        let sock = files.control_socket();

        // Ready and idle: status, its table and the metrics say so, and no session is open.
        wait_hosts(&warren, &sock, &["h"], "idle").await?;
        let table = run_warren(&["status", "-s", &sock.display().to_string()], &[], STEP).await?;
        let table = String::from_utf8_lossy(&table.stdout);
        let row = table
            .lines()
            .find(|l| l.split_whitespace().next() == Some("h"))
            .with_context(|| format!("no row for host h:\n{table}"))?;
        ensure!(
            row.split_whitespace().nth(1) == Some("idle"),
            "host h is not idle in the table:\n{table}"
        );
        let metrics = metrics_text(&warren).await?;
        for line in [
            "warren_host_state{host=\"h\",state=\"idle\"} 1",
            "warren_host_state{host=\"h\",state=\"up\"} 0",
            "warren_host_up{host=\"h\"} 0",
        ] {
            ensure!(
                metrics.contains(line),
                "no {line:?} in the metrics:\n{metrics}"
            );
        }
        assert_eq!(
            server.session_counts(),
            NONE,
            "a session before any connection"
        );

        // The first connection waits for the session it opens; a second one, concurrent with
        // it, shares that session.
        let mut held = UnixStream::connect(&ingress).await?;
        round_trip(&mut held, 4 * MIB).await?;
        let one = SessionCounts {
            accepted: 1,
            alive: 1,
        };
        assert_eq!(server.session_counts(), one, "one session for the first");
        let second = async {
            let stream = UnixStream::connect(&ingress).await?;
            push_through(stream, 16 * MIB).await?.check_echoed()
        };
        within(STEP, "two connections at once", async {
            tokio::try_join!(second, round_trip(&mut held, 4 * MIB))
        })
        .await??;
        assert_eq!(
            server.session_counts(),
            one,
            "the second shares the session"
        );
        wait_hosts(&warren, &sock, &["h"], "up").await?;

        // While a connection is open the session stays, well past idle_timeout.
        let ended = server
            .wait_sessions(2 * IDLE, "the session ends", |c| c.alive == 0)
            .await;
        ensure!(
            ended.is_err(),
            "the session ended while a connection was open: {ended:?}"
        );
        round_trip(&mut held, 4 * MIB).await?;
        within(STEP, "the last connection's close", push_through(held, MIB))
            .await??
            .check_echoed()?;
        let released = Instant::now();

        // idle_timeout after the last connection closed, and not before, the session ends.
        server
            .wait_sessions(IDLE + STEP, "the idle session ends", |c| c.alive == 0)
            .await?;
        let after = released.elapsed();
        ensure!(
            after + SLACK >= IDLE,
            "the session ended {after:?} after the last connection, before idle_timeout {IDLE:?}"
        );
        assert_eq!(server.session_counts().accepted, 1);
        let doc = wait_hosts(&warren, &sock, &["h"], "idle").await?;
        let host = entry(&doc, "hosts", "h").context("no host h")?;
        ensure!(
            host["last_error"].is_null(),
            "an idle close is no error: {host}"
        );

        // The next connection opens a new session.
        echo_once(&ingress, 4 * MIB).await?;
        assert_eq!(server.session_counts().accepted, 2, "a new session");
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jump_host_used_only_by_an_on_demand_host_follows_it() {
    with_timeout(LIMIT, async {
        let bastion = SshServer::start().await?;
        let inner = SshServer::start().await?;
        let key = UserKey::generate(KeyKind::Ed25519, None).await?;
        bastion.authorize(&key)?;
        inner.authorize(&key)?;
        let echo = EchoServer::start(Transport::Tcp).await?;
        let files = Files::new()?;
        let ingress = files.path("in.sock");
        // The bastion carries no forward and serves only `inner`: it follows it.
        let rest = host_table("bastion", &bastion, &key)
            + &host_table_with(
                "inner",
                &inner,
                &key,
                &inner.known_hosts_path(),
                &format!("jump = [\"bastion\"]\n{}", on_demand()),
            )
            + &forward_table(
                "f",
                "inner",
                "local",
                &ingress.display().to_string(),
                Some(&echo.addr().to_string()),
            );
        let config = files.config("", &rest)?;
        let warren = files.spawn(&config)?;
        let sock = files.control_socket();

        wait_hosts(&warren, &sock, &["bastion", "inner"], "idle").await?;
        assert_eq!(bastion.session_counts(), NONE, "a bastion session at start");
        assert_eq!(inner.session_counts(), NONE, "an inner session at start");

        // A connection opens both, the bastion's first.
        let mut held = UnixStream::connect(&ingress).await?;
        round_trip(&mut held, MIB).await?;
        let one = SessionCounts {
            accepted: 1,
            alive: 1,
        };
        assert_eq!(bastion.session_counts(), one, "bastion");
        assert_eq!(inner.session_counts(), one, "inner");
        echo_once(&ingress, 8 * MIB).await?;
        within(STEP, "the last connection's close", push_through(held, MIB))
            .await??
            .check_echoed()?;
        let released = Instant::now();
        assert_eq!(bastion.session_counts(), one, "bastion, in use");
        assert_eq!(inner.session_counts(), one, "inner, in use");

        // inner closes idle_timeout after its last connection; the bastion HOP_LINGER later.
        inner
            .wait_sessions(IDLE + STEP, "inner's idle session ends", |c| c.alive == 0)
            .await?;
        let inner_gone = Instant::now();
        let after = released.elapsed();
        ensure!(
            after + SLACK >= IDLE,
            "inner's session ended {after:?} after the last connection, before idle_timeout"
        );
        assert_eq!(
            bastion.session_counts(),
            one,
            "the bastion's session lingers after inner's"
        );
        bastion
            .wait_sessions(HOP_LINGER + STEP, "the bastion's session ends", |c| {
                c.alive == 0
            })
            .await?;
        let after = inner_gone.elapsed();
        ensure!(
            after + SLACK >= HOP_LINGER,
            "the bastion's session ended {after:?} after inner's, before {HOP_LINGER:?}"
        );
        wait_hosts(&warren, &sock, &["bastion", "inner"], "idle").await?;

        // The next connection opens both again.
        echo_once(&ingress, MIB).await?;
        assert_eq!(
            bastion.session_counts().accepted,
            2,
            "a new bastion session"
        );
        assert_eq!(inner.session_counts().accepted, 2, "a new inner session");
        Ok(())
    })
    .await;
}

/// Line and column (from 1) where `needle` starts in `text`.
fn position(text: &str, needle: &str) -> (usize, usize) {
    let at = text
        .find(needle)
        .unwrap_or_else(|| panic!("{needle:?} not in the config"));
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let col = at - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, col)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warren_check_refuses_a_remote_forward_of_an_on_demand_host_and_a_stray_idle_timeout() {
    with_timeout(LIMIT, async {
        let files = Files::new()?;
        let path = files.path("warren.toml");
        let home = files.home();
        let check = |text: String| {
            let (path, home) = (path.clone(), home.clone());
            async move {
                std::fs::write(&path, &text)?;
                let file = path.display().to_string();
                let out = run_warren(&["check", "-c", &file], &[("HOME", &home)], STEP).await?;
                anyhow::Ok((text, out))
            }
        };
        let db =
            "[hosts.db]\nhostname = \"127.0.0.1\"\non_demand = true\nidle_timeout = \"1m\"\n\n";
        let local = "[[forward]]\nname = \"db\"\nhost = \"db\"\ntype = \"local\"\n\
                     listen = \"127.0.0.1:5432\"\nconnect = \"127.0.0.1:5432\"\n\n";
        let remote = "[[forward]]\nname = \"back\"\nhost = \"db\"\ntype = \"remote\"\n\
                      listen = \"127.0.0.1:8080\"\nconnect = \"127.0.0.1:80\"\n\n";
        let stray = "[hosts.web]\nhostname = \"127.0.0.1\"\nidle_timeout = \"5m\"\n\n";

        // An on-demand host with a local forward is fine.
        let (_, out) = check(format!("{db}{local}")).await?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{stderr}");

        // Both mistakes at once: exit 78, each at its FILE:LINE:COL.
        let (text, out) = check(format!("{db}{stray}{local}{remote}")).await?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{stderr}");
        ensure!(out.stdout.is_empty(), "stdout of a refused config");
        let file = path.display();
        let (line, col) = position(&text, "\"remote\"");
        let at = format!("{file}:{line}:{col}: ");
        let problem = stderr
            .lines()
            .find(|l| l.starts_with(&at))
            .with_context(|| format!("no problem at {at}:\n{stderr}"))?;
        ensure!(
            problem.contains("remote forward") && problem.contains("`db` is `on_demand`"),
            "{problem}"
        );
        let (line, col) = position(&text, "\"5m\"");
        let at = format!("{file}:{line}:{col}: ");
        let problem = stderr
            .lines()
            .find(|l| l.starts_with(&at))
            .with_context(|| format!("no problem at {at}:\n{stderr}"))?;
        ensure!(
            problem.contains("`idle_timeout` applies to an on-demand host"),
            "{problem}"
        );
        assert_eq!(
            stderr.lines().count(),
            2,
            "exactly the two problems:\n{stderr}"
        );
        Ok(())
    })
    .await;
}
