//! Moving bytes between a socket on this machine and an SSH channel: both directions,
//! half-close kept (EOF one way does not cut the other), every byte counted for status.
//!
//! Back-pressure is the SSH window's: warren's russh (vendor/russh) re-opens a channel's
//! window only as its reader takes the data, so a local peer that reads slowly slows only
//! its own channel, and what it can pin is bounded by the window (`window_size` of the
//! russh config) plus one batch ([`BATCH`], and the packet that crossed it). A peer that
//! accepts nothing at all for [`Limits::stall`] while data waits for it is taken for gone,
//! and its connection closed.
//!
//! Channel data is not copied on its way to the local peer: the chunks russh received
//! (slices of the decrypted SSH packets) are written as they are, every chunk already
//! queued gathered into one `writev`.

use std::future::Future;
use std::io::{self, IoSlice};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Buf as _, Bytes, BytesMut};
use russh::{ChannelCloseOnDrop, ChannelId, ChannelMsg, ChannelRx, ChannelStream, ChannelTx};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::Counters;

/// The channel end of a connection.
pub trait Channel {
    /// Its data, in the chunks it arrived in.
    type Reader: Chunks + Send;
    /// Takes data to send in chunks, without copying them.
    type Writer: ChunkWrite + Send;
    /// The two halves, used at the same time.
    fn into_split(self) -> (Self::Reader, Self::Writer);
}

/// Data read in the chunks it arrived in, handed over without a copy.
pub trait Chunks {
    /// Waits for data, then appends to `out` every non-empty chunk already there while `out`
    /// holds less than `max` bytes (and, from a russh channel, fewer than `SLICES` chunks:
    /// a flood of tiny packets is not gathered beyond one `writev`); false at end of file
    /// (nothing appended).
    fn next_chunks(
        &mut self,
        out: &mut Vec<Bytes>,
        max: usize,
    ) -> impl Future<Output = io::Result<bool>> + Send;
}

/// Data sent in chunks handed over whole (no copy).
pub trait ChunkWrite {
    /// Sends `data`, waiting for the window as needed.
    fn write_chunk(&mut self, data: Bytes) -> impl Future<Output = io::Result<()>> + Send;
    /// Sends end of file.
    fn finish(&mut self) -> impl Future<Output = io::Result<()>> + Send;
}

impl<S> Channel for ChannelStream<S>
where
    S: From<(ChannelId, ChannelMsg)> + Send + Sync + 'static,
{
    type Reader = ChannelRx<ChannelCloseOnDrop<S>>;
    type Writer = ChannelTx<S>;

    fn into_split(self) -> (Self::Reader, Self::Writer) {
        ChannelStream::into_split(self)
    }
}

impl<S> Chunks for ChannelRx<ChannelCloseOnDrop<S>>
where
    S: From<(ChannelId, ChannelMsg)> + Send + Sync + 'static,
{
    async fn next_chunks(&mut self, out: &mut Vec<Bytes>, max: usize) -> io::Result<bool> {
        Ok(self.read_chunks(out, max, SLICES).await)
    }
}

impl<S> ChunkWrite for ChannelTx<S>
where
    S: From<(ChannelId, ChannelMsg)> + Send + Sync + 'static,
{
    async fn write_chunk(&mut self, data: Bytes) -> io::Result<()> {
        self.write_bytes(data).await
    }

    async fn finish(&mut self) -> io::Result<()> {
        self.shutdown().await
    }
}

/// Most bytes of channel data gathered for one write to the local peer: whatever queued
/// while the session task read the SSH connection goes out in one system call.
const BATCH: usize = 256 * 1024;

/// Chunks given to one `writev`.
const SLICES: usize = 64;

/// First size of the buffer that local data is read into: an idle or interactive
/// connection never needs more, and at ten thousand connections every byte of it counts.
const BUF_MIN: usize = 2 * 1024;

/// Largest size, reached by doubling each time a read fills the buffer.
const BUF_MAX: usize = 64 * 1024;

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
    C: Channel,
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
    C: Channel,
{
    let (to_channel, from_channel) = match ingress {
        Ingress::Local => (&counters.bytes_in, &counters.bytes_out),
        Ingress::Channel => (&counters.bytes_out, &counters.bytes_in),
    };
    let (mut local_r, mut local_w) = tokio::io::split(local);
    let (mut chan_r, mut chan_w) = channel.into_split();
    let up = copy_counted(&mut local_r, &mut chan_w, to_channel);
    let down = drain(&mut chan_r, &mut local_w, from_channel, limits);
    tokio::try_join!(up, down)
}

/// Local data to the channel (whose window gives back-pressure), then EOF. Each read is
/// handed to the channel as it is; its buffer comes back for the next read once the session
/// has sent it (`BytesMut::reserve` reclaims it), and grows while reads fill it.
async fn copy_counted<R, W>(r: &mut R, w: &mut W, counter: &AtomicU64) -> io::Result<u64>
where
    R: AsyncRead + Unpin,
    W: ChunkWrite,
{
    let mut buf = BytesMut::new();
    let mut size = BUF_MIN;
    let mut total = 0u64;
    loop {
        buf.reserve(size);
        let n = r.read_buf(&mut buf).await?;
        if n == 0 {
            break;
        }
        if n >= size {
            // The read filled the buffer: more is probably waiting.
            size = (size * 2).min(BUF_MAX);
        }
        w.write_chunk(buf.split().freeze()).await?;
        total += n as u64;
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }
    w.finish().await?;
    Ok(total)
}

