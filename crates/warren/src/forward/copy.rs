//! Moving bytes between a socket on this machine and an SSH channel: both directions,
//! half-close kept (EOF one way does not cut the other), every byte counted for status.
//!
//! Back-pressure is the SSH window's: warren's russh (vendor/russh) re-opens a channel's
//! window only as its reader takes the data, so a local peer that reads slowly slows only
//! its own channel, and what it can pin is bounded by the window (`window_size` of the
//! russh config) plus one copy buffer. A peer that accepts nothing at all for
//! [`Limits::stall`] while data waits for it is taken for gone, and its connection closed.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::Counters;

/// First size of a direction's buffer: an idle or interactive connection never needs more,
/// and at ten thousand connections every byte of it counts twice.
const BUF_MIN: usize = 2 * 1024;

/// Largest size, reached by doubling each time a read fills the buffer: large enough for
/// SSH's 32 KiB packets to pass whole, two at a time.
const BUF_MAX: usize = 64 * 1024;

/// A read buffer that starts small and grows while reads fill it. Its bytes are never zeroed
/// (reads go into spare capacity), so a buffer costs memory only where data has been.
struct Buf(Vec<u8>);

impl Buf {
    fn new() -> Self {
        Self(Vec::with_capacity(BUF_MIN))
    }

    /// Reads once into the buffer (replacing what it held); the bytes read.
    async fn read_from<R: AsyncRead + Unpin>(&mut self, r: &mut R) -> io::Result<usize> {
        let cap = self.0.capacity();
        if self.0.len() == cap && cap < BUF_MAX {
            // The last read filled the buffer: more is probably waiting.
            self.0 = Vec::with_capacity((cap * 2).min(BUF_MAX));
        }
        self.0.clear();
        r.read_buf(&mut self.0).await
    }

    fn bytes(&self) -> &[u8] {
        &self.0
    }
}

/// How long a local peer may accept nothing while channel data waits for it.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The longest a write to the local peer may make no progress.
    pub stall: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            stall: Duration::from_secs(60),
        }
    }
}

/// Which end of a connection is its ingress, for the in/out counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ingress {
    /// The local socket accepted the connection (local and dynamic forwards).
    Local,
    /// The channel brought it (remote forwards).
    Channel,
}

/// Copies both ways until both directions have finished; returns (bytes from the local
/// socket to the channel, bytes from the channel to the local socket).
pub async fn splice<L, C>(
    local: L,
    channel: C,
    counters: &Arc<Counters>,
    ingress: Ingress,
) -> io::Result<(u64, u64)>
where
    L: AsyncRead + AsyncWrite,
    C: AsyncRead + AsyncWrite,
{
    splice_with(local, channel, counters, ingress, Limits::default()).await
}

/// [`splice`] with explicit read-ahead limits.
pub async fn splice_with<L, C>(
    local: L,
    channel: C,
    counters: &Arc<Counters>,
    ingress: Ingress,
    limits: Limits,
) -> io::Result<(u64, u64)>
where
    L: AsyncRead + AsyncWrite,
    C: AsyncRead + AsyncWrite,
{
    let (to_channel, from_channel) = match ingress {
        Ingress::Local => (&counters.bytes_in, &counters.bytes_out),
        Ingress::Channel => (&counters.bytes_out, &counters.bytes_in),
    };
    let (mut local_r, mut local_w) = tokio::io::split(local);
    let (mut chan_r, mut chan_w) = tokio::io::split(channel);
    let up = copy_counted(&mut local_r, &mut chan_w, to_channel);
    let down = drain(&mut chan_r, &mut local_w, from_channel, limits);
    tokio::try_join!(up, down)
}

/// A plain copy (the channel's own window gives back-pressure here), then EOF downstream.
async fn copy_counted<R, W>(r: &mut R, w: &mut W, counter: &AtomicU64) -> io::Result<u64>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = Buf::new();
    let mut total = 0u64;
    loop {
        let n = buf.read_from(r).await?;
        if n == 0 {
            break;
        }
        w.write_all(buf.bytes()).await?;
        total += n as u64;
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }
    w.shutdown().await?;
    Ok(total)
}

