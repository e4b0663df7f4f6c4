//! Forwarding a Redis connection under a RedisPolicy. The client's commands are followed
//! one by one (the RESP scanner pauses at each command's name and end): a command is
//! forwarded (with its timeout, and a copy to the mirror when it only reads), answered with
//! an injected error instead, or held with everything after it for an injected delay. The
//! server's replies are counted against the commands, and taken one by one only while the
//! [`Sequencer`] needs it (made-up replies waiting their turn, late replies to drop).
//!
//! What the proxy cannot follow ends enforcement for the rest of the connection, never the
//! connection: `SUBSCRIBE` and friends, `MONITOR`, `CLIENT REPLY`, or bytes that are not
//! RESP. The commands sent before keep their replies in order; the rest flows untouched.
//!
//! Telemetry sees the conversation as the client sees it: every command, and every reply
//! the client gets (injected ones included, dropped late ones excluded).

use super::command::CommandId;
use super::mirror::Mirror;
use super::observer::{RedisObserver, ReplyGate};
use super::parser::{Element, Kind, Value, Visitor};
use super::policy::{Decision, Fault, Policy, TIMEOUT_REPLY};
use super::sequencer::{Fate, Sequencer};
use super::tracker::CommandDone;
use crate::lifecycle::{Lifecycle, Phase};
use crate::tcp::forward::{Ending, Observer, Totals};
use crate::telemetry::Metrics;
use crate::telemetry::labels::TcpLabels;
use crate::telemetry::metrics::RedisRecorder;
use bytes::Bytes;
use socket2::SockRef;
use std::cell::RefCell;
use std::future::{Future, poll_fn};
use std::io;
use std::net::Shutdown;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant as StdInstant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

/// Bytes read per read call.
const READ: usize = 16 * 1024;
/// Output queued toward one side before reading from the other stops.
const HIGH_WATER: usize = 256 * 1024;
/// Size of the per-thread buffer the fast path reads into.
const SCRATCH: usize = 64 * 1024;

thread_local! {
    /// The fast path's read buffer, shared by the connections of a thread (as the plain
    /// forward's): an idle connection holds no buffer, and a busy thread reads into memory
    /// that stays in cache.
    static SCRATCH_BUF: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(SCRATCH));
}

/// What becomes of a batch of client bytes read while nothing was held back, once scanned
/// with the policy's command visitor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Batch {
    /// Forward the first `n` bytes as they are; the rest (a command whose name has not
    /// arrived yet) waits for more bytes.
    Forward(usize),
    /// A command of the policy's set (or one that ends enforcement) is in it, or the bytes
    /// are not RESP: the batch goes through the enforcing path.
    Enforce,
}

/// The fast path's decision on a batch of `len` bytes read at client stream position
/// `start`: `scanned` is what the scan consumed (`None`: not RESP), `paused` whether the
/// command visitor stopped at a command of the policy's set, `open_command` where a
/// command whose name has not arrived yet starts (its stream position), if one is under
/// way at the end of the batch.
fn batch(
    start: u64,
    len: usize,
    scanned: Option<usize>,
    paused: bool,
    open_command: Option<u64>,
) -> Batch {
    match scanned {
        Some(n) if n == len && !paused => match open_command {
            None => Batch::Forward(len),
            Some(at) => {
                let keep_from = usize::try_from(at.saturating_sub(start)).unwrap_or(usize::MAX);
                Batch::Forward(keep_from.min(len))
            }
        },
        _ => Batch::Enforce,
    }
}

/// What kind of fault or timeout happened, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// An injected error reply.
    Abort,
    /// An injected delay.
    Delay,
    /// A reply that did not come in time.
    Timeout,
}

impl FaultKind {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            FaultKind::Abort => "abort",
            FaultKind::Delay => "delay",
            FaultKind::Timeout => "timeout",
        }
    }
}

/// A RedisPolicy applied to one connection.
pub struct Enforcement {
    /// The policy.
    pub policy: Arc<Policy>,
    /// Told about every fault and timeout.
    pub on_fault: Box<dyn Fn(CommandId, FaultKind) + Send + Sync>,
    /// Connect timeout of the mirror connection.
    pub connect_timeout: Duration,
    /// Where the Redis telemetry of the connection goes (the enforcement does it: one scan
    /// per direction serves both).
    pub telemetry: Option<(Arc<Metrics>, TcpLabels)>,
}

impl std::fmt::Debug for Enforcement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enforcement")
            .field("policy", &self.policy.name)
            .finish_non_exhaustive()
    }
}

/// Follows the client's commands. A command the policy leaves alone (the usual case) is
/// only counted; for the others the scan pauses when the name is known (with the decision
/// made) and when the command ends.
struct CommandVisitor<'p> {
    policy: &'p Policy,
    id: Option<CommandId>,
    decision: Option<Decision>,
    name_ready: bool,
    complete: bool,
    /// The command under way is left alone.
    in_plain: bool,
    /// Commands left alone that ended since the last look.
    plain_done: u32,
    client_reply: bool,
    pause: bool,
}

impl<'p> CommandVisitor<'p> {
    fn new(policy: &'p Policy) -> Self {
        CommandVisitor {
            policy,
            id: None,
            decision: None,
            name_ready: false,
            complete: false,
            in_plain: false,
            plain_done: 0,
            client_reply: false,
            pause: false,
        }
    }
}

/// Commands that change how replies pair with commands: they need a look of their own.
fn breaks_pairing(id: CommandId) -> bool {
    id.is_subscribe() || id == CommandId::MONITOR || id == CommandId::CLIENT
}

