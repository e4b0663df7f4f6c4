//! Reply order on a connection under a RedisPolicy. Redis answers commands in order, so the
//! client must get its replies in the order it sent the commands, whatever the proxy does
//! to some of them: a faulted command's error reply waits for the replies of the commands
//! before it; a command whose timeout fires gets an error reply as soon as it is the oldest
//! one unanswered, and its late real reply is dropped when it comes.
//!
//! Pure: the caller reports commands forwarded or faulted, server replies completed and
//! the time; the sequencer says what each server reply becomes and emits the replies the
//! proxy makes up, in the client's order.

use super::command::CommandId;
use bytes::Bytes;
use std::collections::VecDeque;
use std::time::Instant;

#[derive(Debug)]
enum Slot {
    /// This many commands sent to the server without a timeout, their replies owed.
    Plain(u32),
    /// Sent to the server; its reply is owed. `answered`: the client already got a timeout.
    Forwarded {
        command: CommandId,
        deadline: Option<Instant>,
        answered: bool,
    },
    /// Answered by the proxy, once every command before it is answered.
    Injected(Bytes),
}

/// What a completed server reply becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Passed on to the client.
    Forward,
    /// Dropped: the client already got a timeout error for its command.
    Drop,
    /// No command was waiting for it: the connection left what the sequencer can follow.
    Unexpected,
}

/// The reply order of one connection.
#[derive(Debug, Default)]
pub struct Sequencer {
    slots: VecDeque<Slot>,
    /// Slots that need reply boundaries: injected replies waiting, answered commands whose
    /// reply must be dropped.
    special: usize,
}

impl Sequencer {
    /// A sequencer with nothing in flight.
    pub fn new() -> Self {
        Self::default()
    }

    /// Commands and made-up replies not settled yet.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether nothing is in flight.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Whether server replies must be taken one by one (something is owed or waiting
    /// besides plain replies); otherwise they can be counted in bulk.
    pub fn needs_boundaries(&self) -> bool {
        self.special > 0
    }

    /// Whether the client has been answered for everything it sent.
    fn all_answered(&self) -> bool {
        self.slots.iter().all(|s| match s {
            Slot::Forwarded { answered, .. } => *answered,
            Slot::Injected(_) | Slot::Plain(_) => false,
        })
    }

    /// `count` commands without a timeout were forwarded to the server.
    pub fn forwarded_plain(&mut self, count: u32) {
        if count == 0 {
            return;
        }
        if let Some(Slot::Plain(n)) = self.slots.back_mut() {
            *n = n.saturating_add(count);
        } else {
            self.slots.push_back(Slot::Plain(count));
        }
    }

    /// A command was forwarded to the server (its reply is due by `deadline`).
    pub fn forwarded(&mut self, command: CommandId, deadline: Option<Instant>) {
        self.slots.push_back(Slot::Forwarded {
            command,
            deadline,
            answered: false,
        });
    }

    /// The proxy answers a command with `reply`: emitted now when every earlier command is
    /// answered, else queued.
    pub fn injected(&mut self, reply: Bytes, emit: &mut dyn FnMut(&[u8])) {
        if self.all_answered() {
            emit(&reply);
            return;
        }
        self.special += 1;
        self.slots.push_back(Slot::Injected(reply));
    }

    /// A server reply completed (pushes excepted): what it becomes. The caller passes the
    /// reply on (or not), then calls [`Sequencer::flush`] for the made-up replies behind it.
    pub fn reply(&mut self) -> Fate {
        if let Some(Slot::Plain(n)) = self.slots.front_mut() {
            *n -= 1;
            if *n == 0 {
                self.slots.pop_front();
            }
            return Fate::Forward;
        }
        match self.slots.front() {
            Some(Slot::Forwarded { answered, .. }) => {
                let answered = *answered;
                self.slots.pop_front();
                if answered {
                    self.special -= 1;
                    Fate::Drop
                } else {
                    Fate::Forward
                }
            }
            _ => Fate::Unexpected,
        }
    }

    /// A reply has begun to reach the client: its command can no longer time out.
    pub fn reply_started(&mut self) {
        if let Some(Slot::Forwarded {
            answered: false,
            deadline,
            ..
        }) = self.slots.front_mut()
        {
            *deadline = None;
        }
    }

    /// Whether the oldest command already got its answer (its reply is to be dropped).
    pub fn front_answered(&self) -> bool {
        matches!(
            self.slots.front(),
            Some(Slot::Forwarded { answered: true, .. })
        )
    }

