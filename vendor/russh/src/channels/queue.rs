//! A channel's inbound message queue (warren patch).
//!
//! Upstream hands every message to its channel through a `tokio::sync::mpsc` channel bounded
//! in *messages*, with an awaited `send` inside the session loop. Two faults follow: a channel
//! whose reader stalls fills its queue and then blocks the loop, so every other channel of the
//! session (and the keepalives) freeze; and a queue sized for a window of large packets holds
//! a fraction of it in 1-byte packets, so a server sending single bytes fills it long before
//! the window is used.
//!
//! This queue never makes the session wait when it is created without a capacity
//! ([`channel`]`(None)`, as the client does: its channels are bounded by their window, see
//! `Encrypted::receive_window`). What it holds is bounded in bytes, overhead included:
//!
//! - a data payload of [`COALESCE_BELOW`] bytes or more stays one item (a slice of its packet,
//!   no copy), so its per-item overhead is a small fraction of its size;
//! - a shorter payload is copied into the buffer at the back of the queue when the reader is
//!   behind (the back item is data of the same stream not yet taken), filling buffers of
//!   [`COALESCE_BUFFER`] bytes: a flood of 1-byte packets costs one byte each, not one
//!   allocation and one queue slot each;
//! - other messages count against [`MAX_CONTROL`]; beyond it, informational ones
//!   (window adjustments, replies, exit status) are dropped instead of growing the queue.
//!
//! With a capacity (the server side, which re-opens windows on receipt), `send` waits while
//! the queue holds that many items, as upstream's bounded channel does.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use log::debug;
use tokio::sync::Notify;
use tokio::sync::mpsc::error::{SendError, TryRecvError, TrySendError};

use crate::ChannelMsg;

/// Data payloads at least this long are queued as they are (slices of their packet).
pub(crate) const COALESCE_BELOW: usize = 8 * 1024;

/// The size of the buffers shorter payloads are gathered into.
pub(crate) const COALESCE_BUFFER: usize = 32 * 1024;

/// Messages other than data that one queue holds; beyond it, informational ones are dropped.
pub(crate) const MAX_CONTROL: usize = 1024;

/// One queued message: as received, or short payloads gathered into one buffer.
#[derive(Debug)]
enum Item {
    Msg(ChannelMsg),
    Gathered { ext: Option<u32>, buf: BytesMut },
}

impl Item {
    fn into_msg(self) -> ChannelMsg {
        match self {
            Item::Msg(msg) => msg,
            Item::Gathered { ext: None, buf } => ChannelMsg::Data { data: buf.freeze() },
            Item::Gathered {
                ext: Some(ext),
                buf,
            } => ChannelMsg::ExtendedData {
                data: buf.freeze(),
                ext,
            },
        }
    }

    fn is_control(&self) -> bool {
        !matches!(
            self,
            Item::Gathered { .. }
                | Item::Msg(ChannelMsg::Data { .. } | ChannelMsg::ExtendedData { .. })
        )
    }
}

#[derive(Debug, Default)]
struct State {
    items: VecDeque<Item>,
    /// Items that are not data.
    control: usize,
    /// The receiver is closed or dropped: sends fail.
    closed: bool,
    /// Live senders; with none left and nothing queued, the receiver sees the end.
    senders: usize,
    receiver: Option<Waker>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// For `send` with a capacity: signalled when an item is taken or the receiver closes.
    space: Notify,
    capacity: Option<usize>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A new queue; `capacity` in items makes [`Sender::send`] wait (`None`: it never waits).
pub(crate) fn channel(capacity: Option<usize>) -> (Sender, Receiver) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            senders: 1,
            ..State::default()
        }),
        space: Notify::new(),
        capacity: capacity.map(|c| c.max(1)),
    });
    (
        Sender {
            shared: shared.clone(),
        },
        Receiver { shared },
    )
}

/// The sending side, held by the session.
#[derive(Debug)]
pub struct Sender {
    shared: Arc<Shared>,
}

