//! `warren connect` takes ssh's (and autossh's) command line: `-N -T -n` and `ssh://`
//! destinations carry bytes, `-q`/`-v` set the log level, `-f` is refused pointing at
//! `warren run`, the destination's ssh_config `LocalForward` lines (`-F FILE`) are honoured,
//! `ExitOnForwardFailure` ends it when the server refuses a listener, and `--print-config`
//! writes a file that `warren check` accepts and `warren run -c` serves with the same forwards.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, ensure};
use tokio::net::{TcpStream, UnixStream};

use crate::harness::{MIB, WarrenProcess, current_user, push_through, run_warren, with_timeout};
use crate::support::Fixture;

/// Bound for one whole test.
const LIMIT: Duration = Duration::from_secs(90);
/// Bound for one step that should be quick (a session coming up, an exit).
const STEP: Duration = Duration::from_secs(20);
/// What is pushed through each forward (and checked by digest).
const PUSH: u64 = 16 * MIB;

/// `-i KEY -o UserKnownHostsFile=... -o agent=false`: what logs in to the fixture's server
/// besides the destination.
fn login(f: &Fixture) -> Vec<String> {
    vec![
        "-i".into(),
        f.key.path().display().to_string(),
        "-o".into(),
        format!(
            "UserKnownHostsFile={}",
            f.server.known_hosts_path().display()
        ),
        "-o".into(),
        "agent=false".into(),
    ]
}

/// `ssh://USER@127.0.0.1:PORT` of the fixture's server.
fn url(f: &Fixture) -> anyhow::Result<String> {
    Ok(format!(
        "ssh://{}@127.0.0.1:{}",
        current_user()?,
        f.server.port()
    ))
}

/// `warren connect ARGS LOGIN DESTINATION` with HOME in `home`.
fn connect(
    f: &Fixture,
    home: &Path,
    args: &[&str],
    destination: &str,
) -> anyhow::Result<WarrenProcess> {
    let login = login(f);
    let mut all = vec!["connect"];
    all.extend_from_slice(args);
    all.extend(login.iter().map(String::as_str));
    all.push(destination);
    WarrenProcess::spawn(&all, &[("HOME", home.to_str().unwrap_or("/nonexistent"))])
}

/// The address of the one `-L LISTEN -> CONNECT` line warren announces.
async fn announced_local(warren: &WarrenProcess) -> anyhow::Result<SocketAddr> {
    let lines = warren.wait_for_stdout_lines(1, STEP).await?;
    let listen = lines[0]
        .strip_prefix("-L ")
        .and_then(|rest| rest.split(" -> ").next())
        .with_context(|| format!("not an -L line: {:?}", lines[0]))?;
    Ok(listen.parse()?)
}

async fn echo_tcp(addr: SocketAddr) -> anyhow::Result<()> {
    let s = TcpStream::connect(addr).await?;
    push_through(s, PUSH).await?.check_echoed()
}

