//! A tiny HTTP/1.1 server on 127.0.0.1:0 that serves one fixed pseudo-random body on every GET.

use std::sync::{Arc, Mutex, PoisonError};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::peers::{BoxStream, PeerAddr, PeerServer, Transport};
use super::transfer::{Digest, random_digest, write_random};

/// The largest request head the server reads.
const MAX_HEAD: usize = 16 * 1024;

/// Serves `GET <any path>` with a `body_len`-byte body and `Connection: close`.
pub struct HttpServer {
    server: PeerServer,
    body_len: u64,
    seed: u64,
    requests: Arc<Mutex<Vec<String>>>,
}

impl HttpServer {
    /// Starts the server.
    pub async fn start(body_len: u64) -> anyhow::Result<Self> {
        let seed: u64 = rand::random();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        let server = PeerServer::start(Transport::Tcp, move |stream| {
            let seen = seen.clone();
            async move {
                let _ = serve(stream, body_len, seed, &seen).await;
            }
        })
        .await?;
        Ok(HttpServer {
            server,
            body_len,
            seed,
            requests,
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> &PeerAddr {
        self.server.addr()
    }

    /// `http://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("http://{}/", self.server.addr())
    }

    /// The body length.
    pub fn body_len(&self) -> u64 {
        self.body_len
    }

    /// The SHA-256 of the body.
    pub fn body_digest(&self) -> Digest {
        random_digest(self.body_len, self.seed)
    }

    /// The request lines received so far (`GET /path HTTP/1.1`).
    pub fn requests(&self) -> Vec<String> {
        self.requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

async fn serve(
    mut stream: BoxStream,
    body_len: u64,
    seed: u64,
    seen: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 || head.len() > MAX_HEAD {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&head);
    let request_line = text.lines().next().unwrap_or_default().to_owned();
    seen.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(request_line.clone());
    if !request_line.starts_with("GET ") {
        stream
            .write_all(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .await?;
        return stream.shutdown().await;
    }
    let header = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\
         Content-Length: {body_len}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(header.as_bytes()).await?;
    write_random(&mut stream, body_len, seed).await?;
    stream.shutdown().await
}
