//! The daemon: binds every ingress, starts one supervisor per host and one accept loop per
//! forward, and shuts them down in order (stop accepting, let connections finish, cut the
//! rest, disconnect sessions). Everything runs under one root cancellation token.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, info, info_span, warn};

use crate::config::{BindAddr, Config, ForwardSpec};
use crate::forward::listener::Listener;
use crate::forward::{ForwardRuntime, dynamic, local, remote};
use crate::session::{HostHandle, spawn_hosts};

/// Start-up failures that stop the daemon before it is ready.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// An ingress could not be bound.
    #[error("forward {forward}: cannot listen on {addr}: {source}")]
    Bind {
        /// The forward's name.
        forward: String,
        /// The address it asked for.
        addr: BindAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// A running daemon.
pub struct Daemon {
    root: CancellationToken,
    stop_accepting: CancellationToken,
    cut: CancellationToken,
    tasks: TaskTracker,
    connections: TaskTracker,
    hosts: BTreeMap<String, HostHandle>,
    forwards: Vec<ForwardRuntime>,
}

impl Daemon {
    /// Binds every ingress and starts everything; returns once all ingresses accept.
    pub async fn start(config: &Config) -> Result<Self, StartError> {
        Self::start_with(config, HashMap::new()).await
    }

    /// Like [`Daemon::start`], adopting already-bound TCP listeners for the ingresses at
    /// their addresses (how tests hand over ports they bound to port 0).
    pub async fn start_with(
        config: &Config,
        mut inherited: HashMap<SocketAddr, std::net::TcpListener>,
    ) -> Result<Self, StartError> {
        let root = CancellationToken::new();
        let stop_accepting = root.child_token();
        let cut = root.child_token();
        let tasks = TaskTracker::new();
        let connections = TaskTracker::new();

        // Bind first: a failure must leave nothing running.
        let mut bound = Vec::new();
        for f in &config.forwards {
            let addr = match &f.spec {
                ForwardSpec::Local { listen, .. } | ForwardSpec::Dynamic { listen } => listen,
                ForwardSpec::Remote { .. } => continue,
            };
            let adopt = match addr {
                BindAddr::Tcp(a) => inherited.remove(a),
                BindAddr::Unix(_) => None,
            };
            let listener = Listener::bind(addr, adopt).map_err(|source| StartError::Bind {
                forward: f.name.clone(),
                addr: addr.clone(),
                source,
            })?;
            bound.push((f.name.clone(), listener));
        }

        let hosts: BTreeMap<String, HostHandle> = spawn_hosts(config, &tasks, &root);

        let mut listeners: HashMap<String, Listener> = bound.into_iter().collect();
        let mut forwards = Vec::new();
        for f in &config.forwards {
            let listener = listeners.remove(&f.name);
            let runtime = ForwardRuntime::new(
                f.clone(),
                listener.as_ref().and_then(|l| l.local_addr().ok()),
            );
            let Some(host) = hosts.get(&f.host).cloned() else {
                continue;
            };
            let span = info_span!("forward", forward = %f.name);
            match (&f.spec, listener) {
                (ForwardSpec::Local { connect, .. }, Some(listener)) => {
                    info!(forward = %f.name, listen = %runtime.bound.as_ref().map_or(String::new(), ToString::to_string), connect = %connect, "listening");
                    let serve = local::Serve {
                        forward: runtime.clone(),
                        listener,
                        host,
                        stop_accepting: stop_accepting.clone(),
                        cut: cut.clone(),
                        connections: connections.clone(),
                    };
                    tasks.spawn(local::serve(serve, connect.clone()).instrument(span));
                }
                (ForwardSpec::Dynamic { .. }, Some(listener)) => {
                    info!(forward = %f.name, listen = %runtime.bound.as_ref().map_or(String::new(), ToString::to_string), "socks listening");
                    let serve = local::Serve {
                        forward: runtime.clone(),
                        listener,
                        host,
                        stop_accepting: stop_accepting.clone(),
                        cut: cut.clone(),
                        connections: connections.clone(),
                    };
                    tasks.spawn(dynamic::serve(serve).instrument(span));
                }
                (ForwardSpec::Remote { listen, connect }, _) => {
                    let serve = remote::Serve {
                        forward: runtime.clone(),
                        listen: listen.clone(),
                        egress: connect.clone(),
                        host,
                        stop: stop_accepting.clone(),
                        cut: cut.clone(),
                        connections: connections.clone(),
                    };
                    tasks.spawn(remote::serve(serve).instrument(span));
                }
                (_, None) => {}
            }
            forwards.push(runtime);
        }
        Ok(Self {
            root,
            stop_accepting,
            cut,
            tasks,
            connections,
            hosts,
            forwards,
        })
    }

    /// The forwards, with their bound addresses and counters.
    pub fn forwards(&self) -> &[ForwardRuntime] {
        &self.forwards
    }

    /// The supervisor handle of host `name`.
    pub fn host(&self, name: &str) -> Option<&HostHandle> {
        self.hosts.get(name)
    }

    /// What the control socket reports on.
    pub fn control_state(&self) -> crate::control::ControlState {
        crate::control::ControlState {
            hosts: self.hosts.clone(),
            forwards: self.forwards.clone(),
        }
    }

    /// Tasks alive now: (supervisors and accept loops, connections). For leak checks.
    pub fn task_counts(&self) -> (usize, usize) {
        (self.tasks.len(), self.connections.len())
    }

    /// Every host supervisor, by name.
    pub fn hosts(&self) -> &BTreeMap<String, HostHandle> {
        &self.hosts
    }

    /// Stops accepting, lets open connections finish for up to `grace`, cuts the rest,
    /// disconnects every session and waits for every task.
    pub async fn shutdown(self, grace: Duration) {
        self.stop_accepting.cancel();
        self.connections.close();
        let open = self.connections.len();
        if open > 0 {
            info!(connections = open, grace = ?grace, "waiting for open connections to finish");
        }
        if tokio::time::timeout(grace, self.connections.wait())
            .await
            .is_err()
        {
            warn!(
                connections = self.connections.len(),
                "grace period over; closing the remaining connections"
            );
        }
        self.cut.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(2), self.connections.wait()).await;
        self.root.cancel();
        self.tasks.close();
        if tokio::time::timeout(Duration::from_secs(5), self.tasks.wait())
            .await
            .is_err()
        {
            warn!("some tasks did not stop in time");
        }
    }
}
