//! keyboard-interactive authentication answered from `password_file`, against sshd asking
//! through PAM (`KbdInteractiveAuthentication yes`, `PasswordAuthentication no`, `UsePAM yes`)
//! for the password of a throwaway local user. They need root (to create the user); without
//! it they fail and say why (they never skip silently).

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, ensure};
use serde_json::Value;
use tokio::net::TcpStream;
use warren::session::FailureClass;

use crate::harness::{
    EchoServer, LocalUser, MIB, SshServer, Transport, WarrenProcess, hex, push_through,
    random_digest, tail, wait_for, with_timeout,
};
use crate::support::{TestDaemon, forward_table, ingress, status_json};

const LIMIT: Duration = Duration::from_secs(60);
/// Bound for one step that should be quick (a session coming up, an attempt failing).
const STEP: Duration = Duration::from_secs(20);

/// sshd asking for passwords only through keyboard-interactive and PAM.
async fn pam_server() -> anyhow::Result<SshServer> {
    ensure!(
        Path::new("/etc/pam.d/sshd").exists(),
        "the keyboard-interactive tests need sshd's PAM configuration /etc/pam.d/sshd \
         (package openssh-server installs it)"
    );
    SshServer::builder()
        .password_authentication(false)
        .config_line("KbdInteractiveAuthentication yes")
        .config_line("UsePAM yes")
        .start()
        .await
}

/// A password no other test uses, so that finding it in output means a leak.
fn fresh_password() -> String {
    format!("wrn-pw-{}", &hex(&random_digest(32, rand::random()))[..24])
}

/// `password` in a 0600 file in `dir`.
fn password_file(dir: &Path, password: &str) -> anyhow::Result<PathBuf> {
    let path = dir.join("password");
    std::fs::write(&path, format!("{password}\n"))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(path)
}

/// Host `h`: `server` as `user`, with no key and no agent, only `password_file`.
fn host_table(server: &SshServer, user: &str, password_file: &Path) -> String {
    format!(
        "[hosts.h]\nhostname = \"127.0.0.1\"\nport = {port}\nuser = \"{user}\"\n\
         identity_files = []\nagent = false\npassword_file = \"{pw}\"\n\
         known_hosts = [\"{kh}\"]\nconnect_timeout = \"10s\"\nreconnect_min = \"100ms\"\n\
         reconnect_max = \"2s\"\n",
        port = server.port(),
        pw = password_file.display(),
        kh = server.known_hosts_path().display(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyboard_interactive_answers_pam_from_password_file() {
    with_timeout(LIMIT, async {
        let password = fresh_password();
        let user = LocalUser::create(&password).await?;
        let server = pam_server().await?;
        let echo = EchoServer::start(Transport::Tcp).await?;
        let dir = tempfile::tempdir()?;
        let pw = password_file(dir.path(), &password)?;
        let (listener, addr) = ingress();
        let toml = host_table(&server, user.name(), &pw)
            + &forward_table(
                "f",
                "h",
                "local",
                &addr.to_string(),
                Some(&echo.addr().to_string()),
            );
        let d = TestDaemon::start(&toml, vec![listener]).await?;
        d.wait_up("h", STEP)
            .await
            .with_context(|| format!("sshd log tail:\n{}", tail(&server.log(), 30)))?;
        let stream = TcpStream::connect(addr).await?;
        push_through(stream, 4 * MIB).await?.check_echoed()?;
        let accepted = format!("Accepted keyboard-interactive/pam for {} ", user.name());
        server.wait_for_log(&accepted, STEP).await?;
        // The password method was tried first and refused by this server.
        ensure!(
            !server.log_contains("Accepted password"),
            "only keyboard-interactive may have let warren in"
        );
        d.stop(Duration::from_secs(1)).await;
        Ok(())
    })
    .await;
}

/// Through the binary, so that its stderr (at trace level) can be searched for the password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_is_an_auth_failure_that_never_shows_the_password() {
    with_timeout(LIMIT, async {
        let right = fresh_password();
        let wrong = fresh_password();
        let user = LocalUser::create(&right).await?;
        let server = pam_server().await?;
        let dir = tempfile::tempdir()?;
        let pw = password_file(dir.path(), &wrong)?;
        let sock = dir.path().join("control.sock");
        let toml = format!("[daemon]\ncontrol_socket = \"{}\"\n\n", sock.display())
            + &host_table(&server, user.name(), &pw)
            + &forward_table(
                "f",
                "h",
                "local",
                &dir.path().join("in.sock").display().to_string(),
                Some("127.0.0.1:9"),
            );
        let config = dir.path().join("warren.toml");
        std::fs::write(&config, &toml)?;
        let warren = WarrenProcess::spawn(
            &[
                "run",
                "-c",
                &config.display().to_string(),
                "--log-level",
                "trace",
            ],
            &[],
        )?;
        let sock = sock.display().to_string();
        let host: Value = wait_for(STEP, "host h to fail and wait for a human", || async {
            let doc = status_json(&sock).await?;
            let host = doc["hosts"].as_array()?.first()?.clone();
            // An auth failure needs a human: the host waits in `failed`.
            (!host["last_error"].is_null() && host["state"] == "failed").then_some(host)
        })
        .await
        .with_context(|| format!("warren stderr tail:\n{}", tail(&warren.stderr_text(), 40)))?;
        ensure!(
            host["last_error"]["class"] == FailureClass::Auth.as_str(),
            "want an auth failure: {host}"
        );
        let message = host["last_error"]["message"].as_str().unwrap_or_default();
        ensure!(
            message.contains("keyboard-interactive") && message.contains(user.name()),
            "the message names the method and the user: {message:?}"
        );
        ensure!(
            server.log_contains(&format!(
                "Failed keyboard-interactive/pam for {}",
                user.name()
            )),
            "sshd saw the wrong password through PAM:\n{}",
            tail(&server.log(), 30)
        );
        let stderr = warren.stderr_text();
        ensure!(!stderr.is_empty(), "trace logging wrote nothing");
        for (what, secret) in [("the wrong", &wrong), ("the right", &right)] {
            ensure!(
                !stderr.contains(secret.as_str()),
                "{what} password is in warren's stderr"
            );
            ensure!(
                !host.to_string().contains(secret.as_str()),
                "{what} password is in status"
            );
        }
        Ok(())
    })
    .await;
}
