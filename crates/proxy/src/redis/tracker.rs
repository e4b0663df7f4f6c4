//! Command/reply matching: pairs each server reply with the oldest pending command (FIFO, so
//! pipelining works), and knows the connection modes that break plain FIFO matching:
//! `MULTI`/`EXEC`/`DISCARD` transactions, RESP2 pub/sub mode and RESP3 pushes, `MONITOR`,
//! `CLIENT REPLY OFF|SKIP`, blocking commands, `HELLO` and `RESET`.
//!
//! The tracker is driven by the two [`Scanner`](super::parser::Scanner)s through the visitors
//! [`ClientSide`] and [`ServerSide`]; it stores only small fixed-size entries per pending command
//! and gives up (turns opaque) rather than guess when the stream leaves what it can follow.

use std::collections::VecDeque;

use super::command::CommandId;
use super::parser::{Element, Kind, Token, Value, Visitor};

/// Default cap on commands awaiting a reply before the tracker gives up.
pub const DEFAULT_MAX_PENDING: usize = 100_000;

/// How a command ended.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum Outcome {
    /// Any non-error reply.
    Ok,
    /// An error reply (`-` or `!`).
    Error,
    /// Queued in a transaction that was discarded, aborted (`EXECABORT`, `WATCH`) or reset.
    Aborted,
}

impl Outcome {
    /// The metric label: `ok`, `error` or `aborted`.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Error => "error",
            Outcome::Aborted => "aborted",
        }
    }
}

/// A command whose reply arrived.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct CommandDone<'a> {
    /// The command.
    pub command: CommandId,
    /// Whether it succeeded.
    pub outcome: Outcome,
    /// Time from the read that completed the command to the read that completed its reply, in
    /// the caller's clock units (nanoseconds). Commands queued in a transaction get `EXEC`'s.
    pub latency: u64,
    /// Whether the command may block server-side (`BLPOP`, `XREAD ... BLOCK`, `WAIT`, ...), so
    /// its latency measures the wait for data rather than the server.
    pub blocking: bool,
    /// The first word of the error reply (`WRONGTYPE`, `MOVED`, `ERR`), when short enough.
    pub error: Option<&'a [u8]>,
    /// Number of arguments after the command name (never their values).
    pub args: u32,
    /// When the command was read, in the caller's clock units (the `now` it was read at).
    pub sent: u64,
}

/// Why the observer stopped following the protocol (it keeps forwarding bytes).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum OpaqueReason {
    /// The client sent bytes that are not RESP (or exceed the limits).
    ClientMalformed,
    /// The server sent bytes that are not RESP (or exceed the limits).
    ServerMalformed,
    /// The connection became a `MONITOR` stream.
    Monitor,
    /// The client turned replies off (`CLIENT REPLY OFF|SKIP`).
    ClientReplyOff,
    /// More commands awaited replies than the configured cap.
    QueueFull,
    /// A reply arrived with no command waiting for it.
    UnexpectedReply,
}

impl OpaqueReason {
    /// Whether the reason is malformed protocol (as opposed to a mode the tracker cannot follow).
    pub fn is_malformed(self) -> bool {
        matches!(
            self,
            OpaqueReason::ClientMalformed | OpaqueReason::ServerMalformed
        )
    }

    /// A short label for metrics and logs.
    pub fn label(self) -> &'static str {
        match self {
            OpaqueReason::ClientMalformed => "client_malformed",
            OpaqueReason::ServerMalformed => "server_malformed",
            OpaqueReason::Monitor => "monitor",
            OpaqueReason::ClientReplyOff => "client_reply_off",
            OpaqueReason::QueueFull => "queue_full",
            OpaqueReason::UnexpectedReply => "unexpected_reply",
        }
    }
}

const BLOCKING: u8 = 1;
const IN_MULTI: u8 = 2;
const REPLY_OFF: u8 = 4;
const SUBSCRIPTION: u8 = 8;
/// `expect` value of an argument-less unsubscribe: resolved at its first confirmation.
const EXPECT_ALL: u32 = u32::MAX;

/// A command awaiting its reply (24 bytes).
#[derive(Clone, Copy, Debug)]
struct Entry {
    sent: u64,
    id: CommandId,
    flags: u8,
    /// Subscription confirmations still expected (subscribe family only).
    expect: u32,
    /// Arguments after the command name.
    args: u32,
}

