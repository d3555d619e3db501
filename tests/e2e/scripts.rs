//! Scripts can drive warren with no fixed port and no sleep: port 0 works on every ingress.
//!
//! `warren connect` announces where each forward listens once it does (as text, and as JSON
//! read by a Python script), every announced port carries bytes at once, `--exit-when-idle`
//! ends it only after a first connection and the idle time, and a daemon's port-0 ingress
//! shows its real port in status and keeps it (and its open connection) across a reload.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::harness::{
    EchoServer, MIB, Transport, WARREN, WarrenProcess, current_user, push_through, run_warren,
    wait_for, with_timeout, within,
};
use crate::support::{Files, Fixture, forward_table, host_table, status_json};

/// Bound for one whole test.
const LIMIT: Duration = Duration::from_secs(90);
/// Bound for one step that should be quick (a session coming up, an exit).
const STEP: Duration = Duration::from_secs(20);
/// What is pushed through each forward (and checked by digest).
const PUSH: u64 = 4 * MIB;
/// The Python client of `warren connect --json`.
const CLIENT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/e2e/scripts_client.py"
);
/// How long the Python client may take in all (it stops itself after 60 s).
const CLIENT_LIMIT: Duration = Duration::from_secs(75);

/// `ssh`-style options that log in to the fixture's server, then the destination.
fn login_args(f: &Fixture) -> anyhow::Result<Vec<String>> {
    Ok(vec![
        "-i".into(),
        f.key.path().display().to_string(),
        "-p".into(),
        f.server.port().to_string(),
        "-l".into(),
        current_user()?,
        "-o".into(),
        format!(
            "UserKnownHostsFile={}",
            f.server.known_hosts_path().display()
        ),
        "-o".into(),
        "agent=false".into(),
        "127.0.0.1".into(),
    ])
}

/// Starts `warren connect ARGS LOGIN` against the fixture's server with HOME in `home`.
fn spawn_connect(f: &Fixture, home: &Path, args: &[&str]) -> anyhow::Result<WarrenProcess> {
    let login = login_args(f)?;
    let mut all: Vec<&str> = vec!["connect"];
    all.extend_from_slice(args);
    all.extend(login.iter().map(String::as_str));
    WarrenProcess::spawn(&all, &[("HOME", home.to_str().unwrap_or("/nonexistent"))])
}

/// One announced line of `warren connect`: `FLAG LISTEN[ -> CONNECT]`.
#[derive(Debug)]
struct Announced {
    flag: String,
    listen: SocketAddr,
    connect: Option<String>,
}

impl Announced {
    fn parse(line: &str) -> anyhow::Result<Self> {
        let (head, connect) = match line.split_once(" -> ") {
            Some((head, connect)) => (head, Some(connect.to_string())),
            None => (line, None),
        };
        let (flag, listen) = head
            .split_once(' ')
            .with_context(|| format!("no `FLAG LISTEN` in {line:?}"))?;
        let listen: SocketAddr = listen
            .parse()
            .with_context(|| format!("no socket address in {line:?}"))?;
        ensure!(listen.port() != 0, "port 0 announced: {line:?}");
        Ok(Announced {
            flag: flag.to_string(),
            listen,
            connect,
        })
    }
}

/// Reads the first `n` lines warren announces on stdout, parsed.
async fn announced(warren: &WarrenProcess, n: usize) -> anyhow::Result<Vec<(String, Announced)>> {
    let lines = warren.wait_for_stdout_lines(n, STEP).await?;
    lines
        .into_iter()
        .map(|l| Announced::parse(&l).map(|a| (l, a)))
        .collect()
}

