//! Reload by difference (warren.toml(5), RELOAD): what changed is applied, everything else — the
//! session, ingresses, open connections — is left alone; a broken file changes nothing; a
//! forward added with an ingress that cannot be bound is reported and retried; systemd sees
//! RELOADING=1 … READY=1 around it.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, ensure};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::{
    EchoServer, KeyKind, MIB, NotifySocket, SshServer, Transport, UserKey, WarrenProcess,
    current_user, is_root, push_through, run_warren, wait_for, wait_until, with_timeout, within,
};
use crate::support::{
    Fixture, TestDaemon, forward_table, host_table, ingress, status_json, with_setting,
};

/// Sends `len` random bytes and reads them back on a connection that stays open; the bytes
/// must come back unchanged.
async fn round_trip<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    len: usize,
) -> anyhow::Result<()> {
    let data: Vec<u8> = (0..len).map(|_| rand::random::<u8>()).collect();
    let mut back = vec![0u8; len];
    let (mut r, mut w) = tokio::io::split(s);
    let write = async { w.write_all(&data).await.context("write") };
    let read = async { r.read_exact(&mut back).await.context("read back") };
    within(Duration::from_secs(20), "an echo round trip", async {
        tokio::try_join!(write, read)
    })
    .await??;
    ensure!(back == data, "the echo came back different");
    Ok(())
}

