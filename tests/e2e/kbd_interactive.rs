//! keyboard-interactive authentication answered from `password_file`, against sshd asking
//! through PAM (`KbdInteractiveAuthentication yes`, `PasswordAuthentication no`, `UsePAM yes`)
//! for the password of a throwaway local user (these need root, to create the user; without
//! it they fail and say why, they never skip silently), and against a paramiko server
//! (`kbd_interactive_server.py`) for what PAM does not ask: an empty final info request,
//! several prompts at once, an echoed prompt.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, ensure};
use serde_json::Value;
use tokio::io::AsyncBufReadExt as _;
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use warren::session::{FailureClass, HostState};

use crate::harness::{
    EchoServer, KeyKind, LocalUser, MIB, SshServer, Transport, UserKey, WarrenProcess,
    current_user, hex, push_through, random_digest, tail, wait_for, wait_until, with_timeout,
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
    host_table_at(
        server.port(),
        user,
        password_file,
        &server.known_hosts_path(),
    )
}

/// Host `h` at `127.0.0.1:port` as `user`, with no key and no agent, only `password_file`.
fn host_table_at(port: u16, user: &str, password_file: &Path, known_hosts: &Path) -> String {
    format!(
        "[hosts.h]\nhostname = \"127.0.0.1\"\nport = {port}\nuser = \"{user}\"\n\
         identity_files = []\nagent = false\npassword_file = \"{pw}\"\n\
         known_hosts = [\"{kh}\"]\nconnect_timeout = \"10s\"\nreconnect_min = \"100ms\"\n\
         reconnect_max = \"2s\"\n",
        pw = password_file.display(),
        kh = known_hosts.display(),
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

/// The system interpreter, which Debian's `python3-paramiko` installs for.
const PYTHON: &str = "/usr/bin/python3";
const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/e2e/kbd_interactive_server.py"
);

/// `kbd_interactive_server.py MODE PASSWORD` on 127.0.0.1, and warren (in-process) logging in
/// to it with `password_file`. The server is killed on drop (it also exits when its stdin,
/// held here, closes).
struct Scripted {
    _child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    daemon: TestDaemon,
    password: String,
    _dir: tempfile::TempDir,
}

impl Scripted {
    async fn start(mode: &str) -> anyhow::Result<Self> {
        let password = fresh_password();
        let host_key = UserKey::generate(KeyKind::Ed25519, None).await?;
        let mut child = Command::new(PYTHON)
            .arg(SCRIPT)
            .arg(host_key.path())
            .args([mode, &password])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("start {PYTHON} {SCRIPT}"))?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        let mut reader = tokio::io::BufReader::new(child.stdout.take().context("stdout")?).lines();
        let sink = lines.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = reader.next_line().await {
                sink.lock().unwrap().push(line);
            }
        });
        let first = || lines.lock().unwrap().first().cloned();
        wait_until(STEP, "kbd_interactive_server.py to print its port", || {
            first().is_some()
        })
        .await
        .context("(it needs paramiko: `apt-get install -y python3-paramiko`)")?;
        let port: u16 = first().unwrap_or_default().trim().parse()?;
        let dir = tempfile::tempdir()?;
        let mut fields = host_key.public_key().split_whitespace();
        let (kind, blob) = (fields.next().unwrap_or(""), fields.next().unwrap_or(""));
        let known_hosts = dir.path().join("known_hosts");
        std::fs::write(&known_hosts, format!("[127.0.0.1]:{port} {kind} {blob}\n"))?;
        let pw = password_file(dir.path(), &password)?;
        let (listener, addr) = ingress();
        let toml = host_table_at(port, &current_user()?, &pw, &known_hosts)
            + &forward_table("f", "h", "local", &addr.to_string(), Some("127.0.0.1:9"));
        let daemon = TestDaemon::start(&toml, vec![listener]).await?;
        Ok(Self {
            _child: child,
            lines,
            daemon,
            password,
            _dir: dir,
        })
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// The host's first failure: class auth, waiting for a human; its message.
    async fn auth_failure(self) -> anyhow::Result<String> {
        let status = self
            .daemon
            .wait_host("h", STEP, |s| s.last_error.is_some())
            .await?;
        let error = status.last_error.context("no last_error")?;
        ensure!(error.class == FailureClass::Auth, "{error:?}");
        ensure!(
            matches!(status.state, HostState::Failed { .. }),
            "{:?}",
            status.state
        );
        ensure!(
            !error.message.contains(&self.password),
            "the password is in the message: {error:?}"
        );
        ensure!(
            !self.lines().iter().any(|l| l.starts_with("answered")),
            "nothing may have been answered: {:?}",
            self.lines()
        );
        self.daemon.stop(Duration::from_secs(1)).await;
        Ok(error.message)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_info_request_after_the_password_gets_no_responses() {
    with_timeout(LIMIT, async {
        let s = Scripted::start("pam-then-empty").await?;
        s.daemon.wait_up("h", STEP).await?;
        let lines = s.lines();
        ensure!(
            lines[1..] == ["answered 1", "answered 0", "accepted"],
            "server saw {lines:?}"
        );
        s.daemon.stop(Duration::from_secs(1)).await;
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_prompts_are_an_auth_failure_naming_them() {
    with_timeout(LIMIT, async {
        let message = Scripted::start("two-prompts").await?.auth_failure().await?;
        ensure!(
            message.contains("\"Password: \"") && message.contains("\"Verification code: \""),
            "the message names the prompts: {message:?}"
        );
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_echoed_prompt_is_an_auth_failure_naming_it() {
    with_timeout(LIMIT, async {
        let message = Scripted::start("echoed").await?.auth_failure().await?;
        ensure!(
            message.contains("\"Username: \"") && message.contains("echo on"),
            "the message names the prompt: {message:?}"
        );
        Ok(())
    })
    .await;
}