/// Matches replies to commands for one connection.
#[derive(Debug)]
pub struct Tracker {
    pending: VecDeque<Entry>,
    /// Commands acknowledged with `+QUEUED`, completed at `EXEC`.
    queued: VecDeque<Entry>,
    max_pending: usize,
    opaque: Option<OpaqueReason>,
    // Client-side state of the command being read.
    cur: CommandId,
    cur_flags: u8,
    saw_streams: bool,
    client_reply_arg: bool,
    client_multi: bool,
    // Server-side state.
    resp3: bool,
    /// Channels + patterns subscribed (the count in subscribe confirmations).
    subs: u64,
    /// Channels only (for an argument-less `UNSUBSCRIBE`).
    channels: u64,
    /// Shard channels subscribed.
    shard_subs: u64,
    exec_reply: bool,
}

impl Default for Tracker {
    fn default() -> Self {
        Tracker::new(DEFAULT_MAX_PENDING)
    }
}

impl Tracker {
    /// A tracker that gives up after `max_pending` unanswered commands.
    pub fn new(max_pending: usize) -> Self {
        Tracker {
            pending: VecDeque::new(),
            queued: VecDeque::new(),
            max_pending,
            opaque: None,
            cur: CommandId::UNKNOWN,
            cur_flags: 0,
            saw_streams: false,
            client_reply_arg: false,
            client_multi: false,
            resp3: false,
            subs: 0,
            channels: 0,
            shard_subs: 0,
            exec_reply: false,
        }
    }