/// The announced line of the forward with `flag` towards `connect`; fails unless exactly one.
fn one_of<'a>(
    all: &'a [(String, Announced)],
    flag: &str,
    connect: Option<&str>,
) -> anyhow::Result<&'a (String, Announced)> {
    let found: Vec<_> = all
        .iter()
        .filter(|(_, a)| a.flag == flag && a.connect.as_deref() == connect)
        .collect();
    match found.as_slice() {
        [one] => Ok(*one),
        _ => bail!("not exactly one {flag} line towards {connect:?} in {all:?}"),
    }
}

/// A SOCKS5 CONNECT by name through the proxy at `socks`; the stream, ready for data.
async fn socks5_connect(socks: SocketAddr, host: &str, port: u16) -> anyhow::Result<TcpStream> {
    let mut s = TcpStream::connect(socks).await?;
    s.write_all(&[5, 1, 0]).await?;
    let mut greeting = [0u8; 2];
    s.read_exact(&mut greeting).await?;
    ensure!(greeting == [5, 0], "SOCKS5 greeting answered {greeting:?}");
    let mut req = vec![5, 1, 0, 3, u8::try_from(host.len())?];
    req.extend_from_slice(host.as_bytes());
    req.extend_from_slice(&port.to_be_bytes());
    s.write_all(&req).await?;
    // The reply with an IPv4 bound address (what warren sends): 10 bytes.
    let mut reply = [0u8; 10];
    s.read_exact(&mut reply).await?;
    ensure!(reply[1] == 0, "SOCKS5 CONNECT refused: {reply:?}");
    Ok(s)
}

/// Writes `len` random bytes on `s` and reads the same bytes back (the connection stays open).
async fn round_trip(s: &mut TcpStream, len: usize) -> anyhow::Result<()> {
    let sent: Vec<u8> = (0..len).map(|_| rand::random::<u8>()).collect();
    let mut back = vec![0u8; len];
    let (mut r, mut w) = s.split();
    let (wrote, read) = tokio::join!(w.write_all(&sent), r.read_exact(&mut back));
    wrote.context("write")?;
    read.context("read the echo")?;
    ensure!(back == sent, "the echo differs from what was sent");
    Ok(())
}

/// Pushes [`PUSH`] bytes through a new connection to `addr`; they must come back exactly.
async fn echo_through(addr: SocketAddr) -> anyhow::Result<()> {
    let s = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connect to {addr}"))?;
    push_through(s, PUSH)
        .await?
        .check_echoed()
        .with_context(|| format!("through {addr}"))
}

