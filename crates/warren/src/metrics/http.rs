//! `GET /metrics` over HTTP/1.1 (hyper) on the `[daemon] metrics_listen` address, TCP or a
//! Unix socket. Bounded like the control socket: a few clients at a time, each with a
//! deadline for its request head and for its whole connection, so clients that connect and
//! say nothing cannot shut the scraper out for long.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{ALLOW, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::config::BindAddr;
use crate::control::ControlState;
use crate::forward::listener::Listener;

/// Connections served at once; more wait in the kernel's backlog.
const MAX_CLIENTS: usize = 16;
/// How long a client may take to send a request head (also the idle time allowed between
/// requests on a kept-alive connection).
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest a connection lives; a scraper reconnects.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(300);
/// The OpenMetrics text format `prometheus-client` encodes (Prometheus scrapes it).
pub const CONTENT_TYPE_METRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The bound metrics listener.
pub struct MetricsServer {
    listener: Listener,
}

impl MetricsServer {
    /// Binds `addr`; a Unix socket gets `mode` (and the group `gid`, when given).
    pub async fn bind(addr: &BindAddr, mode: u32, gid: Option<u32>) -> std::io::Result<Self> {
        Ok(Self {
            listener: Listener::bind(addr, mode, gid).await?,
        })
    }

    /// Adopts the listener handed over by the process an upgrade replaces.
    pub fn adopt(passed: crate::handover::PassedListener) -> std::io::Result<Self> {
        Ok(Self {
            listener: Listener::adopt(passed)?,
        })
    }

    /// A duplicate of the listener's descriptor, for an upgrade.
    pub fn handover_fd(&self) -> std::io::Result<crate::forward::listener::HandoverFd> {
        self.listener.handover_fd()
    }

    /// Where it listens (the real port when port 0 was asked for).
    pub fn local_addr(&self) -> std::io::Result<BindAddr> {
        self.listener.local_addr()
    }

    /// Answers scrapes of the daemon's `state` until `stop` fires.
    pub async fn serve(self, state: watch::Receiver<ControlState>, stop: CancellationToken) {
        let clients = Arc::new(Semaphore::new(MAX_CLIENTS));
        loop {
            let accepted = tokio::select! {
                () = stop.cancelled() => break,
                r = async {
                    let permit = clients.clone().acquire_owned().await;
                    (permit, self.listener.accept().await)
                } => r,
            };
            match accepted {
                (Ok(permit), Ok((stream, _))) => {
                    let state = state.clone();
                    let stop = stop.clone();
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(move |req| {
                            std::future::ready(Ok::<_, Infallible>(answer(&req, &state)))
                        });
                        let conn = hyper::server::conn::http1::Builder::new()
                            .timer(TokioTimer::new())
                            .header_read_timeout(HEAD_TIMEOUT)
                            .max_buf_size(64 * 1024)
                            .serve_connection(TokioIo::new(stream), service);
                        tokio::select! {
                            () = stop.cancelled() => {}
                            r = tokio::time::timeout(CONNECTION_LIFETIME, conn) => {
                                if let Ok(Err(e)) = r {
                                    debug!(error = %e, "metrics client dropped");
                                }
                            }
                        }
                        drop(permit);
                    });
                }
                (Err(_), _) => break,
                (_, Err(e)) => {
                    warn!(error = %e, "metrics accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

/// The answer to one request: the metrics for `GET /metrics` (and `HEAD`), 404 for another
/// path, 405 for another method.
fn answer<B>(req: &Request<B>, state: &watch::Receiver<ControlState>) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, body: String| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        r
    };
    if req.uri().path() != "/metrics" {
        return reply(
            StatusCode::NOT_FOUND,
            "not found; the metrics are at /metrics\n".into(),
        );
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "only GET and HEAD are answered\n".into(),
        );
        r.headers_mut()
            .insert(ALLOW, hyper::header::HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let mut r = reply(StatusCode::OK, super::render(state));
    r.headers_mut().insert(
        CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(CONTENT_TYPE_METRICS),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Sends `request` (one request, `Connection: close`) and reads the whole answer.
    async fn ask(addr: &BindAddr, request: &str) -> String {
        let BindAddr::Tcp(at) = addr else {
            panic!("a TCP address")
        };
        let mut s = tokio::net::TcpStream::connect(at).await.unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).await.unwrap();
        answer
    }

    async fn server() -> (BindAddr, CancellationToken) {
        let m = MetricsServer::bind(&BindAddr::Tcp("127.0.0.1:0".parse().unwrap()), 0o600, None)
            .await
            .unwrap();
        let addr = m.local_addr().unwrap();
        let (_tx, rx) = watch::channel(ControlState::default());
        let stop = CancellationToken::new();
        tokio::spawn(m.serve(rx, stop.clone()));
        (addr, stop)
    }

    #[tokio::test]
    async fn get_metrics_is_openmetrics_other_paths_404_other_methods_405() {
        let (addr, stop) = server().await;
        let ok = ask(
            &addr,
            "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(
            ok.contains(&format!("content-type: {CONTENT_TYPE_METRICS}\r\n")),
            "{ok}"
        );
        assert!(ok.contains("# TYPE warren_host_up gauge\n"), "{ok}");
        assert!(ok.ends_with("# EOF\n"), "{ok}");
        let other = ask(
            &addr,
            "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(other.starts_with("HTTP/1.1 404 Not Found\r\n"), "{other}");
        let post = ask(
            &addr,
            "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(
            post.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"),
            "{post}"
        );
        assert!(post.contains("allow: GET, HEAD\r\n"), "{post}");
        stop.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_sends_nothing_is_dropped_after_the_head_timeout() {
        let (addr, stop) = server().await;
        let BindAddr::Tcp(at) = addr else {
            panic!("a TCP address")
        };
        let mut silent = tokio::net::TcpStream::connect(at).await.unwrap();
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(HEAD_TIMEOUT * 2, silent.read(&mut buf)).await;
        // Closed (0), reset, or told 408 before the close: anything but still waiting.
        assert!(
            read.is_ok(),
            "the silent client was still connected after {:?}",
            HEAD_TIMEOUT * 2
        );
        stop.cancel();
    }
}
