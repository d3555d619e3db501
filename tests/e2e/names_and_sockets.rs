//! Two security promises, via the binary: host and user names never reach a shell (every
//! forbidden character, whitespace, a control character or a leading '-', wherever a name comes
//! from, is refused before a ProxyCommand could run), and Unix sockets have their final mode
//! from the start whatever the umask, replace only a stale socket and never follow a symlink.

use std::future::Future;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, ensure};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::harness::{
    WARREN, WarrenProcess, current_user, exit_code, run_warren, wait_until, warren_command,
    with_timeout, within,
};
use crate::support::{Files, Fixture, forward_table, host_table, status_json};

const LIMIT: Duration = Duration::from_secs(60);
/// Bound for one step that should be quick.
const STEP: Duration = Duration::from_secs(15);
/// Bound for a one-shot warren that refuses its input (it takes milliseconds).
const ONE_SHOT: Duration = Duration::from_secs(5);
/// Bound for a test of hundreds of one-shot runs, long enough to report each failing one.
const MANY: Duration = Duration::from_secs(120);
/// How many one-shot warren processes run at once.
const PARALLEL: usize = 8;
/// `warren connect`'s exit code for refused options (EX_USAGE).
const USAGE: i32 = 64;
/// `warren check`'s and `warren run`'s exit code for an invalid configuration (EX_CONFIG).
const CONFIG: i32 = 78;

// ---------------------------------------------------------------------------------------
// Names
// ---------------------------------------------------------------------------------------

/// The characters no host or user name may contain (OpenSSH 9.6's, CVE-2023-51385, and the
/// known_hosts pattern characters); written out here rather than taken from warren.
const FORBIDDEN: &str = "'`\"$\\;&<>|(){}*?[]!,";

/// One bad name per forbidden character, a space, a tab, two control characters (one C0,
/// and DEL), and one that starts with '-' (it would read as an option).
fn bad_names() -> Vec<String> {
    FORBIDDEN
        .chars()
        .chain([' ', '\t', '\x01', '\x7f'])
        .map(|c| format!("a{c}b"))
        .chain(["-oProxyCommand=sh".to_string()])
        .collect()
}

/// `s` as a TOML basic string: a JSON string is one, once DEL (which TOML, unlike JSON,
/// wants escaped) is escaped too.
fn toml_str(s: &str) -> String {
    serde_json::Value::from(s)
        .to_string()
        .replace('\x7f', "\\u007f")
}

/// `p` as a TOML basic string.
fn toml_path(p: &Path) -> String {
    toml_str(&p.display().to_string())
}

/// `s` as one double-quoted ssh_config argument.
fn ssh_arg(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// A ProxyCommand that leaves `marker` behind when it runs, then connects as usual.
fn marking_proxy(marker: &Path) -> String {
    format!("touch {}; nc %h %p", marker.display())
}

/// An ssh_config with `Host victim` / `HostName NAME`, then `Host *` with a ProxyCommand that
/// touches `marker`.
fn victim_ssh_config(name: &str, marker: &Path) -> String {
    format!(
        "Host victim\n  HostName {}\nHost *\n  ProxyCommand {}\n",
        ssh_arg(name),
        marking_proxy(marker)
    )
}

/// Writes an ssh_config to `path` with mode 0600 (warren refuses one others could write).
fn write_ssh_config(path: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, text)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(())
}

/// `warren ARGS` run to completion within `limit`, with HOME in `files`.
async fn warren_once(files: &Files, args: &[&str], limit: Duration) -> anyhow::Result<Output> {
    run_warren(args, &[("HOME", &files.home())], limit).await
}

/// `LINE:COL` of the value of the first `KEY = value` line of `text`, as warren reports it.
fn value_position(text: &str, key: &str) -> anyhow::Result<String> {
    let prefix = format!("{key} = ");
    let (index, _) = text
        .lines()
        .enumerate()
        .find(|(_, l)| l.starts_with(&prefix))
        .with_context(|| format!("no `{prefix}` line in:\n{text}"))?;
    Ok(format!("{}:{}", index + 1, prefix.len() + 1))
}