impl Visitor for CommandVisitor<'_> {
    #[inline]
    fn wants_token(&self, index: u32) -> bool {
        index == 1 && self.id == Some(CommandId::CLIENT)
    }

    #[inline]
    fn element(&mut self, e: &Element<'_>) {
        self.element_of(e, None);
    }

    #[inline]
    fn element_of(&mut self, e: &Element<'_>, known: Option<CommandId>) {
        if e.index == 0 {
            let id =
                known.unwrap_or_else(|| e.token.map_or(CommandId::UNKNOWN, CommandId::from_token));
            self.id = Some(id);
            self.client_reply = false;
            if breaks_pairing(id) {
                self.decision = None;
            } else {
                if !self.policy.acts_on(id) {
                    // Outside the policy's command set: forwarded as it is.
                    self.in_plain = true;
                    return;
                }
                let d = self.policy.decide(id, e.token);
                if d == Decision::default() {
                    self.in_plain = true;
                    return;
                }
                self.decision = Some(d);
            }
            self.name_ready = true;
            self.pause = true;
        } else if e.index == 1 && self.id == Some(CommandId::CLIENT) {
            self.client_reply = e.token.is_some_and(|t| t.is(b"REPLY"));
        }
    }

    #[inline]
    fn value(&mut self, _v: &Value<'_>) {
        if self.in_plain {
            self.in_plain = false;
            self.plain_done += 1;
            self.id = None;
        } else {
            self.complete = true;
            self.pause = true;
        }
    }

    #[inline]
    fn pause(&self) -> bool {
        self.pause
    }
}

/// Follows nothing: the telemetry alone looks at the bytes.
struct Plain;

impl Visitor for Plain {
    fn value(&mut self, _v: &Value<'_>) {}
}

/// Follows the server's replies: counts them, and pauses after each one when asked to.
struct ReplyVisitor {
    one_by_one: bool,
    /// The reply being read is owed to a command the client already got an answer for.
    front_answered: bool,
    /// The value under way is told to the telemetry.
    delivering: bool,
    replies: u32,
    done: bool,
    push: bool,
    pause: bool,
}

impl Default for ReplyVisitor {
    fn default() -> Self {
        ReplyVisitor {
            one_by_one: false,
            front_answered: false,
            delivering: true,
            replies: 0,
            done: false,
            push: false,
            pause: false,
        }
    }
}

impl ReplyGate for ReplyVisitor {
    fn deliver(&mut self, kind: Kind) -> bool {
        // The telemetry sees what the client gets: not a late reply that is dropped.
        self.delivering = kind == Kind::Push || !self.front_answered;
        self.delivering
    }

    fn delivering(&self) -> bool {
        self.delivering
    }
}

impl Visitor for ReplyVisitor {
    fn value(&mut self, v: &Value<'_>) {
        self.done = true;
        self.push = v.kind == Kind::Push;
        if !self.push {
            self.replies += 1;
        }
        if self.one_by_one {
            self.pause = true;
        }
    }

    fn pause(&self) -> bool {
        self.pause
    }
}

/// The command being read.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Current {
    /// Its name is not known yet.
    Undecided,
    /// Forwarded, with its timeout and whether it is mirrored.
    Forward(Option<Duration>, bool),
    /// Dropped; the client gets this reply instead.
    Drop(Bytes),
}

/// One direction's output, written as the socket allows.
#[derive(Default)]
struct Out {
    buf: Vec<u8>,
    written: usize,
}

impl Out {
    fn pending(&self) -> usize {
        self.buf.len() - self.written
    }

