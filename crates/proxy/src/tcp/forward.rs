//! The byte pump between a downstream and an upstream socket: both directions in one
//! future, with half-close, reset propagation and an idle timeout.
//!
//! This is the proxy's hottest path, hand-written on tokio's readiness API rather than
//! `copy_bidirectional` (bench/RESULTS.md has the comparison):
//! - one scratch buffer per thread, so an idle connection holds no buffer at all; a
//!   connection gets its own buffer only while its peer is slower than its sender;
//! - a short read (fewer bytes than asked for) means the socket is drained, so readiness is
//!   dropped at once instead of paying a read that returns `EAGAIN`;
//! - every chunk is shown to an [`Observer`] (Redis telemetry, byte counters) in place.

use socket2::SockRef;
use std::cell::RefCell;
use std::future::{Future, poll_fn};
use std::io;
use std::net::Shutdown;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant as StdInstant};
use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use crate::lifecycle::{Lifecycle, Phase};

/// Size of the per-thread scratch buffer, and of the largest single read.
const SCRATCH: usize = 64 * 1024;
/// Reads per direction per wake-up before yielding to other connections.
const READS_PER_POLL: usize = 16;

thread_local! {
    static SCRATCH_BUF: RefCell<Vec<u8>> = RefCell::new(vec![0; SCRATCH]);
}

/// Sees every chunk that crosses the proxy, in order, without changing it.
pub trait Observer {
    /// Bytes read from the downstream (client) at `now` and sent upstream.
    fn downstream_bytes(&mut self, data: &[u8], now: StdInstant);
    /// Bytes read from the upstream (server) at `now` and sent downstream.
    fn upstream_bytes(&mut self, data: &[u8], now: StdInstant);
    /// True when the connection can be closed during a drain without losing anything the
    /// client waits for. Opaque traffic cannot tell, so it waits for the drain's end.
    fn quiescent(&self) -> bool {
        false
    }
}

/// An observer that looks at nothing.
impl Observer for () {
    fn downstream_bytes(&mut self, _: &[u8], _: StdInstant) {}
    fn upstream_bytes(&mut self, _: &[u8], _: StdInstant) {}
}

/// How a forwarded connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Both sides closed their write halves.
    Closed,
    /// One side reset the connection; the other was reset too.
    Reset,
    /// No bytes crossed for the idle timeout.
    Idle,
    /// Closed by the proxy's drain.
    Drained,
    /// Closed at the cluster's longest connection life (`maxConnectionDuration`).
    Expired,
}

/// Bytes moved, from the downstream's point of view.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Bytes received from the downstream (sent upstream).
    pub received: u64,
    /// Bytes sent to the downstream (received from upstream).
    pub sent: u64,
}

/// One direction: bytes read from `from`, written to `to`.
#[derive(Default)]
struct Half {
    /// Bytes read but not yet written (only while the writer is slower than the reader).
    pending: Vec<u8>,
    /// How much of `pending` is already written.
    written: usize,
    /// The reader reached end of stream.
    eof: bool,
    /// The write half of the writer was shut down after `eof`.
    shut: bool,
    /// Bytes moved.
    bytes: u64,
}

impl Half {
    fn done(&self) -> bool {
        self.shut
    }
}

fn is_reset(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
    )
}

/// Reads what `stream` has into `buf` without blocking, like `try_read`. A short read (the
/// socket drained) also drops the read readiness, saving the `read` that would only say
/// "would block" — but as of *before* the read, as tokio's own `poll_read` does, so bytes
/// that arrive meanwhile still wake the task. (Dropping it after the read could lose that
/// wake-up and stall the connection until the peer sent more.)
pub fn try_read_drained(stream: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = None;
    let result = stream.try_io(Interest::READABLE, || {
        let n = SockRef::from(stream).recv(as_uninit(buf))?;
        got = Some(n);
        if n > 0 && n < buf.len() {
            Err(io::ErrorKind::WouldBlock.into())
        } else {
            Ok(n)
        }
    });
    match got {
        Some(n) => Ok(n),
        None => result,
    }
}

/// [`try_read_drained`] into the spare capacity of `buf` (which the caller reserved).
pub fn try_read_buf_drained(stream: &TcpStream, buf: &mut Vec<u8>) -> io::Result<usize> {
    let mut got = None;
    let spare = buf.spare_capacity_mut();
    let room = spare.len();
    let result = stream.try_io(Interest::READABLE, || {
        let n = SockRef::from(stream).recv(spare)?;
        got = Some(n);
        if n > 0 && n < room {
            Err(io::ErrorKind::WouldBlock.into())
        } else {
            Ok(n)
        }
    });
    match got {
        Some(n) => {
            // SAFETY: `recv` initialised the first `n` bytes of the spare capacity.
            unsafe { buf.set_len(buf.len() + n) };
            Ok(n)
        }
        None => result,
    }
}

fn as_uninit(buf: &mut [u8]) -> &mut [std::mem::MaybeUninit<u8>] {
    // SAFETY: initialised bytes are valid `MaybeUninit`s, and `recv` only writes bytes.
    unsafe { &mut *(buf as *mut [u8] as *mut [std::mem::MaybeUninit<u8>]) }
}

