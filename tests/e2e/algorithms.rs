//! The algorithm settings (`kex_algorithms`, `host_key_algorithms`, `ciphers`, `macs`) against
//! the real OpenSSH sshd: what the server's own log says was negotiated, what `warren status`
//! says, the defaults against a server without ML-KEM, a server that only signs with
//! `ssh-rsa`, typos in the TOML, on the command line and in an ssh_config, and the same
//! settings from `warren connect -o` and from an ssh_config.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, ensure};
use serde_json::Value;
use tokio::net::UnixStream;

use crate::harness::{
    EchoServer, KeyKind, MIB, SshServer, SshServerBuilder, Transport, UserKey, WarrenProcess,
    current_user, fingerprint, push_through, run_warren, tail, wait_for, with_timeout,
};
use crate::support::{Files, forward_table, host_table, status_json, with_setting};

const LIMIT: Duration = Duration::from_secs(120);
/// Bound for one step that should be quick (the machine may be loaded by builds).
const STEP: Duration = Duration::from_secs(30);

/// What one session's key exchange settled on, from sshd's `LogLevel DEBUG1` lines
/// (`kex: algorithm: ...`, `kex: host key algorithm: ...`, `kex: client->server cipher: C
/// MAC: M compression: ...` and the same for server->client).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct SshdKex {
    kex: String,
    host_key: String,
    /// Cipher and MAC, client to server.
    c2s: (String, String),
    /// Cipher and MAC, server to client.
    s2c: (String, String),
}

/// Every key exchange in an sshd log, in order.
fn sshd_kexes(log: &str) -> Vec<SshdKex> {
    let mut out: Vec<SshdKex> = Vec::new();
    let word = |rest: &str| rest.split_whitespace().next().unwrap_or("").to_string();
    for line in log.lines() {
        if let Some((_, rest)) = line.split_once("kex: algorithm: ") {
            out.push(SshdKex {
                kex: word(rest),
                ..SshdKex::default()
            });
            continue;
        }
        let Some(k) = out.last_mut() else { continue };
        if let Some((_, rest)) = line.split_once("kex: host key algorithm: ") {
            k.host_key = word(rest);
        } else if let Some((_, rest)) = line.split_once("kex: client->server cipher: ") {
            k.c2s = cipher_and_mac(rest);
        } else if let Some((_, rest)) = line.split_once("kex: server->client cipher: ") {
            k.s2c = cipher_and_mac(rest);
        }
    }
    out
}

/// `C MAC: M compression: ...` as (C, M).
fn cipher_and_mac(rest: &str) -> (String, String) {
    let mut words = rest.split_whitespace();
    let cipher = words.next().unwrap_or("").to_string();
    let mac = match (words.next(), words.next()) {
        (Some("MAC:"), Some(m)) => m.to_string(),
        _ => String::new(),
    };
    (cipher, mac)
}

/// The one key exchange `server` has logged so far (after `from` bytes of its log); fails
/// unless there is exactly one.
fn one_sshd_kex(server: &SshServer, from: usize) -> anyhow::Result<SshdKex> {
    let log = server.log();
    let kexes = sshd_kexes(log.get(from..).unwrap_or(""));
    ensure!(
        kexes.len() == 1,
        "expected one key exchange in the sshd log, found {kexes:?}; log tail:\n{}",
        tail(&log, 40)
    );
    Ok(kexes[0].clone())
}

/// What `sshd` negotiated, as expected: one cipher and MAC both ways.
fn expect_sshd(
    got: &SshdKex,
    kex: &str,
    host_key: &str,
    cipher: &str,
    mac: &str,
) -> anyhow::Result<()> {
    let want = SshdKex {
        kex: kex.into(),
        host_key: host_key.into(),
        c2s: (cipher.into(), mac.into()),
        s2c: (cipher.into(), mac.into()),
    };
    ensure!(*got == want, "sshd log: expected {want:?}, got {got:?}");
    Ok(())
}

