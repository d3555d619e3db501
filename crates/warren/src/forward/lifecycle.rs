//! The life of every forward: its ingress bound before anything starts (or, for a forward a
//! reload added, bound again with backoff until it works), its task started on its host's
//! supervisor, stopped alone on a reload, and all of them drained on shutdown.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, info_span, warn};

use super::listener::Listener;
use super::{Context, ForwardRuntime, ForwardState, dynamic, local, remote};
use crate::config::{BindAddr, Config, ForwardConfig, ForwardSpec};
use crate::session::{Backoff, HostHandle};

/// How long a stopped forward's task may take to release its ingress.
const STOP_LIMIT: Duration = Duration::from_secs(5);
/// Retry delays of an ingress that a reload added and that could not be bound.
const REBIND_MIN: Duration = Duration::from_secs(1);
const REBIND_MAX: Duration = Duration::from_secs(30);

/// TCP listeners bound already (by a service manager or a test), by address.
pub type Inherited = HashMap<SocketAddr, std::net::TcpListener>;

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
}

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
    /// `inherited` listeners; nothing stays bound when one fails.
    pub async fn bind_all(
        config: &Config,
        inherited: &mut Inherited,
    ) -> Result<HashMap<String, Listener>, StartError> {
        let mut bound = HashMap::new();
        for f in &config.forwards {
            let Some(addr) = ingress_of(f) else { continue };
            let listener = bind(addr, f.socket_mode, inherited)
                .await
                .map_err(|error| StartError::Bind {
                    forward: f.name.clone(),
                    addr: addr.clone(),
                    error,
                })?;
            bound.insert(f.name.clone(), listener);
        }
        Ok(bound)
    }

    /// Binds the ingress of `f` (a forward a reload added or changed); a failure is kept in
    /// its status and retried, and stops nothing else.
    pub async fn bind_or_retry(f: &ForwardConfig, inherited: &mut Inherited) -> Ingress {
        match ingress_of(f) {
            None => Ingress::None,
            Some(addr) => match bind(addr, f.socket_mode, inherited).await {
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
                self.tasks.spawn(rebind(cx, addr).instrument(span))
            }
            ingress => self.tasks.spawn(run(cx, ingress).instrument(span)),
        };
        self.list.push(runtime);
        self.running
            .insert(f.name.clone(), Running { stop, cut, task });
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
        ForwardSpec::Remote { .. } => None,
    }
}

/// Binds `addr`, adopting the listener of `inherited` bound there already, if any.
async fn bind(addr: &BindAddr, mode: u32, inherited: &mut Inherited) -> std::io::Result<Listener> {
    let adopt = match addr {
        BindAddr::Tcp(a) => inherited.remove(a),
        BindAddr::Unix(_) => None,
    };
    Listener::bind(addr, mode, adopt).await
}

/// Runs a forward of any kind until it is stopped: the one place that tells the kinds apart.
async fn run(cx: Context, ingress: Ingress) {
    let spec = cx.forward.config.spec.clone();
    match (spec, ingress) {
        (ForwardSpec::Remote { listen, connect }, _) => remote::serve(cx, listen, connect).await,
        (ForwardSpec::Local { connect, .. }, Ingress::Bound(listener)) => {
            info!(listen = %listen_of(&cx), connect = %connect, "listening");
            local::serve(cx, listener, connect).await;
        }
        (ForwardSpec::Dynamic { .. }, Ingress::Bound(listener)) => {
            info!(listen = %listen_of(&cx), "socks listening");
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

/// A forward added by a reload whose ingress could not be bound: failed in status, and bound
/// again with backoff until it works or the forward stops.
async fn rebind(cx: Context, addr: BindAddr) {
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
    cx.forward.set_status(|st| {
        st.state = ForwardState::Waiting;
        st.last_error = None;
    });
    run(cx, Ingress::Bound(listener)).await;
}
