//! `max_connections` (warren.toml(5)): a forward holding its limit refuses the next connection (a
//! closed socket, a SOCKS failure reply, a refused channel), counts it, and nothing else of
//! the daemon notices: its other forwards, its control socket and its session keep working.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, ensure};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

use crate::harness::{MIB, WarrenProcess, push_through, wait_for, with_timeout, within};
use crate::support::{Files, Fixture, forward_table, host_table, status_json};

const LIMIT: Duration = Duration::from_secs(120);
const STEP: Duration = Duration::from_secs(20);

/// Raises this test process's own soft limit on open files: it holds thousands of client
/// sockets (warren raises its own limit at start).
fn raise_own_fd_limit() -> anyhow::Result<()> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    ensure!(
        hard >= 8192,
        "the hard open-files limit ({hard}) is too low for this test"
    );
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    Ok(())
}

/// A running `warren run` with forwards from `forwards` (TOML) on host `h`.
struct Limited {
    fixture: Fixture,
    files: Files,
    warren: WarrenProcess,
}

impl Limited {
    async fn start(forwards: impl Fn(&Files, &Fixture) -> String) -> anyhow::Result<Self> {
        let fixture = Fixture::start().await?;
        let files = Files::new()?;
        let rest = host_table("h", &fixture.server, &fixture.key) + &forwards(&files, &fixture);
        let config = files.config("", &rest)?;
        let warren = files.spawn(&config)?;
        let me = Self {
            fixture,
            files,
            warren,
        };
        me.wait_ready().await?;
        Ok(me)
    }

    /// Waits until the host is up and every forward ready.
    async fn wait_ready(&self) -> anyhow::Result<()> {
        let sock = self.sock();
        wait_for(STEP, "host up and forwards ready", || async {
            let doc = status_json(&sock).await?;
            let up = doc["hosts"][0]["state"] == "up";
            let ready = doc["forwards"]
                .as_array()?
                .iter()
                .all(|f| f["state"] == "ready");
            (up && ready).then_some(())
        })
        .await
        .with_context(|| format!("warren stderr:\n{}", self.warren.stderr_text()))
    }

    fn sock(&self) -> String {
        self.files.control_socket().display().to_string()
    }

    /// The status document of forward `name`.
    async fn forward(&self, name: &str) -> anyhow::Result<serde_json::Value> {
        let doc = status_json(&self.sock())
            .await
            .context("the control socket does not answer")?;
        doc["forwards"]
            .as_array()
            .and_then(|fs| fs.iter().find(|f| f["name"] == name).cloned())
            .with_context(|| format!("no forward {name} in {doc}"))
    }

    fn ingress(&self, name: &str) -> PathBuf {
        self.files.path(&format!("{name}.sock"))
    }
}

/// A local forward `name` from a Unix ingress in `files` to `connect`, with `extra` lines.
fn local_forward(files: &Files, name: &str, connect: &str, extra: &str) -> String {
    let ingress = files.path(&format!("{name}.sock"));
    forward_table(
        name,
        "h",
        "local",
        &ingress.display().to_string(),
        Some(connect),
    ) + extra
        + "\n"
}