/// Copies the channel to the local peer; a write that makes no progress for
/// `limits.stall` ends the connection.
async fn drain<R, W>(
    chan: &mut R,
    local: &mut W,
    counter: &AtomicU64,
    limits: Limits,
) -> io::Result<u64>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = Buf::new();
    let mut total = 0u64;
    loop {
        let n = buf.read_from(chan).await?;
        if n == 0 {
            local.shutdown().await?;
            return Ok(total);
        }
        let mut done = 0;
        while done < n {
            let wrote = tokio::time::timeout(limits.stall, local.write(&buf.bytes()[done..n]))
                .await
                .map_err(|_| {
                    io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("the local peer accepted nothing for {:?}", limits.stall),
                    )
                })??;
            if wrote == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            done += wrote;
            counter.fetch_add(wrote as u64, Ordering::Relaxed);
        }
        total += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::duplex;

    #[tokio::test]
    async fn counts_both_ways_and_keeps_half_close() {
        let counters = Arc::new(Counters::default());
        let (mut app, local) = duplex(64 * 1024);
        let (channel, mut server) = duplex(64 * 1024);
        let task = tokio::spawn({
            let counters = counters.clone();
            async move { splice(local, channel, &counters, Ingress::Local).await }
        });
        app.write_all(&[1u8; 5000]).await.unwrap();
        app.shutdown().await.unwrap();
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.unwrap();
        assert_eq!(got.len(), 5000, "client EOF reached the server");
        // The other direction still flows after the client's EOF.
        server.write_all(&[2u8; 7000]).await.unwrap();
        server.shutdown().await.unwrap();
        let mut back = Vec::new();
        app.read_to_end(&mut back).await.unwrap();
        assert_eq!(back.len(), 7000);
        let done = tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(done.unwrap(), (5000, 7000));
        assert_eq!(counters.bytes_in.load(Ordering::Relaxed), 5000);
        assert_eq!(counters.bytes_out.load(Ordering::Relaxed), 7000);
    }

    #[tokio::test]
    async fn a_peer_that_never_reads_is_closed_after_the_stall() {
        let counters = Arc::new(Counters::default());
        let limits = Limits {
            stall: Duration::from_millis(300),
        };
        // The local peer never reads; its socket buffer is tiny.
        let (_idle_app, local) = duplex(1024);
        let (channel, mut server) = duplex(16 * 1024);
        let task = tokio::spawn({
            let counters = counters.clone();
            async move { splice_with(local, channel, &counters, Ingress::Local, limits).await }
        });
        // Back-pressure: the far end can write only what the buffers hold.
        let chunk = vec![7u8; 16 * 1024];
        let mut sent = 0usize;
        while tokio::time::timeout(Duration::from_millis(100), server.write_all(&chunk))
            .await
            .is_ok()
        {
            sent += chunk.len();
            assert!(sent <= 256 * 1024, "no back-pressure: {sent}");
        }
        let started = std::time::Instant::now();
        let result = tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
        let e = result.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn a_slow_reader_keeps_its_connection_and_gets_every_byte() {
        let counters = Arc::new(Counters::default());
        let limits = Limits {
            stall: Duration::from_millis(500),
        };
        let (mut app, local) = duplex(4096);
        let (channel, mut server) = duplex(4096);
        let task = tokio::spawn({
            let counters = counters.clone();
            async move { splice_with(local, channel, &counters, Ingress::Local, limits).await }
        });
        let len = 2 * 1024 * 1024;
        let writer = tokio::spawn(async move {
            server.write_all(&vec![3u8; len]).await.unwrap();
            server.shutdown().await.unwrap();
            server
        });
        // Reads in small sips with pauses shorter than the stall limit: slow, never stalled.
        let mut got = 0usize;
        let mut sip = [0u8; 64 * 1024];
        loop {
            let n = app.read(&mut sip).await.unwrap();
            if n == 0 {
                break;
            }
            got += n;
            if got % (256 * 1024) < n {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        assert_eq!(got, len);
        drop(app);
        let _server = writer.await.unwrap();
        let _ = tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap();
        assert_eq!(counters.bytes_out.load(Ordering::Relaxed), len as u64);
    }

    #[tokio::test]
    async fn remote_ingress_counts_the_channel_as_in() {
        let counters = Arc::new(Counters::default());
        let (mut egress_peer, local) = duplex(1024);
        let (channel, mut remote_client) = duplex(1024);
        let task = tokio::spawn({
            let counters = counters.clone();
            async move { splice(local, channel, &counters, Ingress::Channel).await }
        });
        remote_client.write_all(&[1u8; 300]).await.unwrap();
        remote_client.shutdown().await.unwrap();
        let mut got = Vec::new();
        egress_peer.read_to_end(&mut got).await.unwrap();
        egress_peer.shutdown().await.unwrap();
        drop(egress_peer);
        let _ = tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap();
        assert_eq!(counters.bytes_in.load(Ordering::Relaxed), 300);
        assert_eq!(counters.bytes_out.load(Ordering::Relaxed), 0);
    }
}