/// Moves one direction forward as far as it can without blocking; returns whether it made
/// progress. When it stops because a socket is not ready, that socket's waker is registered.
fn pump(
    cx: &mut Context<'_>,
    from: &TcpStream,
    to: &TcpStream,
    half: &mut Half,
    observe: &mut dyn FnMut(&[u8]),
) -> io::Result<bool> {
    let mut progressed = false;
    // First finish writing what an earlier read left behind.
    while half.written < half.pending.len() {
        match to.poll_write_ready(cx) {
            Poll::Ready(r) => r?,
            Poll::Pending => return Ok(progressed),
        }
        match to.try_write(&half.pending[half.written..]) {
            Ok(n) => {
                half.written += n;
                progressed = true;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    if !half.pending.is_empty() {
        half.pending.clear();
        half.written = 0;
        if half.pending.capacity() > SCRATCH {
            half.pending = Vec::new();
        }
    }
    if half.eof {
        if !half.shut {
            // Pass the half-close on; the other direction keeps flowing.
            match SockRef::from(to).shutdown(Shutdown::Write) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotConnected => {}
                Err(e) => return Err(e),
            }
            half.shut = true;
        }
        return Ok(true);
    }
    for _ in 0..READS_PER_POLL {
        match from.poll_read_ready(cx) {
            Poll::Ready(r) => r?,
            Poll::Pending => return Ok(progressed),
        }
        let step = SCRATCH_BUF.with_borrow_mut(|buf| -> io::Result<Option<bool>> {
            let n = match try_read_drained(from, buf) {
                Ok(0) => {
                    half.eof = true;
                    return Ok(Some(true));
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) => return Err(e),
            };
            let chunk = &buf[..n];
            observe(chunk);
            half.bytes += n as u64;
            let written = match to.try_write(chunk) {
                Ok(w) => w,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
                Err(e) => return Err(e),
            };
            if written < n {
                half.pending.extend_from_slice(&chunk[written..]);
                half.written = 0;
            }
            Ok(Some(n == buf.len()))
        })?;
        match step {
            // Spurious readiness: tokio cleared it; poll again to register.
            None => continue,
            Some(_) if half.eof => {
                progressed = true;
                break;
            }
            Some(_) => {
                progressed = true;
                if !half.pending.is_empty() {
                    break;
                }
            }
        }
    }
    Ok(progressed)
}

/// Forwards bytes both ways until both sides have closed, one resets, or nothing moves for
/// `idle` (`None` = no idle timeout). Resets are propagated: when one side resets, the other
/// is reset too rather than closed cleanly.
///
/// When `lifecycle` starts draining, the connection ends at its first quiet point (the
/// observer says nothing is in flight and no bytes are pending); when the drain period is
/// over it ends regardless.
pub async fn forward<O: Observer>(
    downstream: &TcpStream,
    upstream: &TcpStream,
    observer: &mut O,
    idle: Option<Duration>,
    lifecycle: &Lifecycle,
) -> (Totals, io::Result<Ending>) {
    let mut down = Half::default();
    let mut up = Half::default();
    // Each lifecycle future is polled until it completes, which keeps the task's waker
    // registered; between wake-ups the phase is read from an atomic.
    let mut draining = Some(Box::pin(lifecycle.reached(Phase::Draining)));
    let mut closed = Some(Box::pin(lifecycle.reached(Phase::Closed)));
    let mut timer: Option<Pin<Box<Sleep>>> = idle.map(|d| Box::pin(tokio::time::sleep(d)));
    let mut last_activity = StdInstant::now();
    let result = poll_fn(|cx| {
        for slot in [&mut draining, &mut closed] {
            if slot
                .as_mut()
                .is_some_and(|f| f.as_mut().poll(cx).is_ready())
            {
                *slot = None;
            }
        }
        // One clock read per wake-up, taken when the first bytes arrive.
        let mut now: Option<StdInstant> = None;
        loop {
            let mut progressed = false;
            if !down.done() {
                let mut observe = |d: &[u8]| {
                    let t = *now.get_or_insert_with(StdInstant::now);
                    observer.downstream_bytes(d, t)
                };
                match pump(cx, downstream, upstream, &mut down, &mut observe) {
                    Ok(p) => progressed |= p,
                    Err(e) => return Poll::Ready(Err(e)),
                }
            }
            if !up.done() {
                let mut observe = |d: &[u8]| {
                    let t = *now.get_or_insert_with(StdInstant::now);
                    observer.upstream_bytes(d, t)
                };
                match pump(cx, upstream, downstream, &mut up, &mut observe) {
                    Ok(p) => progressed |= p,
                    Err(e) => return Poll::Ready(Err(e)),
                }
            }
            if down.done() && up.done() {
                return Poll::Ready(Ok(Ending::Closed));
            }
            let phase = lifecycle.phase();
            if phase >= Phase::Draining {
                let quiet =
                    down.pending.is_empty() && up.pending.is_empty() && observer.quiescent();
                if quiet || phase >= Phase::Closed {
                    return Poll::Ready(Ok(Ending::Drained));
                }
            }
            if progressed {
                continue;
            }
            if let Some(t) = now {
                last_activity = t;
            }
            if let (Some(t), Some(limit)) = (timer.as_mut(), idle)
                && t.as_mut().poll(cx).is_ready()
            {
                if last_activity.elapsed() >= limit {
                    return Poll::Ready(Ok(Ending::Idle));
                }
                t.as_mut().reset(Instant::from_std(last_activity + limit));
                // Register the new deadline.
                if t.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Ok(Ending::Idle));
                }
            }
            return Poll::Pending;
        }
    })
    .await;
    let totals = Totals {
        received: down.bytes,
        sent: up.bytes,
    };
    match result {
        Err(e) if is_reset(&e) => {
            // Reset the other side as well: a zero linger makes close send RST.
            for s in [downstream, upstream] {
                let _ = SockRef::from(s).set_linger(Some(Duration::ZERO));
            }
            (totals, Ok(Ending::Reset))
        }
        other => (totals, other),
    }
}