/// SIGTERM, then exit 0.
async fn stop(mut warren: WarrenProcess) -> anyhow::Result<()> {
    warren.sigterm()?;
    let code = warren.wait_exit(STEP).await?;
    ensure!(code == 0, "exit {code} after SIGTERM");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_cli_takes_n_t_n_and_an_ssh_url_and_q_keeps_it_quiet() {
    with_timeout(LIMIT, async {
        let f = Fixture::start().await?;
        let home = tempfile::tempdir()?;
        let spec = format!("0:127.0.0.1:{}", f.echo.addr().port());
        let warren = connect(
            &f,
            home.path(),
            &["-N", "-T", "-n", "-q", "-L", &spec],
            &url(&f)?,
        )?;
        echo_tcp(announced_local(&warren).await?).await?;
        assert_eq!(f.echo.connections(), 1);
        assert_eq!(f.server.session_counts().accepted, 1);
        let stderr = warren.stderr_text();
        assert!(
            !stderr.contains(" INFO ") && !stderr.contains("session up"),
            "-q logs warnings only:\n{stderr}"
        );
        stop(warren).await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_cli_v_logs_debug_and_f_is_refused_naming_warren_run() {
    with_timeout(LIMIT, async {
        let f = Fixture::start().await?;
        let home = tempfile::tempdir()?;
        let spec = format!("0:127.0.0.1:{}", f.echo.addr().port());
        let warren = connect(&f, home.path(), &["-NTv", "-L", &spec], &url(&f)?)?;
        echo_tcp(announced_local(&warren).await?).await?;
        warren
            .wait_for_stderr(STEP, |l| l.contains("DEBUG"))
            .await
            .context("-v logs debug lines")?;
        assert!(warren.stderr_text().contains(" INFO "));
        stop(warren).await?;

        // -f (as in `autossh -f`, `ssh -fN`): exit 64 before anything starts, saying what to
        // use instead.
        for args in [&["-f", "-N"][..], &["-fN"]] {
            let mut all = vec!["connect"];
            all.extend_from_slice(args);
            all.extend(["-L", spec.as_str(), "127.0.0.1"]);
            let out = run_warren(&all, &[], STEP).await?;
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(64), "{args:?}: {stderr}");
            assert!(
                stderr.contains("warren run") && stderr.contains("systemd"),
                "{stderr}"
            );
        }
        // ... but an `autossh -f` line converted with --print-config is fine as written.
        let home_env = [("HOME", home.path().to_str().unwrap_or("/nonexistent"))];
        let out = run_warren(
            &[
                "connect",
                "-f",
                "-N",
                "-L",
                &spec,
                "127.0.0.1",
                "--print-config",
            ],
            &home_env,
            STEP,
        )
        .await?;
        assert_eq!(out.status.code(), Some(0));
        assert!(String::from_utf8(out.stdout)?.contains("[[forward]]"));
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_cli_print_config_passes_check_and_warren_run_carries_its_forwards() {
    with_timeout(LIMIT, async {
        let f = Fixture::start().await?;
        let home = tempfile::tempdir()?;
        let socket = home.path().join("pg.sock");
        let spec = format!("{}:127.0.0.1:{}", socket.display(), f.echo.addr().port());
        let home_env = [("HOME", home.path().to_str().unwrap_or("/nonexistent"))];
        // An autossh line, as a systemd unit would run it.
        let login = login(&f);
        let url = url(&f)?;
        let mut args = vec![
            "connect",
            "-M",
            "0",
            "-N",
            "-o",
            "ServerAliveInterval=30",
            "-o",
            "ExitOnForwardFailure=yes",
            "-L",
            &spec,
        ];
        args.extend(login.iter().map(String::as_str));
        args.extend([url.as_str(), "--print-config"]);
        let out = run_warren(&args, &home_env, STEP).await?;
        let text = String::from_utf8(out.stdout)?;
        ensure!(
            out.status.success(),
            "--print-config: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains("[[forward]]"), "{text}");
        assert!(text.contains("keepalive_interval = \"30s\""), "{text}");
        let file = home.path().join("warren.toml");
        std::fs::write(&file, &text)?;
        let file_arg = file.to_str().context("utf-8 path")?;

        let check = run_warren(&["check", "-c", file_arg], &home_env, STEP).await?;
        assert_eq!(
            check.status.code(),
            Some(0),
            "warren check:\n{}\n{text}",
            String::from_utf8_lossy(&check.stderr)
        );

        let warren = WarrenProcess::spawn(&["run", "-c", file_arg], &home_env)?;
        warren
            .wait_for_stderr(STEP, |l| l.contains("session up"))
            .await?;
        push_through(UnixStream::connect(&socket).await?, PUSH)
            .await?
            .check_echoed()?;
        assert_eq!(f.echo.connections(), 1);
        stop(warren).await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_cli_honours_local_forward_of_the_matching_host_block_of_f_file() {
    with_timeout(LIMIT, async {
        let f = Fixture::start().await?;
        let home = tempfile::tempdir()?;
        let socket = home.path().join("l.sock");
        let ssh_config = home.path().join("ssh_config");
        // Everything ssh would take from the file: where the alias goes, as whom, with which
        // key and known_hosts, and the forward itself.
        std::fs::write(
            &ssh_config,
            format!(
                "Host other\n  LocalForward 1 127.0.0.1:1\n\
                 Host tunnel-alias\n  HostName 127.0.0.1\n  Port {port}\n  User {user}\n\
                 \x20 IdentityFile {key}\n  UserKnownHostsFile {known_hosts}\n\
                 \x20 LocalForward {socket} 127.0.0.1:{echo}\n",
                port = f.server.port(),
                user = current_user()?,
                key = f.key.path().display(),
                known_hosts = f.server.known_hosts_path().display(),
                socket = socket.display(),
                echo = f.echo.addr().port(),
            ),
        )?;
        let config_arg = ssh_config.to_str().context("utf-8 path")?;
        let warren = WarrenProcess::spawn(
            &[
                "connect",
                "-N",
                "-F",
                config_arg,
                "-o",
                "agent=false",
                "tunnel-alias",
            ],
            &[("HOME", home.path().to_str().unwrap_or("/nonexistent"))],
        )?;
        let lines = warren.wait_for_stdout_lines(1, STEP).await?;
        assert_eq!(
            lines,
            [format!(
                "-L {} -> 127.0.0.1:{}",
                socket.display(),
                f.echo.addr().port()
            )]
        );
        push_through(UnixStream::connect(&socket).await?, PUSH)
            .await?
            .check_echoed()?;
        assert_eq!(f.echo.connections(), 1);
        stop(warren).await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_cli_exit_on_forward_failure_ends_it_when_the_server_refuses_a_listener() {
    with_timeout(LIMIT, async {
        let f = Fixture::start().await?;
        let home = tempfile::tempdir()?;
        // The server (on this machine) cannot listen where something already does.
        let taken = std::net::TcpListener::bind("127.0.0.1:0")?;
        let spec = format!(
            "127.0.0.1:{}:127.0.0.1:{}",
            taken.local_addr()?.port(),
            f.echo.addr().port()
        );
        let mut warren = connect(
            &f,
            home.path(),
            &["-N", "-o", "ExitOnForwardFailure=yes", "-R", &spec],
            &url(&f)?,
        )?;
        let code = warren.wait_exit(STEP).await?;
        assert_eq!(code, 1, "{}", warren.stderr_text());
        assert!(
            warren.stderr_text().contains("ExitOnForwardFailure"),
            "{}",
            warren.stderr_text()
        );
        drop(taken);
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_cli_4_and_6_choose_the_address_family_of_the_server() {
    with_timeout(LIMIT, async {
        let f = Fixture::start().await?;
        let home = tempfile::tempdir()?;
        let spec = format!("0:127.0.0.1:{}", f.echo.addr().port());
        // -6 to an IPv4 address: nothing to connect to, said as such (and retried).
        let warren = connect(&f, home.path(), &["-N", "-6", "-L", &spec], &url(&f)?)?;
        warren
            .wait_for_stderr(STEP, |l| l.contains("no IPv6 address"))
            .await?;
        assert_eq!(f.server.session_counts().accepted, 0);
        stop(warren).await?;
        // -4 to `localhost`: its IPv4 address, where the server listens (under that name).
        {
            use std::io::Write as _;
            let mut kh = std::fs::OpenOptions::new()
                .append(true)
                .open(f.server.known_hosts_path())?;
            kh.write_all(f.server.known_hosts_line("localhost").as_bytes())?;
        }
        let destination = format!("ssh://{}@localhost:{}", current_user()?, f.server.port());
        let warren = connect(&f, home.path(), &["-N", "-4", "-L", &spec], &destination)?;
        echo_tcp(announced_local(&warren).await?).await?;
        stop(warren).await
    })
    .await;
}
