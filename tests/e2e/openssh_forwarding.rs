//! OpenSSH's `regress/forwarding.sh` (openssh-portable), re-run with `warren connect` as the
//! client against the real sshd, where its scenarios apply to a client that runs no command:
//!
//! - "transfer over forwarded channels": a chain of nine `-L a:b -R b:c` pairs on one
//!   session, each link's far end the previous link's near end, so every byte crosses the
//!   session eighteen times; upstream uses fixed TCP ports, here the inner links are Unix
//!   sockets (its "chained unix domain socket forwards" part) and the outer ends TCP, so no
//!   port is chosen by the test;
//! - "config file": the same with `LocalForward`/`RemoteForward` lines of an ssh_config;
//! - "exit on -L/-R forward failure": four forwards come up; with one that cannot be had
//!   (a port already taken, here or on the server) and `ExitOnForwardFailure=yes`, the client
//!   ends with a failure (ssh's 255 is warren's 1).
//!
//! Left out, as they do not apply: `ClearAllForwardings` (warren has no per-host forwards to
//! clear: its forwards are what the command line and the destination's ssh_config say) and
//! `-W` stdio forwarding (warren does not run as a ProxyCommand).

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, ensure};
use tokio::net::TcpStream;

use crate::harness::{MIB, WarrenProcess, current_user, push_through, with_timeout};
use crate::support::Fixture;

const LIMIT: Duration = Duration::from_secs(90);
const STEP: Duration = Duration::from_secs(20);
/// Upstream copies `/bin/ls`; this crosses many SSH windows on each of the 18 links.
const PUSH: u64 = 8 * MIB;
/// Links in upstream's chain (`for j in 0 1 2; do for i in 0 1 2`).
const LINKS: usize = 9;

/// `warren connect ARGS -i KEY -o UserKnownHostsFile=.. USER@127.0.0.1 -p PORT`, HOME in
/// `home`.
fn connect(f: &Fixture, home: &Path, args: &[String]) -> anyhow::Result<WarrenProcess> {
    let known_hosts = format!(
        "UserKnownHostsFile={}",
        f.server.known_hosts_path().display()
    );
    let destination = format!("ssh://{}@127.0.0.1:{}", current_user()?, f.server.port());
    let mut all: Vec<&str> = vec!["connect", "-N"];
    all.extend(args.iter().map(String::as_str));
    all.extend(["-o", "agent=false", "-o", &known_hosts, "-i"]);
    let key = f.key.path().display().to_string();
    all.push(&key);
    all.push(&destination);
    WarrenProcess::spawn(&all, &[("HOME", home.to_str().context("utf-8 home")?)])
}

/// The `n` lines warren announces once every forward is bound or confirmed; the listen
/// address of the one whose line starts with `prefix` and listens on TCP.
async fn announced_tcp(
    warren: &WarrenProcess,
    n: usize,
    prefix: &str,
) -> anyhow::Result<SocketAddr> {
    let lines = warren
        .wait_for_stdout_lines(n, STEP)
        .await
        .with_context(|| format!("stderr:\n{}", warren.stderr_text()))?;
    ensure!(
        lines.len() == n,
        "{} lines announced: {lines:?}",
        lines.len()
    );
    let tcp: Vec<SocketAddr> = lines
        .iter()
        .filter_map(|l| l.strip_prefix(prefix))
        .filter_map(|rest| rest.split(" -> ").next())
        .filter_map(|listen| listen.parse().ok())
        .collect();
    ensure!(tcp.len() == 1, "one TCP {prefix}line expected in {lines:?}");
    Ok(tcp[0])
}

