//! The daemon: binds every ingress, starts one supervisor per host and one accept loop per
//! forward, and shuts them down in order (stop accepting, let connections finish, cut the
//! rest, disconnect sessions). Everything runs under one root cancellation token.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::config::{BindAddr, Config, ForwardConfig, ForwardSpec, Plan};
use crate::control::ControlState;
use crate::forward::listener::Listener;
use crate::forward::{ForwardRuntime, ForwardState, dynamic, local, remote};
use crate::session::{Backoff, HostChanges, HostHandle, Supervisors};

/// How long a stopped forward's accept loop may take to release its ingress.
const FORWARD_STOP_LIMIT: Duration = Duration::from_secs(5);
/// Retry delays of an ingress that a reload added and that could not be bound.
const REBIND_MIN: Duration = Duration::from_secs(1);
const REBIND_MAX: Duration = Duration::from_secs(30);

/// Start-up failures that stop the daemon before it is ready.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// An ingress could not be bound.
    #[error("forward {forward}: cannot listen on {addr}: {error}")]
    Bind {
        /// The forward's name.
        forward: String,
        /// The address it asked for.
        addr: BindAddr,
        /// Why (in the message, so not also a `source`: a chain would print it twice).
        error: std::io::Error,
    },
}

/// What a reload did: the forwards the difference named, and the host changes the
/// supervisors made (the one account of those).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reloaded {
    /// Forwards stopped, their connections closed.
    pub forwards_removed: Vec<String>,
    /// Forwards started.
    pub forwards_added: Vec<String>,
    /// Forwards stopped and started anew with other settings.
    pub forwards_changed: Vec<String>,
    /// Hosts (supervisors) started.
    pub hosts_started: Vec<String>,
    /// Hosts (supervisors) stopped.
    pub hosts_stopped: Vec<String>,
    /// Hosts whose sessions were replaced for new settings or a new hop.
    pub hosts_reconnected: Vec<String>,
    /// Settings that take effect only when the daemon restarts.
    pub needs_restart: Vec<String>,
}

impl Reloaded {
    fn from(plan: Plan, hosts: HostChanges) -> Self {
        Self {
            forwards_removed: plan.forwards_removed,
            forwards_added: plan.forwards_added,
            forwards_changed: plan.forwards_changed,
            hosts_started: hosts.started,
            hosts_stopped: hosts.stopped,
            hosts_reconnected: hosts.reconnected,
            needs_restart: plan.needs_restart,
        }
    }

    /// One line per change, for logs and `warren reload`.
    pub fn lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut each = |what: &str, names: &[String]| {
            out.extend(names.iter().map(|n| format!("{what} {n}")));
        };
        each("forward removed:", &self.forwards_removed);
        each("forward changed, restarted:", &self.forwards_changed);
        each("forward added:", &self.forwards_added);
        each("host disconnected:", &self.hosts_stopped);
        each(
            "host reconnected with new settings:",
            &self.hosts_reconnected,
        );
        each("host connected:", &self.hosts_started);
        for what in &self.needs_restart {
            out.push(format!("not applied until restart: {what}"));
        }
        if out.is_empty() {
            out.push("no changes".into());
        }
        out
    }
}

/// A running daemon.
pub struct Daemon {
    config: Config,
    root: CancellationToken,
    stop_accepting: CancellationToken,
    cut: CancellationToken,
    tasks: TaskTracker,
    connections: TaskTracker,
    supervisors: Supervisors,
    hosts: BTreeMap<String, HostHandle>,
    forwards: Vec<ForwardRuntime>,
    running: HashMap<String, Running>,
    published: watch::Sender<ControlState>,
}

/// What stops one forward alone.
struct Running {
    /// Stop accepting (cancel the remote listener).
    stop: CancellationToken,
    /// Close its open connections.
    cut: CancellationToken,
    /// Its accept loop (or remote-forward task); its end releases the ingress.
    task: JoinHandle<()>,
}

/// The ingress of a forward being started.
enum Ingress {
    /// Bound already.
    Bound(Listener),
    /// Not bound (a forward added by a reload): why, and retried until it binds.
    Retry(BindAddr, String),
    /// None here (a remote forward).
    None,
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
        // Bind first: a failure must leave nothing running.
        let mut bound = HashMap::new();
        for f in &config.forwards {
            let Some(addr) = ingress_of(f) else { continue };
            let listener = bind(addr, f.socket_mode, &mut inherited)
                .await
                .map_err(|error| StartError::Bind {
                    forward: f.name.clone(),
                    addr: addr.clone(),
                    error,
                })?;
            bound.insert(f.name.clone(), listener);
        }

