//! Host key verification against the real sshd: known_hosts (plain, hashed, patterns,
//! `@revoked`, `@cert-authority`), strict and accept-new, pinned fingerprints.
//! A refused key must leave the host failed with class host-key and carry no byte.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, ensure};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::Command;

use crate::harness::{
    EchoServer, KeyKind, MIB, SshServer, TestCa, Transport, UserKey, fingerprint, push_through,
    run_checked, with_timeout, within,
};
use crate::support::{TestDaemon, forward_table, host_table_with, ingress, with_setting};
use warren::session::{FailureClass, HostState, LastError};

const LIMIT: Duration = Duration::from_secs(60);
/// Bound for one step that should be quick (a session coming up, an attempt failing).
const STEP: Duration = Duration::from_secs(15);

/// One ed25519-only sshd (so the negotiated host key type is certain), an authorized
/// user key, an echo egress and a tempdir for known_hosts files.
struct Setup {
    server: SshServer,
    key: UserKey,
    echo: EchoServer,
    dir: tempfile::TempDir,
}

impl Setup {
    async fn new() -> anyhow::Result<Self> {
        let server = ed25519_server().await?;
        let key = UserKey::generate(KeyKind::Ed25519, None).await?;
        server.authorize(&key)?;
        Ok(Setup {
            server,
            key,
            echo: EchoServer::start(Transport::Tcp).await?,
            dir: tempfile::tempdir()?,
        })
    }

    /// The server's host key line, `ssh-ed25519 BASE64`.
    fn host_key(&self) -> &str {
        host_key(&self.server)
    }

    /// `[127.0.0.1]:PORT` as known_hosts writes this server.
    fn pattern(&self) -> String {
        self.server.host_pattern("127.0.0.1")
    }

    /// Writes `text` to a file in the tempdir; returns its path.
    fn write(&self, name: &str, text: &str) -> anyhow::Result<PathBuf> {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).with_context(|| format!("write {}", path.display()))?;
        Ok(path)
    }

    /// Starts a daemon with host `h` (known_hosts file `kh`, extra settings) and a local
    /// forward `f` to the echo server; returns it with the forward's ingress address.
    async fn daemon(&self, kh: &Path, extra: &str) -> anyhow::Result<(TestDaemon, SocketAddr)> {
        let table = host_table_with("h", &self.server, &self.key, kh, extra);
        self.daemon_with(&table).await
    }

    /// Like [`Setup::daemon`] with a host table written by the test. connect_timeout is
    /// cut to 2 s, so that a client waiting on a refused host is closed soon.
    async fn daemon_with(&self, table: &str) -> anyhow::Result<(TestDaemon, SocketAddr)> {
        let (listener, addr) = ingress();
        let toml = with_setting(table, "connect_timeout", "\"2s\"")
            + &forward_table(
                "f",
                "h",
                "local",
                &addr.to_string(),
                Some(&self.echo.addr().to_string()),
            );
        Ok((TestDaemon::start(&toml, vec![listener]).await?, addr))
    }

    /// The key was accepted: the session comes up and the forward echoes checked bytes.
    async fn expect_accepted(&self, d: &TestDaemon, addr: SocketAddr) -> anyhow::Result<()> {
        d.wait_up("h", STEP).await?;
        let stream = TcpStream::connect(addr).await?;
        push_through(stream, MIB).await?.check_echoed()
    }

    /// The key was refused: the host fails with a host-key error, sshd never
    /// authenticates anybody, and a client of the forward is closed without a byte.
    async fn expect_refused(&self, d: &TestDaemon, addr: SocketAddr) -> anyhow::Result<LastError> {
        let status = d.wait_host("h", STEP, |s| s.last_error.is_some()).await?;
        let error = status.last_error.clone().context("no last_error")?;
        ensure!(
            error.class == FailureClass::HostKey,
            "expected a host-key failure, got {error:?}"
        );
        ensure!(
            matches!(
                status.state,
                HostState::Failed { .. } | HostState::Backoff { .. }
            ),
            "a refused host key must not leave the host {:?}",
            status.state
        );
        expect_no_bytes(addr, &self.echo).await?;
        ensure!(
            !self.server.log_contains("Accepted publickey"),
            "sshd authenticated a client whose host key check failed"
        );
        ensure!(
            d.host_status("h").state != HostState::Up,
            "the host came up after all"
        );
        Ok(error)
    }
}