/// The connection is closed by the other side (EOF or reset) within `limit`.
async fn closed_within(s: &mut TcpStream, limit: Duration) -> anyhow::Result<()> {
    let mut buf = [0u8; 64];
    loop {
        match within(limit, "the connection to close", s.read(&mut buf)).await? {
            Ok(0) | Err(_) => return Ok(()),
            Ok(_) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_adds_and_removes_forwards_and_leaves_the_rest_alone() {
    with_timeout(Duration::from_secs(90), async {
        let Fixture { server, key, echo } = Fixture::start().await?;
        let e = echo.addr().to_string();
        let (la, a) = ingress();
        let (lc, c) = ingress();
        let host = host_table("h", &server, &key);
        let fa = forward_table("A", "h", "local", &a.to_string(), Some(&e));
        let fc = forward_table("C", "h", "local", &c.to_string(), Some(&e));
        let fr = forward_table("R", "h", "remote", "127.0.0.1:0", Some(&e));
        let mut d = TestDaemon::start(&format!("{host}{fa}{fc}{fr}"), vec![la, lc]).await?;
        d.wait_up("h", Duration::from_secs(20)).await?;
        let remote_port = wait_for(Duration::from_secs(20), "R's server port", || async {
            d.forward("R").status().remote_listen.map(|l| l.to_string())
        })
        .await?;

        let mut through_a = TcpStream::connect(a).await?;
        round_trip(&mut through_a, MIB as usize).await?;
        let mut through_c = TcpStream::connect(c).await?;
        round_trip(&mut through_c, 1024).await?;
        let before = d.host_status("h");
        let sessions = server.sessions_accepted();

        // Add B, remove C; A and R stay.
        let (lb, b) = ingress();
        let fb = forward_table("B", "h", "local", &b.to_string(), Some(&e));
        let plan = d.reload(&format!("{host}{fa}{fb}{fr}"), vec![lb]).await?;
        assert_eq!(plan.forwards_added, ["B"]);
        assert_eq!(plan.forwards_removed, ["C"]);
        assert!(
            plan.forwards_changed.is_empty() && plan.hosts_reconnected.is_empty(),
            "{plan:?}"
        );

        // The connection through A carries on, on the same session.
        round_trip(&mut through_a, 4 * MIB as usize).await?;
        // B works.
        let t = push_through(TcpStream::connect(b).await?, 8 * MIB).await?;
        t.check_echoed()?;
        // C's open connection is closed and its ingress is gone.
        closed_within(&mut through_c, Duration::from_secs(10)).await?;
        assert!(
            TcpStream::connect(c).await.is_err(),
            "C's ingress still accepts after C was removed"
        );
        // The session, and R's listener on the server, were not touched.
        let after = d.host_status("h");
        assert_eq!(after.reconnects, before.reconnects);
        assert_eq!(after.since, before.since);
        assert_eq!(server.sessions_accepted(), sessions, "no new session");
        assert_eq!(
            d.forward("R").status().remote_listen.map(|l| l.to_string()),
            Some(remote_port.clone())
        );
        let port: u16 = remote_port.rsplit_once(':').context("port")?.1.parse()?;
        let mut through_r = TcpStream::connect(("127.0.0.1", port)).await?;
        round_trip(&mut through_r, 256 * 1024).await?;
        let names: Vec<String> = d
            .daemon()
            .forwards()
            .iter()
            .map(|f| f.config.name.clone())
            .collect();
        assert_eq!(
            names,
            ["A", "B", "R"],
            "status lists forwards in file order"
        );
        d.stop(Duration::from_secs(1)).await;
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_that_changes_a_hosts_user_reconnects_only_that_host() {
    with_timeout(Duration::from_secs(90), async {
        let key = UserKey::generate(KeyKind::Ed25519, None).await?;
        let (server_h, server_g) = (SshServer::start().await?, SshServer::start().await?);
        server_h.authorize(&key)?;
        server_g.authorize(&key)?;
        let echo = EchoServer::start(Transport::Tcp).await?;
        let e = echo.addr().to_string();
        let (lh, ah) = ingress();
        let (lg, ag) = ingress();
        let forwards = forward_table("via-h", "h", "local", &ah.to_string(), Some(&e))
            + &forward_table("via-g", "g", "local", &ag.to_string(), Some(&e));
        let g = host_table("g", &server_g, &key);
        let h = host_table("h", &server_h, &key);
        let mut d = TestDaemon::start(&format!("{h}{g}{forwards}"), vec![lh, lg]).await?;
        d.wait_up("h", Duration::from_secs(20)).await?;
        d.wait_up("g", Duration::from_secs(20)).await?;
        let mut through_g = TcpStream::connect(ag).await?;
        round_trip(&mut through_g, MIB as usize).await?;

        // Another login that the server accepts with the same key: `nobody` when we are root
        // (sshd switches to that user and must be able to read the authorized_keys file).
        let (new_user, expect_login) = if is_root() {
            std::fs::set_permissions(server_h.dir(), std::fs::Permissions::from_mode(0o755))?;
            std::fs::set_permissions(
                server_h.dir().join("authorized_keys"),
                std::fs::Permissions::from_mode(0o644),
            )?;
            ("nobody".to_string(), "Accepted publickey for nobody")
        } else {
            eprintln!(
                "NOTE: not root; the changed setting is keepalive_interval instead of user \
                 (only root's sshd can log in another user)"
            );
            (current_user()?, "Accepted publickey for")
        };
        let h2 = if is_root() {
            with_setting(&h, "user", &format!("\"{new_user}\""))
        } else {
            with_setting(&h, "keepalive_interval", "\"4s\"")
        };
        let plan = d.reload(&format!("{h2}{g}{forwards}"), vec![]).await?;
        assert_eq!(plan.hosts_reconnected, ["h"], "{plan:?}");
        assert!(plan.forwards_added.is_empty() && plan.forwards_removed.is_empty());
        assert!(plan.forwards_changed.is_empty(), "{plan:?}");

        d.wait_host("h", Duration::from_secs(20), |s| {
            s.reconnects == 1 && s.state == warren::session::HostState::Up
        })
        .await?;
        assert_eq!(server_h.sessions_accepted(), 2, "h reconnected once");
        assert!(server_h.log_contains(expect_login), "{}", server_h.log());
        // g and its open connection were not touched.
        assert_eq!(d.host_status("g").reconnects, 0);
        assert_eq!(server_g.sessions_accepted(), 1);
        round_trip(&mut through_g, 4 * MIB as usize).await?;
        // h's forward keeps its ingress and works over the new session.
        let t = push_through(TcpStream::connect(ah).await?, 4 * MIB).await?;
        t.check_echoed()?;
        d.stop(Duration::from_secs(1)).await;
        Ok(())
    })
    .await;
}

fn forward<'a>(doc: &'a Value, name: &str) -> Option<&'a Value> {
    doc["forwards"]
        .as_array()?
        .iter()
        .find(|f| f["name"] == name)
}

async fn echo_through_unix(path: &Path) -> anyhow::Result<()> {
    let s = tokio::net::UnixStream::connect(path)
        .await
        .with_context(|| format!("connect to {}", path.display()))?;
    push_through(s, 2 * MIB).await?.check_echoed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warren_reload_and_sighup_apply_reject_and_retry_with_systemd_notifications() {
    with_timeout(Duration::from_secs(120), async {
        let Fixture { server, key, echo } = Fixture::start().await?;
        let e = echo.addr().to_string();
        let dir = tempfile::tempdir()?;
        let sock = dir.path().join("control.sock");
        let sock_s = sock.display().to_string();
        let (a, b) = (dir.path().join("a.sock"), dir.path().join("b.sock"));
        let head = format!("[daemon]\ncontrol_socket = \"{sock_s}\"\n\n")
            + &host_table("h", &server, &key);
        let fa = forward_table("A", "h", "local", &a.display().to_string(), Some(&e));
        let fb = forward_table("B", "h", "local", &b.display().to_string(), Some(&e));
        let cfg = dir.path().join("warren.toml");
        std::fs::write(&cfg, format!("{head}{fa}"))?;
        let cfg_s = cfg.display().to_string();

        let mut notify = NotifySocket::bind()?;
        let notify_path = notify.path().display().to_string();
        let mut warren =
            WarrenProcess::spawn(&["run", "-c", &cfg_s], &[("NOTIFY_SOCKET", &notify_path)])?;
        notify.wait_ready(Duration::from_secs(20)).await?;
        notify
            .wait_for(Duration::from_secs(20), |l| {
                l.starts_with("STATUS=1/1 hosts up")
            })
            .await?;
        echo_through_unix(&a).await?;
        let mut held = tokio::net::UnixStream::connect(&a).await?;
        round_trip(&mut held, 64 * 1024).await?;

        // `warren reload` adds B: it prints the change and exits 0; B works.
        std::fs::write(&cfg, format!("{head}{fa}{fb}"))?;
        let out = run_warren(&["reload", "-s", &sock_s], &[], Duration::from_secs(30)).await?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(stdout.trim(), "forward added: B");
        echo_through_unix(&b).await?;
        notify
            .wait_for(Duration::from_secs(10), |l| {
                l == "STATUS=1/1 hosts up, 2/2 forwards ready"
            })
            .await?;

        // A broken file is rejected with its problems; everything keeps running.
        std::fs::write(&cfg, format!("{head}{fa}{fb}bogus_key = 1\n"))?;
        let out = run_warren(&["reload", "-s", &sock_s], &[], Duration::from_secs(30)).await?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{stderr}");
        assert!(stderr.contains("rejected"), "{stderr}");
        assert!(
            stderr.contains(&format!("{cfg_s}:")) && stderr.contains("bogus_key"),
            "the problem is named with its position: {stderr}"
        );
        assert!(warren.is_running());
        echo_through_unix(&a).await?;
        echo_through_unix(&b).await?;

        // SIGHUP removes B: its ingress goes, A and the connection held through it stay.
        std::fs::write(&cfg, format!("{head}{fa}"))?;
        warren.sighup()?;
        wait_for(Duration::from_secs(20), "B gone from status", || async {
            let doc = status_json(&sock_s).await?;
            forward(&doc, "B").is_none().then_some(())
        })
        .await?;
        wait_until(Duration::from_secs(10), "b.sock removed", || !b.exists()).await?;
        round_trip(&mut held, 64 * 1024).await?;

        // A forward added on an address that is taken: failed in status with the reason,
        // retried, and serving once the address is free. The daemon keeps running.
        let taken = std::net::TcpListener::bind("127.0.0.1:0")?;
        let taken_addr = taken.local_addr()?;
        let fd = forward_table("D", "h", "local", &taken_addr.to_string(), Some(&e));
        std::fs::write(&cfg, format!("{head}{fa}{fd}"))?;
        let out = run_warren(&["reload", "-s", &sock_s], &[], Duration::from_secs(30)).await?;
        assert_eq!(out.status.code(), Some(0));
        let doc = status_json(&sock_s).await.context("status")?;
        let d = forward(&doc, "D").context("D in status")?;
        assert_eq!(d["state"], "failed", "{d}");
        let error = d["last_error"].as_str().unwrap_or_default();
        assert!(
            error.contains("cannot listen on") && error.contains(&taken_addr.to_string()),
            "{d}"
        );
        drop(taken);
        wait_for(
            Duration::from_secs(20),
            "D ready once its address is free",
            || async {
                let doc = status_json(&sock_s).await?;
                (forward(&doc, "D")?["state"] == "ready").then_some(())
            },
        )
        .await?;
        push_through(TcpStream::connect(taken_addr).await?, 2 * MIB)
            .await?
            .check_echoed()?;
        assert!(warren.is_running());

        warren.sigterm()?;
        notify
            .wait_for(Duration::from_secs(10), |l| l == "STOPPING=1")
            .await?;
        assert_eq!(warren.wait_exit(Duration::from_secs(20)).await?, 0);

        // systemd saw READY, then for each of the four reloads RELOADING=1 with a
        // MONOTONIC_USEC, then READY=1 again, and STOPPING=1 last.
        let seen: Vec<&str> = notify
            .received()
            .iter()
            .map(String::as_str)
            .filter(|l| !l.starts_with("STATUS=") && !l.starts_with("WATCHDOG="))
            .collect();
        let mut expected = vec!["READY=1"];
        for _ in 0..4 {
            expected.extend(["RELOADING=1", "MONOTONIC_USEC", "READY=1"]);
        }
        expected.push("STOPPING=1");
        let got: Vec<&str> = seen
            .iter()
            .map(|l| {
                if l.starts_with("MONOTONIC_USEC=") {
                    "MONOTONIC_USEC"
                } else {
                    l
                }
            })
            .collect();
        assert_eq!(got, expected, "{seen:?}");
        let usec: Vec<u64> = seen
            .iter()
            .filter_map(|l| l.strip_prefix("MONOTONIC_USEC="))
            .map(str::parse)
            .collect::<Result<_, _>>()?;
        assert!(
            usec.windows(2).all(|w| w[0] < w[1]) && usec[0] > 0,
            "{usec:?}"
        );
        let log = warren.stderr_text();
        assert!(log.contains("configuration rejected"), "{log}");
        // With the daemon gone nobody answers: exit 69.
        let out = run_warren(&["reload", "-s", &sock_s], &[], Duration::from_secs(10)).await?;
        assert_eq!(out.status.code(), Some(69));
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_moves_a_host_behind_a_jump_host_and_back() {
    with_timeout(Duration::from_secs(90), async {
        let bastion = SshServer::start().await?;
        let inner = SshServer::start().await?;
        let key = UserKey::generate(KeyKind::Ed25519, None).await?;
        bastion.authorize(&key)?;
        inner.authorize(&key)?;
        let echo = EchoServer::start(Transport::Tcp).await?;
        let (l, a) = ingress();
        let f = forward_table(
            "f",
            "inner",
            "local",
            &a.to_string(),
            Some(&echo.addr().to_string()),
        );
        let b = host_table("bastion", &bastion, &key);
        let direct = host_table("inner", &inner, &key);
        let jumped = with_setting(&direct, "jump", "[\"bastion\"]");
        let mut d = TestDaemon::start(&format!("{b}{direct}{f}"), vec![l]).await?;
        d.wait_up("inner", Duration::from_secs(20)).await?;
        assert!(
            d.daemon().host("bastion").is_none(),
            "no forward needs the bastion yet"
        );

        // Behind the bastion: the bastion starts, inner reconnects through it, f keeps its
        // ingress and works.
        let plan = d.reload(&format!("{b}{jumped}{f}"), vec![]).await?;
        assert_eq!(plan.hosts_started, ["bastion"], "{plan:?}");
        assert_eq!(plan.hosts_reconnected, ["inner"], "{plan:?}");
        assert!(plan.forwards_changed.is_empty(), "{plan:?}");
        d.wait_host("inner", Duration::from_secs(20), |s| {
            s.reconnects == 1 && s.state == warren::session::HostState::Up
        })
        .await?;
        push_through(TcpStream::connect(a).await?, 4 * MIB)
            .await?
            .check_echoed()?;
        assert_eq!(bastion.sessions_accepted(), 1);
        assert_eq!(inner.sessions_accepted(), 2);
        assert!(
            bastion.log_contains("direct-tcpip"),
            "the inner session runs through the bastion: {}",
            bastion.log()
        );

        // And back: direct again, and the bastion session, no longer needed, is closed.
        let plan = d.reload(&format!("{b}{direct}{f}"), vec![]).await?;
        assert_eq!(plan.hosts_stopped, ["bastion"], "{plan:?}");
        assert_eq!(plan.hosts_reconnected, ["inner"], "{plan:?}");
        assert!(d.daemon().host("bastion").is_none());
        d.wait_host("inner", Duration::from_secs(20), |s| {
            s.reconnects == 2 && s.state == warren::session::HostState::Up
        })
        .await?;
        bastion
            .wait_sessions(Duration::from_secs(10), "the bastion session closed", |c| {
                c.alive == 0
            })
            .await?;
        push_through(TcpStream::connect(a).await?, 4 * MIB)
            .await?
            .check_echoed()?;
        assert_eq!(inner.sessions_accepted(), 3);
        d.stop(Duration::from_secs(1)).await;
        Ok(())
    })
    .await;
}
