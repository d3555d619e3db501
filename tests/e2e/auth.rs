//! User authentication against the real sshd: key types, encrypted keys, the agent,
//! user certificates, and the failure classes of a rejected or unusable key.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use anyhow::{Context, ensure};
use tokio::net::{TcpStream, UnixStream};

use crate::harness::{
    EchoServer, KeyKind, MIB, SshAgent, SshServer, TestCa, Transport, UserKey, WarrenProcess,
    current_user, push_through, wait_until, with_timeout,
};
use crate::support::{
    TestDaemon, forward_table, host_table, host_table_with, ingress, with_setting,
};
use warren::session::{FailureClass, HostState, HostStatus};

const LIMIT: Duration = Duration::from_secs(60);
/// Bound for one step that should be quick (a session coming up, an attempt failing).
const STEP: Duration = Duration::from_secs(15);

/// Runs host `h` with `table` and a local forward to an echo server; the session must come
/// up and carry 1 MiB each way. Returns the daemon for more checks.
async fn carries_bytes(table: &str) -> anyhow::Result<TestDaemon> {
    let echo = EchoServer::start(Transport::Tcp).await?;
    let (listener, addr) = ingress();
    let toml = table.to_owned()
        + &forward_table(
            "f",
            "h",
            "local",
            &addr.to_string(),
            Some(&echo.addr().to_string()),
        );
    let d = TestDaemon::start(&toml, vec![listener]).await?;
    d.wait_up("h", STEP).await?;
    let stream = TcpStream::connect(addr).await?;
    push_through(stream, MIB).await?.check_echoed()?;
    assert_eq!(echo.connections(), 1);
    Ok(d)
}

/// Runs host `h` with `table` (and an unused forward, so that it has a session) until its
/// first failure; returns that status.
async fn first_failure(table: &str) -> anyhow::Result<HostStatus> {
    let (listener, addr) = ingress();
    let toml = table.to_owned() + &forward_table("f", "h", "local", &addr.to_string(), Some("9"));
    let d = TestDaemon::start(&toml, vec![listener]).await?;
    let status = d.wait_host("h", STEP, |s| s.last_error.is_some()).await?;
    ensure!(
        d.host_status("h").state != HostState::Up,
        "the host came up after all"
    );
    d.stop(Duration::from_secs(1)).await;
    Ok(status)
}

/// sshd's line for an accepted key: `Accepted publickey for USER ... ssh2: TYPE SHA256:...`.
async fn expect_accepted_in_log(server: &SshServer, what: &str) -> anyhow::Result<String> {
    let user = current_user()?;
    let needle = format!("Accepted publickey for {user} ");
    server.wait_for_log(&needle, STEP).await?;
    let log = server.log();
    let line = log
        .lines()
        .find(|l| l.contains(&needle))
        .context("the accepted line")?
        .to_owned();
    ensure!(line.contains(what), "expected {what:?} in {line:?}");
    Ok(line)
}