/// A server with only an ed25519 host key.
pub(crate) async fn ed25519_server() -> anyhow::Result<SshServer> {
    SshServer::builder()
        .host_keys(&[KeyKind::Ed25519])
        .start()
        .await
}

/// `ssh-ed25519 BASE64` of a server's only host key.
pub(crate) fn host_key(server: &SshServer) -> &str {
    &server
        .host_key(KeyKind::Ed25519)
        .expect("the server has an ed25519 host key")
        .public
}

/// A client of the forward at `addr` is accepted but closed without receiving a byte
/// (connect_timeout is 2 s in these tests), and nothing reached the egress.
async fn expect_no_bytes(addr: SocketAddr, echo: &EchoServer) -> anyhow::Result<()> {
    let before = echo.connections();
    let mut stream = TcpStream::connect(addr).await?;
    // The write may already fail if warren closed the connection: that is fine too.
    let _ = stream.write_all(b"must not pass").await;
    let mut buf = [0u8; 64];
    let read = within(
        STEP,
        "warren to close the connection",
        stream.read(&mut buf),
    )
    .await?;
    match read {
        Ok(0) | Err(_) => {}
        Ok(n) => anyhow::bail!(
            "{n} bytes came back through a refused host: {:?}",
            &buf[..n]
        ),
    }
    ensure!(
        echo.connections() == before,
        "the egress got a connection through a refused host"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_host_key_is_refused_under_strict() {
    with_timeout(LIMIT, async {
        let s = Setup::new().await?;
        // Knows another host only.
        let other = UserKey::generate(KeyKind::Ed25519, None).await?;
        let kh = s.write(
            "known_hosts",
            &format!("[127.0.0.1]:1 {}\n", other.public_key()),
        )?;
        let (d, addr) = s.daemon(&kh, "").await?;
        let error = s.expect_refused(&d, addr).await?;
        ensure!(
            error.message.contains("not in any known_hosts file"),
            "{error:?}"
        );
        ensure!(
            error.message.contains(&fingerprint(s.host_key())?),
            "the message names the presented key: {error:?}"
        );
        // Strict never writes.
        assert_eq!(
            std::fs::read_to_string(&kh)?,
            format!("[127.0.0.1]:1 {}\n", other.public_key())
        );
        d.stop(Duration::from_secs(1)).await;
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_host_key_is_refused_naming_the_file_and_line() {
    with_timeout(LIMIT, async {
        let s = Setup::new().await?;
        let old = UserKey::generate(KeyKind::Ed25519, None).await?;
        let unrelated = UserKey::generate(KeyKind::Ed25519, None).await?;
        let text = format!(
            "# known hosts\nexample.org {}\n{} {}\n",
            unrelated.public_key(),
            s.pattern(),
            old.public_key()
        );
        let kh = s.write("known_hosts", &text)?;
        let (d, addr) = s.daemon(&kh, "").await?;
        let error = s.expect_refused(&d, addr).await?;
        ensure!(error.message.contains("changed"), "{error:?}");
        let place = format!("{}:3", kh.display());
        ensure!(
            error.message.contains(&place),
            "the message must name {place}: {error:?}"
        );
        assert_eq!(std::fs::read_to_string(&kh)?, text, "nothing rewritten");
        d.stop(Duration::from_secs(1)).await;
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hashed_known_hosts_entry_is_accepted() {
    with_timeout(LIMIT, async {
        let s = Setup::new().await?;
        let kh = s.write("known_hosts", &s.server.known_hosts())?;
        run_checked(
            Command::new("ssh-keygen").args(["-q", "-H", "-f"]).arg(&kh),
            "ssh-keygen -H",
        )
        .await?;
        let hashed = std::fs::read_to_string(&kh)?;
        ensure!(
            hashed.lines().count() == 1 && hashed.starts_with("|1|"),
            "expected one hashed line: {hashed}"
        );
        ensure!(!hashed.contains("127.0.0.1"));
        let (d, addr) = s.daemon(&kh, "").await?;
        s.expect_accepted(&d, addr).await?;
        d.stop(Duration::from_secs(1)).await;
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_key_is_refused_even_when_a_plain_line_lists_it() {
    with_timeout(LIMIT, async {
        let s = Setup::new().await?;
        let text = format!(
            "{} {}\n@revoked {} {}\n",
            s.pattern(),
            s.host_key(),
            s.pattern(),
            s.host_key()
        );
        let kh = s.write("known_hosts", &text)?;
        let (d, addr) = s.daemon(&kh, "").await?;
        let error = s.expect_refused(&d, addr).await?;
        ensure!(error.message.contains("revoked"), "{error:?}");
        let place = format!("{}:2", kh.display());
        ensure!(error.message.contains(&place), "names {place}: {error:?}");
        d.stop(Duration::from_secs(1)).await;
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcard_known_hosts_entries_are_accepted() {
    with_timeout(LIMIT, async {
        let s = Setup::new().await?;
        let port = s.server.port();
        for pattern in [format!("[127.0.0.*]:{port}"), "*".to_owned()] {
            let kh = s.write("known_hosts", &format!("{pattern} {}\n", s.host_key()))?;
            let (d, addr) = s.daemon(&kh, "").await?;
            s.expect_accepted(&d, addr)
                .await
                .with_context(|| format!("pattern {pattern}"))?;
            d.stop(Duration::from_secs(1)).await;
        }
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negated_pattern_excludes_the_host() {
    with_timeout(LIMIT, async {
        let s = Setup::new().await?;
        let text = format!("*,!{} {}\n", s.pattern(), s.host_key());
        let kh = s.write("known_hosts", &text)?;
        let (d, addr) = s.daemon(&kh, "").await?;
        let error = s.expect_refused(&d, addr).await?;
        ensure!(
            error.message.contains("not in any known_hosts file"),
            "{error:?}"
        );
        d.stop(Duration::from_secs(1)).await;
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_new_records_the_key_then_refuses_a_changed_one() {
    with_timeout(LIMIT, async {
        let s = Setup::new().await?;
        // The first file does not exist yet (nor its directory); the second is empty.
        let first = s.dir.path().join("learned").join("known_hosts");
        let second = s.write("second_known_hosts", "")?;
        let files = format!("[\"{}\", \"{}\"]", first.display(), second.display());
        let table = host_table_with("h", &s.server, &s.key, &first, "");
        let table = with_setting(&table, "known_hosts", &files);
        let table = with_setting(&table, "host_key_policy", "\"accept-new\"");
        let (d, addr) = s.daemon_with(&table).await?;
        s.expect_accepted(&d, addr).await?;
        d.stop(Duration::from_secs(1)).await;

        let learned = std::fs::read_to_string(&first).context("accept-new wrote nothing")?;
        let lines: Vec<&str> = learned.lines().collect();
        ensure!(lines.len() == 1, "expected one learned line: {learned:?}");
        let fields: Vec<&str> = lines[0].split_whitespace().collect();
        let pattern = s.pattern();
        let expected: Vec<&str> = std::iter::once(pattern.as_str())
            .chain(s.host_key().split_whitespace())
            .collect();
        assert_eq!(fields, expected, "learned line {:?}", lines[0]);
        assert_eq!(std::fs::read_to_string(&second)?, "", "only the first file");
        // OpenSSH finds the learned key under the name it would look up.
        let found = run_checked(
            Command::new("ssh-keygen")
                .arg("-F")
                .arg(s.pattern())
                .arg("-f")
                .arg(&first),
            "ssh-keygen -F",
        )
        .await?;
        ensure!(found.contains(s.host_key()), "ssh-keygen -F: {found}");

        // A second server (other host keys) on another port. Make the learned line claim
        // that port with the first server's key: to warren this host's key has changed.
        let server2 = ed25519_server().await?;
        server2.authorize(&s.key)?;
        let pattern2 = server2.host_pattern("127.0.0.1");
        let changed = learned.replacen(&s.pattern(), &pattern2, 1);
        ensure!(changed != learned);
        std::fs::write(&first, &changed)?;
        let table = host_table_with("h", &server2, &s.key, &first, "");
        let table = with_setting(&table, "known_hosts", &files);
        let table = with_setting(&table, "host_key_policy", "\"accept-new\"");
        let (d2, addr2) = s.daemon_with(&table).await?;
        let status = d2
            .wait_host("h", STEP, |st| st.last_error.is_some())
            .await?;
        let error = status.last_error.context("no last_error")?;
        assert_eq!(error.class, FailureClass::HostKey, "{error:?}");
        ensure!(error.message.contains("changed"), "{error:?}");
        let place = format!("{}:1", first.display());
        ensure!(error.message.contains(&place), "names {place}: {error:?}");
        expect_no_bytes(addr2, &s.echo).await?;
        ensure!(
            !server2.log_contains("Accepted publickey"),
            "sshd authenticated a client whose host key check failed"
        );
        assert_eq!(
            std::fs::read_to_string(&first)?,
            changed,
            "a changed key is not learned"
        );
        d2.stop(Duration::from_secs(1)).await;
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_fingerprint_is_accepted_without_known_hosts() {
    with_timeout(LIMIT, async {
        let s = Setup::new().await?;
        let kh = s.dir.path().join("no_known_hosts");
        let pin = fingerprint(s.host_key())?;
        let extra = format!("host_key_fingerprints = [\"{pin}\"]");
        let (d, addr) = s.daemon(&kh, &extra).await?;
        s.expect_accepted(&d, addr).await?;
        ensure!(!kh.exists(), "a pinned key is not written anywhere");
        d.stop(Duration::from_secs(1)).await;
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_pinned_fingerprint_is_refused() {
    with_timeout(LIMIT, async {
        let s = Setup::new().await?;
        // known_hosts does trust the key: a pin overrides it.
        let kh = s.write("known_hosts", &s.server.known_hosts())?;
        let other = UserKey::generate(KeyKind::Ed25519, None).await?;
        let pin = other.fingerprint()?;
        let extra = format!("host_key_fingerprints = [\"{pin}\"]");
        let (d, addr) = s.daemon(&kh, &extra).await?;
        let error = s.expect_refused(&d, addr).await?;
        ensure!(error.message.contains("pinned"), "{error:?}");
        ensure!(
            error.message.contains(&fingerprint(s.host_key())?),
            "names the presented key: {error:?}"
        );
        d.stop(Duration::from_secs(1)).await;
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_certificate_is_accepted_via_cert_authority() {
    with_timeout(LIMIT, async {
        let s = Setup::new().await?;
        let ca = TestCa::generate().await?;
        s.server.use_host_certificates(&ca).await?;
        // Only the CA is known, not the server's plain key.
        let kh = s.write(
            "known_hosts",
            &format!("{}\n", ca.known_hosts_line(&s.pattern())),
        )?;
        let (d, addr) = s.daemon(&kh, "").await?;
        s.expect_accepted(&d, addr).await?;
        d.stop(Duration::from_secs(1)).await;
        Ok(())
    })
    .await;
}
