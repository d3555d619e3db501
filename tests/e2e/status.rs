//! `warren status` over the control socket: every SPEC field, the allocated port of a port-0
//! remote forward, the table for people, exit 69 without a daemon.

use std::time::Duration;

use crate::harness::{
    EchoServer, KeyKind, NotifySocket, SshServer, Transport, UserKey, WarrenProcess, run_warren,
    wait_for, with_timeout,
};
use crate::support::{forward_table, host_table};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reports_every_field_and_the_allocated_port() {
    with_timeout(Duration::from_secs(60), async {
        let server = SshServer::start().await?;
        let key = UserKey::generate(KeyKind::Ed25519, None).await?;
        server.authorize(&key)?;
        let echo = EchoServer::start(Transport::Tcp).await?;
        let dir = tempfile::tempdir()?;
        let sock = dir.path().join("control.sock");
        let ingress = dir.path().join("in.sock");
        let toml = format!("[daemon]\ncontrol_socket = \"{}\"\n\n", sock.display())
            + &host_table("h", &server, &key)
            + &forward_table(
                "local-echo",
                "h",
                "local",
                &ingress.display().to_string(),
                Some(&echo.addr().to_string()),
            )
            + &forward_table(
                "back",
                "h",
                "remote",
                "127.0.0.1:0",
                Some(&echo.addr().to_string()),
            );
        let cfg = dir.path().join("warren.toml");
        std::fs::write(&cfg, toml)?;
        let cfg = cfg.display().to_string();
        let sock_s = sock.display().to_string();
        let _warren = WarrenProcess::spawn(&["run", "-c", &cfg], &[])?;

        // Poll status until the remote listener is up (status is the readiness signal).
        let doc = wait_for(
            Duration::from_secs(20),
            "a ready remote forward in status",
            || {
                let sock_s = sock_s.clone();
                async move {
                    let out = run_warren(
                        &["status", "--json", "-s", &sock_s],
                        &[],
                        Duration::from_secs(5),
                    )
                    .await
                    .ok()?;
                    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
                    (v["forwards"][1]["state"] == "ready").then_some(v)
                }
            },
        )
        .await?;
        let host = &doc["hosts"][0];
        for field in ["name", "state", "since", "via", "last_error", "reconnects"] {
            assert!(
                host.get(field).is_some(),
                "host field {field} missing: {host}"
            );
        }
        assert_eq!(host["name"], "h");
        assert_eq!(host["state"], "up");
        assert!(host["last_error"].is_null());
        assert!(humantime::parse_rfc3339(host["since"].as_str().unwrap()).is_ok());
        for f in doc["forwards"].as_array().unwrap() {
            for field in [
                "name",
                "host",
                "type",
                "listen",
                "connect",
                "state",
                "active",
                "total",
                "bytes_in",
                "bytes_out",
                "last_error",
            ] {
                assert!(f.get(field).is_some(), "forward field {field} missing: {f}");
            }
        }
        assert_eq!(doc["forwards"][0]["listen"], ingress.display().to_string());
        let back = doc["forwards"][1]["listen"].as_str().unwrap();
        let port: u16 = back.rsplit_once(':').unwrap().1.parse()?;
        assert_ne!(port, 0, "the allocated port is shown: {back}");
        std::net::TcpStream::connect(("127.0.0.1", port))?;

        let table = run_warren(&["status", "-s", &sock_s], &[], Duration::from_secs(5)).await?;
        let text = String::from_utf8_lossy(&table.stdout);
        assert!(text.starts_with("HOST"), "{text}");
        assert!(text.contains("local-echo") && text.contains(back), "{text}");

        let none = run_warren(
            &[
                "status",
                "-s",
                &dir.path().join("nobody.sock").display().to_string(),
            ],
            &[],
            Duration::from_secs(5),
        )
        .await?;
        assert_eq!(none.status.code(), Some(69));
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_notifications_ready_status_watchdog_stopping() {
    with_timeout(Duration::from_secs(60), async {
        let server = SshServer::start().await?;
        let key = UserKey::generate(KeyKind::Ed25519, None).await?;
        server.authorize(&key)?;
        let echo = EchoServer::start(Transport::Tcp).await?;
        let dir = tempfile::tempdir()?;
        let ingress = dir.path().join("in.sock");
        let toml = host_table("h", &server, &key)
            + &forward_table(
                "f",
                "h",
                "local",
                &ingress.display().to_string(),
                Some(&echo.addr().to_string()),
            );
        let cfg = dir.path().join("warren.toml");
        std::fs::write(&cfg, toml)?;
        let mut notify = NotifySocket::bind()?;
        let socket = notify.path().display().to_string();
        let cfg = cfg.display().to_string();
        let mut warren = WarrenProcess::spawn(
            &["run", "-c", &cfg],
            &[("NOTIFY_SOCKET", &socket), ("WATCHDOG_USEC", "400000")],
        )?;
        notify.wait_ready(Duration::from_secs(20)).await?;
        notify
            .wait_for(Duration::from_secs(20), |l| {
                l == "STATUS=1/1 hosts up, 1/1 forwards ready"
            })
            .await?;
        notify
            .wait_for(Duration::from_secs(5), |l| l == "WATCHDOG=1")
            .await?;
        notify
            .wait_for(Duration::from_secs(5), |l| l == "WATCHDOG=1")
            .await?;
        warren.sigterm()?;
        notify
            .wait_for(Duration::from_secs(10), |l| l == "STOPPING=1")
            .await?;
        assert_eq!(warren.wait_exit(Duration::from_secs(20)).await?, 0);
        let seen = notify.received();
        let ready = seen.iter().position(|l| l == "READY=1").unwrap();
        let stopping = seen.iter().position(|l| l == "STOPPING=1").unwrap();
        assert!(ready < stopping, "{seen:?}");
        Ok(())
    })
    .await;
}