impl Clone for Sender {
    fn clone(&self) -> Self {
        self.shared.lock().senders += 1;
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        let waker = {
            let mut state = self.shared.lock();
            state.senders -= 1;
            if state.senders == 0 {
                state.receiver.take()
            } else {
                None
            }
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl Sender {
    /// Queues `msg` without waiting (whatever the capacity); `Err` gives it back when the
    /// receiver is gone.
    pub fn push(&self, msg: ChannelMsg) -> Result<(), ChannelMsg> {
        let waker = {
            let mut state = self.shared.lock();
            if state.closed {
                return Err(msg);
            }
            push_locked(&mut state, msg);
            state.receiver.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
        Ok(())
    }

    /// Queues `msg`, first waiting for room if the queue has a capacity.
    pub async fn send(&self, msg: ChannelMsg) -> Result<(), SendError<ChannelMsg>> {
        if let Some(capacity) = self.shared.capacity {
            loop {
                let space = self.shared.space.notified();
                {
                    let state = self.shared.lock();
                    if state.closed || state.items.len() < capacity {
                        break;
                    }
                }
                space.await;
            }
        }
        self.push(msg).map_err(SendError)
    }

    /// Queues `msg` if there is room now.
    pub fn try_send(&self, msg: ChannelMsg) -> Result<(), TrySendError<ChannelMsg>> {
        if let Some(capacity) = self.shared.capacity
            && self.shared.lock().items.len() >= capacity
        {
            return Err(TrySendError::Full(msg));
        }
        self.push(msg).map_err(TrySendError::Closed)
    }

    /// Whether the receiver is gone.
    pub fn is_closed(&self) -> bool {
        self.shared.lock().closed
    }
}

/// Appends `msg`, gathering short payloads (see the module documentation).
fn push_locked(state: &mut State, msg: ChannelMsg) {
    let (ext, data) = match msg {
        ChannelMsg::Data { data } if data.len() < COALESCE_BELOW => (None, data),
        ChannelMsg::ExtendedData { data, ext } if data.len() < COALESCE_BELOW => (Some(ext), data),
        msg => {
            let item = Item::Msg(msg);
            if item.is_control() {
                if state.control >= MAX_CONTROL && is_droppable(&item) {
                    debug!("channel queue: {MAX_CONTROL} messages unread; dropping {item:?}");
                    return;
                }
                state.control += 1;
            }
            push(state, item);
            return;
        }
    };
    gather(state, ext, data);
}

/// Informational messages, dropped when too many are unread; the end of the stream, the
/// channel's opening and its close never are.
fn is_droppable(item: &Item) -> bool {
    !matches!(
        item,
        Item::Msg(
            ChannelMsg::Eof
                | ChannelMsg::Close
                | ChannelMsg::Open { .. }
                | ChannelMsg::OpenFailure(_)
        )
    )
}

/// The stream of a data item (`None`: data, `Some(code)`: extended data), if it is data.
fn stream_of(item: &Item) -> Option<Option<u32>> {
    match item {
        Item::Msg(ChannelMsg::Data { .. }) => Some(None),
        Item::Msg(ChannelMsg::ExtendedData { ext, .. }) => Some(Some(*ext)),
        Item::Gathered { ext, .. } => Some(*ext),
        Item::Msg(_) => None,
    }
}

/// Room left in a data item for gathering.
fn room_in(item: &Item) -> usize {
    match item {
        Item::Gathered { buf, .. } => COALESCE_BUFFER.saturating_sub(buf.len()),
        // A payload kept whole is not copied into a buffer; one shorter than that is.
        Item::Msg(ChannelMsg::Data { data } | ChannelMsg::ExtendedData { data, .. })
            if data.len() < COALESCE_BELOW =>
        {
            COALESCE_BUFFER - data.len()
        }
        Item::Msg(_) => 0,
    }
}

/// Queues a short payload. It is appended to the last unread item of its stream when that is
/// a short payload or a gathering buffer among the last two items, with only data after it
/// (stdout and stderr interleaved gather too; the order within a stream, and of data against
/// other messages, is kept). Otherwise it becomes an item of its own, as it is: the reader is
/// keeping up, or it follows a payload kept whole.
fn gather(state: &mut State, ext: Option<u32>, mut data: Bytes) {
    if data.is_empty() {
        return;
    }
    let len = state.items.len();
    let mut target = None;
    for back in 1..=2.min(len) {
        let Some(item) = state.items.get(len - back) else {
            break;
        };
        match stream_of(item) {
            Some(s) if s == ext => {
                target = Some(len - back);
                break;
            }
            Some(_) => continue,
            None => break,
        }
    }
    let Some(mut at) = target.filter(|t| state.items.get(*t).is_some_and(gathers)) else {
        push(
            state,
            Item::Msg(match ext {
                None => ChannelMsg::Data { data },
                Some(ext) => ChannelMsg::ExtendedData { data, ext },
            }),
        );
        return;
    };
    // Each gathering buffer is filled to its size before the next one starts at the back, so
    // every buffer but the last of its stream is full.
    while !data.is_empty() {
        let room = state.items.get(at).map_or(0, room_in);
        if room == 0 {
            let piece = data.split_to(data.len().min(COALESCE_BUFFER));
            let mut buf = new_buffer(piece.len());
            buf.extend_from_slice(&piece);
            push(state, Item::Gathered { ext, buf });
            at = state.items.len() - 1;
            continue;
        }
        let piece = data.split_to(data.len().min(room));
        if let Some(item) = state.items.get_mut(at) {
            if let Item::Msg(
                ChannelMsg::Data { data: d } | ChannelMsg::ExtendedData { data: d, .. },
            ) = item
            {
                let mut buf = new_buffer(d.len() + piece.len());
                buf.extend_from_slice(d);
                *item = Item::Gathered { ext, buf };
            }
            if let Item::Gathered { buf, .. } = item {
                // Grows by doubling, up to COALESCE_BUFFER (`room` keeps it there).
                buf.extend_from_slice(&piece);
            }
        }
    }
}

/// Whether more short payloads can be appended to `item`: a gathering buffer, or a short
/// payload (which becomes one). A payload kept whole is not copied into a buffer.
fn gathers(item: &Item) -> bool {
    match item {
        Item::Gathered { .. } => true,
        Item::Msg(ChannelMsg::Data { data } | ChannelMsg::ExtendedData { data, .. }) => {
            data.len() < COALESCE_BELOW
        }
        Item::Msg(_) => false,
    }
}

/// The smallest gathering buffer.
const MIN_BUFFER: usize = 256;

/// A gathering buffer for `needed` bytes and as many again: a power of two between
/// [`MIN_BUFFER`] and [`COALESCE_BUFFER`], so that doubling never passes the latter.
fn new_buffer(needed: usize) -> BytesMut {
    let cap = needed
        .saturating_mul(2)
        .next_power_of_two()
        .clamp(MIN_BUFFER, COALESCE_BUFFER);
    BytesMut::with_capacity(cap)
}

/// Appends an item. The item that this moves out of the last two can no longer be appended
/// to: a gathering buffer there gives back its spare capacity, so that only the last buffer
/// of each stream is ever partly empty.
fn push(state: &mut State, item: Item) {
    state.items.push_back(item);
    let len = state.items.len();
    if len >= 3
        && let Some(Item::Gathered { buf, .. }) = state.items.get_mut(len - 3)
    {
        shrink(buf);
    }
}

/// Gives back a buffer's spare capacity (one copy of at most [`COALESCE_BUFFER`] bytes).
fn shrink(buf: &mut BytesMut) {
    if buf.capacity() > buf.len() + buf.len() / 8 {
        *buf = BytesMut::from(&buf[..]);
    }
}

/// The receiving side, held by the channel's reader.
#[derive(Debug)]
pub struct Receiver {
    shared: Arc<Shared>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.close();
    }
}

impl Receiver {
    /// The next message; `None` once every sender is gone and the queue is empty.
    pub async fn recv(&mut self) -> Option<ChannelMsg> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Polls for the next message.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<ChannelMsg>> {
        match self.take() {
            Ok(msg) => Poll::Ready(Some(msg)),
            Err(TryRecvError::Disconnected) => Poll::Ready(None),
            Err(TryRecvError::Empty) => {
                let mut state = self.shared.lock();
                // Checked again under the lock the senders take, so no wake-up is lost.
                if state.items.is_empty() && state.senders > 0 {
                    state.receiver = Some(cx.waker().clone());
                    return Poll::Pending;
                }
                drop(state);
                match self.take() {
                    Ok(msg) => Poll::Ready(Some(msg)),
                    Err(_) => Poll::Ready(None),
                }
            }
        }
    }

    /// The next message if one is queued.
    #[cfg(test)]
    pub fn try_recv(&mut self) -> Result<ChannelMsg, TryRecvError> {
        self.take()
    }

    fn take(&mut self) -> Result<ChannelMsg, TryRecvError> {
        let item = {
            let mut state = self.shared.lock();
            match state.items.pop_front() {
                Some(item) => {
                    if item.is_control() {
                        state.control -= 1;
                    }
                    item
                }
                None if state.senders == 0 => return Err(TryRecvError::Disconnected),
                None => return Err(TryRecvError::Empty),
            }
        };
        if self.shared.capacity.is_some() {
            self.shared.space.notify_waiters();
        }
        // A buffer taken while still being filled goes out without its spare capacity: the
        // reader may hold it a while (a batch waiting for a slow socket).
        let item = match item {
            Item::Gathered { ext, mut buf } => {
                shrink(&mut buf);
                Item::Gathered { ext, buf }
            }
            item => item,
        };
        Ok(item.into_msg())
    }

    /// Refuses further messages; those already queued can still be received.
    pub fn close(&mut self) {
        self.shared.lock().closed = true;
        self.shared.space.notify_waiters();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn data(n: usize, byte: u8) -> ChannelMsg {
        ChannelMsg::Data {
            data: Bytes::from(vec![byte; n]),
        }
    }

    fn held(rx: &Receiver) -> (usize, usize) {
        let state = rx.shared.lock();
        let bytes = state
            .items
            .iter()
            .map(|i| match i {
                Item::Gathered { buf, .. } => buf.capacity(),
                Item::Msg(ChannelMsg::Data { data } | ChannelMsg::ExtendedData { data, .. }) => {
                    data.len()
                }
                Item::Msg(_) => 0,
            })
            .sum();
        (state.items.len(), bytes)
    }

    #[test]
    fn a_flood_of_single_bytes_is_gathered_into_full_buffers() {
        let (tx, mut rx) = channel(None);
        let n = 1024 * 1024;
        for i in 0..n {
            tx.push(data(1, (i % 251) as u8)).unwrap();
        }
        let (items, bytes) = held(&rx);
        assert_eq!(items, n / COALESCE_BUFFER, "one item per full buffer");
        assert_eq!(bytes, n, "nothing but the payload is held");
        let mut got = Vec::new();
        while let Ok(ChannelMsg::Data { data }) = rx.try_recv() {
            got.extend_from_slice(&data);
        }
        assert_eq!(got.len(), n);
        assert!(got.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8));
    }

    #[test]
    fn alternating_streams_gather_each_into_its_own_buffers() {
        let (tx, mut rx) = channel(None);
        let n = 64 * 1024;
        for i in 0..n {
            tx.push(data(1, 1)).unwrap();
            tx.push(ChannelMsg::ExtendedData {
                data: Bytes::from(vec![(i % 7) as u8]),
                ext: 1,
            })
            .unwrap();
        }
        let (items, bytes) = held(&rx);
        assert_eq!(items, 2 * n / COALESCE_BUFFER);
        assert_eq!(bytes, 2 * n);
        let (mut out, mut err) = (Vec::new(), Vec::new());
        while let Ok(msg) = rx.try_recv() {
            match msg {
                ChannelMsg::Data { data } => out.extend_from_slice(&data),
                ChannelMsg::ExtendedData { data, ext: 1 } => err.extend_from_slice(&data),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(out, vec![1; n]);
        assert!(err.iter().enumerate().all(|(i, b)| *b == (i % 7) as u8) && err.len() == n);
    }

    #[test]
    fn large_payloads_stay_whole_and_order_within_a_stream_is_kept() {
        let (tx, mut rx) = channel(None);
        tx.push(data(COALESCE_BELOW, 1)).unwrap();
        tx.push(data(10, 2)).unwrap();
        tx.push(ChannelMsg::ExtendedData {
            data: Bytes::from_static(b"err"),
            ext: 1,
        })
        .unwrap();
        tx.push(data(5, 3)).unwrap();
        tx.push(ChannelMsg::Eof).unwrap();
        tx.push(data(5, 4)).unwrap();
        let msgs: Vec<_> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
        assert!(matches!(&msgs[0], ChannelMsg::Data { data } if data[..] == [1; COALESCE_BELOW]));
        // Short payloads gather behind the whole one (stderr between them is passed).
        let gathered: Vec<u8> = [[2; 10].as_slice(), &[3; 5]].concat();
        assert!(matches!(&msgs[1], ChannelMsg::Data { data } if data[..] == gathered[..]));
        assert!(
            matches!(&msgs[2], ChannelMsg::ExtendedData { data, ext: 1 } if &data[..] == b"err")
        );
        // Nothing is gathered across another message.
        assert!(matches!(msgs[3], ChannelMsg::Eof));
        assert!(matches!(&msgs[4], ChannelMsg::Data { data } if data[..] == [4; 5]));
        assert_eq!(msgs.len(), 5);
    }

    #[test]
    fn short_payloads_between_long_ones_cost_little_more_than_their_bytes() {
        // Long payloads (kept whole) with one, two or a few short ones after each: every
        // buffer but the last of the stream gives back its spare capacity.
        for shorts in [1, 2, 5, 40] {
            let (tx, mut rx) = channel(None);
            let mut payload = 0;
            let mut sent = Vec::new();
            for round in 0..512usize {
                let long = vec![(round % 200) as u8; COALESCE_BELOW];
                payload += long.len();
                sent.extend_from_slice(&long);
                tx.push(ChannelMsg::Data { data: long.into() }).unwrap();
                for k in 0..shorts {
                    let b = ((round + k) % 250) as u8;
                    payload += 1;
                    sent.push(b);
                    tx.push(data(1, b)).unwrap();
                }
            }
            let (items, held) = held(&rx);
            assert!(
                held <= payload + 2 * COALESCE_BUFFER,
                "{shorts} short payloads after each long one: {held} bytes held for {payload}"
            );
            assert!(items <= 2 * 512 + 1, "{items} items");
            let mut got = Vec::new();
            while let Ok(ChannelMsg::Data { data }) = rx.try_recv() {
                got.extend_from_slice(&data);
            }
            assert_eq!(got, sent, "every byte, in order");
        }
    }

    #[test]
    fn a_buffer_taken_while_it_fills_goes_out_without_its_spare_room() {
        let (tx, mut rx) = channel(None);
        tx.push(data(3, 1)).unwrap();
        tx.push(data(3, 2)).unwrap();
        let Ok(ChannelMsg::Data { data }) = rx.try_recv() else {
            panic!("data expected");
        };
        assert_eq!(&data[..], &[1, 1, 1, 2, 2, 2]);
        let BytesLike { capacity } = capacity_of(data);
        assert!(capacity < MIN_BUFFER, "{capacity}");
    }

    struct BytesLike {
        capacity: usize,
    }

    /// The capacity behind `b` (it came from a `BytesMut` frozen with its whole allocation).
    fn capacity_of(b: Bytes) -> BytesLike {
        BytesLike {
            capacity: BytesMut::from(b).capacity(),
        }
    }

    #[test]
    fn informational_messages_beyond_the_limit_are_dropped_but_the_end_is_not() {
        let (tx, mut rx) = channel(None);
        for _ in 0..MAX_CONTROL * 4 {
            tx.push(ChannelMsg::WindowAdjusted { new_size: 1 }).unwrap();
        }
        tx.push(ChannelMsg::Eof).unwrap();
        tx.push(ChannelMsg::Close).unwrap();
        let msgs: Vec<_> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
        assert_eq!(msgs.len(), MAX_CONTROL + 2);
        assert!(matches!(msgs[MAX_CONTROL], ChannelMsg::Eof));
        assert!(matches!(msgs[MAX_CONTROL + 1], ChannelMsg::Close));
    }

    #[tokio::test]
    async fn the_end_is_seen_after_the_last_sender_and_sends_fail_after_close() {
        let (tx, mut rx) = channel(None);
        let tx2 = tx.clone();
        tx.push(data(3, 7)).unwrap();
        drop(tx);
        let reader = tokio::spawn(async move {
            let mut n = 0;
            while let Some(msg) = rx.recv().await {
                if let ChannelMsg::Data { data } = msg {
                    n += data.len();
                }
            }
            n
        });
        tx2.push(data(4, 7)).unwrap();
        drop(tx2);
        assert_eq!(reader.await.unwrap(), 7);

        let (tx, mut rx) = channel(None);
        rx.close();
        assert!(tx.push(ChannelMsg::Eof).is_err());
        assert!(tx.is_closed());
    }

    #[tokio::test]
    async fn with_a_capacity_send_waits_for_room() {
        let (tx, mut rx) = channel(Some(2));
        tx.send(ChannelMsg::Success).await.unwrap();
        tx.send(ChannelMsg::Failure).await.unwrap();
        assert!(matches!(
            tx.try_send(ChannelMsg::Eof),
            Err(TrySendError::Full(_))
        ));
        let waiting = tokio::spawn(async move { tx.send(ChannelMsg::Eof).await.is_ok() });
        tokio::task::yield_now().await;
        assert!(matches!(rx.recv().await, Some(ChannelMsg::Success)));
        assert!(waiting.await.unwrap());
        assert!(matches!(rx.recv().await, Some(ChannelMsg::Failure)));
        assert!(matches!(rx.recv().await, Some(ChannelMsg::Eof)));
    }
}