    /// Emits the made-up replies that are due (every command before them answered).
    pub fn flush(&mut self, emit: &mut dyn FnMut(&[u8])) {
        let mut i = 0;
        while i < self.slots.len() {
            match self.slots.get(i) {
                Some(Slot::Forwarded { answered: true, .. }) => i += 1,
                Some(Slot::Injected(_)) => {
                    if let Some(Slot::Injected(reply)) = self.slots.remove(i) {
                        emit(&reply);
                        self.special -= 1;
                    }
                }
                _ => break,
            }
        }
    }

    /// When the oldest unanswered command's timeout fires, if it has one.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.slots.iter().find_map(|s| match s {
            Slot::Forwarded {
                answered: false,
                deadline,
                ..
            } => Some(*deadline),
            Slot::Forwarded { answered: true, .. } => None,
            Slot::Injected(_) | Slot::Plain(_) => Some(None),
        })?
    }

    /// Answers the commands whose timeout has passed at `now` with `reply` (oldest first,
    /// and only while they are the oldest unanswered), with the made-up replies behind
    /// them; returns the commands timed out.
    pub fn expire(
        &mut self,
        now: Instant,
        reply: &[u8],
        emit: &mut dyn FnMut(&[u8]),
    ) -> Vec<CommandId> {
        let mut fired = Vec::new();
        loop {
            let oldest = self
                .slots
                .iter_mut()
                .find(|s| !matches!(s, Slot::Forwarded { answered: true, .. }));
            match oldest {
                Some(Slot::Forwarded {
                    answered,
                    deadline: Some(d),
                    command,
                }) if *d <= now => {
                    *answered = true;
                    fired.push(*command);
                }
                _ => break,
            }
            self.special += 1;
            emit(reply);
            self.flush(emit);
        }
        fired
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn b(s: &'static str) -> Bytes {
        Bytes::from_static(s.as_bytes())
    }

    /// Runs `f` with an emitter that appends to `out`.
    fn into(out: &mut Vec<u8>) -> impl FnMut(&[u8]) + '_ {
        move |r: &[u8]| out.extend_from_slice(r)
    }

    #[test]
    fn injected_replies_wait_their_turn() {
        let mut q = Sequencer::new();
        let mut out = Vec::new();
        // Nothing in flight: an injected reply goes out at once.
        q.injected(b("-E1\r\n"), &mut into(&mut out));
        assert_eq!(out, b"-E1\r\n");
        out.clear();
        q.forwarded(CommandId::GET, None);
        q.injected(b("-E2\r\n"), &mut into(&mut out));
        q.forwarded(CommandId::SET, None);
        q.injected(b("-E3\r\n"), &mut into(&mut out));
        assert!(out.is_empty() && q.needs_boundaries());
        assert_eq!(q.reply(), Fate::Forward);
        q.flush(&mut into(&mut out));
        assert_eq!(out, b"-E2\r\n");
        assert_eq!(q.reply(), Fate::Forward);
        q.flush(&mut into(&mut out));
        assert_eq!(out, b"-E2\r\n-E3\r\n");
        assert!(q.is_empty() && !q.needs_boundaries());
        assert_eq!(q.reply(), Fate::Unexpected);
    }

    #[test]
    fn timeouts_answer_early_and_late_replies_are_dropped() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut q = Sequencer::new();
        let mut out = Vec::new();
        q.forwarded(CommandId::GET, Some(ms(100)));
        q.forwarded(CommandId::SET, Some(ms(50)));
        q.injected(b("-F\r\n"), &mut into(&mut out));
        q.forwarded(CommandId::PING, None);
        assert_eq!(q.next_deadline(), Some(ms(100)));
        // The second command's deadline passed first, but it waits behind the first.
        assert!(q.expire(ms(60), b"-T\r\n", &mut into(&mut out)).is_empty());
        let fired = q.expire(ms(100), b"-T\r\n", &mut into(&mut out));
        assert_eq!(fired, [CommandId::GET, CommandId::SET]);
        assert_eq!(out, b"-T\r\n-T\r\n-F\r\n");
        // PING has no timeout.
        assert_eq!(q.next_deadline(), None);
        // The late replies of GET and SET are dropped, PING's goes through.
        assert!(q.front_answered());
        assert_eq!(q.reply(), Fate::Drop);
        assert_eq!(q.reply(), Fate::Drop);
        assert_eq!(q.reply(), Fate::Forward);
        assert!(q.is_empty() && !q.needs_boundaries());
    }
}
