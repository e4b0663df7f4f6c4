//! A RedisPolicy compiled for the data path: per command, the fault that applies (an error
//! reply or a delay, with its share), the timeout, and whether a copy goes to the mirror —
//! looked up by the interned command id, one table load per command. Commands the policy
//! must not touch (pub/sub, `MONITOR`, blocking commands, transactions, `CLIENT`) never get
//! a fault or a timeout, whatever the policy lists.
//!
//! The rules also compile into the policy's command set ([`Policy::acts_on`]): the commands
//! some fault, timeout or mirror can apply to. Every other command is forwarded as it is,
//! without drawing a share or building a decision.

use super::command::CommandId;
use super::parser::Token;
use crate::cluster::UpstreamCluster;
use crate::config::RedisPortPolicy;
use crate::resilience::sample;
use bytes::Bytes;
use ferry_model::ferry::redis_policy::{DEFAULT_ERROR, PASSED_THROUGH};
use std::sync::Arc;
use std::time::Duration;

/// An injected fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Answer with this RESP error (`-ERR ...\r\n`) instead of forwarding.
    Abort(Bytes),
    /// Hold the command (and what follows it) this long, then forward it.
    Delay(Duration),
}

/// What happens to one command.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decision {
    /// The fault drawn for it, if any.
    pub fault: Option<Fault>,
    /// Its reply is due within this long.
    pub timeout: Option<Duration>,
    /// A copy goes to the mirror.
    pub mirror: bool,
}

/// A rule: which commands (`None` = all, else uppercase names) and what.
#[derive(Debug, Clone)]
struct Rule<T> {
    commands: Option<Vec<Vec<u8>>>,
    what: T,
}

impl<T> Rule<T> {
    fn covers(&self, name: &[u8]) -> bool {
        self.commands
            .as_ref()
            .is_none_or(|list| list.iter().any(|c| c == name))
    }
}

/// The compiled policy.
#[derive(Debug)]
pub struct Policy {
    /// `namespace/name` of the RedisPolicy.
    pub name: String,
    faults: Vec<Rule<(Fault, f64)>>,
    timeouts: Vec<Rule<Duration>>,
    /// Per command index: the first fault rule and the first timeout rule that apply.
    table: Vec<(Option<u16>, Option<u16>)>,
    /// Commands never touched, by command index.
    untouched: Vec<bool>,
    /// The command set: by command index, whether some rule can apply.
    acts: Vec<bool>,
    /// The mirror cluster and the share copied.
    pub mirror: Option<(Arc<UpstreamCluster>, f64)>,
}

/// The RESP error line for an error text.
pub fn error_reply(text: &str) -> Bytes {
    let clean: String = text.chars().filter(|c| *c != '\r' && *c != '\n').collect();
    Bytes::from(format!("-{clean}\r\n"))
}

/// The reply of a command whose timeout fired.
pub const TIMEOUT_REPLY: &[u8] = b"-ERR ferry: command timed out (RedisPolicy)\r\n";

impl Policy {
    /// Compiles one port policy; `mirror` is its mirror cluster, if it has one.
    pub fn compile(p: &RedisPortPolicy, mirror: Option<Arc<UpstreamCluster>>) -> Policy {
        let names = |list: &[String]| {
            (!list.is_empty()).then(|| {
                list.iter()
                    .map(|c| c.to_ascii_uppercase().into_bytes())
                    .collect::<Vec<_>>()
            })
        };
        let faults: Vec<Rule<(Fault, f64)>> = p
            .faults
            .iter()
            .filter_map(|f| {
                let what = if let Some(a) = &f.abort {
                    (
                        Fault::Abort(error_reply(a.error.as_deref().unwrap_or(DEFAULT_ERROR))),
                        a.percentage.unwrap_or(100.0),
                    )
                } else {
                    let d = f.delay.as_ref()?;
                    (
                        Fault::Delay(d.fixed_delay.as_ref()?.get()),
                        d.percentage.unwrap_or(100.0),
                    )
                };
                Some(Rule {
                    commands: names(&f.commands),
                    what,
                })
            })
            .collect();
        let timeouts: Vec<Rule<Duration>> = p
            .timeouts
            .iter()
            .filter_map(|t| {
                Some(Rule {
                    commands: names(&t.commands),
                    what: t.timeout.as_ref()?.get(),
                })
            })
            .collect();
        let slots = CommandId::known_count() + 1;
        let mut untouched = vec![false; slots];
        for name in PASSED_THROUGH {
            let id = CommandId::lookup(name.as_bytes());
            if !id.is_unknown() {
                untouched[id.index()] = true;
            }
        }
        let first = |rules_len: usize, covers: &dyn Fn(usize, &[u8]) -> bool, name: &[u8]| {
            (0..rules_len)
                .find(|&i| covers(i, name))
                .and_then(|i| u16::try_from(i).ok())
        };
        let table = CommandId::all()
            .map(|id| {
                let name = id.name().to_ascii_uppercase();
                if untouched[id.index()] {
                    return (None, None);
                }
                (
                    first(faults.len(), &|i, n| faults[i].covers(n), name.as_bytes()),
                    first(
                        timeouts.len(),
                        &|i, n| timeouts[i].covers(n),
                        name.as_bytes(),
                    ),
                )
            })
            .collect::<Vec<_>>();
        let mirrors = p.mirror.is_some() && mirror.is_some();
        let acts = CommandId::all()
            .zip(&table)
            .map(|(id, (fault, timeout))| {
                !untouched[id.index()]
                    && (fault.is_some() || timeout.is_some() || (mirrors && id.is_mirrored()))
            })
            .collect();
        Policy {
            name: p.policy.clone(),
            faults,
            timeouts,
            table,
            untouched,
            acts,
            mirror: p
                .mirror
                .as_ref()
                .and_then(|m| Some((mirror?, m.percentage))),
        }
    }

