//! The `warren run` process: start-up failures and their exit codes, and a graceful stop
//! on SIGTERM that lets open connections finish within `shutdown_grace`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::watch;

use crate::harness::{
    Digest, EchoServer, MIB, SshServer, UserKey, WarrenProcess, hex, run_warren, wait_until,
    with_timeout, within,
};
use crate::support::{Files, Fixture, forward_table, host_table};

const LIMIT: Duration = Duration::from_secs(60);
/// Bound for one step that should be quick.
const STEP: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn taken_port_exits_1_naming_the_forward_and_address() {
    with_timeout(LIMIT, async {
        let Fixture { server, key, echo } = Fixture::start().await?;
        let files = Files::new()?;
        // Held for the whole test: warren cannot bind it.
        let taken = std::net::TcpListener::bind("127.0.0.1:0")?;
        let addr = taken.local_addr()?.to_string();
        // A forward that can bind comes first: it must not stay bound.
        let free = files.path("free.sock");
        let rest = host_table("h", &server, &key)
            + &forward_table(
                "fine",
                "h",
                "local",
                &free.display().to_string(),
                Some(&echo.addr().to_string()),
            )
            + &forward_table(
                "busy-port",
                "h",
                "local",
                &addr,
                Some(&echo.addr().to_string()),
            );
        let config = files.config("", &rest)?;
        let out = run_warren(
            &["run", "-c", &config.display().to_string()],
            &[("HOME", &files.home())],
            STEP,
        )
        .await?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(1),
            "a bind failure exits 1; stderr:\n{stderr}"
        );
        ensure!(
            stderr.contains("busy-port") && stderr.contains(&addr),
            "stderr must name the forward and {addr}:\n{stderr}"
        );
        ensure!(!free.exists(), "the other ingress was left behind");
        assert_eq!(
            server.session_counts().accepted,
            0,
            "nothing connects when start-up fails"
        );
        drop(taken);
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_config_exits_78_and_binds_nothing() {
    with_timeout(LIMIT, async {
        let files = Files::new()?;
        let ingress = files.path("in.sock");
        let rest = format!(
            "[hosts.h]\nhostname = \"127.0.0.1\"\nport = 1\nidentity_files = []\n\n{}",
            forward_table(
                "f",
                "h",
                "local",
                &ingress.display().to_string(),
                Some("127.0.0.1:9")
            )
        );
        let config = files.config("shutdown_grace = \"5s\"\nshutdown_grase = \"1s\"", &rest)?;
        let out = run_warren(
            &["run", "-c", &config.display().to_string()],
            &[("HOME", &files.home())],
            STEP,
        )
        .await?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "stderr:\n{stderr}");
        ensure!(
            stderr.contains("shutdown_grase"),
            "stderr names the unknown key:\n{stderr}"
        );
        ensure!(
            stderr.contains(&format!("{}:4:", config.display())),
            "stderr points at FILE:LINE:\n{stderr}"
        );
        ensure!(!ingress.exists(), "nothing may be bound");
        Ok(())
    })
    .await;
}

/// `warren run` with one local forward from a Unix ingress to an echo server.
struct Running {
    _server: SshServer,
    _key: UserKey,
    echo: EchoServer,
    files: Files,
    ingress: PathBuf,
    warren: WarrenProcess,
}

impl Running {
    /// Starts it with `shutdown_grace = GRACE` and waits until the ingress is bound.
    async fn start(grace: &str) -> anyhow::Result<Self> {
        let Fixture { server, key, echo } = Fixture::start().await?;
        let files = Files::new()?;
        let ingress = files.path("in.sock");
        let rest = host_table("h", &server, &key)
            + &forward_table(
                "f",
                "h",
                "local",
                &ingress.display().to_string(),
                Some(&echo.addr().to_string()),
            );
        let config = files.config(&format!("shutdown_grace = \"{grace}\""), &rest)?;
        let warren = files.spawn(&config)?;
        wait_until(STEP, "warren to bind its Unix ingress", || ingress.exists())
            .await
            .with_context(|| format!("warren stderr:\n{}", warren.stderr_text()))?;
        Ok(Running {
            _server: server,
            _key: key,
            echo,
            files,
            ingress,
            warren,
        })
    }
}

/// Reads `reader` to EOF in a task, publishing how many bytes arrived so far; returns
/// the byte count and SHA-256 of everything read.
fn read_with_progress(
    mut reader: tokio::net::unix::OwnedReadHalf,
) -> (
    watch::Receiver<u64>,
    tokio::task::JoinHandle<std::io::Result<(u64, Digest)>>,
) {
    let (tx, rx) = watch::channel(0u64);
    let task = tokio::spawn(async move {
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = 0u64;
        loop {
            let n = reader.read(&mut buf).await?;
            if n == 0 {
                return Ok((total, hasher.finalize().into()));
            }
            hasher.update(&buf[..n]);
            total += n as u64;
            tx.send_replace(total);
        }
    });
    (rx, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_an_open_connection_finish_and_refuses_new_ones() {
    const BEFORE: usize = 2 * MIB as usize;
    const AFTER: usize = 6 * MIB as usize;
    const GRACE: Duration = Duration::from_secs(5);
    with_timeout(LIMIT, async {
        let Running {
            _server,
            _key,
            echo,
            files: _files,
            ingress,
            mut warren,
        } = Running::start("5s").await?;

        // One stream of pseudo-random bytes, sent in two parts: before and after SIGTERM.
        let mut payload = vec![0u8; BEFORE + AFTER];
        StdRng::seed_from_u64(rand::random()).fill_bytes(&mut payload);
        let stream = UnixStream::connect(&ingress).await?;
        let (reader, mut writer) = stream.into_split();
        let (mut progress, reading) = read_with_progress(reader);
        within(
            STEP,
            "the first part to be sent",
            writer.write_all(&payload[..BEFORE]),
        )
        .await??;
        within(STEP, "the first part to be echoed", async {
            progress.wait_for(|&n| n >= BEFORE as u64).await.map(drop)
        })
        .await?
        .context("the reader ended early")
        .with_context(|| format!("warren stderr:\n{}", warren.stderr_text()))?;
        assert_eq!(echo.connections(), 1);

        warren.sigterm()?;
        let signalled = Instant::now();

        // New connections are refused: the ingress goes away while the old one stays open.
        wait_until(STEP, "warren to stop accepting (ingress removed)", || {
            !ingress.exists()
        })
        .await?;
        let late = UnixStream::connect(&ingress).await;
        ensure!(late.is_err(), "a connection after SIGTERM was accepted");
        assert_eq!(
            echo.connections(),
            1,
            "no new connection reached the egress"
        );

        // The open connection keeps working: send the rest and get it all back.
        within(
            STEP,
            "the rest to be sent",
            writer.write_all(&payload[BEFORE..]),
        )
        .await?
        .with_context(|| format!("warren stderr:\n{}", warren.stderr_text()))?;
        within(STEP, "the rest to be echoed", async {
            progress
                .wait_for(|&n| n >= (BEFORE + AFTER) as u64)
                .await
                .map(drop)
        })
        .await?
        .context("the reader ended early")?;
        if signalled.elapsed() < GRACE - Duration::from_secs(1) {
            ensure!(
                warren.is_running(),
                "warren exited while a connection was open, within the grace period"
            );
        }
        // Then close our side: the echo closes its side, and the stream is complete.
        within(STEP, "our side to close", writer.shutdown()).await??;
        let (len, digest) = within(STEP, "the end of the echo", reading).await???;
        let expected: Digest = Sha256::digest(&payload).into();
        assert_eq!(
            len,
            (BEFORE + AFTER) as u64,
            "every byte sent after SIGTERM is echoed"
        );
        ensure!(
            digest == expected,
            "the echoed stream differs: {} != {}",
            hex(&digest),
            hex(&expected)
        );
        drop(writer);

        // With nothing left open, warren exits at once, well within the grace period.
        let code = warren.wait_exit(GRACE).await?;
        assert_eq!(code, 0, "stderr:\n{}", warren.stderr_text());
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_cuts_a_connection_still_open_after_the_grace_period() {
    const GRACE: Duration = Duration::from_secs(1);
    with_timeout(LIMIT, async {
        let Running {
            _server,
            _key,
            echo,
            files: _files,
            ingress,
            mut warren,
        } = Running::start("1s").await?;
        let stream = UnixStream::connect(&ingress).await?;
        let (reader, mut writer) = stream.into_split();
        let (mut progress, reading) = read_with_progress(reader);
        writer.write_all(b"hello").await?;
        within(STEP, "the echo", progress.wait_for(|&n| n == 5))
            .await?
            .context("the reader ended early")?;
        assert_eq!(echo.connections(), 1);

        // The client never closes: warren waits out the grace period, then cuts it.
        warren.sigterm()?;
        let signalled = Instant::now();
        let code = warren.wait_exit(GRACE + STEP).await?;
        let took = signalled.elapsed();
        assert_eq!(code, 0, "stderr:\n{}", warren.stderr_text());
        ensure!(
            took >= GRACE - Duration::from_millis(100),
            "warren cut the open connection after {took:?}, before its grace of {GRACE:?}"
        );
        ensure!(
            took < GRACE + Duration::from_secs(8),
            "warren took {took:?} to stop with a grace of {GRACE:?}"
        );
        // Our connection was closed by then: reading ends (EOF, or a reset), with nothing more.
        let ended = within(STEP, "the cut connection to end", reading).await??;
        if let Ok((len, _)) = ended {
            assert_eq!(len, 5, "nothing but the echo arrived");
        }
        drop(writer);
        Ok(())
    })
    .await;
}
