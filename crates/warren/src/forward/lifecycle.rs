//! The life of every forward: its ingress bound before anything starts (or, for a forward a
//! reload added, bound again with backoff until it works), its task started on its host's
//! supervisor, stopped alone on a reload, and all of them drained on shutdown.

use std::collections::HashMap;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, info_span, warn};

use super::listener::{HandoverFd, Listener};
use super::{Context, ForwardRuntime, ForwardState, dynamic, local, remote};
use crate::config::{BindAddr, Config, ForwardConfig, ForwardSpec};
pub use crate::handover::Inherited;
use crate::session::{Backoff, HostHandle};

/// How long a stopped forward's task may take to release its ingress.
const STOP_LIMIT: Duration = Duration::from_secs(5);
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
    /// A socket systemd passed that no forward takes.
    #[error("{0}")]
    Unmatched(String),
}

/// The ingress of a forward being started.
pub enum Ingress {
    /// Bound already.
    Bound(Listener),
    /// Not bound (a forward added by a reload): why, and retried until it binds.
    Retry(BindAddr, String),
    /// None here (a remote forward).
    None,
}

/// What stops one forward alone.
struct Running {
    /// Stop accepting (cancel the remote listener).
    stop: CancellationToken,
    /// Close its open connections.
    cut: CancellationToken,
    /// Its task; its end releases the ingress.
    task: JoinHandle<()>,
    /// A duplicate of its listening socket once bound, for an upgrade.
    handover: HandoverSlot,
}

/// Where a forward keeps the duplicate of its listening socket; dropped with the forward, so
/// a stopped forward's socket closes.
type HandoverSlot = std::sync::Arc<std::sync::Mutex<Option<HandoverFd>>>;

/// The running forwards.
pub struct Forwards {
    stop_accepting: CancellationToken,
    cut: CancellationToken,
    tasks: TaskTracker,
    connections: TaskTracker,
    running: HashMap<String, Running>,
    list: Vec<ForwardRuntime>,
}

impl Forwards {
    /// No forwards yet; their tasks go on `tasks` and stop with `root`.
    pub fn new(root: &CancellationToken, tasks: TaskTracker) -> Self {
        Self {
            stop_accepting: root.child_token(),
            cut: root.child_token(),
            tasks,
            connections: TaskTracker::new(),
            running: HashMap::new(),
            list: Vec::new(),
        }
    }

    /// Binds the ingress of every forward of `config` on this machine, adopting the
    /// `inherited` listeners; nothing stays bound when one fails, or when systemd passed a
    /// socket that no forward takes.
    pub async fn bind_all(
        config: &Config,
        inherited: &mut Inherited,
    ) -> Result<HashMap<String, Listener>, StartError> {
        let mut bound = HashMap::new();
        for f in &config.forwards {
            let Some(addr) = ingress_of(f) else { continue };
            let listener = bind(f, addr, inherited)
                .await
                .map_err(|error| StartError::Bind {
                    forward: f.name.clone(),
                    addr: addr.clone(),
                    error,
                })?;
            bound.insert(f.name.clone(), listener);
        }
        if let Some(unmatched) = inherited.unmatched() {
            return Err(StartError::Unmatched(unmatched));
        }
        Ok(bound)
    }

    /// Binds the ingress of `f` (a forward a reload added or changed); a failure is kept in
    /// its status and retried, and stops nothing else.
    pub async fn bind_or_retry(f: &ForwardConfig, inherited: &mut Inherited) -> Ingress {
        match ingress_of(f) {
            None => Ingress::None,
            Some(addr) => match bind(f, addr, inherited).await {
                Ok(l) => Ingress::Bound(l),
                Err(e) => Ingress::Retry(addr.clone(), format!("cannot listen on {addr}: {e}")),
            },
        }
    }

    /// Starts forward `f` on `host`'s supervisor.
    pub fn start(&mut self, f: &ForwardConfig, host: HostHandle, ingress: Ingress) {
        let bound = match &ingress {
            Ingress::Bound(l) => l.local_addr().ok(),
            _ => None,
        };
        let runtime = ForwardRuntime::new(f.clone(), bound);
        let handover = HandoverSlot::default();
        if let Ingress::Bound(l) = &ingress {
            keep_handover_fd(&handover, l);
        }
        let cx = Context {
            forward: runtime.clone(),
            host,
            stop: self.stop_accepting.child_token(),
            cut: self.cut.child_token(),
            connections: self.connections.clone(),
        };
        let span = info_span!("forward", forward = %f.name);
        let (stop, cut) = (cx.stop.clone(), cx.cut.clone());
        if let Some(every) = f.probe_interval {
            self.tasks
                .spawn(super::probe::run(cx.clone(), every).instrument(span.clone()));
        }
        let task = match ingress {
            Ingress::Retry(addr, error) => {
                warn!(forward = %f.name, error = %error, "forward failed; retrying");
                runtime.set_status(|st| {
                    st.state = ForwardState::Failed;
                    st.last_error = Some(error);
                });
                let slot = handover.clone();
                self.tasks.spawn(rebind(cx, addr, slot).instrument(span))
            }
            ingress => self.tasks.spawn(run(cx, ingress).instrument(span)),
        };
        self.list.push(runtime);
        self.running.insert(
            f.name.clone(),
            Running {
                stop,
                cut,
                task,
                handover,
            },
        );
    }