/// SIGTERM, then exit 0 (it is a clean stop).
async fn stop(mut warren: WarrenProcess) -> anyhow::Result<()> {
    warren.sigterm()?;
    let code = warren.wait_exit(STEP).await?;
    ensure!(code == 0, "exit {code} after SIGTERM");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_announces_l_l_d_on_port_0_and_each_carries_bytes() {
    with_timeout(LIMIT, async {
        let f = Fixture::start().await?;
        let echo2 = EchoServer::start(Transport::Tcp).await?;
        let home = tempfile::tempdir()?;
        let (e1, e2) = (f.echo.addr().port(), echo2.addr().port());
        let (l1, l2) = (format!("0:localhost:{e1}"), format!("0:localhost:{e2}"));
        let warren = spawn_connect(&f, home.path(), &["-L", &l1, "-L", &l2, "-D", "0"])?;

        let all = announced(&warren, 3).await?;
        let (text1, a1) = one_of(&all, "-L", Some(&format!("localhost:{e1}")))?;
        let (text2, a2) = one_of(&all, "-L", Some(&format!("localhost:{e2}")))?;
        let (text_d, d) = one_of(&all, "-D", None)?;
        // The text format, exactly (the ports are the only thing the test cannot know).
        assert_eq!(
            *text1,
            format!("-L 127.0.0.1:{} -> localhost:{e1}", a1.listen.port())
        );
        assert_eq!(
            *text2,
            format!("-L 127.0.0.1:{} -> localhost:{e2}", a2.listen.port())
        );
        assert_eq!(*text_d, format!("-D 127.0.0.1:{}", d.listen.port()));
        let mut ports = vec![a1.listen.port(), a2.listen.port(), d.listen.port()];
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), 3, "three distinct ports: {all:?}");

        // Each -L port reaches its own echo server, at once (no retry: it was announced).
        echo_through(a1.listen).await?;
        assert_eq!((f.echo.connections(), echo2.connections()), (1, 0));
        echo_through(a2.listen).await?;
        assert_eq!((f.echo.connections(), echo2.connections()), (1, 1));

        // The -D port is a SOCKS5 proxy: CONNECT by name to the second echo server.
        let s = socks5_connect(d.listen, "localhost", e2).await?;
        push_through(s, PUSH).await?.check_echoed()?;
        assert_eq!(echo2.connections(), 2);

        assert_eq!(
            f.server.session_counts().accepted,
            1,
            "the three forwards share one session"
        );
        assert_eq!(
            warren.stdout_text().lines().count(),
            3,
            "nothing else on stdout"
        );
        stop(warren).await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_announces_the_port_the_server_gave_a_remote_forward_on_port_0() {
    with_timeout(LIMIT, async {
        let f = Fixture::start().await?;
        let home = tempfile::tempdir()?;
        let e = f.echo.addr().port();
        let r = format!("0:localhost:{e}");
        let warren = spawn_connect(&f, home.path(), &["-R", &r])?;

        let all = announced(&warren, 1).await?;
        let (text, a) = one_of(&all, "-R", Some(&format!("localhost:{e}")))?;
        assert_eq!(
            *text,
            format!("-R 127.0.0.1:{} -> localhost:{e}", a.listen.port())
        );
        // The listener is sshd's (the server is this machine): connecting to it goes through
        // the session back to warren and on to the echo server.
        echo_through(a.listen).await?;
        assert_eq!(f.echo.connections(), 1);
        assert_eq!(f.server.session_counts().accepted, 1);
        stop(warren).await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_script_reads_the_json_announcement_and_uses_every_forward() {
    with_timeout(LIMIT, async {
        let f = Fixture::start().await?;
        let home = tempfile::tempdir()?;
        let target = format!("localhost:{}", f.echo.addr().port());
        let spec = format!("0:{target}");
        let python = if Path::new("/usr/bin/python3").exists() {
            "/usr/bin/python3"
        } else {
            "python3"
        };
        let mut cmd = tokio::process::Command::new(python);
        cmd.arg(CLIENT)
            .arg(WARREN)
            .arg(&target)
            .args(["-L", &spec, "-L", &spec, "-R", &spec, "-D", "0"])
            .args(login_args(&f)?)
            // Nothing of the developer's environment (agent, RUST_LOG...) reaches warren.
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", home.path())
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let out = within(CLIENT_LIMIT, "the Python client", cmd.output())
            .await?
            .with_context(|| format!("start {python} {CLIENT}"))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(0),
            "stdout:\n{stdout}\nstderr (the client's and warren's):\n{stderr}"
        );

        // Its summary: `echoed BYTES bytes via TYPE LISTEN NAME` per forward, then the exit.
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(lines.len(), 5, "{stdout}");
        assert_eq!(lines[4], "warren exited 0");
        let mut names = Vec::new();
        let mut ports = Vec::new();
        for line in &lines[..4] {
            let words: Vec<&str> = line.split(' ').collect();
            let [echoed, bytes, "bytes", "via", kind, listen, name] = words.as_slice() else {
                bail!("unexpected summary line {line:?}");
            };
            assert_eq!((*echoed, *bytes), ("echoed", "1048576"), "{line}");
            let listen: SocketAddr = listen.parse()?;
            ensure!(listen.port() != 0, "{line}");
            assert_eq!(listen.ip().to_string(), "127.0.0.1", "{line}");
            ports.push(listen.port());
            names.push(format!("{kind} {name}"));
        }
        names.sort();
        // Unnamed forwards get `HOST:TYPE:LISTEN`; the second -L on port 0 is numbered.
        assert_eq!(
            names,
            [
                "dynamic 127.0.0.1:dynamic:127.0.0.1:0",
                "local 127.0.0.1:local:127.0.0.1:0",
                "local 127.0.0.1:local:127.0.0.1:0#2",
                "remote 127.0.0.1:remote:127.0.0.1:0",
            ]
        );
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), 4, "four distinct ports: {stdout}");
        assert_eq!(
            f.echo.connections(),
            4,
            "every forward reached the echo server"
        );
        assert_eq!(f.server.session_counts().accepted, 1);
        Ok(())
    })
    .await;
}

/// Starts `warren connect --exit-when-idle IDLE -L 0:localhost:ECHO`; it and its announced port.
async fn idle_connect(
    f: &Fixture,
    home: &Path,
    idle: &str,
) -> anyhow::Result<(WarrenProcess, SocketAddr)> {
    let spec = format!("0:localhost:{}", f.echo.addr().port());
    let warren = spawn_connect(f, home, &["--exit-when-idle", idle, "-L", &spec])?;
    let all = announced(&warren, 1).await?;
    let (_, a) = one_of(
        &all,
        "-L",
        Some(&format!("localhost:{}", f.echo.addr().port())),
    )?;
    Ok((warren, a.listen))
}

/// Waits for warren to exit with 0 for `--exit-when-idle`; how long after `since` it exited.
async fn idle_exit(warren: &mut WarrenProcess, since: Instant) -> anyhow::Result<Duration> {
    let code = warren.wait_exit(STEP).await?;
    let after = since.elapsed();
    ensure!(code == 0, "exit {code}:\n{}", warren.stderr_text());
    ensure!(
        warren.stderr_text().contains("--exit-when-idle"),
        "the log says why it stopped:\n{}",
        warren.stderr_text()
    );
    Ok(after)
}

/// Fails if warren exits within `wait`. The absence of an exit is the point here, so this is
/// a bounded wait on purpose (nothing could be waited for instead).
async fn still_running_after(warren: &mut WarrenProcess, wait: Duration) -> anyhow::Result<()> {
    if let Ok(code) = warren.wait_exit(wait).await {
        bail!(
            "warren exited ({code}) too early:\n{}",
            warren.stderr_text()
        );
    }
    ensure!(warren.is_running());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_when_idle_waits_for_a_first_connection_then_exits_after_it_closes() {
    with_timeout(LIMIT, async {
        let f = Fixture::start().await?;
        let home = tempfile::tempdir()?;
        let (mut warren, listen) = idle_connect(&f, home.path(), "1s").await?;

        // No connection yet: twice the idle time passes and warren is still there.
        still_running_after(&mut warren, Duration::from_secs(2)).await?;

        // One connection carries bytes and closes (push_through returns with both halves
        // dropped); about a second later warren ends, with 0.
        echo_through(listen).await?;
        let after = idle_exit(&mut warren, Instant::now()).await?;
        ensure!(
            after >= Duration::from_millis(900) && after <= Duration::from_secs(5),
            "exited {after:?} after the only connection closed; expected 1 s (0.9 to 5 s)"
        );
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_when_idle_is_postponed_by_a_connection_opened_before_it_elapses() {
    with_timeout(LIMIT, async {
        let f = Fixture::start().await?;
        let home = tempfile::tempdir()?;
        // 2 s: room for the steps below to happen inside the idle time on a loaded machine.
        let (mut warren, listen) = idle_connect(&f, home.path(), "2s").await?;

        echo_through(listen).await?;
        let first_closed = Instant::now();
        // The timeline is what is tested: B opens half a second into A's idle time.
        tokio::time::sleep_until(first_closed + Duration::from_millis(500)).await;
        let mut b = TcpStream::connect(listen).await?;
        round_trip(&mut b, 64 * 1024).await?;
        ensure!(
            first_closed.elapsed() < Duration::from_secs(2),
            "B opened only after the idle time; the machine is too slow for this test"
        );
        // A's idle time ends at 2 s; B still open, warren stays past it (bounded wait again).
        let until = first_closed + Duration::from_secs(3);
        still_running_after(&mut warren, until.saturating_duration_since(Instant::now())).await?;
        round_trip(&mut b, 64 * 1024).await?;

        // B closes: the idle time counts from there.
        drop(b);
        let after = idle_exit(&mut warren, Instant::now()).await?;
        ensure!(
            after >= Duration::from_millis(1900) && after <= Duration::from_secs(6),
            "exited {after:?} after the last connection closed; expected 2 s (1.9 to 6 s)"
        );
        Ok(())
    })
    .await;
}

/// The forward named `name` in a status document.
fn forward<'a>(doc: &'a serde_json::Value, name: &str) -> Option<&'a serde_json::Value> {
    doc["forwards"]
        .as_array()?
        .iter()
        .find(|f| f["name"] == name)
}

/// Waits until every forward in `names` is ready in `warren status`; their listen addresses.
async fn ready_listens(sock: &str, names: &[&str]) -> anyhow::Result<Vec<SocketAddr>> {
    wait_for(STEP, "the forwards ready in status", || async {
        let doc = status_json(sock).await?;
        names
            .iter()
            .map(|n| {
                let f = forward(&doc, n)?;
                (f["state"] == "ready").then_some(())?;
                f["listen"].as_str()?.parse().ok()
            })
            .collect()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemons_port_0_ingress_shows_its_port_and_keeps_it_across_a_reload() {
    with_timeout(LIMIT, async {
        let f = Fixture::start().await?;
        let files = Files::new()?;
        let sock = files.control_socket().display().to_string();
        let e = f.echo.addr().to_string();
        let first = host_table("h", &f.server, &f.key)
            + &forward_table("zero", "h", "local", "127.0.0.1:0", Some(&e));
        let config = files.config("", &first)?;
        let warren = files.spawn(&config)?;

        let [zero] = ready_listens(&sock, &["zero"]).await?[..] else {
            bail!("one address expected");
        };
        ensure!(zero.port() != 0, "status shows port 0");
        // The log names the bound address too.
        warren
            .wait_for_stderr(STEP, |l| {
                l.contains("listening") && l.contains(&zero.to_string())
            })
            .await?;
        echo_through(zero).await?;
        let mut held = TcpStream::connect(zero).await?;
        round_trip(&mut held, 64 * 1024).await?;

        // The reload adds two unnamed forwards on port 0 ("zero" is unchanged).
        let unnamed = format!(
            "[[forward]]\nhost = \"h\"\ntype = \"local\"\nlisten = \"127.0.0.1:0\"\nconnect = \"{e}\"\n\n"
        );
        files.config("", &format!("{first}{unnamed}{unnamed}"))?;
        let out = run_warren(&["reload", "-s", &sock], &[], STEP).await?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (n1, n2) = ("h:local:127.0.0.1:0", "h:local:127.0.0.1:0#2");
        ensure!(
            stdout.contains(&format!("forward added: {n1}\n"))
                && stdout.contains(&format!("forward added: {n2}\n"))
                && !stdout.contains("zero"),
            "reload output:\n{stdout}"
        );
        let listens = ready_listens(&sock, &["zero", n1, n2]).await?;
        assert_eq!(listens[0], zero, "zero keeps its port across the reload");
        let mut ports: Vec<u16> = listens.iter().map(SocketAddr::port).collect();
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), 3, "three distinct ports: {listens:?}");

        // The connection open across the reload still echoes; every port carries bytes.
        round_trip(&mut held, 64 * 1024).await?;
        for addr in &listens {
            echo_through(*addr).await?;
        }
        drop(held);
        stop(warren).await
    })
    .await;
}