/// A harness sshd from `builder` that accepts a new Ed25519 user key.
async fn server_with_key(builder: SshServerBuilder) -> anyhow::Result<(SshServer, UserKey)> {
    let server = builder.start().await?;
    let key = UserKey::generate(KeyKind::Ed25519, None).await?;
    server.authorize(&key)?;
    Ok((server, key))
}

/// A server whose only host key is RSA and that signs with `ssh-rsa` (SHA-1) only.
async fn ssh_rsa_only_server() -> anyhow::Result<(SshServer, UserKey)> {
    server_with_key(
        SshServer::builder()
            .host_keys(&[KeyKind::Rsa])
            .config_line("HostKeyAlgorithms ssh-rsa"),
    )
    .await
}

/// `ALGO SHA256:...` as status shows the server's host key.
fn shown_host_key(algorithm: &str, server: &SshServer, kind: KeyKind) -> anyhow::Result<String> {
    let key = server
        .host_key(kind)
        .context("the server has no such host key")?;
    Ok(format!("{algorithm} {}", fingerprint(&key.public)?))
}

/// A `warren run` process and its tempdir.
struct Run {
    files: Files,
    warren: WarrenProcess,
}

impl Run {
    /// Writes the configuration (`[daemon]` lines `daemon`, then `rest`) and starts it.
    fn spawn(files: Files, daemon: &str, rest: &str) -> anyhow::Result<Self> {
        let config = files.config(daemon, rest)?;
        let warren = files.spawn(&config)?;
        Ok(Self { files, warren })
    }

    fn sock(&self) -> String {
        self.files.control_socket().display().to_string()
    }

    /// Waits until `warren status --json` shows host `name` satisfying `pred`; returns the
    /// host's document. `check` runs on every document seen on the way and stops the wait
    /// with its error.
    async fn wait_host(
        &self,
        name: &str,
        what: &str,
        check: impl Fn(&Value) -> anyhow::Result<()>,
        pred: impl Fn(&Value) -> bool,
    ) -> anyhow::Result<Value> {
        let sock = self.sock();
        let found = wait_for(STEP, what, || async {
            let doc = status_json(&sock).await?;
            let host = doc["hosts"]
                .as_array()?
                .iter()
                .find(|h| h["name"] == name)?
                .clone();
            match check(&host) {
                Err(e) => Some(Err(e)),
                Ok(()) => pred(&host).then_some(Ok(host)),
            }
        })
        .await
        .and_then(|r| r);
        found.with_context(|| {
            format!(
                "warren stderr tail:\n{}",
                tail(&self.warren.stderr_text(), 40)
            )
        })
    }

    /// Waits until host `name` is up; returns its status document.
    async fn wait_up(&self, name: &str) -> anyhow::Result<Value> {
        self.wait_host(
            name,
            &format!("host {name} up"),
            |_| Ok(()),
            |h| h["state"] == "up",
        )
        .await
    }

    /// Lines of warren's stderr containing `needle`.
    fn stderr_count(&self, needle: &str) -> usize {
        count(&self.warren.stderr_lines(), needle)
    }
}

fn count(lines: &[String], needle: &str) -> usize {
    lines.iter().filter(|l| l.contains(needle)).count()
}

/// Pushes `len` random bytes through the Unix ingress at `path` to the echo server and back,
/// checking the digest.
async fn carry(path: &Path, len: u64) -> anyhow::Result<()> {
    let stream = UnixStream::connect(path)
        .await
        .with_context(|| format!("connect to {}", path.display()))?;
    push_through(stream, len).await?.check_echoed()
}

/// A host table (the harness defaults) with `settings` (`key = value` TOML lines) added, and
/// a local forward `NAME-f` from a Unix socket in `files` to `echo`; returns the text and
/// the socket.
fn host_with_forward(
    name: &str,
    server: &SshServer,
    key: &UserKey,
    echo: &EchoServer,
    files: &Files,
    settings: &[(&str, &str)],
) -> (String, std::path::PathBuf) {
    let mut table = host_table(name, server, key);
    for (k, v) in settings {
        table = with_setting(&table, k, v);
    }
    let ingress = files.path(&format!("{name}.sock"));
    let forward = forward_table(
        &format!("{name}-f"),
        name,
        "local",
        &ingress.display().to_string(),
        Some(&echo.addr().to_string()),
    );
    (table + &forward, ingress)
}

