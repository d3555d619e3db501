//! The `sshd -i` processes of one test server: launching one per connection, counting, freezing and killing them.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpStream;
use tokio::process::Command;
use tokio::sync::watch;

use super::procs;
use super::sshd_config::SSHD;

/// How many connections a server has accepted and how many `sshd -i` processes are running.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SessionCounts {
    /// Connections accepted since the server started.
    pub accepted: usize,
    /// `sshd -i` processes currently running (a parked connection is not one yet).
    pub alive: usize,
}

#[derive(Default)]
struct State {
    accepted: usize,
    next_id: u64,
    /// Session id -> pid of its `sshd -i` process.
    live: BTreeMap<u64, i32>,
    /// While frozen, new connections are parked without an sshd, like a stopped daemon.
    frozen: bool,
    frozen_pids: Vec<i32>,
    /// The server is gone: parked connections give up.
    closed: bool,
}

/// Shared between the server handle, its accept loop and one task per session.
pub struct Sessions {
    config: PathBuf,
    log: PathBuf,
    state: Mutex<State>,
    /// Bumped on every change of `state`, so waiters wake without polling.
    changed: watch::Sender<u64>,
}

impl Sessions {
    pub fn new(config: PathBuf, log: PathBuf) -> Self {
        Sessions {
            config,
            log,
            state: Mutex::default(),
            changed: watch::Sender::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn bump(&self) {
        self.changed.send_modify(|v| *v += 1);
    }

    pub fn counts(&self) -> SessionCounts {
        let st = self.lock();
        SessionCounts {
            accepted: st.accepted,
            alive: st.live.len(),
        }
    }

    /// Pids of the running `sshd -i` processes.
    pub fn pids(&self) -> Vec<i32> {
        self.lock().live.values().copied().collect()
    }

    /// Waits until `pred` holds for the counts (woken by changes, not polling).
    pub async fn wait(
        &self,
        limit: Duration,
        what: &str,
        pred: impl Fn(SessionCounts) -> bool,
    ) -> anyhow::Result<SessionCounts> {
        let mut rx = self.changed.subscribe();
        let waited = tokio::time::timeout(limit, async {
            loop {
                let counts = self.counts();
                if pred(counts) {
                    return counts;
                }
                // The sender lives in `self`, so this cannot fail while we borrow it.
                let _ = rx.changed().await;
            }
        })
        .await;
        waited.map_err(|_| {
            anyhow::anyhow!(
                "timed out after {limit:?} waiting until {what} (sessions now: {:?})",
                self.counts()
            )
        })
    }

    /// Serves one accepted connection with its own `sshd -i`, until that process exits.
    pub async fn serve(self: std::sync::Arc<Self>, stream: TcpStream) {
        if let Err(err) = self.serve_inner(stream).await {
            // Surface harness failures where a test looks: the sshd log.
            let note = format!("e2e harness: session failed: {err:#}\n");
            if let Ok(mut file) = OpenOptions::new().append(true).open(&self.log) {
                let _ = std::io::Write::write_all(&mut file, note.as_bytes());
            }
        }
    }

    async fn serve_inner(&self, stream: TcpStream) -> anyhow::Result<()> {
        self.lock().accepted += 1;
        self.bump();
        let mut rx = self.changed.subscribe();
        let socket = stream.into_std().context("take the accepted socket")?;
        socket
            .set_nonblocking(false)
            .context("make the socket blocking")?;
        let socket = OwnedFd::from(socket);

        let (id, mut child) = loop {
            {
                let mut st = self.lock();
                if st.closed {
                    return Ok(());
                }
                if !st.frozen {
                    // Spawn under the lock so `freeze` sees every process it must stop.
                    let child = self.spawn_sshd(socket)?;
                    let pid = child.id().context("sshd exited before it was tracked")?;
                    let id = st.next_id;
                    st.next_id += 1;
                    st.live.insert(id, pid as i32);
                    break (id, child);
                }
            }
            let _ = rx.changed().await;
        };
        self.bump();
        let status = child.wait().await;
        {
            let mut st = self.lock();
            if let Some(pid) = st.live.remove(&id) {
                st.frozen_pids.retain(|&p| p != pid);
            }
        }
        self.bump();
        status.context("wait for sshd -i").map(drop)
    }

    fn spawn_sshd(&self, socket: OwnedFd) -> anyhow::Result<tokio::process::Child> {
        let stdout = socket.try_clone().context("duplicate the socket")?;
        // Anything sshd prints before it honours -E still lands in the log.
        let stderr = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .context("open the sshd log")?;
        Command::new(SSHD)
            .arg("-i")
            .arg("-f")
            .arg(&self.config)
            .arg("-E")
            .arg(&self.log)
            .stdin(Stdio::from(socket))
            .stdout(Stdio::from(stdout))
            .stderr(Stdio::from(stderr))
            .kill_on_drop(true)
            .spawn()
            .context("spawn sshd -i")
    }

    /// Stops every live session tree (and parks new connections). Returns how many sessions.
    pub fn freeze(&self) -> anyhow::Result<usize> {
        let roots: Vec<i32> = {
            let mut st = self.lock();
            st.frozen = true;
            st.live.values().copied().collect()
        };
        let mut stopped = Vec::new();
        for &root in &roots {
            stopped.extend(procs::freeze_tree(root)?);
        }
        self.lock().frozen_pids.extend(stopped);
        Ok(roots.len())
    }

    /// Resumes every frozen process and starts the parked connections.
    pub fn thaw(&self) -> anyhow::Result<()> {
        let pids = {
            let mut st = self.lock();
            st.frozen = false;
            std::mem::take(&mut st.frozen_pids)
        };
        procs::thaw(&pids)?;
        self.bump();
        Ok(())
    }

    /// SIGKILLs every live session tree and waits until the server has seen them exit.
    pub async fn kill_all(&self) -> anyhow::Result<usize> {
        let victims: Vec<(u64, i32)> = self.lock().live.iter().map(|(&i, &p)| (i, p)).collect();
        for &(_, pid) in &victims {
            procs::kill_tree(pid)?;
        }
        let mut rx = self.changed.subscribe();
        let gone = || {
            let st = self.lock();
            victims.iter().all(|(id, _)| !st.live.contains_key(id))
        };
        tokio::time::timeout(Duration::from_secs(10), async {
            while !gone() {
                let _ = rx.changed().await;
            }
        })
        .await
        .map_err(|_| anyhow::anyhow!("killed sessions did not exit within 10s"))?;
        Ok(victims.len())
    }

    /// For `Drop`: kill everything now and release parked connections.
    pub fn shut_down(&self) {
        let pids: Vec<i32> = {
            let mut st = self.lock();
            st.closed = true;
            st.live.values().copied().collect()
        };
        for pid in pids {
            let _ = procs::kill_tree(pid);
        }
        self.bump();
    }
}