/// Checks that a finished one-shot warren exited with `code` and that its stderr holds every
/// one of `needles`.
fn expect_refused(out: &Output, code: i32, needles: &[&str]) -> anyhow::Result<()> {
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        exit_code(out.status) == code,
        "exit code {} instead of {code}; stderr:\n{stderr}",
        exit_code(out.status)
    );
    for needle in needles {
        ensure!(
            stderr.contains(needle),
            "stderr does not name {needle:?}:\n{stderr}"
        );
    }
    Ok(())
}

/// A boxed case, to run many of them concurrently.
type Job = Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>;

/// Runs `jobs`, at most [`PARALLEL`] at a time; fails with every failure when any fails.
async fn run_jobs(jobs: Vec<Job>) -> anyhow::Result<()> {
    let total = jobs.len();
    let slots = Arc::new(Semaphore::new(PARALLEL));
    let mut set = JoinSet::new();
    for job in jobs {
        let slots = slots.clone();
        set.spawn(async move {
            let _slot = slots.acquire_owned().await?;
            job.await
        });
    }
    let mut failures = Vec::new();
    while let Some(done) = set.join_next().await {
        if let Err(e) = done? {
            failures.push(format!("{e:#}"));
        }
    }
    ensure!(
        failures.is_empty(),
        "{} of {total} cases failed:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
    Ok(())
}

/// Where a configuration file can carry a bad name.
#[derive(Clone, Copy, Debug)]
enum InFile {
    /// `hostname = ` of a `[hosts.NAME]` table that has `proxy_command`.
    Hostname,
    /// `user = ` of such a table.
    User,
    /// `HostName` of the ssh_config named by `[daemon] ssh_config` (its `Host *` block
    /// has the ProxyCommand); warren reports it at the `ssh_config` key.
    SshConfigHostName,
}

impl InFile {
    const ALL: [InFile; 3] = [InFile::Hostname, InFile::User, InFile::SshConfigHostName];

    /// The TOML key at whose value the problem is reported.
    fn key(self) -> &'static str {
        match self {
            InFile::Hostname => "hostname",
            InFile::User => "user",
            InFile::SshConfigHostName => "ssh_config",
        }
    }
}

/// One name case in its own tempdir (a [`Files`]): warren's HOME has a `.ssh/config` (mode
/// 0600) with `Host victim` / `HostName NAME` and `Host *` with a ProxyCommand that touches
/// this case's marker, so that the case that ran a ProxyCommand is the one that fails.
struct NameCase {
    files: Files,
    name: String,
}

impl NameCase {
    fn new(name: String) -> anyhow::Result<Self> {
        let files = Files::new()?;
        let case = NameCase { files, name };
        write_ssh_config(
            &case.ssh_config(),
            &victim_ssh_config(&case.name, &case.marker()),
        )?;
        Ok(case)
    }

    fn ssh_config(&self) -> PathBuf {
        self.files.path("home/.ssh/config")
    }

    /// The file every ProxyCommand of this case touches.
    fn marker(&self) -> PathBuf {
        self.files.path("MARKER")
    }

    /// The Unix socket of a dynamic forward: what a warren that accepted the name binds.
    fn socks(&self) -> PathBuf {
        self.files.path("socks.sock")
    }

    fn expect_nothing_started(&self, case: &str) -> anyhow::Result<()> {
        ensure!(
            !self.marker().exists(),
            "{case}: a ProxyCommand ran ({} exists)",
            self.marker().display()
        );
        for socket in [self.socks(), self.files.control_socket()] {
            ensure!(!socket.exists(), "{case}: {} was bound", socket.display());
        }
        Ok(())
    }