    /// The visitor for client-to-server bytes read at time `now`.
    pub fn client_side(&mut self, now: u64) -> ClientSide<'_> {
        ClientSide { t: self, now }
    }

    /// The visitor for server-to-client bytes read at time `now`; completed commands go to `f`.
    pub fn server_side<F: FnMut(&CommandDone<'_>)>(&mut self, now: u64, f: F) -> ServerSide<'_, F> {
        ServerSide { t: self, now, f }
    }

    /// Why the tracker stopped, if it did.
    pub fn opaque_reason(&self) -> Option<OpaqueReason> {
        self.opaque
    }

    /// Stops tracking for `reason` (the first reason sticks); pending commands are dropped.
    pub fn set_opaque(&mut self, reason: OpaqueReason) {
        if self.opaque.is_none() {
            self.opaque = Some(reason);
            self.pending = VecDeque::new();
            self.queued = VecDeque::new();
        }
    }

    /// Commands sent and not yet completed (including ones queued in a transaction).
    pub fn pending(&self) -> usize {
        self.pending.len() + self.queued.len()
    }

    /// Whether the server speaks RESP3 on this connection (after a successful `HELLO 3`).
    pub fn is_resp3(&self) -> bool {
        self.resp3
    }

    /// Whether the connection has active subscriptions (pub/sub mode).
    pub fn in_pubsub(&self) -> bool {
        self.subs + self.shard_subs > 0
    }

    /// The client's command name arrived.
    #[inline]
    fn start_command(&mut self, name: Option<&Token>) {
        self.cur = name.map_or(CommandId::UNKNOWN, CommandId::from_token);
        self.cur_flags = if self.cur.is_blocking() { BLOCKING } else { 0 };
        self.saw_streams = false;
        self.client_reply_arg = false;
    }

    /// A captured argument of a command whose arguments matter (`CLIENT REPLY`, `XREAD BLOCK`).
    #[inline(never)]
    fn argument(&mut self, index: u32, token: &[u8]) {
        match self.cur {
            CommandId::CLIENT => {
                if index == 1 {
                    self.client_reply_arg = token == b"REPLY";
                } else if index == 2 && self.client_reply_arg && matches!(token, b"OFF" | b"SKIP") {
                    self.cur_flags |= REPLY_OFF;
                }
            }
            CommandId::XREAD | CommandId::XREADGROUP => {
                if token == b"STREAMS" {
                    self.saw_streams = true;
                } else if token == b"BLOCK" && !self.saw_streams {
                    self.cur_flags |= BLOCKING;
                }
            }
            _ => {}
        }
    }

    fn check_reply_off(&mut self) {
        if self
            .pending
            .front()
            .is_some_and(|e| e.flags & REPLY_OFF != 0)
        {
            self.set_opaque(OpaqueReason::ClientReplyOff);
        }
    }

    fn push_command(&mut self, argc: u64, now: u64) {
        let id = self.cur;
        let mut flags = self.cur_flags;
        let mut expect = 0;
        match id {
            CommandId::MULTI => self.client_multi = true,
            CommandId::EXEC | CommandId::DISCARD | CommandId::RESET => self.client_multi = false,
            CommandId::QUIT | CommandId::WATCH => {}
            _ if self.client_multi => flags = (flags | IN_MULTI) & !BLOCKING,
            _ => {}
        }
        if flags & IN_MULTI == 0 && (id.is_subscribe() || id.is_unsubscribe()) {
            let args = argc.saturating_sub(1);
            if args > 0 {
                flags |= SUBSCRIPTION;
                expect = u32::try_from(args).unwrap_or(EXPECT_ALL - 1);
            } else if id.is_unsubscribe() {
                flags |= SUBSCRIPTION;
                expect = EXPECT_ALL;
            }
        }
        if self.pending() >= self.max_pending {
            self.set_opaque(OpaqueReason::QueueFull);
            return;
        }
        self.pending.push_back(Entry {
            sent: now,
            id,
            flags,
            expect,
            args: u32::try_from(argc.saturating_sub(1)).unwrap_or(u32::MAX),
        });
        self.check_reply_off();
    }

    fn complete<F: FnMut(&CommandDone<'_>)>(
        e: &Entry,
        outcome: Outcome,
        latency: u64,
        error: Option<&[u8]>,
        f: &mut F,
    ) {
        f(&CommandDone {
            command: e.id,
            outcome,
            latency,
            blocking: e.flags & BLOCKING != 0,
            error,
            args: e.args,
            sent: e.sent,
        });
    }

    fn drain_queued<F: FnMut(&CommandDone<'_>)>(
        &mut self,
        outcome: Outcome,
        latency: u64,
        f: &mut F,
    ) {
        while let Some(q) = self.queued.pop_front() {
            Self::complete(&q, outcome, latency, None, f);
        }
    }

    /// Records a subscription count from a confirmation of kind `id`.
    fn note_confirmation(&mut self, id: CommandId, count: Option<i64>) {
        let count = count.and_then(|c| u64::try_from(c).ok()).unwrap_or(0);
        match id {
            CommandId::SUBSCRIBE => {
                self.channels = self
                    .channels
                    .saturating_add(count.saturating_sub(self.subs));
                self.subs = count;
            }
            CommandId::UNSUBSCRIBE => {
                self.channels = self
                    .channels
                    .saturating_sub(self.subs.saturating_sub(count));
                self.subs = count;
            }
            CommandId::PSUBSCRIBE | CommandId::PUNSUBSCRIBE => self.subs = count,
            _ => self.shard_subs = count,
        }
        self.channels = self.channels.min(self.subs);
    }

    /// Handles a pub/sub confirmation or message; returns true when `v` was consumed by it.
    fn pubsub<F: FnMut(&CommandDone<'_>)>(&mut self, v: &Value<'_>, now: u64, f: &mut F) -> bool {
        let front_sub = self
            .pending
            .front()
            .is_some_and(|e| e.flags & SUBSCRIPTION != 0);
        let pubsub = self.in_pubsub() && !self.resp3;
        if v.kind != Kind::Push && !pubsub && !front_sub {
            return false;
        }
        let Some(head_token) = v.head else {
            return v.kind == Kind::Push;
        };
        let Some(head) = head_token.get() else {
            return v.kind == Kind::Push;
        };
        let id = CommandId::from_token(head_token);
        if v.len == 3 && (id.is_subscribe() || id.is_unsubscribe()) {
            if let Some(front) = self.pending.front_mut()
                && front.flags & SUBSCRIPTION != 0
                && front.id == id
            {
                if front.expect == EXPECT_ALL {
                    let now_subscribed = match id {
                        CommandId::UNSUBSCRIBE => self.channels,
                        CommandId::PUNSUBSCRIBE => self.subs.saturating_sub(self.channels),
                        _ => self.shard_subs,
                    };
                    front.expect = u32::try_from(now_subscribed.max(1)).unwrap_or(u32::MAX - 1);
                }
                front.expect = front.expect.saturating_sub(1);
                if front.expect == 0
                    && let Some(e) = self.pending.pop_front()
                {
                    Self::complete(&e, Outcome::Ok, now.saturating_sub(e.sent), None, f);
                }
                self.note_confirmation(id, v.last_int);
                self.check_reply_off();
                return true;
            }
            self.note_confirmation(id, v.last_int);
            // An unsolicited confirmation (e.g. a shard channel moved): out of band.
            return v.kind == Kind::Push || pubsub || self.in_pubsub();
        }
        if v.kind == Kind::Push {
            return true;
        }
        pubsub && matches!(head, b"MESSAGE" | b"PMESSAGE" | b"SMESSAGE")
    }

    fn on_reply<F: FnMut(&CommandDone<'_>)>(&mut self, v: &Value<'_>, now: u64, f: &mut F) {
        let exec_reply = std::mem::take(&mut self.exec_reply);
        if self.opaque.is_some() {
            return;
        }
        if matches!(v.kind, Kind::Array | Kind::Push) && self.pubsub(v, now, f) {
            return;
        }
        let Some(e) = self.pending.pop_front() else {
            self.set_opaque(OpaqueReason::UnexpectedReply);
            return;
        };
        let latency = now.saturating_sub(e.sent);
        let is_error = v.kind.is_error();
        let error = if is_error {
            v.head.and_then(|h| h.get())
        } else {
            None
        };
        let outcome = if is_error {
            Outcome::Error
        } else {
            Outcome::Ok
        };
        if e.flags & IN_MULTI != 0
            && v.kind == Kind::Simple
            && v.head.is_some_and(|h| h.is(b"QUEUED"))
        {
            self.queued.push_back(e);
            self.check_reply_off();
            return;
        }
        match e.id {
            CommandId::EXEC => {
                let rest = if exec_reply {
                    Outcome::Ok
                } else {
                    Outcome::Aborted
                };
                self.drain_queued(rest, latency, f);
            }
            CommandId::DISCARD => self.drain_queued(Outcome::Aborted, latency, f),
            CommandId::RESET if !is_error => {
                self.drain_queued(Outcome::Aborted, latency, f);
                self.subs = 0;
                self.channels = 0;
                self.shard_subs = 0;
                self.resp3 = false;
            }
            CommandId::HELLO if !is_error => self.resp3 = v.kind == Kind::Map,
            CommandId::MONITOR if !is_error => {
                Self::complete(&e, outcome, latency, error, f);
                self.set_opaque(OpaqueReason::Monitor);
                return;
            }
            _ => {}
        }
        Self::complete(&e, outcome, latency, error, f);
        self.check_reply_off();
    }
}