async fn key_type_authenticates(kind: KeyKind, logged_as: &str) -> anyhow::Result<SshServer> {
    let server = SshServer::start().await?;
    let key = UserKey::generate(kind, None).await?;
    server.authorize(&key)?;
    let d = carries_bytes(&host_table("h", &server, &key)).await?;
    let line = expect_accepted_in_log(&server, &key.fingerprint()?).await?;
    ensure!(line.contains(logged_as), "expected {logged_as} in {line:?}");
    d.stop(Duration::from_secs(1)).await;
    Ok(server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ed25519_key_authenticates() {
    with_timeout(LIMIT, async {
        key_type_authenticates(KeyKind::Ed25519, "ED25519 ").await?;
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ecdsa_key_authenticates() {
    with_timeout(LIMIT, async {
        key_type_authenticates(KeyKind::Ecdsa, "ECDSA ").await?;
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsa_key_authenticates_with_sha2_signatures() {
    with_timeout(LIMIT, async {
        let server = key_type_authenticates(KeyKind::Rsa, "RSA ").await?;
        let log = server.log();
        // sshd logs the signature algorithm of every publickey request.
        let algs: Vec<&str> = log
            .lines()
            .filter_map(|l| l.split("pkalg ").nth(1))
            .filter_map(|rest| rest.split_whitespace().next())
            .collect();
        ensure!(
            !algs.is_empty(),
            "no publickey request in the sshd log:\n{log}"
        );
        ensure!(
            algs.iter()
                .all(|a| *a == "rsa-sha2-512" || *a == "rsa-sha2-256"),
            "RSA must sign with rsa-sha2-512/256, never ssh-rsa; sshd saw {algs:?}"
        );
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_key_with_passphrase_file() {
    with_timeout(LIMIT, async {
        let server = SshServer::start().await?;
        let key = UserKey::generate(KeyKind::Ed25519, Some("correct horse battery")).await?;
        server.authorize(&key)?;
        let pass = key.write_passphrase_file()?;
        let extra = format!("passphrase_file = \"{}\"", pass.display());
        let table = host_table_with("h", &server, &key, &server.known_hosts_path(), &extra);
        let d = carries_bytes(&table).await?;
        expect_accepted_in_log(&server, &key.fingerprint()?).await?;
        d.stop(Duration::from_secs(1)).await;
        Ok(())
    })
    .await;
}

/// Through the binary, so that `SSH_AUTH_SOCK` is set for warren alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_key_authenticates() {
    with_timeout(LIMIT, async {
        let server = SshServer::start().await?;
        let key = UserKey::generate(KeyKind::Ed25519, None).await?;
        server.authorize(&key)?;
        let agent = SshAgent::start().await?;
        agent.add(&key).await?;
        ensure!(agent.identities().await?.len() == 1);
        let echo = EchoServer::start(Transport::Tcp).await?;

        let dir = tempfile::tempdir()?;
        let ingress_path = dir.path().join("in.sock");
        let table = host_table("h", &server, &key);
        // No identity file: the key is only in the agent.
        let table = with_setting(&table, "identity_files", "[]");
        let table = with_setting(&table, "agent", "true");
        let toml = format!(
            "[daemon]\ncontrol_socket = \"{}\"\n\n",
            dir.path().join("control.sock").display()
        ) + &table
            + &forward_table(
                "f",
                "h",
                "local",
                &ingress_path.display().to_string(),
                Some(&echo.addr().to_string()),
            );
        let config = dir.path().join("warren.toml");
        std::fs::write(&config, &toml)?;
        let home = dir.path().join("home");
        std::fs::create_dir(&home)?;
        let sock = agent.socket().display().to_string();
        let mut warren = WarrenProcess::spawn(
            &["run", "-c", &config.display().to_string()],
            &[
                ("SSH_AUTH_SOCK", sock.as_str()),
                ("HOME", &home.display().to_string()),
            ],
        )?;
        wait_until(STEP, "warren to bind its Unix ingress", || {
            ingress_path.exists()
        })
        .await
        .with_context(|| format!("warren stderr:\n{}", warren.stderr_text()))?;
        // The connection waits for the session; the bytes prove it came up.
        let stream = UnixStream::connect(&ingress_path).await?;
        push_through(stream, MIB)
            .await
            .with_context(|| format!("warren stderr:\n{}", warren.stderr_text()))?
            .check_echoed()?;
        expect_accepted_in_log(&server, &key.fingerprint()?).await?;

        warren.sigterm()?;
        let code = warren.wait_exit(STEP).await?;
        assert_eq!(code, 0, "stderr:\n{}", warren.stderr_text());
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_certificate_authenticates_without_the_plain_key_authorized() {
    with_timeout(LIMIT, async {
        let server = SshServer::start().await?;
        let key = UserKey::generate(KeyKind::Ed25519, None).await?;
        let ca = TestCa::generate().await?;
        server.trust_user_ca(&ca).await?;
        let user = current_user()?;
        let cert = ca.sign_user(&key, &[&user]).await?;
        ensure!(cert == key.cert_path() && cert.exists());
        // authorized_keys stays empty: only the certificate can get in.
        let d = carries_bytes(&host_table("h", &server, &key)).await?;
        expect_accepted_in_log(&server, "ED25519-CERT").await?;
        d.stop(Duration::from_secs(1)).await;
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_files_offer_a_certificate_kept_elsewhere_with_its_key() {
    with_timeout(LIMIT, async {
        let server = SshServer::start().await?;
        let key = UserKey::generate(KeyKind::Ed25519, None).await?;
        let other = UserKey::generate(KeyKind::Ed25519, None).await?;
        let ca = TestCa::generate().await?;
        server.trust_user_ca(&ca).await?;
        let user = current_user()?;
        // Kept away from the key, as CertificateFile allows; and first in the list, a
        // certificate for another key, which must be passed over.
        let dir = tempfile::tempdir()?;
        let mine = dir.path().join("mine-cert.pub");
        std::fs::rename(ca.sign_user(&key, &[&user]).await?, &mine)?;
        let theirs = dir.path().join("theirs-cert.pub");
        std::fs::rename(ca.sign_user(&other, &[&user]).await?, &theirs)?;
        ensure!(!key.cert_path().exists());
        let extra = format!(
            "certificate_files = [\"{}\", \"{}\"]",
            theirs.display(),
            mine.display()
        );
        let table = host_table_with("h", &server, &key, &server.known_hosts_path(), &extra);
        let d = carries_bytes(&table).await?;
        expect_accepted_in_log(&server, "ED25519-CERT").await?;
        d.stop(Duration::from_secs(1)).await;
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_key_fails_with_class_auth() {
    with_timeout(LIMIT, async {
        let server = SshServer::start().await?;
        let authorized = UserKey::generate(KeyKind::Ed25519, None).await?;
        server.authorize(&authorized)?;
        let wrong = UserKey::generate(KeyKind::Ed25519, None).await?;
        let status = first_failure(&host_table("h", &server, &wrong)).await?;
        let error = status.last_error.context("no last_error")?;
        assert_eq!(error.class, FailureClass::Auth, "{error:?}");
        ensure!(
            matches!(status.state, HostState::Failed { .. }),
            "an auth failure needs a human: {:?}",
            status.state
        );
        ensure!(
            error.message.contains(&wrong.path().display().to_string()),
            "the message names the key offered: {error:?}"
        );
        ensure!(!server.log_contains("Accepted publickey"));
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_file_readable_by_others_is_refused() {
    with_timeout(LIMIT, async {
        let server = SshServer::start().await?;
        let key = UserKey::generate(KeyKind::Ed25519, None).await?;
        // Authorized: only the file mode stands in the way.
        server.authorize(&key)?;
        std::fs::set_permissions(key.path(), std::fs::Permissions::from_mode(0o644))?;
        let status = first_failure(&host_table("h", &server, &key)).await?;
        let error = status.last_error.context("no last_error")?;
        assert_eq!(error.class, FailureClass::Config, "{error:?}");
        ensure!(
            error.message.contains("0644") && error.message.contains("too open"),
            "the message explains the permissions: {error:?}"
        );
        ensure!(
            error.message.contains(&key.path().display().to_string()),
            "the message names the file: {error:?}"
        );
        ensure!(
            !server.log_contains("Accepted publickey"),
            "the key must not have been used"
        );
        Ok(())
    })
    .await;
}