    /// Writes as much as possible; `Ok(true)` when something was written.
    fn flush<S: Side>(&mut self, cx: &mut Context<'_>, to: &mut S) -> io::Result<bool> {
        let mut progressed = false;
        while self.written < self.buf.len() {
            match to.poll_write(cx, &self.buf[self.written..]) {
                Poll::Ready(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
                Poll::Ready(Ok(n)) => {
                    self.written += n;
                    progressed = true;
                }
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => return Ok(progressed),
            }
        }
        if progressed {
            match to.poll_flush(cx) {
                Poll::Ready(r) => r?,
                Poll::Pending => return Ok(progressed),
            }
        }
        self.buf.clear();
        self.written = 0;
        Ok(progressed)
    }
}

/// One side of an enforced connection: a plaintext socket (read with tokio's readiness
/// API, straight into the buffer) or any stream (TLS).
pub trait Side {
    /// Reads what is there, appended to `buf`; `Ok(0)` at end of stream.
    fn poll_read_into(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut Vec<u8>,
    ) -> Poll<io::Result<usize>>;
    /// Writes some of `data`.
    fn poll_write(&mut self, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>>;
    /// Flushes what was written.
    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    /// Closes the write half.
    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    /// Makes the next close a reset (after the other side reset).
    fn reset_on_close(&self);
    /// Whether writes are buffered until flushed (a TLS session): the fast path then queues
    /// its output instead of writing it at once.
    fn buffers_writes(&self) -> bool {
        false
    }
}

impl Side for &TcpStream {
    fn poll_read_into(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut Vec<u8>,
    ) -> Poll<io::Result<usize>> {
        loop {
            match self.poll_read_ready(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
            buf.reserve(READ);
            // A short read drains the socket's readiness too (`try_read_buf_drained`).
            match crate::tcp::forward::try_read_buf_drained(self, buf) {
                Ok(n) => return Poll::Ready(Ok(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    fn poll_write(&mut self, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        loop {
            match self.poll_write_ready(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
            match self.try_write(data) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                other => return Poll::Ready(other),
            }
        }
    }

    fn poll_flush(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(match SockRef::from(*self).shutdown(Shutdown::Write) {
            Err(e) if e.kind() != io::ErrorKind::NotConnected => Err(e),
            _ => Ok(()),
        })
    }

    fn reset_on_close(&self) {
        let _ = SockRef::from(*self).set_linger(Some(Duration::ZERO));
    }
}

/// Any stream (a TLS session) as a [`Side`].
pub struct Stream<'a, S>(pub &'a mut S);

impl<S: AsyncRead + AsyncWrite + Unpin> Side for Stream<'_, S> {
    fn poll_read_into(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut Vec<u8>,
    ) -> Poll<io::Result<usize>> {
        let start = buf.len();
        buf.resize(start + READ, 0);
        let mut rb = ReadBuf::new(&mut buf[start..]);
        let polled = Pin::new(&mut *self.0).poll_read(cx, &mut rb);
        let n = rb.filled().len();
        buf.truncate(start + n);
        match polled {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(n)),
            // A peer that closes TCP without TLS close_notify: the end of the stream.
            Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => Poll::Ready(Ok(0)),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_write(&mut self, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write(cx, data)
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_flush(cx)
    }

    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut *self.0).poll_shutdown(cx) {
            Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::NotConnected => Poll::Ready(Ok(())),
            other => other,
        }
    }

    fn reset_on_close(&self) {
        // The session's socket is its owner's: a reset ends as a close here.
    }

    fn buffers_writes(&self) -> bool {
        true
    }
}

/// The state of one enforced connection.
struct Pump<'e> {
    enforcement: &'e Enforcement,
    enforcing: bool,
    // Client to server.
    cin: Vec<u8>,
    /// Client stream position of `cin[0]`.
    cin_base: u64,
    scanned: usize,
    done_upto: usize,
    cmd_start: usize,
    cvis: CommandVisitor<'e>,
    current: Current,
    hold: Option<Pin<Box<Sleep>>>,
    client_eof: bool,
    up: Out,
    up_shut: bool,
    // Server to client.
    sin: Vec<u8>,
    svis: ReplyVisitor,
    // One scan per direction serves the policy and the Redis telemetry.
    obs: RedisObserver,
    recorder: Option<RedisRecorder>,
    epoch: StdInstant,
    dropping_reply: bool,
    server_raw: bool,
    server_eof: bool,
    down: Out,
    down_shut: bool,
    seq: Sequencer,
    deadline: Option<(StdInstant, Pin<Box<Sleep>>)>,
    mirror: Option<Mirror>,
    mirror_buf: Vec<u8>,
    totals: Totals,
}

/// Nanoseconds from `epoch` to `at` (the telemetry's clock).
fn nanos(epoch: StdInstant, at: StdInstant) -> u64 {
    u64::try_from(at.saturating_duration_since(epoch).as_nanos()).unwrap_or(u64::MAX)
}

/// Records a completed command in the Redis telemetry, when it is on.
fn record(recorder: &mut Option<RedisRecorder>, done: &CommandDone<'_>) {
    if let Some(r) = recorder {
        let latency = (!done.blocking).then(|| done.latency as f64 / 1e6);
        r.record(done.command.name(), done.outcome.label(), latency);
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

impl<'e> Pump<'e> {
    fn new(enforcement: &'e Enforcement, telemetry: bool) -> Self {
        let recorder =
            enforcement
                .telemetry
                .as_ref()
                .filter(|_| telemetry)
                .map(|(metrics, labels)| {
                    RedisRecorder::new(
                        metrics.clone(),
                        labels.peers.clone(),
                        labels.connection_security_policy.clone(),
                    )
                });
        Pump {
            enforcement,
            enforcing: true,
            cin: Vec::new(),
            cin_base: 0,
            scanned: 0,
            done_upto: 0,
            cmd_start: 0,
            cvis: CommandVisitor::new(&enforcement.policy),
            current: Current::Undecided,
            hold: None,
            client_eof: false,
            up: Out::default(),
            up_shut: false,
            sin: Vec::new(),
            svis: ReplyVisitor::default(),
            obs: RedisObserver::new(),
            recorder,
            epoch: StdInstant::now(),
            dropping_reply: false,
            server_raw: false,
            server_eof: false,
            down: Out::default(),
            down_shut: false,
            seq: Sequencer::new(),
            deadline: None,
            mirror: None,
            mirror_buf: Vec::new(),
            totals: Totals::default(),
        }
    }

    /// Passes `bytes` on to the client (the observer sees them as the server's).
    fn to_client<O: Observer>(down: &mut Out, observer: &mut O, bytes: &[u8], now: StdInstant) {
        if !bytes.is_empty() {
            observer.upstream_bytes(bytes, now);
            down.buf.extend_from_slice(bytes);
        }
    }

    /// An emitter of made-up replies: to the client, the byte counters and the telemetry.
    fn emitter<'a, O: Observer>(
        down: &'a mut Out,
        obs: &'a mut RedisObserver,
        recorder: &'a mut Option<RedisRecorder>,
        observer: &'a mut O,
        ns: u64,
        now: StdInstant,
    ) -> impl FnMut(&[u8]) + 'a {
        move |reply: &[u8]| {
            observer.upstream_bytes(reply, now);
            down.buf.extend_from_slice(reply);
            obs.made_up_reply(reply, ns, |d| record(recorder, d));
        }
    }

    /// The index in `cin` of a client stream position.
    fn offset(&self, position: u64) -> usize {
        usize::try_from(position.saturating_sub(self.cin_base))
            .unwrap_or(usize::MAX)
            .min(self.cin.len())
    }

    /// Forwards `cin[done_upto..end]` to the server.
    fn forward_upto(&mut self, end: usize) {
        if self.done_upto == 0 && end == self.cin.len() && end > 0 && self.up.buf.is_empty() {
            // All of it: hand the buffer over instead of copying it.
            std::mem::swap(&mut self.up.buf, &mut self.cin);
            self.cin.clear();
            self.cin_base += end as u64;
            self.scanned = self.scanned.saturating_sub(end);
            self.cmd_start = self.cmd_start.saturating_sub(end);
            return;
        }
        if end > self.done_upto {
            if let Some(bytes) = self.cin.get(self.done_upto..end) {
                self.up.buf.extend_from_slice(bytes);
            }
            self.done_upto = end;
        }
    }

    /// Gives up on following the client: everything not yet forwarded goes as it is (but
    /// what was read of a command being dropped stays dropped).
    fn stop_enforcing(&mut self) {
        self.enforcing = false;
        if let Current::Drop(_) = self.current {
            self.done_upto = self.done_upto.max(self.scanned);
        }
        self.current = Current::Undecided;
        self.hold = None;
    }

    /// Without enforcement: the client's bytes go on as they are (the telemetry still
    /// follows them while they are RESP).
    fn pass_rest(&mut self, now: StdInstant) {
        if self.scanned < self.cin.len() && !self.obs.is_opaque() {
            let ns = nanos(self.epoch, now);
            if let Some(rest) = self.cin.get(self.scanned..) {
                let _ = self.obs.scan_client(rest, ns, &mut Plain);
            }
        }
        self.scanned = self.cin.len();
        let end = self.cin.len();
        self.forward_upto(end);
    }

    /// Runs the client bytes read so far through the policy.
    fn process_client<O: Observer>(&mut self, observer: &mut O, now: StdInstant) {
        let ns = nanos(self.epoch, now);
        while self.enforcing
            && self.hold.is_none()
            && (self.cvis.pause || self.scanned < self.cin.len())
        {
            // A pause already scanned (by the fast path) is handled first.
            if !self.cvis.pause {
                let Some(data) = self.cin.get(self.scanned..) else {
                    break;
                };
                let scanned = self.obs.scan_client(data, ns, &mut self.cvis);
                let plain = std::mem::take(&mut self.cvis.plain_done);
                self.seq.forwarded_plain(plain);
                match scanned {
                    Some(n) => self.scanned += n,
                    None => {
                        self.stop_enforcing();
                        break;
                    }
                }
                if !self.cvis.pause {
                    continue;
                }
            }
            self.cvis.pause = false;
            if self.cvis.name_ready {
                self.cvis.name_ready = false;
                let (start, _) = self.obs.client_command_start();
                self.cmd_start = self.offset(start);
                let id = self.cvis.id.unwrap_or(CommandId::UNKNOWN);
                if id.is_subscribe() || id == CommandId::MONITOR {
                    self.stop_enforcing();
                    break;
                }
                let Decision {
                    fault,
                    timeout,
                    mirror,
                } = self.cvis.decision.take().unwrap_or_default();
                match fault {
                    Some(Fault::Delay(d)) => {
                        let start = self.cmd_start;
                        self.forward_upto(start);
                        (self.enforcement.on_fault)(id, FaultKind::Delay);
                        self.current = Current::Forward(timeout, mirror);
                        // The rest waits; the command's own bytes go after the delay.
                        self.hold = Some(Box::pin(tokio::time::sleep(d)));
                    }
                    Some(Fault::Abort(reply)) => {
                        let start = self.cmd_start;
                        self.forward_upto(start);
                        (self.enforcement.on_fault)(id, FaultKind::Abort);
                        self.current = Current::Drop(reply);
                    }
                    None => self.current = Current::Forward(timeout, mirror),
                }
            }
            if self.cvis.complete {
                self.cvis.complete = false;
                let end = self.scanned;
                let id = self.cvis.id.take().unwrap_or(CommandId::UNKNOWN);
                match std::mem::replace(&mut self.current, Current::Undecided) {
                    Current::Drop(reply) => {
                        self.done_upto = end;
                        let mut emit = Self::emitter(
                            &mut self.down,
                            &mut self.obs,
                            &mut self.recorder,
                            observer,
                            ns,
                            now,
                        );
                        self.seq.injected(reply, &mut emit);
                    }
                    Current::Forward(timeout, mirror) => {
                        if mirror && let Some(bytes) = self.cin.get(self.cmd_start..end) {
                            self.mirror_buf.extend_from_slice(bytes);
                        }
                        match timeout {
                            Some(t) => self.seq.forwarded(id, Some(now + t)),
                            None => self.seq.forwarded_plain(1),
                        }
                    }
                    Current::Undecided => self.seq.forwarded_plain(1),
                }
                if id == CommandId::CLIENT && self.cvis.client_reply {
                    // CLIENT REPLY OFF|SKIP breaks the pairing of replies with commands.
                    self.forward_upto(end);
                    self.stop_enforcing();
                    break;
                }
            }
        }
        if !self.enforcing {
            self.pass_rest(now);
        } else if self.hold.is_none() {
            match self.current {
                // The command in progress goes on as it arrives, or is dropped as it does.
                Current::Forward(..) => {
                    let end = self.scanned;
                    self.forward_upto(end);
                }
                Current::Drop(_) => self.done_upto = self.scanned,
                Current::Undecided if self.cvis.in_plain => {
                    let end = self.scanned;
                    self.forward_upto(end);
                }
                Current::Undecided => {
                    // A command whose name has not arrived yet waits for it.
                    let (start, under_way) = self.obs.client_command_start();
                    let end = if under_way {
                        self.offset(start)
                    } else {
                        self.scanned
                    };
                    self.forward_upto(end);
                }
            }
        }
        if self.enforcing && self.current == Current::Undecided && self.cin.len() >= HIGH_WATER {
            // A command whose name never ends: not something to follow.
            self.stop_enforcing();
            self.pass_rest(now);
        }
        // Keep only what is not settled yet.
        let keep = self.done_upto;
        if keep > 0 {
            self.cin.drain(..keep);
            self.cin_base += keep as u64;
            self.scanned = self.scanned.saturating_sub(keep);
            self.cmd_start = self.cmd_start.saturating_sub(keep);
            self.done_upto = 0;
        }
        if !self.mirror_buf.is_empty() {
            if self.mirror.is_none()
                && let Some((cluster, _)) = &self.enforcement.policy.mirror
            {
                self.mirror = Mirror::start(cluster.clone(), self.enforcement.connect_timeout);
            }
            let copy = Bytes::from(std::mem::take(&mut self.mirror_buf));
            if let Some(m) = &self.mirror {
                let _ = m.send(copy);
            }
        }
    }

    /// Whether the next client read can take the fast path: nothing read is held back,
    /// nothing is queued toward the server, no command is under way but a plain one.
    fn client_fast(&self) -> bool {
        self.hold.is_none()
            && self.cin.is_empty()
            && self.up.pending() == 0
            && !self.cvis.pause
            && matches!(self.current, Current::Undecided)
    }

    /// The fast path of the client side: reads into `buf` (the thread's scratch buffer)
    /// and, when the bytes hold only commands outside the policy's set, writes them on as
    /// they are (a command whose name has not arrived yet stays behind). Otherwise the
    /// bytes go through the enforcing path, the scan resuming where it paused.
    fn read_client_fast<D: Side, U: Side, O: Observer>(
        &mut self,
        cx: &mut Context<'_>,
        downstream: &mut D,
        upstream: &mut U,
        observer: &mut O,
        buf: &mut Vec<u8>,
        now: StdInstant,
    ) -> Poll<io::Result<usize>> {
        buf.clear();
        let n = match downstream.poll_read_into(cx, buf) {
            Poll::Ready(Ok(n)) if n > 0 => n,
            other => return other,
        };
        observer.downstream_bytes(buf, now);
        self.totals.received += n as u64;
        let start = self.cin_base;
        let ns = nanos(self.epoch, now);
        let (decision, scanned) = if self.enforcing {
            let scanned = self.obs.scan_client(buf, ns, &mut self.cvis);
            let plain = std::mem::take(&mut self.cvis.plain_done);
            self.seq.forwarded_plain(plain);
            if scanned.is_none() {
                // Not RESP: enforcement ends, the bytes flow untouched.
                self.stop_enforcing();
                (Batch::Forward(n), scanned)
            } else {
                let (at, under_way) = self.obs.client_command_start();
                let open = (under_way && !self.cvis.in_plain).then_some(at);
                (batch(start, n, scanned, self.cvis.pause, open), scanned)
            }
        } else {
            if !self.obs.is_opaque() {
                let _ = self.obs.scan_client(buf, ns, &mut Plain);
            }
            (Batch::Forward(n), Some(n))
        };
        match decision {
            Batch::Forward(k) => {
                let (now_bytes, rest) = buf.split_at(k.min(n));
                if let Err(e) = send(cx, upstream, &mut self.up, now_bytes) {
                    return Poll::Ready(Err(e));
                }
                self.cin.extend_from_slice(rest);
                self.cin_base = start + k as u64;
                self.scanned = self.cin.len();
                self.done_upto = 0;
            }
            Batch::Enforce => {
                self.cin.extend_from_slice(buf);
                self.scanned = scanned.unwrap_or(0).min(n);
                self.done_upto = 0;
                self.process_client(observer, now);
            }
        }
        Poll::Ready(Ok(n))
    }

    /// Whether the next server read can take the fast path: the replies pass as they are.
    fn server_fast(&self) -> bool {
        self.sin.is_empty()
            && self.down.pending() == 0
            && (self.server_raw || (!self.seq.needs_boundaries() && !self.dropping_reply))
    }

    /// The fast path of the server side: reads into `buf` (the thread's scratch buffer),
    /// counts the replies against the commands and writes them on as they are.
    fn read_server_fast<D: Side, U: Side, O: Observer>(
        &mut self,
        cx: &mut Context<'_>,
        downstream: &mut D,
        upstream: &mut U,
        observer: &mut O,
        buf: &mut Vec<u8>,
        now: StdInstant,
    ) -> Poll<io::Result<usize>> {
        buf.clear();
        let n = match upstream.poll_read_into(cx, buf) {
            Poll::Ready(Ok(n)) if n > 0 => n,
            other => return other,
        };
        self.totals.sent += n as u64;
        self.count_replies(buf, now);
        observer.upstream_bytes(buf, now);
        if let Err(e) = send(cx, downstream, &mut self.down, buf) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(n))
    }

    /// Server bytes that pass as they are (no reply taken one by one): the telemetry
    /// follows them, and their replies are counted against the commands (unless the
    /// connection already left what can be followed).
    fn count_replies(&mut self, data: &[u8], now: StdInstant) {
        self.svis.one_by_one = false;
        self.svis.front_answered = false;
        self.svis.replies = 0;
        let ns = nanos(self.epoch, now);
        let recorder = &mut self.recorder;
        if self.server_raw {
            if !self.obs.is_opaque() {
                let _ = self
                    .obs
                    .scan_server(data, ns, &mut self.svis, |d| record(recorder, d));
            }
            return;
        }
        let scanned = self
            .obs
            .scan_server(data, ns, &mut self.svis, |d| record(recorder, d));
        let mut fine = scanned.is_some();
        for _ in 0..self.svis.replies {
            if self.seq.reply() != Fate::Forward {
                fine = false;
            }
        }
        // A reply under way can no longer time out.
        if !self.obs.server_at_boundary() {
            self.seq.reply_started();
        }
        if !fine {
            self.server_raw = true;
        }
    }

    /// Runs the server bytes read so far against the commands.
    fn process_server<O: Observer>(&mut self, observer: &mut O, now: StdInstant) {
        if self.sin.is_empty() {
            return;
        }
        let data = std::mem::take(&mut self.sin);
        if self.server_raw || (!self.seq.needs_boundaries() && !self.dropping_reply) {
            // Plain replies: count them in bulk and pass the bytes on as they are.
            self.count_replies(&data, now);
            if self.down.buf.is_empty() {
                // Hand the buffer over instead of copying it.
                observer.upstream_bytes(&data, now);
                self.sin = std::mem::replace(&mut self.down.buf, data);
            } else {
                Self::to_client(&mut self.down, observer, &data, now);
                self.sin = data;
            }
            self.sin.clear();
            return;
        }
        // Reply by reply.
        self.svis.one_by_one = true;
        let mut pos = 0;
        let mut value_start = 0;
        while pos < data.len() {
            self.svis.pause = false;
            self.svis.done = false;
            self.svis.replies = 0;
            self.svis.front_answered = self.dropping_reply || self.seq.front_answered();
            let Some(rest) = data.get(pos..) else { break };
            let ns = nanos(self.epoch, now);
            let recorder = &mut self.recorder;
            let Some(n) = self
                .obs
                .scan_server(rest, ns, &mut self.svis, |d| record(recorder, d))
            else {
                // Not RESP: pass the rest on untouched.
                self.server_raw = true;
                Self::to_client(
                    &mut self.down,
                    observer,
                    data.get(value_start..).unwrap_or_default(),
                    now,
                );
                break;
            };
            pos += n;
            if !self.svis.done {
                break;
            }
            let bytes = data.get(value_start..pos).unwrap_or_default();
            if self.svis.push {
                Self::to_client(&mut self.down, observer, bytes, now);
            } else if self.dropping_reply {
                self.dropping_reply = false;
            } else {
                match self.seq.reply() {
                    Fate::Forward => Self::to_client(&mut self.down, observer, bytes, now),
                    Fate::Drop => {}
                    Fate::Unexpected => {
                        self.server_raw = true;
                        Self::to_client(
                            &mut self.down,
                            observer,
                            data.get(value_start..).unwrap_or_default(),
                            now,
                        );
                        value_start = data.len();
                        break;
                    }
                }
                let ns = nanos(self.epoch, now);
                let mut emit = Self::emitter(
                    &mut self.down,
                    &mut self.obs,
                    &mut self.recorder,
                    observer,
                    ns,
                    now,
                );
                self.seq.flush(&mut emit);
            }
            value_start = pos;
        }
        // A reply cut by the end of the read.
        if value_start < data.len() && !self.server_raw {
            let partial = data.get(value_start..).unwrap_or_default();
            if self.dropping_reply || self.seq.front_answered() {
                // The rest of a late reply: dropped (popped when it completes).
                if !self.dropping_reply {
                    self.dropping_reply = self.seq.reply() == Fate::Drop;
                }
            } else {
                self.seq.reply_started();
                Self::to_client(&mut self.down, observer, partial, now);
            }
        }
        self.sin = data;
        self.sin.clear();
    }

    /// Answers the commands whose timeout passed.
    fn expire<O: Observer>(&mut self, observer: &mut O, now: StdInstant) {
        let ns = nanos(self.epoch, now);
        let mut emit = Self::emitter(
            &mut self.down,
            &mut self.obs,
            &mut self.recorder,
            observer,
            ns,
            now,
        );
        let fired = self.seq.expire(now, TIMEOUT_REPLY, &mut emit);
        for id in fired {
            (self.enforcement.on_fault)(id, FaultKind::Timeout);
        }
    }

    /// Re-arms the deadline timer for the oldest unanswered command; whether it fired.
    fn poll_deadline(&mut self, cx: &mut Context<'_>) -> bool {
        if self.deadline.is_none() && self.seq.is_empty() {
            return false;
        }
        let next = self.seq.next_deadline();
        match (next, &mut self.deadline) {
            (None, _) => {
                self.deadline = None;
                false
            }
            (Some(at), Some((armed, sleep))) => {
                if *armed != at {
                    *armed = at;
                    sleep.as_mut().reset(Instant::from_std(at));
                }
                sleep.as_mut().poll(cx).is_ready()
            }
            (Some(at), None) => {
                let mut sleep = Box::pin(tokio::time::sleep_until(Instant::from_std(at)));
                let fired = sleep.as_mut().poll(cx).is_ready();
                self.deadline = Some((at, sleep));
                fired
            }
        }
    }

    fn quiet(&self) -> bool {
        // Once it stopped following the client, it cannot tell.
        self.enforcing
            && self.seq.is_empty()
            && self.up.pending() == 0
            && self.down.pending() == 0
            && self.cin.is_empty()
    }
}

/// Sends `data` toward `to`: written at once when nothing is queued before it (and the side
/// does not buffer writes), the rest queued in `out`.
fn send<S: Side>(cx: &mut Context<'_>, to: &mut S, out: &mut Out, data: &[u8]) -> io::Result<()> {
    let mut written = 0;
    if out.pending() == 0 && !to.buffers_writes() {
        while written < data.len() {
            let Some(rest) = data.get(written..) else {
                break;
            };
            match to.poll_write(cx, rest) {
                Poll::Ready(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
                Poll::Ready(Ok(n)) => written += n,
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => break,
            }
        }
    }
    if let Some(rest) = data.get(written..)
        && !rest.is_empty()
    {
        out.buf.extend_from_slice(rest);
    }
    Ok(())
}

fn poll_shutdown<S: Side>(cx: &mut Context<'_>, s: &mut S) -> io::Result<bool> {
    match s.poll_shutdown(cx) {
        Poll::Ready(r) => r.map(|()| true),
        Poll::Pending => Ok(false),
    }
}

/// Forwards a Redis connection under `enforcement` until both sides close, one resets,
/// nothing moves for `idle`, or the drain ends it (at a quiet point: no command waiting).
/// With `telemetry`, the per-command Redis telemetry is recorded here (the observer then
/// only counts bytes).
pub async fn forward<O: Observer>(
    downstream: &TcpStream,
    upstream: &TcpStream,
    observer: &mut O,
    idle: Option<Duration>,
    lifecycle: &Lifecycle,
    enforcement: &Enforcement,
    telemetry: bool,
) -> (Totals, io::Result<Ending>) {
    let (mut down, mut up) = (downstream, upstream);
    forward_sides(
        &mut down,
        &mut up,
        observer,
        idle,
        lifecycle,
        enforcement,
        telemetry,
    )
    .await
}

/// [`forward`] over any two sides, such as TLS sessions ([`Stream`]).
pub async fn forward_sides<D: Side, U: Side, O: Observer>(
    downstream: &mut D,
    upstream: &mut U,
    observer: &mut O,
    idle: Option<Duration>,
    lifecycle: &Lifecycle,
    enforcement: &Enforcement,
    telemetry: bool,
) -> (Totals, io::Result<Ending>) {
    let mut p = Pump::new(enforcement, telemetry);
    let mut draining = Some(Box::pin(lifecycle.reached(Phase::Draining)));
    let mut closed = Some(Box::pin(lifecycle.reached(Phase::Closed)));
    let mut timer: Option<Pin<Box<Sleep>>> = idle.map(|d| Box::pin(tokio::time::sleep(d)));
    let mut last_activity = StdInstant::now();
    let result: io::Result<Ending> = poll_fn(|cx| {
        for slot in [&mut draining, &mut closed] {
            if slot
                .as_mut()
                .is_some_and(|f| f.as_mut().poll(cx).is_ready())
            {
                *slot = None;
            }
        }
        // One clock read per wake-up.
        let now = StdInstant::now();
        loop {
            let mut progressed = false;
            // Timers.
            if let Some(h) = p.hold.as_mut()
                && h.as_mut().poll(cx).is_ready()
            {
                p.hold = None;
                p.process_client(observer, now);
                progressed = true;
            }
            if p.poll_deadline(cx) {
                p.expire(observer, StdInstant::now());
                progressed = true;
            }
            // Writes.
            match p.up.flush(cx, &mut *upstream) {
                Ok(w) => progressed |= w,
                Err(e) => return Poll::Ready(Err(e)),
            }
            match p.down.flush(cx, &mut *downstream) {
                Ok(w) => progressed |= w,
                Err(e) => return Poll::Ready(Err(e)),
            }
            // Client reads (not while a delay holds the stream, nor when the server lags).
            if !p.client_eof
                && p.hold.is_none()
                && p.up.pending() < HIGH_WATER
                && p.cin.len() < HIGH_WATER
            {
                let polled = if p.client_fast() {
                    SCRATCH_BUF.with_borrow_mut(|buf| {
                        p.read_client_fast(cx, &mut *downstream, &mut *upstream, observer, buf, now)
                    })
                } else {
                    match downstream.poll_read_into(cx, &mut p.cin) {
                        Poll::Ready(Ok(n)) if n > 0 => {
                            let start = p.cin.len() - n;
                            if let Some(chunk) = p.cin.get(start..) {
                                observer.downstream_bytes(chunk, now);
                            }
                            p.totals.received += n as u64;
                            p.process_client(observer, now);
                            Poll::Ready(Ok(n))
                        }
                        other => other,
                    }
                };
                match polled {
                    Poll::Ready(Ok(0)) => {
                        p.client_eof = true;
                        progressed = true;
                    }
                    Poll::Ready(Ok(_)) => progressed = true,
                    Poll::Pending => {}
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                }
            }
            if p.client_eof && !p.up_shut && p.hold.is_none() && p.up.pending() == 0 {
                // A command cut short by the close goes as it is.
                p.stop_enforcing();
                p.pass_rest(now);
                if p.up.pending() == 0 {
                    match poll_shutdown(cx, &mut *upstream) {
                        Ok(done) => p.up_shut = done,
                        Err(e) => return Poll::Ready(Err(e)),
                    }
                }
                progressed |= p.up_shut;
            }
            // Server reads.
            if !p.server_eof && p.down.pending() < HIGH_WATER {
                let polled = if p.server_fast() {
                    SCRATCH_BUF.with_borrow_mut(|buf| {
                        p.read_server_fast(cx, &mut *downstream, &mut *upstream, observer, buf, now)
                    })
                } else {
                    match upstream.poll_read_into(cx, &mut p.sin) {
                        Poll::Ready(Ok(n)) if n > 0 => {
                            p.totals.sent += n as u64;
                            p.process_server(observer, now);
                            Poll::Ready(Ok(n))
                        }
                        other => other,
                    }
                };
                match polled {
                    Poll::Ready(Ok(0)) => {
                        p.server_eof = true;
                        progressed = true;
                    }
                    Poll::Ready(Ok(_)) => progressed = true,
                    Poll::Pending => {}
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                }
            }
            if p.server_eof && !p.down_shut && p.down.pending() == 0 {
                match poll_shutdown(cx, &mut *downstream) {
                    Ok(done) => p.down_shut = done,
                    Err(e) => return Poll::Ready(Err(e)),
                }
                progressed |= p.down_shut;
            }
            if p.up_shut && p.down_shut {
                return Poll::Ready(Ok(Ending::Closed));
            }
            let phase = lifecycle.phase();
            if phase >= Phase::Draining && (p.quiet() || phase >= Phase::Closed) {
                return Poll::Ready(Ok(Ending::Drained));
            }
            if progressed {
                last_activity = now;
                continue;
            }
            if let (Some(t), Some(limit)) = (timer.as_mut(), idle)
                && t.as_mut().poll(cx).is_ready()
            {
                if last_activity.elapsed() >= limit {
                    return Poll::Ready(Ok(Ending::Idle));
                }
                t.as_mut().reset(Instant::from_std(last_activity + limit));
                if t.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Ok(Ending::Idle));
                }
            }
            return Poll::Pending;
        }
    })
    .await;
    if p.recorder.is_some()
        && p.obs.is_opaque()
        && let Some((metrics, labels)) = &enforcement.telemetry
    {
        metrics.redis_fallback(labels);
    }
    match result {
        Err(e) if is_reset(&e) => {
            downstream.reset_on_close();
            upstream.reset_on_close();
            (p.totals, Ok(Ending::Reset))
        }
        other => (p.totals, other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RedisPortPolicy;
    use ferry_model::ferry::redis_policy::{RedisAbort, RedisFault};

    #[test]
    fn batch_decisions() {
        // (case, start, len, scanned, paused, open command at, expected)
        let cases = [
            (
                "only plain commands",
                100,
                30,
                Some(30),
                false,
                None,
                Batch::Forward(30),
            ),
            (
                "a command's name still to come",
                100,
                30,
                Some(30),
                false,
                Some(120),
                Batch::Forward(20),
            ),
            (
                "the batch is all one unnamed command start",
                100,
                30,
                Some(30),
                false,
                Some(100),
                Batch::Forward(0),
            ),
            (
                "a command begun in an earlier batch",
                100,
                30,
                Some(30),
                false,
                Some(90),
                Batch::Forward(0),
            ),
            (
                "paused at a named command",
                100,
                30,
                Some(12),
                true,
                None,
                Batch::Enforce,
            ),
            (
                "paused at the very end",
                100,
                30,
                Some(30),
                true,
                None,
                Batch::Enforce,
            ),
            ("not RESP", 100, 30, None, false, None, Batch::Enforce),
        ];
        for (case, start, len, scanned, paused, open, want) in cases {
            assert_eq!(batch(start, len, scanned, paused, open), want, "{case}");
        }
    }

    fn resp(args: &[&str]) -> Vec<u8> {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            out.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
        }
        out
    }

    /// The fast path's decision on the first read of a connection holding `bytes`.
    fn first_read(policy: &Policy, bytes: &[u8]) -> Batch {
        let mut obs = RedisObserver::new();
        let mut cvis = CommandVisitor::new(policy);
        let scanned = obs.scan_client(bytes, 0, &mut cvis);
        let (at, under_way) = obs.client_command_start();
        let open = (under_way && !cvis.in_plain).then_some(at);
        batch(0, bytes.len(), scanned, cvis.pause, open)
    }

    #[test]
    fn pipelines_cut_anywhere_never_forward_a_named_command() {
        let policy = Policy::compile(
            &RedisPortPolicy {
                policy: "default/p".into(),
                faults: vec![RedisFault {
                    commands: vec!["get".into()],
                    abort: Some(RedisAbort {
                        error: None,
                        percentage: None,
                    }),
                    delay: None,
                }],
                ..Default::default()
            },
            None,
        );
        let set_a = resp(&["SET", "a", "1"]);
        let get = resp(&["GET", "a"]);
        let getrange = resp(&["GETRANGE", "a", "0", "-1"]);
        let inline = b"PING\r\n".to_vec();
        let set_b = resp(&["SET", "b", "get"]);
        let mut stream = Vec::new();
        let mut starts = Vec::new();
        for cmd in [&set_a, &getrange, &inline, &get, &set_b] {
            starts.push(stream.len());
            stream.extend_from_slice(cmd);
        }
        let get_start = starts[3];
        // Where the name `GET` has fully arrived (the byte after its `\r\n`).
        let get_named = get_start + b"*2\r\n$3\r\nGET\r\n".len();
        for cut in 1..=stream.len() {
            let got = first_read(&policy, &stream[..cut]);
            if cut >= get_named {
                assert_eq!(got, Batch::Enforce, "cut at {cut}");
            } else {
                let Batch::Forward(k) = got else {
                    panic!("cut at {cut}: {got:?}")
                };
                // Never a byte of GET; what stays behind starts at a command.
                assert!(k <= get_start, "cut at {cut}: forwards {k}");
                assert!(k == cut || starts.contains(&k), "cut at {cut}: {k}");
                // A command whose name has arrived (and is not GET) goes at once.
                let open = starts.iter().rev().find(|&&s| s < cut).copied();
                if let Some(s) = open
                    && k < cut
                {
                    assert_eq!(k, s, "cut at {cut}");
                }
            }
        }
        // The whole pipeline without GET goes as it is, in one piece.
        let mut plain = Vec::new();
        for cmd in [&set_a, &getrange, &inline, &set_b] {
            plain.extend_from_slice(cmd);
        }
        assert_eq!(first_read(&policy, &plain), Batch::Forward(plain.len()));
    }
}