/// The status fields of the current session must be there (strings), and as expected.
fn expect_status(
    host: &Value,
    kex: &str,
    cipher: &str,
    mac: &str,
    host_key: &str,
) -> anyhow::Result<()> {
    for (field, want) in [
        ("kex", kex),
        ("cipher", cipher),
        ("mac", mac),
        ("host_key", host_key),
    ] {
        ensure!(
            host[field] == want,
            "status {field}: expected {want:?}, got {}; host: {host}",
            host[field]
        );
    }
    let version = host["server_version"].as_str().unwrap_or("");
    ensure!(
        version.starts_with("SSH-2.0-OpenSSH_"),
        "status server_version: {host}"
    );
    ensure!(host["last_error"].is_null(), "last_error: {host}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_rsa_only_server_is_a_config_error_by_default_and_reached_with_plus_ssh_rsa() {
    with_timeout(LIMIT, async {
        let (server, key) = ssh_rsa_only_server().await?;
        let echo = EchoServer::start(Transport::Tcp).await?;

        // Defaults: no SHA-1 signatures, so nothing in common. The error is a config one,
        // names the server's ssh-rsa and the setting, and no session ever comes up.
        // A connection waits up to connect_timeout for a session: short, as none comes.
        let files = Files::new()?;
        let (rest, ingress) = host_with_forward(
            "h",
            &server,
            &key,
            &echo,
            &files,
            &[("connect_timeout", "\"3s\"")],
        );
        let run = Run::spawn(files, "", &rest)?;
        let never_up = |h: &Value| {
            ensure!(h["state"] != "up", "a session came up: {h}");
            for field in ["kex", "cipher", "mac", "host_key", "server_version"] {
                ensure!(h[field].is_null(), "{field} without a session: {h}");
            }
            Ok(())
        };
        let host = run
            .wait_host("h", "a config-class error", never_up, |h| {
                h["last_error"]["class"] == "config"
            })
            .await?;
        let message = host["last_error"]["message"].as_str().unwrap_or("");
        ensure!(
            message.contains("ssh-rsa") && message.contains("host_key_algorithms"),
            "the error must name ssh-rsa and host_key_algorithms: {message:?}"
        );
        // It is retried (at reconnect_max, 2 s here) and refused again.
        server
            .wait_sessions(STEP, "a second attempt", |c| c.accepted >= 2)
            .await?;
        run.wait_host("h", "the retry to fail the same way", never_up, |h| {
            h["last_error"]["class"] == "config" && h["reconnects"] == 0
        })
        .await?;
        ensure!(
            run.stderr_count("session up") == 0,
            "warren logged a session: {}",
            run.warren.stderr_text()
        );
        ensure!(
            !server.log_contains("Accepted publickey"),
            "sshd authenticated a session: {}",
            tail(&server.log(), 40)
        );
        ensure!(
            carry(&ingress, 1024).await.is_err(),
            "a connection was carried without a session"
        );
        drop(run);
        // Only the next warren's sessions are in the log from here on.
        server
            .wait_sessions(STEP, "the refused sessions to end", |c| c.alive == 0)
            .await?;

        // `+ssh-rsa` (the RSA host key is in the known_hosts file): it connects and carries.
        let from = server.log().len();
        let files = Files::new()?;
        let (rest, ingress) = host_with_forward(
            "h",
            &server,
            &key,
            &echo,
            &files,
            &[("host_key_algorithms", "\"+ssh-rsa\"")],
        );
        let run = Run::spawn(files, "", &rest)?;
        let host = run.wait_up("h").await?;
        carry(&ingress, 4 * MIB).await?;
        let rsa = shown_host_key("ssh-rsa", &server, KeyKind::Rsa)?;
        ensure!(
            host["host_key"] == rsa.as_str(),
            "status host_key: expected {rsa:?}: {host}"
        );
        let negotiated = one_sshd_kex(&server, from)?;
        ensure!(
            negotiated.host_key == "ssh-rsa",
            "sshd log: host key algorithm {negotiated:?}"
        );
        Ok(())
    })
    .await;
}

/// A host's algorithm settings and what they must negotiate with OpenSSH 9.2's sshd.
struct Negotiation {
    name: &'static str,
    /// `key = value` TOML lines.
    settings: &'static [(&'static str, &'static str)],
    kex: &'static str,
    cipher: &'static str,
    /// The MAC as sshd logs it (`<implicit>` with AEAD).
    sshd_mac: &'static str,
    /// The MAC as status shows it (`implicit` with AEAD).
    status_mac: &'static str,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_cipher_kex_and_mac_are_what_sshd_negotiates() {
    with_timeout(LIMIT, async {
        // One server per host, so that each sshd log holds that host's sessions only.
        let cases = [
            Negotiation {
                name: "chacha",
                settings: &[("ciphers", "[\"chacha20-poly1305@openssh.com\"]")],
                kex: "curve25519-sha256",
                cipher: "chacha20-poly1305@openssh.com",
                sshd_mac: "<implicit>",
                status_mac: "implicit",
            },
            Negotiation {
                name: "kex",
                settings: &[("kex_algorithms", "\"curve25519-sha256\"")],
                kex: "curve25519-sha256",
                cipher: "aes128-gcm@openssh.com",
                sshd_mac: "<implicit>",
                status_mac: "implicit",
            },
            // Not what the defaults give: proves the list reaches the key exchange.
            Negotiation {
                name: "kexfirst",
                settings: &[("kex_algorithms", "\"^ecdh-sha2-nistp384\"")],
                kex: "ecdh-sha2-nistp384",
                cipher: "aes128-gcm@openssh.com",
                sshd_mac: "<implicit>",
                status_mac: "implicit",
            },
            Negotiation {
                name: "mac",
                settings: &[
                    ("ciphers", "\"aes256-ctr\""),
                    ("macs", "\"hmac-sha2-512-etm@openssh.com\""),
                ],
                kex: "curve25519-sha256",
                cipher: "aes256-ctr",
                sshd_mac: "hmac-sha2-512-etm@openssh.com",
                status_mac: "hmac-sha2-512-etm@openssh.com",
            },
            Negotiation {
                name: "minus",
                settings: &[("ciphers", "\"-aes128-*\"")],
                kex: "curve25519-sha256",
                cipher: "aes256-gcm@openssh.com",
                sshd_mac: "<implicit>",
                status_mac: "implicit",
            },
        ];
        let echo = EchoServer::start(Transport::Tcp).await?;
        let files = Files::new()?;
        let mut rest = String::new();
        let mut servers = Vec::new();
        for case in &cases {
            let (server, key) = server_with_key(SshServer::builder()).await?;
            let (table, ingress) =
                host_with_forward(case.name, &server, &key, &echo, &files, case.settings);
            rest += &table;
            servers.push((server, key, ingress));
        }
        let run = Run::spawn(files, "", &rest)?;
        for (case, (server, _, ingress)) in cases.iter().zip(&servers) {
            let host = run.wait_up(case.name).await?;
            carry(ingress, MIB).await.context(case.name)?;
            let ed25519 = shown_host_key("ssh-ed25519", server, KeyKind::Ed25519)?;
            expect_status(&host, case.kex, case.cipher, case.status_mac, &ed25519)
                .context(case.name)?;
            expect_sshd(
                &one_sshd_kex(server, 0)?,
                case.kex,
                "ssh-ed25519",
                case.cipher,
                case.sshd_mac,
            )
            .context(case.name)?;
        }
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn defaults_against_openssh_without_ml_kem_say_so_once_across_a_reconnect() {
    with_timeout(LIMIT, async {
        let (server, key) = server_with_key(SshServer::builder()).await?;
        let echo = EchoServer::start(Transport::Tcp).await?;
        let files = Files::new()?;
        let (rest, ingress) = host_with_forward("h", &server, &key, &echo, &files, &[]);
        let run = Run::spawn(files, "", &rest)?;
        let host = run.wait_up("h").await?;
        carry(&ingress, MIB).await?;

        // OpenSSH 9.2 has no ML-KEM: curve25519-sha256 is the best in common (a newer sshd
        // would give mlkem768x25519-sha256, and no line about it).
        let kex = host["kex"].as_str().unwrap_or("").to_string();
        ensure!(
            kex == "curve25519-sha256" || kex == "mlkem768x25519-sha256",
            "status kex: {host}"
        );
        let post_quantum = kex.starts_with("mlkem");
        let ed25519 = shown_host_key("ssh-ed25519", &server, KeyKind::Ed25519)?;
        expect_status(&host, &kex, "aes128-gcm@openssh.com", "implicit", &ed25519)?;
        expect_sshd(
            &one_sshd_kex(&server, 0)?,
            &kex,
            "ssh-ed25519",
            "aes128-gcm@openssh.com",
            "<implicit>",
        )?;
        let note = "not post-quantum";
        let expected = usize::from(!post_quantum);
        ensure!(
            run.stderr_count(note) == expected,
            "expected {expected} {note:?} line(s): {}",
            run.warren.stderr_text()
        );

        // A lost session and a new one: the line is not repeated; status shows the new one.
        let from = server.log().len();
        let lines = run.warren.stderr_len();
        server.kill_sessions().await?;
        let host = run
            .wait_host(
                "h",
                "the second session up",
                |_| Ok(()),
                |h| h["state"] == "up" && h["reconnects"].as_u64() >= Some(1),
            )
            .await?;
        run.warren
            .wait_for_stderr_after(lines, STEP, |l| l.contains("session up"))
            .await?;
        carry(&ingress, MIB).await?;
        expect_status(&host, &kex, "aes128-gcm@openssh.com", "implicit", &ed25519)?;
        expect_sshd(
            &one_sshd_kex(&server, from)?,
            &kex,
            "ssh-ed25519",
            "aes128-gcm@openssh.com",
            "<implicit>",
        )?;
        ensure!(
            run.stderr_count("session up") == 2,
            "expected two sessions: {}",
            run.warren.stderr_text()
        );
        ensure!(
            run.stderr_count(note) == expected,
            "expected {expected} {note:?} line(s) across the reconnect: {}",
            run.warren.stderr_text()
        );
        Ok(())
    })
    .await;
}

/// `LINE:COL` (1-based) of the value of the first `KEY = value` line of `text`.
fn value_position(text: &str, key: &str) -> anyhow::Result<String> {
    let prefix = format!("{key} = ");
    let line = text
        .lines()
        .position(|l| l.starts_with(&prefix))
        .with_context(|| format!("no {prefix:?} line in:\n{text}"))?;
    Ok(format!("{}:{}", line + 1, prefix.len() + 1))
}

/// `unknown or unsupported WHAT "NAME"; supported: A, B, ...` must end `line`, with every
/// name of `must` in the supported list and NAME not in it.
fn expect_supported_list(line: &str, must: &[&str]) -> anyhow::Result<()> {
    let (_, list) = line
        .split_once("; supported: ")
        .with_context(|| format!("no supported list in {line:?}"))?;
    let names: Vec<&str> = list.split(", ").collect();
    for n in must {
        ensure!(
            names.contains(n),
            "{n} missing from the supported list: {line:?}"
        );
    }
    Ok(())
}

/// A typo in one algorithm setting.
struct Typo {
    /// The TOML key.
    key: &'static str,
    /// Its value as TOML.
    value: &'static str,
    /// The unknown name in it.
    name: &'static str,
    /// What kind of algorithm, as the message says.
    what: &'static str,
    /// The same typo as a `warren connect -o` option.
    option: &'static str,
    /// Names the message must list as supported.
    supported: &'static [&'static str],
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typos_are_refused_at_their_position_by_check_connect_and_ssh_config() {
    with_timeout(LIMIT, async {
        let cases = [
            Typo {
                key: "ciphers",
                value: "[\"aes128-ctr\", \"aes128-gmc@openssh.com\"]",
                name: "aes128-gmc@openssh.com",
                what: "cipher",
                option: "Ciphers=aes128-gmc@openssh.com",
                supported: &[
                    "aes128-gcm@openssh.com",
                    "aes256-gcm@openssh.com",
                    "chacha20-poly1305@openssh.com",
                    "aes128-ctr",
                    "aes192-ctr",
                    "aes256-ctr",
                ],
            },
            Typo {
                key: "kex_algorithms",
                value: "\"^curve25519-sha265\"",
                name: "curve25519-sha265",
                what: "key exchange method",
                option: "KexAlgorithms=curve25519-sha265",
                supported: &["mlkem768x25519-sha256", "curve25519-sha256"],
            },
            Typo {
                key: "host_key_algorithms",
                value: "\"+ssh-rsa,ssh-dsa\"",
                name: "ssh-dsa",
                what: "host key algorithm",
                option: "HostKeyAlgorithms=+ssh-dsa",
                supported: &["ssh-ed25519", "rsa-sha2-512", "ssh-rsa"],
            },
            Typo {
                key: "macs",
                value: "\"hmac-sha2-265\"",
                name: "hmac-sha2-265",
                what: "MAC",
                option: "MACs=hmac-sha2-265",
                supported: &["hmac-sha2-256-etm@openssh.com", "hmac-sha2-256"],
            },
        ];

        // warren check: every typo at its value, exit 78.
        let files = Files::new()?;
        let mut table = "[hosts.h]\nhostname = \"127.0.0.1\"\n".to_string();
        for case in &cases {
            table += &format!("{} = {}\n", case.key, case.value);
        }
        let config = files.config("", &table)?;
        let text = std::fs::read_to_string(&config)?;
        let path = config.display().to_string();
        let out = run_warren(&["check", "-c", &path], &[("HOME", &files.home())], STEP).await?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        ensure!(
            out.status.code() == Some(78),
            "exit {:?}: {stderr}",
            out.status
        );
        ensure!(out.stdout.is_empty(), "stdout: {:?}", out.stdout);
        for Typo {
            key,
            name,
            what,
            supported,
            ..
        } in &cases
        {
            let want = format!(
                "{path}:{}: `{key}`: unknown or unsupported {what} \"{name}\"; supported: ",
                value_position(&text, key)?
            );
            let line = stderr
                .lines()
                .find(|l| l.starts_with(&want))
                .with_context(|| format!("no line starting {want:?} in:\n{stderr}"))?;
            expect_supported_list(line, supported)?;
        }

        // warren connect -o: exit 64 naming the name; nothing is bound.
        for Typo {
            key,
            name,
            what,
            option,
            ..
        } in &cases
        {
            let socks = files.path("socks.sock");
            let socks_path = socks.display().to_string();
            let out = run_warren(
                &["connect", "-D", &socks_path, "-o", option, "127.0.0.1"],
                &[("HOME", &files.home())],
                STEP,
            )
            .await?;
            let stderr = String::from_utf8_lossy(&out.stderr);
            ensure!(
                out.status.code() == Some(64),
                "-o {option}: exit {:?}: {stderr}",
                out.status
            );
            let want = format!("`{key}`: unknown or unsupported {what} \"{name}\"");
            ensure!(
                stderr.contains(&want),
                "-o {option}: no {want:?} in:\n{stderr}"
            );
            ensure!(!socks.exists(), "-o {option}: the -D socket was bound");
        }

        // An ssh_config `Ciphers` typo: reported at the `ssh_config` key, unless the TOML
        // sets `ciphers` for the host (then the ssh_config's value is not used at all).
        let files = Files::new()?;
        let ssh_config = files.path("ssh_config");
        std::fs::write(
            &ssh_config,
            "Host h g\n  Ciphers aes128-ctr,aes128-gmc@openssh.com\n",
        )?;
        std::fs::set_permissions(
            &ssh_config,
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )?;
        let daemon = format!("ssh_config = \"{}\"", ssh_config.display());
        let config = files.config(&daemon, "[hosts.h]\nhostname = \"127.0.0.1\"\n")?;
        let text = std::fs::read_to_string(&config)?;
        let path = config.display().to_string();
        let out = run_warren(&["check", "-c", &path], &[("HOME", &files.home())], STEP).await?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        ensure!(
            out.status.code() == Some(78),
            "exit {:?}: {stderr}",
            out.status
        );
        let want = format!(
            "{path}:{}: `ciphers`: unknown or unsupported cipher \"aes128-gmc@openssh.com\"; \
             supported: ",
            value_position(&text, "ssh_config")?
        );
        ensure!(
            stderr.lines().any(|l| l.starts_with(&want)),
            "no line starting {want:?} in:\n{stderr}"
        );
        let config = files.config(
            &daemon,
            "[hosts.g]\nhostname = \"127.0.0.1\"\nciphers = \"aes256-gcm@openssh.com\"\n",
        )?;
        let out = run_warren(
            &["check", "-c", &config.display().to_string()],
            &[("HOME", &files.home())],
            STEP,
        )
        .await?;
        ensure!(
            out.status.code() == Some(0),
            "the TOML's ciphers should win over the ssh_config's typo: exit {:?}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    })
    .await;
}

/// `warren connect -L SOCK:ECHO -i KEY -p PORT -l USER` to `server` with its known_hosts
/// file, no agent, and `extra` arguments before the destination; HOME in `files`.
fn connect(
    files: &Files,
    server: &SshServer,
    key: &UserKey,
    echo: &EchoServer,
    ingress: &Path,
    extra: &[&str],
) -> anyhow::Result<WarrenProcess> {
    let echo_port = echo.addr().tcp()?.port();
    let l_spec = format!("{}:127.0.0.1:{echo_port}", ingress.display());
    let kh = format!("UserKnownHostsFile={}", server.known_hosts_path().display());
    let port = server.port().to_string();
    let user = current_user()?;
    let key_path = key.path().display().to_string();
    let mut args = vec![
        "connect",
        "-L",
        &l_spec,
        "-i",
        &key_path,
        "-p",
        &port,
        "-l",
        &user,
        "-o",
        &kh,
        "-o",
        "agent=false",
    ];
    args.extend_from_slice(extra);
    args.push("127.0.0.1");
    WarrenProcess::spawn(&args, &[("HOME", &files.home())])
}

/// Waits until `warren` logs its session up, then carries 2 MiB through `ingress`.
async fn connected(warren: &WarrenProcess, ingress: &Path) -> anyhow::Result<()> {
    warren
        .wait_for_stderr(STEP, |l| l.contains("session up"))
        .await?;
    carry(ingress, 2 * MIB).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_o_options_reach_the_session() {
    with_timeout(LIMIT, async {
        // All four at once, none of them what the defaults would give against this server,
        // which signs with ssh-rsa only.
        let (server, key) = ssh_rsa_only_server().await?;
        let echo = EchoServer::start(Transport::Tcp).await?;
        let files = Files::new()?;
        let ingress = files.path("l.sock");
        let mut warren = connect(
            &files,
            &server,
            &key,
            &echo,
            &ingress,
            &[
                "-o",
                "KexAlgorithms=ecdh-sha2-nistp256",
                "-o",
                "HostKeyAlgorithms=+ssh-rsa",
                "-o",
                "Ciphers=aes192-ctr",
                "-o",
                "MACs=hmac-sha2-256",
            ],
        )?;
        connected(&warren, &ingress).await?;
        expect_sshd(
            &one_sshd_kex(&server, 0)?,
            "ecdh-sha2-nistp256",
            "ssh-rsa",
            "aes192-ctr",
            "hmac-sha2-256",
        )?;
        warren.sigterm()?;
        ensure!(warren.wait_exit(STEP).await? == 0, "warren connect exit");

        // `-o KexAlgorithms=curve25519-sha256` (what the defaults would also pick here, so
        // the sshd log is checked for the exact name, not the @libssh.org alias).
        let (server, key) = server_with_key(SshServer::builder()).await?;
        let ingress = files.path("l2.sock");
        let mut warren = connect(
            &files,
            &server,
            &key,
            &echo,
            &ingress,
            &["-o", "KexAlgorithms=curve25519-sha256"],
        )?;
        connected(&warren, &ingress).await?;
        ensure!(
            one_sshd_kex(&server, 0)?.kex == "curve25519-sha256",
            "sshd log: {}",
            tail(&server.log(), 40)
        );
        warren.sigterm()?;
        ensure!(warren.wait_exit(STEP).await? == 0, "warren connect exit");
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_config_ciphers_are_honoured_unless_the_toml_sets_ciphers() {
    with_timeout(LIMIT, async {
        let echo = EchoServer::start(Transport::Tcp).await?;
        let chacha = "chacha20-poly1305@openssh.com";

        // warren run: hosts a and b match `Host a b` with Ciphers chacha20; b sets its own.
        let files = Files::new()?;
        let ssh_config = files.path("ssh_config");
        std::fs::write(&ssh_config, format!("Host a b\n  Ciphers {chacha}\n"))?;
        std::fs::set_permissions(
            &ssh_config,
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )?;
        let (server_a, key_a) = server_with_key(SshServer::builder()).await?;
        let (server_b, key_b) = server_with_key(SshServer::builder()).await?;
        let (a, ingress_a) = host_with_forward("a", &server_a, &key_a, &echo, &files, &[]);
        let (b, ingress_b) = host_with_forward(
            "b",
            &server_b,
            &key_b,
            &echo,
            &files,
            &[("ciphers", "\"aes256-gcm@openssh.com\"")],
        );
        let daemon = format!("ssh_config = \"{}\"", ssh_config.display());
        let run = Run::spawn(files, &daemon, &(a + &b))?;
        let host_a = run.wait_up("a").await?;
        let host_b = run.wait_up("b").await?;
        carry(&ingress_a, MIB).await?;
        carry(&ingress_b, MIB).await?;
        ensure!(host_a["cipher"] == chacha, "a: {host_a}");
        ensure!(host_b["cipher"] == "aes256-gcm@openssh.com", "b: {host_b}");
        let sshd_a = one_sshd_kex(&server_a, 0)?;
        let sshd_b = one_sshd_kex(&server_b, 0)?;
        ensure!(
            sshd_a.c2s.0 == chacha && sshd_a.s2c.0 == chacha,
            "{sshd_a:?}"
        );
        ensure!(sshd_b.c2s.0 == "aes256-gcm@openssh.com", "{sshd_b:?}");
        drop(run);

        // warren connect reads ~/.ssh/config: its Ciphers is used, and -o Ciphers wins.
        let (server, key) = server_with_key(SshServer::builder()).await?;
        let files = Files::new()?;
        let dot_ssh = files.path("home/.ssh");
        std::fs::create_dir(&dot_ssh)?;
        let user_config = dot_ssh.join("config");
        std::fs::write(
            &user_config,
            format!("Host 127.0.0.1\n  Ciphers {chacha}\n"),
        )?;
        std::fs::set_permissions(
            &user_config,
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )?;
        for (extra, want) in [
            (&[][..], chacha),
            (&["-o", "Ciphers=aes256-ctr"][..], "aes256-ctr"),
        ] {
            let from = server.log().len();
            let ingress = files.path("l.sock");
            let mut warren = connect(&files, &server, &key, &echo, &ingress, extra)?;
            connected(&warren, &ingress).await?;
            let got = one_sshd_kex(&server, from)?;
            ensure!(
                got.c2s.0 == want && got.s2c.0 == want,
                "connect {extra:?}: expected {want}, sshd negotiated {got:?}"
            );
            warren.sigterm()?;
            ensure!(warren.wait_exit(STEP).await? == 0, "warren connect exit");
        }
        Ok(())
    })
    .await;
}
