//! A stand-in for systemd's `NOTIFY_SOCKET`: receives `sd_notify` datagrams so tests can wait on `READY=1`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use tempfile::TempDir;
use tokio::net::UnixDatagram;

use super::util::within;

/// A bound notify socket and every message received on it.
pub struct NotifySocket {
    _dir: TempDir,
    path: PathBuf,
    socket: UnixDatagram,
    received: Vec<String>,
}

impl NotifySocket {
    /// Binds a datagram socket in a fresh tempdir.
    pub fn bind() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir().context("create a tempdir for NOTIFY_SOCKET")?;
        let path = dir.path().join("notify.sock");
        let socket =
            UnixDatagram::bind(&path).with_context(|| format!("bind {}", path.display()))?;
        Ok(NotifySocket {
            _dir: dir,
            path,
            socket,
            received: Vec::new(),
        })
    }

    /// The socket path: the value for `NOTIFY_SOCKET`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every assignment received so far, one per entry (`READY=1`, `STATUS=...`).
    pub fn received(&self) -> &[String] {
        &self.received
    }

    /// Receives until an assignment matching `pred` arrives (already-received ones
    /// are not considered again); returns it.
    pub async fn wait_for(
        &mut self,
        limit: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> anyhow::Result<String> {
        let deadline = tokio::time::Instant::now() + limit;
        let mut buf = vec![0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let received = within(left, "an sd_notify message", self.socket.recv(&mut buf)).await;
            let n = match received {
                Ok(result) => result.context("receive on NOTIFY_SOCKET")?,
                Err(err) => bail!("{err}; received so far: {:?}", self.received),
            };
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            let mut hit = None;
            for line in text.lines().filter(|l| !l.is_empty()) {
                if hit.is_none() && pred(line) {
                    hit = Some(line.to_owned());
                }
                self.received.push(line.to_owned());
            }
            if let Some(line) = hit {
                return Ok(line);
            }
        }
    }

    /// Waits for `READY=1`.
    pub async fn wait_ready(&mut self, limit: Duration) -> anyhow::Result<()> {
        self.wait_for(limit, |l| l == "READY=1").await.map(drop)
    }
}
