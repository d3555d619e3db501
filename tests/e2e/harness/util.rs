//! Small test utilities: timeouts, deadline polling, bound listeners, the current user.

use std::future::Future;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::net::{TcpListener, TcpSocket};
use tokio::time::Instant;

/// How often the polling helpers look again.
const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// Runs a whole test body under a time limit; panics with a clear message on
/// timeout or on an error (printed with its whole chain).
pub async fn with_timeout<T>(limit: Duration, body: impl Future<Output = anyhow::Result<T>>) -> T {
    match tokio::time::timeout(limit, body).await {
        Ok(Ok(value)) => value,
        Ok(Err(err)) => panic!("test failed: {err:#}"),
        Err(_) => panic!("test timed out after {limit:?}"),
    }
}

/// Awaits `fut` for at most `limit`; the error names `what` was being waited for.
pub async fn within<T>(
    limit: Duration,
    what: &str,
    fut: impl Future<Output = T>,
) -> anyhow::Result<T> {
    tokio::time::timeout(limit, fut)
        .await
        .map_err(|_| anyhow::anyhow!("timed out after {limit:?} waiting for {what}"))
}

/// Polls `condition` every few milliseconds until it holds or `limit` passes.
pub async fn wait_until(
    limit: Duration,
    what: &str,
    mut condition: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        if condition() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("timed out after {limit:?} waiting until {what}");
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Polls the async `probe` until it yields `Some`, or fails after `limit`.
pub async fn wait_for<T, F, Fut>(limit: Duration, what: &str, mut probe: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = probe().await {
            return Ok(value);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// A TCP listener on 127.0.0.1 with a port picked by the kernel.
///
/// There is deliberately no `free_port()`: a port that is closed again can be
/// taken by anyone before the test uses it. Hand out the bound listener instead.
pub async fn bind_loopback() -> anyhow::Result<TcpListener> {
    TcpListener::bind("127.0.0.1:0")
        .await
        .context("bind a listener on 127.0.0.1:0")
}

/// A TCP listener on `[::1]` with a port picked by the kernel. Where this machine has no
/// IPv6 loopback the error says so: the IPv6 tests then fail (they never skip silently).
pub async fn bind_loopback_v6() -> anyhow::Result<TcpListener> {
    TcpListener::bind("[::1]:0").await.context(NO_IPV6)
}

/// Why a test that needs `::1` fails where it is missing.
pub const NO_IPV6: &str = "this machine has no IPv6 loopback: binding [::1]:0 failed; the IPv6 \
                           tests need ::1 on lo (in a container, enable IPv6, e.g. \
                           sysctl net.ipv6.conf.lo.disable_ipv6=0)";

/// Binds `127.0.0.1:port` with `SO_REUSEADDR`, for re-opening a port this test owned before.
pub fn rebind_loopback(port: u16) -> anyhow::Result<TcpListener> {
    rebind(([127, 0, 0, 1], port).into())
}

/// Binds `addr` with `SO_REUSEADDR`, for re-opening an address this test owned before.
pub fn rebind(addr: std::net::SocketAddr) -> anyhow::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .context("create a TCP socket")?;
    socket.set_reuseaddr(true).context("set SO_REUSEADDR")?;
    socket
        .bind(addr)
        .with_context(|| format!("re-bind {addr}"))?;
    socket.listen(1024).context("listen")
}

/// The name of the user running the tests (`root` on CI); OpenSSH logins use it.
pub fn current_user() -> anyhow::Result<String> {
    let uid = nix::unistd::getuid();
    let user = nix::unistd::User::from_uid(uid)
        .with_context(|| format!("look up uid {uid}"))?
        .with_context(|| format!("uid {uid} has no passwd entry"))?;
    Ok(user.name)
}

/// Whether the tests run as root (then sshd does privilege separation for real).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// The last `n` lines of `text`, for error messages that quote a log.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Runs an external tool to completion (bounded), failing with its stderr; returns its stdout.
pub async fn run_checked(cmd: &mut tokio::process::Command, what: &str) -> anyhow::Result<String> {
    cmd.stdin(Stdio::null()).kill_on_drop(true);
    let out = within(Duration::from_secs(30), what, cmd.output())
        .await?
        .with_context(|| format!("start {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