/// The tracker's view of client-to-server values (see [`Tracker::client_side`]).
pub struct ClientSide<'a> {
    t: &'a mut Tracker,
    now: u64,
}

impl Visitor for ClientSide<'_> {
    #[inline]
    fn wants_token(&self, index: u32) -> bool {
        match self.t.cur {
            CommandId::CLIENT => index <= 2,
            CommandId::XREAD | CommandId::XREADGROUP => !self.t.saw_streams,
            _ => false,
        }
    }

    #[inline]
    fn element(&mut self, e: &Element<'_>) {
        if e.index == 0 {
            self.t.start_command(e.token);
        } else if let Some(token) = e.token.and_then(|tok| tok.get()) {
            // Arguments are captured only for the commands `wants_token` names.
            self.t.argument(e.index, token);
        }
    }

    #[inline]
    fn value(&mut self, v: &Value<'_>) {
        if self.t.opaque.is_some() || v.len == 0 {
            return;
        }
        self.t.push_command(v.len, self.now);
    }

    #[inline]
    fn command(&self) -> Option<CommandId> {
        Some(self.t.cur)
    }
}

/// The tracker's view of server-to-client values (see [`Tracker::server_side`]).
pub struct ServerSide<'a, F> {
    t: &'a mut Tracker,
    now: u64,
    f: F,
}

impl<F: FnMut(&CommandDone<'_>)> Visitor for ServerSide<'_, F> {
    #[inline]
    fn begin(&mut self, kind: Kind) {
        let t = &mut *self.t;
        t.exec_reply = kind == Kind::Array
            && !t.queued.is_empty()
            && t.pending.front().is_some_and(|e| e.id == CommandId::EXEC);
    }

    #[inline]
    fn wants_token(&self, _index: u32) -> bool {
        self.t.exec_reply
    }

    #[inline]
    fn element(&mut self, e: &Element<'_>) {
        let t = &mut *self.t;
        if !t.exec_reply {
            return;
        }
        let exec_sent = t.pending.front().map_or(self.now, |x| x.sent);
        if let Some(q) = t.queued.pop_front() {
            let (outcome, error) = if e.kind.is_error() {
                (Outcome::Error, e.token.and_then(|tok| tok.get()))
            } else {
                (Outcome::Ok, None)
            };
            Tracker::complete(
                &q,
                outcome,
                self.now.saturating_sub(exec_sent),
                error,
                &mut self.f,
            );
        }
    }

    #[inline]
    fn value(&mut self, v: &Value<'_>) {
        self.t.on_reply(v, self.now, &mut self.f);
    }
}
