use std::borrow::BorrowMut;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncRead;

use super::{ChannelMsg, ChannelReadHalf};

#[derive(Debug)]
pub struct ChannelRx<R> {
    channel: R,
    buffer: Option<(ChannelMsg, usize)>,

    ext: Option<u32>,
}

impl<R> ChannelRx<R> {
    pub fn new(channel: R, ext: Option<u32>) -> Self {
        Self {
            channel,
            buffer: None,
            ext,
        }
    }
}

impl<R> ChannelRx<R>
where
    R: BorrowMut<ChannelReadHalf> + Unpin,
{
    /// warren patch: the channel's data in the chunks it arrived in (one per SSH packet),
    /// handed over without a copy (empty ones are skipped). Waits for a chunk, then takes
    /// every further chunk already queued while `out` holds less than `max_bytes` bytes and
    /// fewer than `max_chunks` chunks. Ready(false) at end of file (with nothing added); the
    /// chunks taken are reported consumed, as by `poll_read`.
    pub fn poll_chunks(
        &mut self,
        cx: &mut Context<'_>,
        out: &mut Vec<Bytes>,
        max_bytes: usize,
        max_chunks: usize,
    ) -> Poll<bool> {
        let mut held: usize = 0;
        loop {
            let (msg, idx) = match self.buffer.take() {
                Some(msg) => msg,
                None => match self.channel.borrow_mut().poll_recv(cx) {
                    Poll::Ready(Some(msg)) => (msg, 0),
                    Poll::Ready(None) => return Poll::Ready(held > 0),
                    Poll::Pending if held > 0 => return Poll::Ready(true),
                    Poll::Pending => return Poll::Pending,
                },
            };
            match (msg, self.ext) {
                (ChannelMsg::Data { data }, None) if data.len() > idx => {
                    held += data.len() - idx;
                    out.push(data.slice(idx..));
                }
                (ChannelMsg::ExtendedData { data, ext }, Some(target))
                    if ext == target && data.len() > idx =>
                {
                    held += data.len() - idx;
                    out.push(data.slice(idx..));
                }
                (ChannelMsg::Eof, _) if held > 0 => {
                    // Kept for the next call, after the data taken now.
                    self.buffer = Some((ChannelMsg::Eof, 0));
                    return Poll::Ready(true);
                }
                (ChannelMsg::Eof, _) => {
                    self.channel.borrow_mut().receiver.close();
                    return Poll::Ready(false);
                }
                _ => {}
            }
            if held >= max_bytes || out.len() >= max_chunks {
                return Poll::Ready(true);
            }
        }
    }

    /// [`Self::poll_chunks`] as a future.
    pub async fn read_chunks(
        &mut self,
        out: &mut Vec<Bytes>,
        max_bytes: usize,
        max_chunks: usize,
    ) -> bool {
        std::future::poll_fn(|cx| self.poll_chunks(cx, out, max_bytes, max_chunks)).await
    }
}

impl<R> AsyncRead for ChannelRx<R>
where
    R: BorrowMut<ChannelReadHalf> + Unpin,
{
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let (msg, mut idx) = match self.buffer.take() {
            Some(msg) => msg,
            None => match ready!(self.channel.borrow_mut().poll_recv(cx)) {
                Some(msg) => (msg, 0),
                None => return Poll::Ready(Ok(())),
            },
        };

        match (&msg, self.ext) {
            (ChannelMsg::Data { data }, None) => {
                let readable = buf.remaining().min(data.len() - idx);

                // Clamped to maximum `buf.remaining()` and `data.len() - idx` with `.min`
                #[allow(clippy::indexing_slicing)]
                buf.put_slice(&data[idx..idx + readable]);
                idx += readable;

                if idx != data.len() {
                    self.buffer = Some((msg, idx));
                }

                Poll::Ready(Ok(()))
            }
            (ChannelMsg::ExtendedData { data, ext }, Some(target)) if *ext == target => {
                let readable = buf.remaining().min(data.len() - idx);

                // Clamped to maximum `buf.remaining()` and `data.len() - idx` with `.min`
                #[allow(clippy::indexing_slicing)]
                buf.put_slice(&data[idx..idx + readable]);
                idx += readable;

                if idx != data.len() {
                    self.buffer = Some((msg, idx));
                }

                Poll::Ready(Ok(()))
            }
            (ChannelMsg::Eof, _) => {
                self.channel.borrow_mut().receiver.close();

                Poll::Ready(Ok(()))
            }
            _ => {
                cx.waker().wake_by_ref();
                Poll::Pending
            }
        }
    }
}