async fn stop(mut warren: WarrenProcess) -> anyhow::Result<()> {
    warren.sigterm()?;
    let code = warren.wait_exit(STEP).await?;
    ensure!(
        code == 0,
        "exit {code} after SIGTERM:\n{}",
        warren.stderr_text()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_sh_a_chain_of_nine_local_and_remote_forward_pairs_on_one_session() {
    with_timeout(LIMIT, async {
        let f = Fixture::start().await?;
        let home = tempfile::tempdir()?;
        let dir = home.path();
        // Link i: -L a_i -> b_i (the server connects to b_i), -R b_i (the server listens)
        // -> a_{i-1} (warren connects here); a_{-1} is the echo server, a_8 a free TCP port.
        let a = |i: usize| dir.join(format!("a{i}.sock")).display().to_string();
        let b = |i: usize| dir.join(format!("b{i}.sock")).display().to_string();
        let mut args = Vec::new();
        for i in 0..LINKS {
            let near = if i + 1 == LINKS {
                "0".to_string()
            } else {
                a(i)
            };
            let far = if i == 0 {
                f.echo.addr().to_string()
            } else {
                a(i - 1)
            };
            args.extend(["-L".to_string(), format!("{near}:{}", b(i))]);
            args.extend(["-R".to_string(), format!("{}:{far}", b(i))]);
        }
        let warren = connect(&f, dir, &args)?;
        let entry = announced_tcp(&warren, 2 * LINKS, "-L ").await?;
        push_through(TcpStream::connect(entry).await?, PUSH)
            .await
            .with_context(|| format!("stderr:\n{}", warren.stderr_text()))?
            .check_echoed()?;
        assert_eq!(
            f.echo.connections(),
            1,
            "one connection at the end of the chain"
        );
        assert_eq!(
            f.server.session_counts().accepted,
            1,
            "the whole chain runs on one session"
        );
        stop(warren).await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_sh_config_file_local_and_remote_forward_lines() {
    with_timeout(LIMIT, async {
        let f = Fixture::start().await?;
        let home = tempfile::tempdir()?;
        let link = home.path().join("link.sock");
        // Upstream: LocalForward base01 -> sshd, RemoteForward base02 -> base01, then a
        // transfer to base02. Here: RemoteForward on a server port the server picks, to a
        // local Unix socket that a LocalForward carries back to the echo server.
        let config = home.path().join("ssh_config");
        std::fs::write(
            &config,
            format!(
                "Host 127.0.0.1\n  LocalForward {} 127.0.0.1:{}\n  RemoteForward 0 {}\n",
                link.display(),
                f.echo.addr().port(),
                link.display()
            ),
        )?;
        let args = vec!["-F".to_string(), config.display().to_string()];
        let warren = connect(&f, home.path(), &args)?;
        // The server's listener, confirmed: 127.0.0.1:PORT on this machine (sshd is here).
        let entry = announced_tcp(&warren, 2, "-R ").await?;
        push_through(TcpStream::connect(entry).await?, PUSH)
            .await
            .with_context(|| format!("stderr:\n{}", warren.stderr_text()))?
            .check_echoed()?;
        assert_eq!(f.echo.connections(), 1);
        stop(warren).await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_sh_exit_on_local_and_remote_forward_failure() {
    with_timeout(LIMIT, async {
        let f = Fixture::start().await?;
        let home = tempfile::tempdir()?;
        let echo = f.echo.addr().to_string();
        // A port that is taken, here and (the server being this machine) on the server.
        let taken = std::net::TcpListener::bind("127.0.0.1:0")?;
        let taken_port = taken.local_addr()?.port();
        for flag in ["-L", "-R"] {
            let good: Vec<String> = (0..4)
                .flat_map(|_| [flag.to_string(), format!("0:{echo}")])
                .collect();
            let mut args = vec!["-o".to_string(), "ExitOnForwardFailure=yes".to_string()];
            args.extend(good.iter().cloned());
            // "this one should succeed": all four come up and carry bytes.
            let warren = connect(&f, home.path(), &args)?;
            let lines = warren.wait_for_stdout_lines(4, STEP).await?;
            ensure!(lines.len() == 4, "{lines:?}");
            for line in &lines {
                let listen: SocketAddr = line
                    .split_whitespace()
                    .nth(1)
                    .and_then(|l| l.parse().ok())
                    .with_context(|| format!("no address in {line:?}"))?;
                push_through(TcpStream::connect(listen).await?, MIB)
                    .await?
                    .check_echoed()?;
            }
            stop(warren).await?;

            // "this one should fail": a fifth that cannot be had ends the client, exit 1.
            args.extend([flag.to_string(), format!("{taken_port}:{echo}")]);
            let mut warren = connect(&f, home.path(), &args)?;
            let code = warren.wait_exit(STEP).await?;
            let stderr = warren.stderr_text();
            ensure!(code == 1, "{flag}: exit {code}, not 1:\n{stderr}");
            ensure!(
                stderr.contains(&taken_port.to_string()),
                "{flag}: the failure names the port:\n{stderr}"
            );
        }
        drop(taken);
        Ok(())
    })
    .await;
}
