//! Moving bytes between a client socket and an SSH channel: both directions, half-close
//! kept (EOF one way does not cut the other), every byte counted for status.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::Counters;

/// Buffer per direction: large enough for SSH's 32 KiB packets to go through whole.
const BUF: usize = 64 * 1024;

/// Copies both ways until both sides have finished; returns (bytes in, bytes out), where
/// "in" is what the ingress side sent towards the egress side.
pub async fn splice<C, S>(client: C, channel: S, counters: &Arc<Counters>) -> io::Result<(u64, u64)>
where
    C: AsyncRead + AsyncWrite + Unpin,
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut client = Counted {
        inner: client,
        counter: Arc::clone(counters),
        field: |c| &c.bytes_in,
    };
    let mut channel = Counted {
        inner: channel,
        counter: Arc::clone(counters),
        field: |c| &c.bytes_out,
    };
    tokio::io::copy_bidirectional_with_sizes(&mut client, &mut channel, BUF, BUF).await
}

/// A stream whose reads are added to one of the forward's counters as they happen.
struct Counted<S> {
    inner: S,
    counter: Arc<Counters>,
    field: fn(&Counters) -> &AtomicU64,
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        if read > 0 {
            (self.field)(&self.counter).fetch_add(read as u64, Ordering::Relaxed);
        }
        res
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn counts_both_ways_and_keeps_half_close() {
        let counters = Arc::new(Counters::default());
        let (mut app, client_side) = tokio::io::duplex(1024);
        let (channel_side, mut server) = tokio::io::duplex(1024);
        let task = tokio::spawn({
            let counters = counters.clone();
            async move { splice(client_side, channel_side, &counters).await }
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
        let (i, o) = tokio::time::timeout(std::time::Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!((i, o), (5000, 7000));
        assert_eq!(counters.bytes_in.load(Ordering::Relaxed), 5000);
        assert_eq!(counters.bytes_out.load(Ordering::Relaxed), 7000);
    }
}
