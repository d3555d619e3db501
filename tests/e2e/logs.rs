//! Logs: plain text without colour codes when stderr is not a terminal, and one JSON object
//! per line with `--log-format json`.

use std::time::Duration;

use crate::harness::{WarrenProcess, with_timeout};
use crate::support::{Fixture, forward_table, host_table};

/// A daemon whose only host refuses connections, so that it logs a warning.
async fn failing_daemon(args: &[&str]) -> anyhow::Result<(WarrenProcess, tempfile::TempDir)> {
    let Fixture { server, key, echo } = Fixture::start().await?;
    server.stop_accepting();
    let dir = tempfile::tempdir()?;
    let toml = host_table("h", &server, &key)
        + &forward_table(
            "f",
            "h",
            "local",
            &dir.path().join("in.sock").display().to_string(),
            Some(&echo.addr().to_string()),
        );
    let cfg = dir.path().join("warren.toml");
    std::fs::write(&cfg, toml)?;
    let cfg = cfg.display().to_string();
    let mut all = vec!["run", "-c", cfg.as_str()];
    all.extend_from_slice(args);
    // An empty NO_COLOR counts as unset: the decision is warren's own (stderr is a pipe).
    let warren = WarrenProcess::spawn(&all, &[("NO_COLOR", "")])?;
    warren
        .wait_for_stderr(Duration::from_secs(20), |l| l.contains("connect failed"))
        .await?;
    Ok((warren, dir))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_logs_carry_no_colour_codes_off_a_terminal() {
    with_timeout(Duration::from_secs(60), async {
        let (mut warren, _dir) = failing_daemon(&[]).await?;
        warren.sigterm()?;
        assert_eq!(warren.wait_exit(Duration::from_secs(20)).await?, 0);
        let text = warren.stderr_text();
        assert!(
            text.contains("WARN") && text.contains("connect failed"),
            "{text}"
        );
        assert!(!text.contains('\u{1b}'), "ANSI escape codes in: {text:?}");
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_per_line_with_the_host() {
    with_timeout(Duration::from_secs(60), async {
        let (mut warren, _dir) = failing_daemon(&["--log-format", "json"]).await?;
        warren.sigterm()?;
        assert_eq!(warren.wait_exit(Duration::from_secs(20)).await?, 0);
        let lines = warren.stderr_lines();
        assert!(!lines.is_empty());
        let mut failed = None;
        for line in &lines {
            let v: serde_json::Value = serde_json::from_str(line)
                .map_err(|e| anyhow::anyhow!("not JSON ({e}): {line}"))?;
            for field in ["timestamp", "level", "message"] {
                assert!(v.get(field).is_some(), "{field} missing: {line}");
            }
            if v["message"] == "connect failed" {
                failed = Some(v);
            }
        }
        let failed = failed.expect("a connect failed line");
        assert_eq!(failed["level"], "WARN");
        assert_eq!(failed["class"], "network");
        assert_eq!(failed["span"]["host"], "h", "{failed}");
        assert!(lines.iter().any(|l| l.contains("\"message\":\"stopped\"")));
        Ok(())
    })
    .await;
}