/// Copies the channel to the local peer, chunks as they came, every chunk already queued in
/// one write; a write that makes no progress for `limits.stall` ends the connection.
async fn drain<R, W>(
    chan: &mut R,
    local: &mut W,
    counter: &AtomicU64,
    limits: Limits,
) -> io::Result<u64>
where
    R: Chunks,
    W: AsyncWrite + Unpin,
{
    let mut chunks = Vec::new();
    let mut total = 0u64;
    loop {
        if !chan.next_chunks(&mut chunks, BATCH).await? {
            local.shutdown().await?;
            return Ok(total);
        }
        let mut first = 0;
        while let Some(pending) = chunks.get(first..).filter(|rest| !rest.is_empty()) {
            let mut slices = [IoSlice::new(&[]); SLICES];
            let n = pending
                .iter()
                .zip(&mut slices)
                .map(|(chunk, slice)| *slice = IoSlice::new(chunk))
                .count();
            let wrote = tokio::time::timeout(
                limits.stall,
                local.write_vectored(slices.get(..n).unwrap_or_default()),
            )
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
            counter.fetch_add(wrote as u64, Ordering::Relaxed);
            total += wrote as u64;
            // Drops what was written: whole chunks, then the start of a partly written one.
            let mut left = wrote;
            while let Some(chunk) = chunks.get_mut(first).filter(|_| left > 0) {
                let taken = left.min(chunk.len());
                chunk.advance(taken);
                left -= taken;
                if chunk.is_empty() {
                    first += 1;
                }
            }
        }
        chunks.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::{DuplexStream, ReadHalf, WriteHalf, duplex};

    /// An in-memory channel: its reads become chunks.
    impl Channel for DuplexStream {
        type Reader = ReadChunks;
        type Writer = WriteHalf<DuplexStream>;

        fn into_split(self) -> (Self::Reader, Self::Writer) {
            let (r, w) = tokio::io::split(self);
            (ReadChunks(r), w)
        }
    }

    impl ChunkWrite for WriteHalf<DuplexStream> {
        async fn write_chunk(&mut self, data: Bytes) -> io::Result<()> {
            self.write_all(&data).await
        }

        async fn finish(&mut self) -> io::Result<()> {
            self.shutdown().await
        }
    }

    pub struct ReadChunks(ReadHalf<DuplexStream>);

    impl Chunks for ReadChunks {
        async fn next_chunks(&mut self, out: &mut Vec<Bytes>, max: usize) -> io::Result<bool> {
            let mut buf = Vec::with_capacity(max.min(16 * 1024));
            if self.0.read_buf(&mut buf).await? == 0 {
                return Ok(false);
            }
            out.push(buf.into());
            Ok(true)
        }
    }

    /// A channel whose data arrives in the given batches of chunks, then EOF.
    struct Batches(std::collections::VecDeque<Vec<Bytes>>);

    impl Chunks for Batches {
        async fn next_chunks(&mut self, out: &mut Vec<Bytes>, _max: usize) -> io::Result<bool> {
            match self.0.pop_front() {
                Some(batch) => {
                    out.extend(batch);
                    Ok(true)
                }
                None => Ok(false),
            }
        }
    }

    /// A local peer that takes at most `step` bytes per write, across the slices of a
    /// vectored write: every write ends inside a chunk or between two.
    struct Trickle {
        got: Vec<u8>,
        step: usize,
        writes: usize,
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<io::Result<usize>> {
            self.poll_write_vectored(cx, &[IoSlice::new(buf)])
        }

        fn poll_write_vectored(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> std::task::Poll<io::Result<usize>> {
            let mut room = self.step;
            for buf in bufs {
                let take = room.min(buf.len());
                self.got.extend_from_slice(&buf[..take]);
                room -= take;
            }
            self.writes += 1;
            std::task::Poll::Ready(Ok(self.step - room))
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }

        fn poll_shutdown(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn gathered_chunks_reach_the_peer_whole_and_in_order_through_partial_writes() {
        // 100 chunks of uneven sizes in batches of up to 70 (more than one writev takes),
        // into a peer that takes 1 000 bytes per write, across chunks.
        let chunks: Vec<Bytes> = (0..100u32)
            .map(|i| {
                (0..(i * 37 % 3000 + 1))
                    .map(|j| (i * 7 + j) as u8)
                    .collect::<Vec<u8>>()
            })
            .map(Bytes::from)
            .collect();
        let expected: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
        let batches = vec![
            chunks.get(..70).unwrap().to_vec(),
            chunks.get(70..71).unwrap().to_vec(),
            chunks.get(71..).unwrap().to_vec(),
        ];
        let mut local = Trickle {
            got: Vec::new(),
            step: 1000,
            writes: 0,
        };
        let counter = AtomicU64::new(0);
        let mut chan = Batches(batches.into());
        let total = drain(&mut chan, &mut local, &counter, Limits::default())
            .await
            .unwrap();
        assert_eq!(local.got.len(), expected.len());
        assert!(local.got == expected, "bytes reordered or lost");
        assert_eq!(total, expected.len() as u64);
        assert_eq!(counter.load(Ordering::Relaxed), expected.len() as u64);
        // Each write was full but the last of each batch: the chunks were gathered.
        assert!(
            local.writes <= expected.len() / 1000 + 3,
            "{} writes",
            local.writes
        );
    }

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