    /// Whether a command is passed through untouched (its own kind, not the policy's say).
    pub fn untouched(&self, id: CommandId) -> bool {
        self.untouched.get(id.index()).copied().unwrap_or(false)
    }

    /// Whether some rule of the policy (a fault, a timeout or the mirror) can apply to the
    /// command: the policy's command set. A command outside it is forwarded as it is, with
    /// no decision to make. Commands not in the table (`UNKNOWN`, module commands) are in
    /// it when some rule could name them: [`Policy::decide`] compares their names.
    #[inline]
    pub fn acts_on(&self, id: CommandId) -> bool {
        match self.acts.get(id.index()) {
            Some(acts) => *acts,
            None => !self.faults.is_empty() || !self.timeouts.is_empty(),
        }
    }

    /// Whether the policy can change anything at all (a fault, a timeout or a mirror).
    pub fn is_active(&self) -> bool {
        !self.faults.is_empty() || !self.timeouts.is_empty() || self.mirror.is_some()
    }

    /// Decides what happens to one command (`name`: its captured name, for commands not in
    /// the table); draws the fault's share and the mirror's.
    pub fn decide(&self, id: CommandId, name: Option<&Token>) -> Decision {
        if self.untouched(id) {
            return Decision::default();
        }
        let (fault, timeout) = match self.table.get(id.index()) {
            Some(entry) => *entry,
            None => {
                // Not in the table: compare the captured name.
                let n = name.and_then(|t| t.get()).unwrap_or_default();
                let f = self.faults.iter().position(|r| r.covers(n));
                let t = self.timeouts.iter().position(|r| r.covers(n));
                (
                    f.and_then(|i| u16::try_from(i).ok()),
                    t.and_then(|i| u16::try_from(i).ok()),
                )
            }
        };
        Decision {
            fault: fault
                .and_then(|i| self.faults.get(usize::from(i)))
                .filter(|r| sample(r.what.1))
                .map(|r| r.what.0.clone()),
            timeout: timeout
                .and_then(|i| self.timeouts.get(usize::from(i)))
                .map(|r| r.what),
            mirror: self
                .mirror
                .as_ref()
                .is_some_and(|(_, pct)| id.is_mirrored() && sample(*pct)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_model::Duration as D;
    use ferry_model::ferry::redis_policy::{RedisAbort, RedisDelay, RedisFault, RedisTimeout};

    fn policy() -> Policy {
        Policy::compile(
            &RedisPortPolicy {
                policy: "default/p".into(),
                faults: vec![
                    RedisFault {
                        commands: vec!["get".into(), "JSON.GET".into()],
                        abort: Some(RedisAbort {
                            error: Some("READONLY injected".into()),
                            percentage: None,
                        }),
                        delay: None,
                    },
                    RedisFault {
                        commands: Vec::new(),
                        abort: None,
                        delay: Some(RedisDelay {
                            fixed_delay: D::parse("10ms").ok(),
                            percentage: Some(100.0),
                        }),
                    },
                ],
                timeouts: vec![RedisTimeout {
                    commands: vec!["SET".into()],
                    timeout: D::parse("1s").ok(),
                }],
                ..Default::default()
            },
            None,
        )
    }

    #[test]
    fn first_rule_per_command_and_untouched_commands() {
        let p = policy();
        let get = p.decide(CommandId::GET, None);
        assert_eq!(
            get.fault,
            Some(Fault::Abort(Bytes::from_static(b"-READONLY injected\r\n")))
        );
        assert_eq!(get.timeout, None);
        let set = p.decide(CommandId::SET, None);
        assert_eq!(set.fault, Some(Fault::Delay(Duration::from_millis(10))));
        assert_eq!(set.timeout, Some(Duration::from_secs(1)));
        for id in [
            CommandId::SUBSCRIBE,
            CommandId::MULTI,
            CommandId::EXEC,
            CommandId::lookup(b"blpop"),
            CommandId::CLIENT,
        ] {
            assert_eq!(p.decide(id, None), Decision::default(), "{id}");
        }
        // A module command, named by its captured token.
        let token = Token::from_bytes(b"json.get");
        assert!(matches!(
            p.decide(CommandId::UNKNOWN, Some(&token)).fault,
            Some(Fault::Abort(_))
        ));
        assert!(p.is_active());
    }

    #[test]
    fn the_command_set_holds_the_commands_some_rule_names() {
        let abort_on = |commands: &[&str]| RedisFault {
            commands: commands.iter().map(|c| c.to_string()).collect(),
            abort: Some(RedisAbort {
                error: None,
                percentage: Some(0.0),
            }),
            delay: None,
        };
        let timeout_on = |commands: &[&str]| RedisTimeout {
            commands: commands.iter().map(|c| c.to_string()).collect(),
            timeout: D::parse("1s").ok(),
        };
        let get = CommandId::GET;
        let set = CommandId::SET;
        let debug = CommandId::lookup(b"DEBUG");
        let blpop = CommandId::lookup(b"BLPOP");
        let sub = CommandId::SUBSCRIBE;
        let unknown = CommandId::UNKNOWN;
        // (case, faults, timeouts, [(command, in the set)])
        type Case = (
            &'static str,
            Vec<RedisFault>,
            Vec<RedisTimeout>,
            Vec<(CommandId, bool)>,
        );
        let cases: Vec<Case> = vec![
            (
                "no rules",
                Vec::new(),
                Vec::new(),
                vec![(get, false), (set, false), (unknown, false)],
            ),
            (
                "names, any case",
                vec![abort_on(&["debug"])],
                vec![timeout_on(&["FlushAll"])],
                vec![
                    (debug, true),
                    (CommandId::lookup(b"flushall"), true),
                    (get, false),
                    (set, false),
                    (unknown, true),
                ],
            ),
            (
                "a share of 0% still names the command",
                vec![abort_on(&["GET"])],
                Vec::new(),
                vec![(get, true), (set, false)],
            ),
            (
                "no list: all commands but the untouched ones",
                vec![abort_on(&[])],
                Vec::new(),
                vec![
                    (get, true),
                    (set, true),
                    (debug, true),
                    (blpop, false),
                    (sub, false),
                    (CommandId::MULTI, false),
                    (unknown, true),
                ],
            ),
            (
                "a timeout without a list",
                Vec::new(),
                vec![timeout_on(&[])],
                vec![(get, true), (blpop, false)],
            ),
            (
                "untouched commands stay out even when named",
                vec![abort_on(&["BLPOP", "SUBSCRIBE", "get"])],
                Vec::new(),
                vec![(blpop, false), (sub, false), (get, true), (set, false)],
            ),
        ];
        for (case, faults, timeouts, expect) in cases {
            let p = Policy::compile(
                &RedisPortPolicy {
                    policy: "default/p".into(),
                    faults,
                    timeouts,
                    ..Default::default()
                },
                None,
            );
            for (id, want) in expect {
                assert_eq!(p.acts_on(id), want, "{case}: {id}");
                if !want {
                    // Outside the set, the full decision agrees: nothing to do.
                    assert_eq!(p.decide(id, None), Decision::default(), "{case}: {id}");
                }
            }
        }
    }

    #[test]
    fn shares_are_drawn_per_command() {
        let p = Policy::compile(
            &RedisPortPolicy {
                policy: "default/p".into(),
                faults: vec![RedisFault {
                    commands: vec!["GET".into()],
                    abort: Some(RedisAbort {
                        error: None,
                        percentage: Some(20.0),
                    }),
                    delay: None,
                }],
                ..Default::default()
            },
            None,
        );
        let hits = (0..10_000)
            .filter(|_| p.decide(CommandId::GET, None).fault.is_some())
            .count();
        // Binomial(10000, 0.2): sd 40; 5 sd.
        assert!((1_800..=2_200).contains(&hits), "{hits}");
        assert_eq!(error_reply("a\r\nb"), Bytes::from_static(b"-ab\r\n"));
    }
}