    /// The configuration with the name in `place`. The host has a ProxyCommand (its own, or
    /// the ssh_config's) and a dynamic forward, so that a `warren run` that accepted the name
    /// would run it.
    fn config(&self, place: InFile) -> anyhow::Result<PathBuf> {
        let value = toml_str(&self.name);
        let proxy = toml_str(&marking_proxy(&self.marker()));
        let (host, table) = match place {
            InFile::Hostname => (
                "t",
                format!("[hosts.t]\nhostname = {value}\nproxy_command = {proxy}\n"),
            ),
            InFile::User => (
                "t",
                format!(
                    "[hosts.t]\nhostname = \"127.0.0.1\"\nuser = {value}\nproxy_command = {proxy}\n"
                ),
            ),
            InFile::SshConfigHostName => ("victim", "[hosts.victim]\n".to_string()),
        };
        let socks = self.socks().display().to_string();
        let rest = format!(
            "{table}port = 1\nidentity_files = []\n\n{}",
            forward_table("f", host, "dynamic", &socks, None)
        );
        let daemon = format!("ssh_config = {}", toml_path(&self.ssh_config()));
        self.files.config(&daemon, &rest)
    }

    /// `warren connect` with the name given as `arg` (and `-D` on a Unix socket). Option
    /// values are attached (`-lVALUE`), so that one starting with '-' is still a value.
    fn connect_args(&self, arg: OnCommandLine) -> Vec<String> {
        let mut args = vec![
            "connect".to_string(),
            "-D".into(),
            self.socks().display().to_string(),
        ];
        let name = &self.name;
        match arg {
            OnCommandLine::Destination => args.extend(["--".into(), name.clone()]),
            OnCommandLine::LoginUser => args.extend([format!("-l{name}"), "target.example".into()]),
            OnCommandLine::Jump => args.extend([format!("-J{name}"), "target.example".into()]),
            OnCommandLine::HomeSshConfigHostName => args.push("victim".into()),
        }
        args
    }

    /// `warren check` and `warren run` refuse the name in `place`: exit 78 naming the
    /// position and the value; nothing bound, no ProxyCommand run.
    async fn check_and_run(self, place: InFile) -> anyhow::Result<()> {
        let config = self.config(place)?;
        let text = std::fs::read_to_string(&config)?;
        let at = format!(
            "{}:{}: ",
            config.display(),
            value_position(&text, place.key())?
        );
        let shown = format!("{:?}", self.name);
        for command in ["check", "run"] {
            let out = warren_once(
                &self.files,
                &[command, "-c", &config.display().to_string()],
                ONE_SHOT,
            )
            .await;
            let case = format!("warren {command}, {place:?} = {shown}");
            self.expect_nothing_started(&case)?;
            expect_refused(&out?, CONFIG, &[&at, &shown])
                .with_context(|| format!("{case}\n{text}"))?;
        }
        Ok(())
    }

    /// `warren connect` refuses the name given as `arg`: exit 64 naming the value; nothing
    /// bound, no ProxyCommand run.
    async fn connect(self, arg: OnCommandLine) -> anyhow::Result<()> {
        let args = self.connect_args(arg);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = warren_once(&self.files, &args, ONE_SHOT).await;
        let shown = format!("{:?}", self.name);
        let case = format!("warren {args:?} ({arg:?} = {shown})");
        self.expect_nothing_started(&case)?;
        expect_refused(&out?, USAGE, &[&shown]).with_context(|| case.clone())
    }

    /// The control: `warren ARGS` with a good name does run the ProxyCommand.
    async fn proxy_command_runs(self, args: Vec<String>) -> anyhow::Result<()> {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let warren = WarrenProcess::spawn(&args, &[("HOME", &self.files.home())])?;
        wait_until(STEP, "the ProxyCommand to touch its marker", || {
            self.marker().exists()
        })
        .await
        .with_context(|| format!("warren {args:?}; stderr:\n{}", warren.stderr_text()))
    }
}

/// Where `warren connect`'s command line can carry a bad name.
#[derive(Clone, Copy, Debug)]
enum OnCommandLine {
    /// `[user@]host[:port]`, after `--`.
    Destination,
    /// `-l USER`.
    LoginUser,
    /// A `-J` entry.
    Jump,
    /// The destination is an alias whose `HostName` in `$HOME/.ssh/config` is bad.
    HomeSshConfigHostName,
}

