//! `warren status` over the control socket: every documented field, the allocated port of a port-0
//! remote forward, the table for people, exit 69 without a daemon.

use std::time::Duration;

use crate::harness::{NotifySocket, WarrenProcess, run_warren, wait_for, with_timeout};
use crate::support::{Fixture, forward_table, host_table, status_json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reports_every_field_and_the_allocated_port() {
    with_timeout(Duration::from_secs(60), async {
        let Fixture { server, key, echo } = Fixture::start().await?;
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
        let Fixture { server, key, echo } = Fixture::start().await?;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_follows_a_host_through_up_backoff_and_up_again() {
    with_timeout(Duration::from_secs(60), async {
        let Fixture { server, key, echo } = Fixture::start().await?;
        let dir = tempfile::tempdir()?;
        let sock = dir.path().join("control.sock");
        let sock_s = sock.display().to_string();
        let ingress = dir.path().join("in.sock");
        // A long backoff, so that only `warren reconnect` can bring the host back quickly.
        let host = crate::support::with_setting(
            &crate::support::with_setting(
                &host_table("h", &server, &key),
                "reconnect_min",
                "\"30s\"",
            ),
            "reconnect_max",
            "\"60s\"",
        );
        let toml = format!("[daemon]\ncontrol_socket = \"{sock_s}\"\n\n")
            + &host
            + &forward_table(
                "f",
                "h",
                "local",
                &ingress.display().to_string(),
                Some(&echo.addr().to_string()),
            );
        let cfg = dir.path().join("warren.toml");
        std::fs::write(&cfg, toml)?;
        let _warren = WarrenProcess::spawn(&["run", "-c", &cfg.display().to_string()], &[])?;

        // Up.
        let up = wait_for(Duration::from_secs(20), "h up in status", || {
            let s = sock_s.clone();
            async move {
                let doc = status_json(&s).await?;
                (doc["hosts"][0]["state"] == "up").then_some(doc)
            }
        })
        .await?;
        let h = &up["hosts"][0];
        assert_eq!(
            (
                &h["reconnects"],
                &h["last_error"],
                &h["via"],
                &h["retry_at"]
            ),
            (
                &serde_json::json!(0),
                &serde_json::Value::Null,
                &serde_json::json!([]),
                &serde_json::Value::Null
            ),
            "{h}"
        );
        assert_eq!(up["forwards"][0]["state"], "ready");
        let first_since = humantime::parse_rfc3339(h["since"].as_str().unwrap())?;

        // The server goes away: backoff, with the network error and when it retries.
        server.stop_accepting();
        server.kill_sessions().await?;
        let down = wait_for(Duration::from_secs(20), "h in backoff in status", || {
            let s = sock_s.clone();
            async move {
                let doc = status_json(&s).await?;
                (doc["hosts"][0]["state"] == "backoff").then_some(doc)
            }
        })
        .await?;
        let h = &down["hosts"][0];
        assert_eq!(h["reconnects"], 1, "{h}");
        assert_eq!(h["last_error"]["class"], "network", "{h}");
        assert!(
            !h["last_error"]["message"]
                .as_str()
                .unwrap_or_default()
                .is_empty(),
            "{h}"
        );
        let retry_at = humantime::parse_rfc3339(h["retry_at"].as_str().unwrap())?;
        assert!(retry_at > std::time::SystemTime::now(), "{h}");
        assert_eq!(down["forwards"][0]["state"], "waiting");
        let table = run_warren(&["status", "-s", &sock_s], &[], Duration::from_secs(5)).await?;
        let text = String::from_utf8_lossy(&table.stdout);
        assert!(
            text.contains("backoff") && text.contains("network:"),
            "{text}"
        );

        // Back: `warren reconnect` skips the 30 s wait; up again, the error cleared.
        server.resume_accepting()?;
        let out = run_warren(
            &["reconnect", "h", "-s", &sock_s],
            &[],
            Duration::from_secs(5),
        )
        .await?;
        assert_eq!(out.status.code(), Some(0));
        let again = wait_for(Duration::from_secs(10), "h up again in status", || {
            let s = sock_s.clone();
            async move {
                let doc = status_json(&s).await?;
                (doc["hosts"][0]["state"] == "up").then_some(doc)
            }
        })
        .await?;
        let h = &again["hosts"][0];
        assert!(h["last_error"].is_null() && h["retry_at"].is_null(), "{h}");
        assert_eq!(h["reconnects"], 1, "{h}");
        // `since` has whole seconds: it moved unless all of this happened within one.
        assert!(humantime::parse_rfc3339(h["since"].as_str().unwrap())? >= first_since);
        assert_eq!(again["forwards"][0]["state"], "ready");

        let out = run_warren(
            &["reconnect", "nosuch", "-s", &sock_s],
            &[],
            Duration::from_secs(5),
        )
        .await?;
        assert_eq!(out.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&out.stderr).contains("unknown host"));
        Ok(())
    })
    .await;
}

/// The shipped units pass `systemd-analyze verify` (with the binary path pointed at the
/// built one, since verify checks that it exists) without a single warning, and carry what
/// the README promises of them.
#[test]
fn systemd_units_verify_cleanly() {
    let analyze = std::path::Path::new("/usr/bin/systemd-analyze");
    assert!(
        analyze.exists(),
        "systemd-analyze is missing: install Debian's `systemd` package (scripts/test.sh does)"
    );
    let units = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../systemd");
    let dir = tempfile::tempdir().unwrap();
    for (file, as_name) in [
        ("warren.service", "warren.service"),
        ("warren@.service", "warren@.service"),
        ("warren@.service", "warren@db.service"),
    ] {
        let text = std::fs::read_to_string(units.join(file)).unwrap();
        for needed in [
            "Type=notify\n",
            "ExecStartPre=/usr/local/bin/warren check -c /etc/warren/",
            "ExecReload=/bin/kill -HUP $MAINPID\n",
            "Restart=on-failure\n",
            "StartLimitIntervalSec=0\n",
            "WatchdogSec=",
            "RuntimeDirectory=warren",
            "After=network-online.target\n",
            "Wants=network-online.target\n",
            "ProtectSystem=strict\n",
            "PrivateTmp=yes\n",
            "NoNewPrivileges=yes\n",
            "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6\n",
            "CapabilityBoundingSet=\n",
            "User=warren\n",
            "ProtectHome=yes\n",
            "LimitNOFILE=65536\n",
            "NotifyAccess=all\n",
        ] {
            assert!(text.contains(needed), "{file} lacks {needed:?}");
        }
        let local = text.replace("/usr/local/bin/warren", crate::harness::WARREN);
        let path = dir.path().join(as_name);
        std::fs::write(&path, local).unwrap();
        let out = std::process::Command::new(analyze)
            .arg("verify")
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stderr.trim().is_empty() && out.stdout.is_empty(),
            "systemd-analyze verify {as_name}: {stderr}"
        );
        let exposure = security_exposure(analyze, &path);
        assert!(
            exposure <= 1.5,
            "systemd-analyze security rates {as_name} {exposure}, above 1.5"
        );
    }
    assert!(
        std::fs::read_to_string(units.join("warren@.service"))
            .unwrap()
            .contains("/etc/warren/%i.toml")
    );
    // The example socket unit (with its service beside it, which verify looks for).
    let socket = dir.path().join("warren.socket");
    std::fs::copy(units.join("warren.socket"), &socket).unwrap();
    let out = std::process::Command::new(analyze)
        .arg("verify")
        .arg(&socket)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify warren.socket: {stderr}"
    );
    // The user the units run as is one that systemd-sysusers creates from the shipped file.
    let sysusers = std::process::Command::new("systemd-sysusers")
        .arg("--dry-run")
        .arg(units.join("warren.sysusers"))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&sysusers.stderr);
    let exists = nix::unistd::User::from_name("warren")
        .ok()
        .flatten()
        .is_some();
    assert!(
        sysusers.status.success() && (said.contains("'warren'") || exists),
        "systemd-sysusers --dry-run warren.sysusers: {said}"
    );
}

/// The overall exposure `systemd-analyze security --offline=true` gives `unit` (0 best, 10
/// worst), read from its last line: `-> Overall exposure level for NAME: 1.4 OK`.
fn security_exposure(analyze: &std::path::Path, unit: &std::path::Path) -> f64 {
    let out = std::process::Command::new(analyze)
        .args(["security", "--offline=true", "--no-pager"])
        .arg(unit)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no exposure level in:\n{text}"));
    line.rsplit(':')
        .next()
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unreadable exposure line {line:?}"))
}