/// Sends `msg` and reads its echo.
async fn echo_once(s: &mut UnixStream, msg: &[u8]) -> anyhow::Result<()> {
    s.write_all(msg).await?;
    let mut back = vec![0u8; msg.len()];
    within(STEP, "an echo", s.read_exact(&mut back)).await??;
    ensure!(back == msg, "the echo differs");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_thousand_connections_on_a_forward_of_one_hundred() {
    const HELD: usize = 3000;
    const MAX: usize = 100;
    with_timeout(LIMIT, async {
        raise_own_fd_limit()?;
        let d = Limited::start(|files, fx| {
            let echo = fx.echo.addr().to_string();
            local_forward(files, "full", &echo, &format!("max_connections = {MAX}"))
                + &local_forward(files, "other", &echo, "")
        })
        .await?;

        // The first hundred are served: each echoes, and stays open.
        let mut served = Vec::new();
        for i in 0..MAX {
            let mut s = UnixStream::connect(d.ingress("full")).await?;
            echo_once(&mut s, format!("conn {i}\n").as_bytes()).await?;
            served.push(s);
        }
        // The rest are accepted by the kernel and closed by warren at once.
        let mut refused = Vec::new();
        for _ in MAX..HELD {
            refused.push(UnixStream::connect(d.ingress("full")).await?);
        }
        for (i, s) in refused.iter_mut().enumerate() {
            let mut byte = [0u8; 1];
            let n = within(STEP, "a refused connection to be closed", s.read(&mut byte))
                .await?
                .unwrap_or(0);
            ensure!(n == 0, "connection {} beyond the limit got data", MAX + i);
        }
        let full = d.forward("full").await?;
        assert_eq!(full["active"], MAX, "{full}");
        assert_eq!(full["refused"], HELD - MAX, "{full}");
        assert_eq!(full["total"], MAX, "{full}");

        // Everything else works while the forward is full: the control socket answered
        // above; the other forward of the same session carries 4 MiB; the served ones echo.
        let other = UnixStream::connect(d.ingress("other")).await?;
        push_through(other, 4 * MIB).await?.check_echoed()?;
        for s in served.iter_mut().take(10) {
            echo_once(s, b"still here\n").await?;
        }
        let line = d
            .warren
            .stderr_lines()
            .into_iter()
            .filter(|l| l.contains("forward full"))
            .count();
        assert_eq!(line, 1, "one log line for the burst");

        // Once one closes, one more is served.
        drop(served.pop());
        let mut again = wait_for(STEP, "room for one more connection", || async {
            let mut s = UnixStream::connect(d.ingress("full")).await.ok()?;
            echo_once(&mut s, b"next\n").await.ok()?;
            Some(s)
        })
        .await?;
        echo_once(&mut again, b"served\n").await?;
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_socks_forward_answers_with_a_socks_failure() {
    with_timeout(LIMIT, async {
        let d = Limited::start(|files, _| {
            let ingress = files.path("socks.sock");
            forward_table(
                "socks",
                "h",
                "dynamic",
                &ingress.display().to_string(),
                None,
            ) + "max_connections = 1\n"
        })
        .await?;
        let echo = d.fixture.echo.addr().tcp()?;
        // The one allowed client connects through SOCKS5 and echoes.
        let mut first = UnixStream::connect(d.ingress("socks")).await?;
        first.write_all(&[5, 1, 0]).await?;
        let mut reply = [0u8; 2];
        first.read_exact(&mut reply).await?;
        assert_eq!(reply, [5, 0]);
        let mut request = vec![5, 1, 0, 1];
        request.extend_from_slice(&[127, 0, 0, 1]);
        request.extend_from_slice(&echo.port().to_be_bytes());
        first.write_all(&request).await?;
        let mut connected = [0u8; 10];
        first.read_exact(&mut connected).await?;
        assert_eq!(connected[1], 0, "the first client is connected");
        echo_once(&mut first, b"through socks\n").await?;

        // A SOCKS5 client beyond the limit is told no method is acceptable.
        let mut second = UnixStream::connect(d.ingress("socks")).await?;
        second.write_all(&[5, 1, 0]).await?;
        let mut refused = Vec::new();
        within(STEP, "the refusal", second.read_to_end(&mut refused)).await??;
        assert_eq!(refused, [5, 0xff]);
        // A SOCKS4 one that its request is rejected.
        let mut third = UnixStream::connect(d.ingress("socks")).await?;
        third.write_all(&[4, 1]).await?;
        let mut refused = Vec::new();
        within(STEP, "the refusal", third.read_to_end(&mut refused)).await??;
        assert_eq!(refused, [0, 0x5b, 0, 0, 0, 0, 0, 0]);
        assert_eq!(d.forward("socks").await?["refused"], 2);
        echo_once(&mut first, b"unaffected\n").await?;
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_remote_forward_refuses_the_servers_channel() {
    with_timeout(LIMIT, async {
        let d = Limited::start(|_, fx| {
            forward_table(
                "rev",
                "h",
                "remote",
                "127.0.0.1:0",
                Some(&fx.echo.addr().to_string()),
            ) + "max_connections = 2\n"
        })
        .await?;
        let listen = d.forward("rev").await?["listen"]
            .as_str()
            .context("the remote listener's address")?
            .to_string();
        let connect = || async {
            let mut s = TcpStream::connect(&listen).await?;
            s.write_all(b"hello\n").await?;
            let mut back = [0u8; 6];
            // A refused connection is closed by sshd, with a reset when our bytes were unread.
            let n = match within(STEP, "an answer", s.read(&mut back)).await? {
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => 0,
                r => r?,
            };
            anyhow::Ok((s, n))
        };
        let (_a, n) = connect().await?;
        assert_eq!(n, 6, "the first connection echoes");
        let (_b, n) = connect().await?;
        assert_eq!(n, 6, "the second connection echoes");
        let (_c, n) = connect().await?;
        assert_eq!(
            n, 0,
            "the third is closed by the server: warren refused its channel"
        );
        let rev = d.forward("rev").await?;
        assert_eq!(
            (rev["active"].clone(), rev["refused"].clone()),
            (2.into(), 1.into())
        );
        ensure!(
            d.forward("rev").await?["state"] == "ready",
            "the forward stays ready"
        );
        Ok(())
    })
    .await;
}