    /// Stops forward `name`: its ingress closes (its remote listener is cancelled) and its
    /// open connections are closed.
    pub async fn stop(&mut self, name: &str) {
        self.list.retain(|f| f.config.name != name);
        let Some(r) = self.running.remove(name) else {
            return;
        };
        r.stop.cancel();
        r.cut.cancel();
        if tokio::time::timeout(STOP_LIMIT, r.task).await.is_err() {
            warn!(forward = %name, "the forward did not stop in time");
        }
        info!(forward = %name, "forward stopped");
    }

    /// Duplicates of the listening sockets of the forwards bound here, by forward name, for
    /// an upgrade to hand over.
    pub fn handover_fds(&self) -> Vec<(String, HandoverFd)> {
        self.running
            .iter()
            .filter_map(|(name, r)| {
                let slot = r
                    .handover
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let h = slot.as_ref()?;
                let fd = h.fd.try_clone().ok()?;
                let path = h.path.clone();
                Some((
                    name.clone(),
                    HandoverFd {
                        fd,
                        owned: h.owned,
                        path,
                    },
                ))
            })
            .collect()
    }

    /// Puts the forwards in the order of `config` (status lists them in file order).
    pub fn order_as(&mut self, config: &Config) {
        let order: HashMap<&str, usize> = config
            .forwards
            .iter()
            .enumerate()
            .map(|(i, f)| (f.name.as_str(), i))
            .collect();
        self.list.sort_by_key(|f| {
            order
                .get(f.config.name.as_str())
                .copied()
                .unwrap_or(usize::MAX)
        });
    }

    /// The forwards, with their bound addresses and counters.
    pub fn list(&self) -> &[ForwardRuntime] {
        &self.list
    }

    /// Connection tasks alive now.
    pub fn open_connections(&self) -> usize {
        self.connections.len()
    }

    /// Stops accepting everywhere, lets open connections finish for up to `grace`, then cuts
    /// the rest.
    pub async fn drain(&self, grace: Duration) {
        // The duplicates kept for an upgrade would hold the ingresses open (queueing
        // connections nobody accepts): close them with the listeners.
        for r in self.running.values() {
            r.handover
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take();
        }
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
    }
}

/// The ingress on this machine of a local or dynamic forward.
fn ingress_of(f: &ForwardConfig) -> Option<&BindAddr> {
    match &f.spec {
        ForwardSpec::Local { listen, .. } | ForwardSpec::Dynamic { listen } => Some(listen),
        ForwardSpec::Remote { .. } | ForwardSpec::RemoteDynamic { .. } => None,
    }
}

/// Binds `addr` for `f`, or adopts the listener `inherited` has for it.
async fn bind(
    f: &ForwardConfig,
    addr: &BindAddr,
    inherited: &mut Inherited,
) -> std::io::Result<Listener> {
    match inherited.take(f, addr) {
        Some(passed) => {
            let l = Listener::adopt(passed)?;
            info!(forward = %f.name, listen = %l.local_addr()?, "adopted a passed listener");
            Ok(l)
        }
        None => Listener::bind(addr, f.socket_mode, None).await,
    }
}

/// Runs a forward of any kind until it is stopped: the one place that tells the kinds apart.
async fn run(cx: Context, ingress: Ingress) {
    let spec = cx.forward.config.spec.clone();
    match (spec, ingress) {
        (ForwardSpec::Remote { listen, connect }, _) => {
            remote::serve(cx, listen, remote::Egress::Fixed(connect.into())).await;
        }
        (ForwardSpec::RemoteDynamic { listen }, _) => {
            remote::serve(cx, listen, remote::Egress::Proxy).await;
        }
        (ForwardSpec::Local { connect, .. }, Ingress::Bound(listener)) => {
            info!(listen = %listen_of(&cx), connect = %connect, "listening");
            local::serve(cx, listener, connect).await;
        }
        (ForwardSpec::Dynamic { .. }, Ingress::Bound(listener)) => {
            info!(listen = %listen_of(&cx), "socks and http proxy listening");
            dynamic::serve(cx, listener).await;
        }
        (_, Ingress::None | Ingress::Retry(..)) => {
            debug!("a forward on this machine without its ingress");
        }
    }
}

fn listen_of(cx: &Context) -> String {
    cx.forward
        .bound
        .as_ref()
        .map_or_else(|| cx.forward.config.spec.listen_text(), ToString::to_string)
}

/// Keeps a duplicate of `listener`'s descriptor for an upgrade to hand over.
fn keep_handover_fd(slot: &HandoverSlot, listener: &Listener) {
    match listener.handover_fd() {
        Ok(fd) => {
            *slot
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(fd);
        }
        Err(e) => warn!(error = %e, "cannot keep the ingress for an upgrade"),
    }
}

/// A forward added by a reload whose ingress could not be bound: failed in status, and bound
/// again with backoff until it works or the forward stops.
async fn rebind(cx: Context, addr: BindAddr, handover: HandoverSlot) {
    let mut backoff = Backoff::new(REBIND_MIN, REBIND_MAX);
    let listener = loop {
        tokio::select! {
            () = cx.stop.cancelled() => return,
            () = tokio::time::sleep(backoff.next_delay()) => {}
        }
        match Listener::bind(&addr, cx.forward.config.socket_mode, None).await {
            Ok(l) => break l,
            Err(e) => {
                let msg = format!("cannot listen on {addr}: {e}");
                debug!(error = %msg, "ingress still unavailable");
                cx.forward.set_status(|st| st.last_error = Some(msg));
            }
        }
    };
    info!(listen = %addr, "ingress bound after all");
    keep_handover_fd(&handover, &listener);
    cx.forward.set_status(|st| {
        st.state = ForwardState::Waiting;
        st.last_error = None;
    });
    run(cx, Ingress::Bound(listener)).await;
}