        let root = CancellationToken::new();
        let tasks = TaskTracker::new();
        let supervisors = Supervisors::start(config, &tasks, &root).await;
        let (published, _) = watch::channel(ControlState::default());
        let mut daemon = Self {
            config: config.clone(),
            stop_accepting: root.child_token(),
            cut: root.child_token(),
            root,
            tasks,
            connections: TaskTracker::new(),
            hosts: supervisors.by_name(),
            supervisors,
            forwards: Vec::new(),
            running: HashMap::new(),
            published,
        };
        for f in &config.forwards {
            let ingress = bound.remove(&f.name).map_or(Ingress::None, Ingress::Bound);
            daemon.start_forward(f, ingress);
        }
        daemon.publish();
        Ok(daemon)
    }

    /// Applies a new, valid configuration by difference (SPEC section 3, reload): forwards
    /// removed or changed stop and close their connections, forwards added or changed
    /// start, hosts whose settings changed reconnect, hosts no longer needed disconnect;
    /// everything else — sessions, ingresses, open connections — is left alone. An added
    /// ingress that cannot be bound is reported in status and retried; it stops nothing.
    pub async fn reload(&mut self, new: Config) -> Reloaded {
        self.reload_with(new, HashMap::new()).await
    }

    /// Like [`Daemon::reload`], adopting already-bound TCP listeners for added ingresses.
    pub async fn reload_with(
        &mut self,
        new: Config,
        mut inherited: HashMap<SocketAddr, std::net::TcpListener>,
    ) -> Reloaded {
        let plan = crate::config::diff(&self.config, &new);
        // Stop first, so that an ingress or server address moving between forwards is free
        // before it is bound again.
        for name in plan.forwards_removed.iter().chain(&plan.forwards_changed) {
            self.stop_forward(name).await;
        }
        self.forwards.retain(|f| {
            !plan.forwards_removed.contains(&f.config.name)
                && !plan.forwards_changed.contains(&f.config.name)
        });
        let hosts = self.supervisors.update(&new, &self.tasks, &self.root).await;
        self.hosts = self.supervisors.by_name();
        for f in &new.forwards {
            if !plan.forwards_added.contains(&f.name) && !plan.forwards_changed.contains(&f.name) {
                continue;
            }
            let ingress = match ingress_of(f) {
                None => Ingress::None,
                Some(addr) => match bind(addr, f.socket_mode, &mut inherited).await {
                    Ok(l) => Ingress::Bound(l),
                    Err(e) => Ingress::Retry(addr.clone(), format!("cannot listen on {addr}: {e}")),
                },
            };
            self.start_forward(f, ingress);
        }
        // Status lists forwards in file order.
        let order: HashMap<&str, usize> = new
            .forwards
            .iter()
            .enumerate()
            .map(|(i, f)| (f.name.as_str(), i))
            .collect();
        self.forwards.sort_by_key(|f| {
            order
                .get(f.config.name.as_str())
                .copied()
                .unwrap_or(usize::MAX)
        });
        self.config = new;
        self.publish();
        Reloaded::from(plan, hosts)
    }

    /// The configuration running now.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// What the control socket reports on, updated on every reload.
    pub fn watch_control_state(&self) -> watch::Receiver<ControlState> {
        self.published.subscribe()
    }

    fn publish(&self) {
        self.published.send_replace(self.control_state());
    }

    /// Starts forward `f` on its host's supervisor.
    fn start_forward(&mut self, f: &ForwardConfig, ingress: Ingress) {
        let Some(host) = self.hosts.get(&f.host).cloned() else {
            return;
        };
        let bound = match &ingress {
            Ingress::Bound(l) => l.local_addr().ok(),
            _ => None,
        };
        let runtime = ForwardRuntime::new(f.clone(), bound);
        let stop = self.stop_accepting.child_token();
        let cut = self.cut.child_token();
        let span = info_span!("forward", forward = %f.name);
        let task = match (&f.spec, ingress) {
            (ForwardSpec::Remote { listen, connect }, _) => {
                let serve = remote::Serve {
                    forward: runtime.clone(),
                    listen: listen.clone(),
                    egress: connect.clone(),
                    host,
                    stop: stop.clone(),
                    cut: cut.clone(),
                    connections: self.connections.clone(),
                };
                self.tasks.spawn(remote::serve(serve).instrument(span))
            }
            (_, Ingress::None) => return,
            (_, Ingress::Bound(listener)) => {
                let serve = local::Serve {
                    forward: runtime.clone(),
                    listener,
                    host,
                    stop_accepting: stop.clone(),
                    cut: cut.clone(),
                    connections: self.connections.clone(),
                };
                self.tasks.spawn(serve_ingress(serve).instrument(span))
            }
            (_, Ingress::Retry(addr, error)) => {
                warn!(forward = %f.name, error = %error, "forward failed; retrying");
                runtime.set_status(|st| {
                    st.state = ForwardState::Failed;
                    st.last_error = Some(error);
                });
                let retry = Rebind {
                    addr,
                    forward: runtime.clone(),
                    host,
                    stop: stop.clone(),
                    cut: cut.clone(),
                    connections: self.connections.clone(),
                };
                self.tasks.spawn(retry.run().instrument(span))
            }
        };
        self.forwards.push(runtime);
        self.running
            .insert(f.name.clone(), Running { stop, cut, task });
    }

    /// Stops forward `name`: its ingress closes (its remote listener is cancelled) and its
    /// open connections are closed.
    async fn stop_forward(&mut self, name: &str) {
        let Some(r) = self.running.remove(name) else {
            return;
        };
        r.stop.cancel();
        r.cut.cancel();
        if tokio::time::timeout(FORWARD_STOP_LIMIT, r.task)
            .await
            .is_err()
        {
            warn!(forward = %name, "the forward did not stop in time");
        }
        info!(forward = %name, "forward stopped");
    }

    /// The forwards, with their bound addresses and counters.
    pub fn forwards(&self) -> &[ForwardRuntime] {
        &self.forwards
    }

    /// The supervisor handle of host `name`.
    pub fn host(&self, name: &str) -> Option<&HostHandle> {
        self.hosts.get(name)
    }

    /// What the control socket reports on now.
    pub fn control_state(&self) -> ControlState {
        ControlState {
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

/// The ingress on this machine of a local or dynamic forward.
fn ingress_of(f: &ForwardConfig) -> Option<&BindAddr> {
    match &f.spec {
        ForwardSpec::Local { listen, .. } | ForwardSpec::Dynamic { listen } => Some(listen),
        ForwardSpec::Remote { .. } => None,
    }
}

/// Binds `addr`, adopting the listener of `inherited` bound there already, if any.
async fn bind(
    addr: &BindAddr,
    mode: u32,
    inherited: &mut HashMap<SocketAddr, std::net::TcpListener>,
) -> std::io::Result<Listener> {
    let adopt = match addr {
        BindAddr::Tcp(a) => inherited.remove(a),
        BindAddr::Unix(_) => None,
    };
    Listener::bind(addr, mode, adopt).await
}

/// Serves a bound local or dynamic ingress until its forward stops.
async fn serve_ingress(serve: local::Serve) {
    let listen = serve.forward.bound.as_ref().map_or_else(
        || serve.forward.config.spec.listen_text(),
        ToString::to_string,
    );
    match serve.forward.config.spec.clone() {
        ForwardSpec::Local { connect, .. } => {
            info!(listen = %listen, connect = %connect, "listening");
            local::serve(serve, connect).await;
        }
        ForwardSpec::Dynamic { .. } => {
            info!(listen = %listen, "socks listening");
            dynamic::serve(serve).await;
        }
        ForwardSpec::Remote { .. } => {}
    }
}

/// A forward added by a reload whose ingress could not be bound: failed in status, and
/// bound again with backoff until it works or the forward stops.
struct Rebind {
    addr: BindAddr,
    forward: ForwardRuntime,
    host: HostHandle,
    stop: CancellationToken,
    cut: CancellationToken,
    connections: TaskTracker,
}

impl Rebind {
    async fn run(self) {
        let mut backoff = Backoff::new(REBIND_MIN, REBIND_MAX);
        let listener = loop {
            tokio::select! {
                () = self.stop.cancelled() => return,
                () = tokio::time::sleep(backoff.next_delay()) => {}
            }
            match Listener::bind(&self.addr, self.forward.config.socket_mode, None).await {
                Ok(l) => break l,
                Err(e) => {
                    let msg = format!("cannot listen on {}: {e}", self.addr);
                    debug!(error = %msg, "ingress still unavailable");
                    self.forward.set_status(|st| st.last_error = Some(msg));
                }
            }
        };
        info!(listen = %self.addr, "ingress bound after all");
        self.forward.set_status(|st| {
            st.state = ForwardState::Waiting;
            st.last_error = None;
        });
        let serve = local::Serve {
            forward: self.forward,
            listener,
            host: self.host,
            stop_accepting: self.stop,
            cut: self.cut,
            connections: self.connections,
        };
        serve_ingress(serve).await;
    }
}