impl OnCommandLine {
    const ALL: [OnCommandLine; 4] = [
        OnCommandLine::Destination,
        OnCommandLine::LoginUser,
        OnCommandLine::Jump,
        OnCommandLine::HomeSshConfigHostName,
    ];
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_names_in_the_config_and_its_ssh_config_are_refused_by_check_and_run() {
    with_timeout(MANY, async {
        let mut jobs: Vec<Job> = Vec::new();
        for place in InFile::ALL {
            for name in bad_names() {
                jobs.push(Box::pin(async move {
                    NameCase::new(name)?.check_and_run(place).await
                }));
            }
        }
        run_jobs(jobs).await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_names_given_to_connect_are_refused() {
    with_timeout(MANY, async {
        let mut jobs: Vec<Job> = Vec::new();
        for arg in OnCommandLine::ALL {
            for name in bad_names() {
                // In -J a ',' separates entries: "a,b" is two good names, not a bad one.
                if matches!(arg, OnCommandLine::Jump) && name.contains(',') {
                    continue;
                }
                jobs.push(Box::pin(
                    async move { NameCase::new(name)?.connect(arg).await },
                ));
            }
        }
        run_jobs(jobs).await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_good_name_the_same_proxy_commands_do_run() {
    // The control for the two tests above: every place they put a bad name in, with a good
    // name instead, ends in a ProxyCommand touching the marker, which they would have seen.
    with_timeout(LIMIT, async {
        let good = "127.0.0.1".to_string();
        let mut jobs: Vec<Job> = Vec::new();
        for place in InFile::ALL {
            let case = NameCase::new(good.clone())?;
            let args = vec![
                "run".into(),
                "-c".into(),
                case.config(place)?.display().to_string(),
            ];
            jobs.push(Box::pin(case.proxy_command_runs(args)));
        }
        for arg in OnCommandLine::ALL {
            let case = NameCase::new(good.clone())?;
            let args = case.connect_args(arg);
            jobs.push(Box::pin(case.proxy_command_runs(args)));
        }
        run_jobs(jobs).await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reported_attack_runs_nothing() {
    with_timeout(LIMIT, async {
        // `ProxyCommand nc %h %p` under `Host *`, and a destination that is a shell command.
        let dir = tempfile::tempdir()?;
        let home = dir.path().join("home");
        write_ssh_config(
            &home.join(".ssh/config"),
            "Host *\n  ProxyCommand nc %h %p\n",
        )?;
        let socks = dir.path().join("d.sock").display().to_string();
        let destination = "x;touch${IFS}marker;";
        let mut cmd = warren_command(
            &["connect", "-D", &socks, destination],
            &[("HOME", &home.display().to_string())],
        );
        cmd.current_dir(dir.path())
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let out = within(STEP, "warren connect", cmd.output()).await??;
        expect_refused(&out, USAGE, &[&format!("{destination:?}")])?;
        for place in [dir.path(), home.as_path()] {
            ensure!(
                !place.join("marker").exists(),
                "the destination ran as a shell command: {}/marker exists",
                place.display()
            );
        }
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bracketed_ipv6_literal_and_ordinary_names_pass_check() {
    with_timeout(LIMIT, async {
        let files = Files::new()?;
        let rest = "[hosts.v6]\nhostname = \"[::1]\"\nuser = \"first.last\"\nidentity_files = []\n\n\
                    [hosts.plain]\nhostname = \"db-1.example.com\"\nuser = \"deploy-bot\"\n\
                    identity_files = []\n";
        let config = files.config("", rest)?;
        let out = warren_once(&files, &["check", "-c", &config.display().to_string()], STEP).await?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        ensure!(
            out.status.success() && stdout.contains("ok (2 hosts"),
            "warren check: {}\nstdout:\n{stdout}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// Socket modes
// ---------------------------------------------------------------------------------------

/// `warren ARGS` started through `/bin/sh` under `umask MASK` (the workspace forbids `unsafe`,
/// so no `pre_exec`); sh execs warren, so the pid is warren's. Output goes to a file in
/// `files`; the environment holds only PATH, NO_COLOR and HOME in `files`. Killed on drop.
struct Umasked {
    child: tokio::process::Child,
    log: PathBuf,
}

impl Umasked {
    fn spawn(mask: &str, args: &[&str], files: &Files) -> anyhow::Result<Self> {
        let log = files.path("warren.log");
        let out = std::fs::File::create(&log)?;
        let mut cmd = tokio::process::Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(format!("umask {mask}; exec \"$0\" \"$@\""))
            .arg(WARREN)
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", files.home())
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .kill_on_drop(true);
        let child = cmd
            .spawn()
            .context("spawn sh -c 'umask ...; exec warren ...'")?;
        Ok(Umasked { child, log })
    }

    /// Everything warren wrote so far.
    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Polls `condition` until it holds; the error quotes warren's output.
    async fn wait(&self, what: &str, condition: impl FnMut() -> bool) -> anyhow::Result<()> {
        wait_until(STEP, what, condition)
            .await
            .with_context(|| format!("warren output:\n{}", self.output()))
    }

    /// Checks, from `/proc/PID/status`, that warren runs with umask `mask` (the premise).
    fn expect_umask(&self, mask: &str) -> anyhow::Result<()> {
        let pid = self.child.id().context("warren has exited")?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let actual = status
            .lines()
            .find_map(|l| l.strip_prefix("Umask:"))
            .map(str::trim)
            .context("no Umask line in /proc/PID/status")?;
        ensure!(
            actual.trim_start_matches('0') == mask.trim_start_matches('0'),
            "warren runs with umask {actual}, not {mask}"
        );
        Ok(())
    }

    /// SIGTERM, then the exit code, which must be 0.
    async fn stop(mut self) -> anyhow::Result<()> {
        let pid = self.child.id().context("warren has exited")?;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(pid)?),
            nix::sys::signal::Signal::SIGTERM,
        )?;
        let status = within(STEP, "warren to exit on SIGTERM", self.child.wait()).await??;
        ensure!(
            status.success(),
            "warren exited {status}; output:\n{}",
            self.output()
        );
        Ok(())
    }
}

/// Whether `path` is a socket (not following a symlink).
fn is_socket(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket())
}

/// Checks that `path` is a socket of this user with exactly `mode`, and of group `gid`.
fn expect_socket(path: &Path, mode: u32, gid: Option<u32>) -> anyhow::Result<()> {
    let meta =
        std::fs::symlink_metadata(path).with_context(|| format!("stat {}", path.display()))?;
    ensure!(
        meta.file_type().is_socket(),
        "{} is not a socket",
        path.display()
    );
    ensure!(
        meta.mode() & 0o7777 == mode,
        "{} has mode {:04o}, not {mode:04o}",
        path.display(),
        meta.mode() & 0o7777
    );
    ensure!(
        meta.uid() == nix::unistd::getuid().as_raw(),
        "{} belongs to uid {}",
        path.display(),
        meta.uid()
    );
    if let Some(gid) = gid {
        ensure!(
            meta.gid() == gid,
            "{} has group {}, not {gid}",
            path.display(),
            meta.gid()
        );
    }
    Ok(())
}

/// Checks that warren left no staging directory (`.w…`, where a socket is bound before it is
/// renamed into place) in `files`.
fn expect_no_staging_left(files: &Files) -> anyhow::Result<()> {
    let dir = files.path("");
    let left: Vec<String> = std::fs::read_dir(&dir)?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".w"))
        .collect();
    ensure!(
        left.is_empty(),
        "staging left in {}: {left:?}",
        dir.display()
    );
    Ok(())
}

/// Sends a line through `stream` and expects it back (the egress is an echo server).
async fn echo_once(
    mut stream: impl AsyncRead + AsyncWrite + Unpin,
    what: &str,
) -> anyhow::Result<()> {
    const MSG: &[u8] = b"through a fresh socket\n";
    within(STEP, what, async {
        stream.write_all(MSG).await?;
        let mut back = [0u8; MSG.len()];
        stream.read_exact(&mut back).await?;
        ensure!(back == MSG, "{what}: echoed {back:?}");
        anyhow::Ok(())
    })
    .await?
}

/// One echo through the Unix ingress `path` of a local forward to an echo server.
async fn echo_through(path: &Path) -> anyhow::Result<()> {
    let what = format!("an echo through {}", path.display());
    let stream = UnixStream::connect(path)
        .await
        .with_context(|| what.clone())?;
    echo_once(stream, &what).await
}

/// A SOCKS5 CONNECT to 127.0.0.1:`port` through the Unix ingress `path`, then one echo.
async fn socks_echo(path: &Path, port: u16) -> anyhow::Result<()> {
    let mut s = UnixStream::connect(path).await?;
    within(STEP, "the SOCKS5 handshake", async {
        s.write_all(&[5, 1, 0]).await?;
        let mut greeting = [0u8; 2];
        s.read_exact(&mut greeting).await?;
        ensure!(greeting == [5, 0], "SOCKS5 greeting {greeting:?}");
        let mut req = vec![5, 1, 0, 1, 127, 0, 0, 1];
        req.extend_from_slice(&port.to_be_bytes());
        s.write_all(&req).await?;
        let mut reply = [0u8; 10];
        s.read_exact(&mut reply).await?;
        ensure!(reply[1] == 0, "SOCKS5 reply {reply:?}");
        anyhow::Ok(())
    })
    .await??;
    echo_once(s, &format!("an echo through SOCKS at {}", path.display())).await
}

/// The current user's primary group: name and gid.
fn primary_group() -> anyhow::Result<(String, u32)> {
    let gid = nix::unistd::getgid();
    let group = nix::unistd::Group::from_gid(gid)?.with_context(|| format!("gid {gid}"))?;
    Ok((group.name, gid.as_raw()))
}

/// A local forward of host `h` from the Unix ingress `listen`, with `socket_mode` if given.
fn unix_forward(name: &str, listen: &Path, connect: &str, mode: Option<&str>) -> String {
    let table = forward_table(
        name,
        "h",
        "local",
        &listen.display().to_string(),
        Some(connect),
    );
    match mode {
        Some(m) => format!("{table}socket_mode = \"{m}\"\n\n"),
        None => table,
    }
}

/// `warren run` under `umask MASK`: an ingress with the default mode is 0600, one with
/// `socket_mode = "0660"` is 0660, the control socket 0600, and with `control_socket_group`
/// 0660 in that group; bytes flow through both ingresses and the control socket answers.
async fn run_socket_modes_under(mask: &str) -> anyhow::Result<()> {
    let Fixture { server, key, echo } = Fixture::start().await?;
    let files = Files::new()?;
    let plain = files.path("plain.sock");
    let shared = files.path("shared.sock");
    let control = files.control_socket();
    let egress = echo.addr().to_string();
    let rest = host_table("h", &server, &key)
        + &unix_forward("plain", &plain, &egress, None)
        + &unix_forward("shared", &shared, &egress, Some("0660"));
    let (group, gid) = primary_group()?;
    for (daemon, control_mode, control_gid) in [
        (String::new(), 0o600, None),
        (
            format!("control_socket_group = {}", toml_str(&group)),
            0o660,
            Some(gid),
        ),
    ] {
        let config = files.config(&daemon, &rest)?;
        let warren = Umasked::spawn(mask, &["run", "-c", &config.display().to_string()], &files)?;
        warren
            .wait("the ingresses and the control socket", || {
                is_socket(&plain) && is_socket(&shared) && is_socket(&control)
            })
            .await?;
        let context = || format!("umask {mask}, [daemon] {daemon:?}");
        warren.expect_umask(mask)?;
        expect_socket(&plain, 0o600, None).with_context(context)?;
        expect_socket(&shared, 0o660, None).with_context(context)?;
        expect_socket(&control, control_mode, control_gid).with_context(context)?;
        expect_no_staging_left(&files)?;

        warren
            .wait("warren's session to come up", || {
                warren.output().contains("session up")
            })
            .await?;
        echo_through(&plain).await?;
        echo_through(&shared).await?;
        ensure!(
            status_json(&control.display().to_string()).await.is_some(),
            "the control socket does not answer"
        );
        warren.stop().await.with_context(context)?;
        for socket in [&plain, &shared, &control] {
            ensure!(
                !socket.exists(),
                "{} is left after a clean stop",
                socket.display()
            );
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_creates_sockets_with_their_modes_under_umask_000() {
    with_timeout(LIMIT, run_socket_modes_under("000")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_creates_sockets_with_their_modes_under_umask_002() {
    with_timeout(LIMIT, run_socket_modes_under("002")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_creates_unix_ingresses_0600_under_umask_000() {
    with_timeout(LIMIT, async {
        let Fixture { server, key, echo } = Fixture::start().await?;
        let files = Files::new()?;
        let local = files.path("l.sock");
        let socks = files.path("d.sock");
        let port = echo.addr().tcp()?.port();
        let args = [
            "connect".to_string(),
            "-L".into(),
            format!("{}:127.0.0.1:{port}", local.display()),
            "-D".into(),
            socks.display().to_string(),
            "-i".into(),
            key.path().display().to_string(),
            "-p".into(),
            server.port().to_string(),
            "-l".into(),
            current_user()?,
            "-o".into(),
            format!("UserKnownHostsFile={}", server.known_hosts_path().display()),
            "-o".into(),
            "agent=false".into(),
            "127.0.0.1".into(),
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let warren = Umasked::spawn("000", &args, &files)?;
        warren
            .wait("the -L and -D sockets", || {
                is_socket(&local) && is_socket(&socks)
            })
            .await?;
        warren.expect_umask("000")?;
        expect_socket(&local, 0o600, None)?;
        expect_socket(&socks, 0o600, None)?;
        expect_no_staging_left(&files)?;

        warren
            .wait("warren's session to come up", || {
                warren.output().contains("session up")
            })
            .await?;
        echo_through(&local).await?;
        socks_echo(&socks, port).await?;
        warren.stop().await
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// What is already at a socket path
// ---------------------------------------------------------------------------------------

/// What a test leaves at a socket path before warren starts.
#[derive(Clone, Copy, Debug)]
enum Obstacle {
    /// A symlink to a regular file (mode 0644, known contents).
    LinkToFile,
    /// A symlink to nothing.
    DanglingLink,
    /// A regular file (mode 0644, known contents).
    RegularFile,
}

/// Which socket path the obstacle is at.
#[derive(Clone, Copy, Debug)]
enum SocketPath {
    Control,
    Ingress,
}

const CONTENTS: &str = "not warren's: leave me alone\n";

/// A `warren run` configuration with one local forward from `in.sock` to the echo server.
fn one_forward_config(files: &Files, fixture: &Fixture) -> anyhow::Result<PathBuf> {
    let rest = host_table("h", &fixture.server, &fixture.key)
        + &unix_forward(
            "f",
            &files.path("in.sock"),
            &fixture.echo.addr().to_string(),
            None,
        );
    files.config("", &rest)
}

/// A regular file with [`CONTENTS`] and mode 0644.
fn write_known_file(path: &Path) -> anyhow::Result<()> {
    std::fs::write(path, CONTENTS)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))?;
    Ok(())
}

/// Checks that `path` is still the file [`write_known_file`] wrote: a chmod or a write
/// through a followed symlink would show here.
fn expect_known_file(path: &Path) -> anyhow::Result<()> {
    let meta = std::fs::symlink_metadata(path)?;
    ensure!(
        meta.file_type().is_file(),
        "{} is no longer a regular file",
        path.display()
    );
    ensure!(
        meta.mode() & 0o7777 == 0o644,
        "{} has mode {:04o} now",
        path.display(),
        meta.mode() & 0o7777
    );
    ensure!(
        std::fs::read_to_string(path)? == CONTENTS,
        "{} was written to",
        path.display()
    );
    Ok(())
}

impl Obstacle {
    const ALL: [Obstacle; 3] = [
        Obstacle::LinkToFile,
        Obstacle::DanglingLink,
        Obstacle::RegularFile,
    ];

    /// Where a symlink at `path` points.
    fn target(path: &Path) -> PathBuf {
        path.with_extension("target")
    }

    /// Puts the obstacle at `path` (a symlink's target beside it).
    fn place(self, path: &Path) -> anyhow::Result<()> {
        let target = Self::target(path);
        match self {
            Obstacle::LinkToFile => {
                write_known_file(&target)?;
                std::os::unix::fs::symlink(&target, path)?;
            }
            Obstacle::DanglingLink => std::os::unix::fs::symlink(&target, path)?,
            Obstacle::RegularFile => write_known_file(path)?,
        }
        Ok(())
    }

    /// Checks that the obstacle at `path` is exactly as [`Obstacle::place`] left it.
    fn expect_untouched(self, path: &Path) -> anyhow::Result<()> {
        let target = Self::target(path);
        if matches!(self, Obstacle::RegularFile) {
            return expect_known_file(path);
        }
        let link = std::fs::read_link(path)
            .with_context(|| format!("{} is no longer a symlink", path.display()))?;
        ensure!(
            link == target,
            "{} now points at {}",
            path.display(),
            link.display()
        );
        if matches!(self, Obstacle::LinkToFile) {
            expect_known_file(&target)
        } else {
            ensure!(
                std::fs::symlink_metadata(&target).is_err(),
                "something was created at the dangling link's target {}",
                target.display()
            );
            Ok(())
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anything_but_a_socket_at_a_socket_path_fails_start_and_is_left_alone() {
    with_timeout(LIMIT, async {
        let fixture = Fixture::start().await?;
        for at in [SocketPath::Control, SocketPath::Ingress] {
            for obstacle in Obstacle::ALL {
                let files = Files::new()?;
                let config = one_forward_config(&files, &fixture)?;
                let (path, other) = match at {
                    SocketPath::Control => (files.control_socket(), files.path("in.sock")),
                    SocketPath::Ingress => (files.path("in.sock"), files.control_socket()),
                };
                obstacle.place(&path)?;
                let out = warren_once(
                    &files,
                    &["run", "-c", &config.display().to_string()],
                    ONE_SHOT,
                )
                .await;
                let case = format!("{obstacle:?} at the {at:?} socket path");
                obstacle
                    .expect_untouched(&path)
                    .with_context(|| case.clone())?;
                expect_refused(&out?, 1, &[&path.display().to_string()])
                    .with_context(|| case.clone())?;
                ensure!(
                    std::fs::symlink_metadata(&other).is_err(),
                    "{case}: {} was left behind",
                    other.display()
                );
                expect_no_staging_left(&files).with_context(|| case.clone())?;
            }
        }
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_socket_is_replaced_and_works() {
    with_timeout(LIMIT, async {
        let fixture = Fixture::start().await?;
        let files = Files::new()?;
        let config = one_forward_config(&files, &fixture)?;
        let ingress = files.path("in.sock");
        let control = files.control_socket();
        // Bound, then abandoned as by a crashed process: the files stay, nobody listens.
        for path in [&ingress, &control] {
            drop(std::os::unix::net::UnixListener::bind(path)?);
            ensure!(
                is_socket(path) && std::os::unix::net::UnixStream::connect(path).is_err(),
                "{} is not a stale socket",
                path.display()
            );
        }
        let mut warren = files.spawn(&config)?;
        // Both paths exist all along: wait for the log line that follows the control socket.
        warren
            .wait_for_stderr(STEP, |l| l.contains("ready") && l.contains("forwards="))
            .await?;
        expect_socket(&ingress, 0o600, None)?;
        expect_socket(&control, 0o600, None)?;
        expect_no_staging_left(&files)?;
        warren
            .wait_for_stderr(STEP, |l| l.contains("session up"))
            .await?;
        echo_through(&ingress).await?;
        ensure!(
            status_json(&control.display().to_string()).await.is_some(),
            "the replaced control socket does not answer"
        );
        warren.sigterm()?;
        assert_eq!(warren.wait_exit(STEP).await?, 0, "{}", warren.stderr_text());
        Ok(())
    })
    .await;
}
