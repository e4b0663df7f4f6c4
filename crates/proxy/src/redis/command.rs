//! Redis command names: a static table of the known top-level commands, interned as
//! [`CommandId`], with a compile-time hash index so a lookup costs one hash and one compare.

use super::parser::{TOKEN_CAP, Token};

/// Lower-case names of the known Redis commands (top-level only; subcommands such as
/// `CLIENT REPLY` are reported under their container). Index = [`CommandId`] value.
const NAMES: &[&str] = &[
    "acl",
    "append",
    "asking",
    "auth",
    "bgrewriteaof",
    "bgsave",
    "bitcount",
    "bitfield",
    "bitfield_ro",
    "bitop",
    "bitpos",
    "blmove",
    "blmpop",
    "blpop",
    "brpop",
    "brpoplpush",
    "bzmpop",
    "bzpopmax",
    "bzpopmin",
    "client",
    "cluster",
    "command",
    "config",
    "copy",
    "dbsize",
    "debug",
    "decr",
    "decrby",
    "del",
    "discard",
    "dump",
    "echo",
    "eval",
    "eval_ro",
    "evalsha",
    "evalsha_ro",
    "exec",
    "exists",
    "expire",
    "expireat",
    "expiretime",
    "failover",
    "fcall",
    "fcall_ro",
    "flushall",
    "flushdb",
    "function",
    "geoadd",
    "geodist",
    "geohash",
    "geopos",
    "georadius",
    "georadius_ro",
    "georadiusbymember",
    "georadiusbymember_ro",
    "geosearch",
    "geosearchstore",
    "get",
    "getbit",
    "getdel",
    "getex",
    "getrange",
    "getset",
    "hdel",
    "hello",
    "hexists",
    "hexpire",
    "hexpireat",
    "hexpiretime",
    "hget",
    "hgetall",
    "hgetdel",
    "hgetex",
    "hincrby",
    "hincrbyfloat",
    "hkeys",
    "hlen",
    "hmget",
    "hmset",
    "hpersist",
    "hpexpire",
    "hpexpireat",
    "hpexpiretime",
    "hpttl",
    "hrandfield",
    "hscan",
    "hset",
    "hsetex",
    "hsetnx",
    "hstrlen",
    "httl",
    "hvals",
    "incr",
    "incrby",
    "incrbyfloat",
    "info",
    "keys",
    "lastsave",
    "latency",
    "lcs",
    "lindex",
    "linsert",
    "llen",
    "lmove",
    "lmpop",
    "lolwut",
    "lpop",
    "lpos",
    "lpush",
    "lpushx",
    "lrange",
    "lrem",
    "lset",
    "ltrim",
    "memory",
    "mget",
    "migrate",
    "module",
    "monitor",
    "move",
    "mset",
    "msetnx",
    "multi",
    "object",
    "persist",
    "pexpire",
    "pexpireat",
    "pexpiretime",
    "pfadd",
    "pfcount",
    "pfdebug",
    "pfmerge",
    "pfselftest",
    "ping",
    "psetex",
    "psubscribe",
    "psync",
    "pttl",
    "publish",
    "pubsub",
    "punsubscribe",
    "quit",
    "randomkey",
    "readonly",
    "readwrite",
    "rename",
    "renamenx",
    "replconf",
    "replicaof",
    "reset",
    "restore",
    "restore-asking",
    "role",
    "rpop",
    "rpoplpush",
    "rpush",
    "rpushx",
    "sadd",
    "save",
    "scan",
    "scard",
    "script",
    "sdiff",
    "sdiffstore",
    "select",
    "sentinel",
    "set",
    "setbit",
    "setex",
    "setnx",
    "setrange",
    "shutdown",
    "sinter",
    "sintercard",
    "sinterstore",
    "sismember",
    "slaveof",
    "slowlog",
    "smembers",
    "smismember",
    "smove",
    "sort",
    "sort_ro",
    "spop",
    "spublish",
    "srandmember",
    "srem",
    "sscan",
    "ssubscribe",
    "strlen",
    "subscribe",
    "substr",
    "sunion",
    "sunionstore",
    "sunsubscribe",
    "swapdb",
    "sync",
    "time",
    "touch",
    "ttl",
    "type",
    "unlink",
    "unsubscribe",
    "unwatch",
    "wait",
    "waitaof",
    "watch",
    "xack",
    "xadd",
    "xautoclaim",
    "xclaim",
    "xdel",
    "xgroup",
    "xinfo",
    "xlen",
    "xpending",
    "xrange",
    "xread",
    "xreadgroup",
    "xrevrange",
    "xsetid",
    "xtrim",
    "zadd",
    "zcard",
    "zcount",
    "zdiff",
    "zdiffstore",
    "zincrby",
    "zinter",
    "zintercard",
    "zinterstore",
    "zlexcount",
    "zmpop",
    "zmscore",
    "zpopmax",
    "zpopmin",
    "zrandmember",
    "zrange",
    "zrangebylex",
    "zrangebyscore",
    "zrangestore",
    "zrank",
    "zrem",
    "zremrangebylex",
    "zremrangebyrank",
    "zremrangebyscore",
    "zrevrange",
    "zrevrangebylex",
    "zrevrangebyscore",
    "zrevrank",
    "zscan",
    "zscore",
    "zunion",
    "zunionstore",
    "vadd",
    "vcard",
    "vdim",
    "vemb",
    "vrem",
    "vsim",
];

/// Commands that block the connection until data arrives or a timeout passes.
const BLOCKING: [&str; 10] = [
    "blpop",
    "brpop",
    "brpoplpush",
    "blmove",
    "blmpop",
    "bzpopmin",
    "bzpopmax",
    "bzmpop",
    "wait",
    "waitaof",
];

/// Commands that only read data: the ones a RedisPolicy mirror copies.
const READ_ONLY: [&str; 85] = [
    "get",
    "mget",
    "exists",
    "strlen",
    "getrange",
    "substr",
    "getbit",
    "bitcount",
    "bitpos",
    "bitfield_ro",
    "type",
    "ttl",
    "pttl",
    "expiretime",
    "pexpiretime",
    "dbsize",
    "randomkey",
    "keys",
    "scan",
    "hget",
    "hmget",
    "hgetall",
    "hkeys",
    "hvals",
    "hlen",
    "hexists",
    "hstrlen",
    "hscan",
    "hrandfield",
    "httl",
    "hpttl",
    "hexpiretime",
    "hpexpiretime",
    "lrange",
    "llen",
    "lindex",
    "lpos",
    "smembers",
    "sismember",
    "smismember",
    "scard",
    "srandmember",
    "sinter",
    "sintercard",
    "sunion",
    "sdiff",
    "sscan",
    "zrange",
    "zrangebyscore",
    "zrangebylex",
    "zrevrange",
    "zrevrangebyscore",
    "zrevrangebylex",
    "zscore",
    "zmscore",
    "zcard",
    "zcount",
    "zlexcount",
    "zrank",
    "zrevrank",
    "zscan",
    "zrandmember",
    "zinter",
    "zunion",
    "zdiff",
    "zintercard",
    "geopos",
    "geodist",
    "geohash",
    "georadius_ro",
    "georadiusbymember_ro",
    "geosearch",
    "xrange",
    "xrevrange",
    "xlen",
    "lcs",
    "dump",
    "sort_ro",
    "eval_ro",
    "evalsha_ro",
    "fcall_ro",
    "vcard",
    "vdim",
    "vemb",
    "vsim",
];

/// Commands that set up a connection (database, credentials, protocol): mirrored too, so
/// the mirror's connection reads what the client's would.
const CONNECTION_STATE: [&str; 5] = ["select", "auth", "hello", "readonly", "readwrite"];

/// An interned Redis command name: an index into the static table, or [`CommandId::UNKNOWN`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct CommandId(u16);

const SLOTS_LEN: usize = 1024;
const EMPTY: u16 = u16::MAX;
static SLOTS: [u16; SLOTS_LEN] = build_slots();
static IS_BLOCKING: [bool; NAMES.len()] = build_blocking();
static IS_MIRRORED: [bool; NAMES.len()] = build_mirrored();

/// First (up to) 8 bytes of a name, uppercased, little-endian, zero-padded.
const fn word_of(name: &[u8]) -> u64 {
    let mut w = 0u64;
    let mut i = 0;
    while i < name.len() && i < 8 {
        w |= (name[i].to_ascii_uppercase() as u64) << (8 * i);
        i += 1;
    }
    w
}

/// Hash of a name from its first word and its length: one multiplication.
#[inline]
const fn hash_word(w: u64, len: usize) -> usize {
    let x = (w ^ (len as u64)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    ((x ^ (x >> 32)) >> 20) as usize & (SLOTS_LEN - 1)
}

const fn hash(name: &[u8]) -> usize {
    hash_word(word_of(name), name.len())
}

const fn const_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

const fn build_slots() -> [u16; SLOTS_LEN] {
    let mut slots = [EMPTY; SLOTS_LEN];
    let mut i = 0;
    while i < NAMES.len() {
        let mut h = hash(NAMES[i].as_bytes());
        while slots[h] != EMPTY {
            h = (h + 1) & (SLOTS_LEN - 1);
        }
        slots[h] = i as u16;
        i += 1;
    }
    slots
}

/// Upper-case copies of the names, zero-padded, for the exact comparison that captured
/// (already uppercased) tokens take.
static UPPER: [[u8; 32]; NAMES.len()] = build_upper();
/// [`word_of`] each name.
static WORDS: [u64; NAMES.len()] = build_words();

const fn build_words() -> [u64; NAMES.len()] {
    let mut out = [0u64; NAMES.len()];
    let mut i = 0;
    while i < NAMES.len() {
        out[i] = word_of(NAMES[i].as_bytes());
        i += 1;
    }
    out
}

const fn build_upper() -> [[u8; 32]; NAMES.len()] {
    let mut out = [[0u8; 32]; NAMES.len()];
    let mut i = 0;
    while i < NAMES.len() {
        let name = NAMES[i].as_bytes();
        let mut j = 0;
        while j < name.len() && j < 32 {
            out[i][j] = name[j].to_ascii_uppercase();
            j += 1;
        }
        i += 1;
    }
    out
}

/// Longest probe sequence in the hash index (a test keeps it short).
pub fn max_probe_len() -> usize {
    let mut worst = 0;
    for name in NAMES {
        let mut h = hash(name.as_bytes());
        let mut probes = 1;
        while SLOTS[h] != EMPTY && NAMES.get(SLOTS[h] as usize) != Some(name) {
            h = (h + 1) & (SLOTS_LEN - 1);
            probes += 1;
        }
        worst = worst.max(probes);
    }
    worst
}

const fn build_blocking() -> [bool; NAMES.len()] {
    let mut out = [false; NAMES.len()];
    let mut b = 0;
    while b < BLOCKING.len() {
        out[CommandId::named(BLOCKING[b]).0 as usize] = true;
        b += 1;
    }
    out
}

const fn build_mirrored() -> [bool; NAMES.len()] {
    let mut out = [false; NAMES.len()];
    let mut i = 0;
    while i < READ_ONLY.len() {
        out[CommandId::named(READ_ONLY[i]).0 as usize] = true;
        i += 1;
    }
    let mut i = 0;
    while i < CONNECTION_STATE.len() {
        out[CommandId::named(CONNECTION_STATE[i]).0 as usize] = true;
        i += 1;
    }
    out
}

impl CommandId {
    /// A command name not in the table (or longer than the scanner's token buffer).
    pub const UNKNOWN: CommandId = CommandId(NAMES.len() as u16);

    /// Compile-time lookup of a table name; fails the build for a name not in the table.
    const fn named(name: &str) -> CommandId {
        let mut i = 0;
        while i < NAMES.len() {
            if const_eq(NAMES[i].as_bytes(), name.as_bytes()) {
                return CommandId(i as u16);
            }
            i += 1;
        }
        panic!("command name missing from the table")
    }

    /// `MULTI`.
    pub const MULTI: CommandId = CommandId::named("multi");
    /// `EXEC`.
    pub const EXEC: CommandId = CommandId::named("exec");
    /// `DISCARD`.
    pub const DISCARD: CommandId = CommandId::named("discard");
    /// `WATCH`.
    pub const WATCH: CommandId = CommandId::named("watch");
    /// `QUIT`.
    pub const QUIT: CommandId = CommandId::named("quit");
    /// `RESET`.
    pub const RESET: CommandId = CommandId::named("reset");
    /// `HELLO`.
    pub const HELLO: CommandId = CommandId::named("hello");
    /// `MONITOR`.
    pub const MONITOR: CommandId = CommandId::named("monitor");
    /// `CLIENT`.
    pub const CLIENT: CommandId = CommandId::named("client");
    /// `XREAD`.
    pub const XREAD: CommandId = CommandId::named("xread");
    /// `XREADGROUP`.
    pub const XREADGROUP: CommandId = CommandId::named("xreadgroup");
    /// `SUBSCRIBE`.
    pub const SUBSCRIBE: CommandId = CommandId::named("subscribe");
    /// `PSUBSCRIBE`.
    pub const PSUBSCRIBE: CommandId = CommandId::named("psubscribe");
    /// `SSUBSCRIBE`.
    pub const SSUBSCRIBE: CommandId = CommandId::named("ssubscribe");
    /// `UNSUBSCRIBE`.
    pub const UNSUBSCRIBE: CommandId = CommandId::named("unsubscribe");
    /// `PUNSUBSCRIBE`.
    pub const PUNSUBSCRIBE: CommandId = CommandId::named("punsubscribe");
    /// `SUNSUBSCRIBE`.
    pub const SUNSUBSCRIBE: CommandId = CommandId::named("sunsubscribe");
    /// `GET`.
    pub const GET: CommandId = CommandId::named("get");
    /// `SET`.
    pub const SET: CommandId = CommandId::named("set");
    /// `PING`.
    pub const PING: CommandId = CommandId::named("ping");
    /// `UNWATCH`.
    pub const UNWATCH: CommandId = CommandId::named("unwatch");
    /// `AUTH`.
    pub const AUTH: CommandId = CommandId::named("auth");

    /// Looks a name up, ignoring ASCII case; anything not in the table is [`CommandId::UNKNOWN`].
    pub fn lookup(name: &[u8]) -> CommandId {
        if name.len() > TOKEN_CAP {
            return CommandId::UNKNOWN;
        }
        CommandId::from_token(&Token::from_bytes(name))
    }

    /// Looks up a name the scanner captured (already uppercased): one hash, one word compare.
    #[inline]
    pub fn from_token(token: &Token) -> CommandId {
        let Some(name) = token.get() else {
            return CommandId::UNKNOWN;
        };
        if name.is_empty() {
            return CommandId::UNKNOWN;
        }
        let w = token.first_word();
        let mut h = hash_word(w, name.len());
        loop {
            let slot = SLOTS[h];
            if slot == EMPTY {
                return CommandId::UNKNOWN;
            }
            let i = slot as usize;
            if WORDS.get(i) == Some(&w)
                && NAMES.get(i).is_some_and(|k| k.len() == name.len())
                && (name.len() <= 8
                    || UPPER
                        .get(i)
                        .is_some_and(|up| up.iter().zip(name).skip(8).all(|(a, b)| a == b)))
            {
                return CommandId(slot);
            }
            h = (h + 1) & (SLOTS_LEN - 1);
        }
    }

    /// The lower-case command name (the metric label), or `"unknown"`.
    pub fn name(self) -> &'static str {
        NAMES.get(self.0 as usize).copied().unwrap_or("unknown")
    }

    /// Whether this is [`CommandId::UNKNOWN`].
    pub fn is_unknown(self) -> bool {
        self == CommandId::UNKNOWN
    }

    /// Whether the command blocks until data arrives (`BLPOP`, `WAIT`, ...). `XREAD` and
    /// `XREADGROUP` block only with a `BLOCK` argument, which the tracker checks itself.
    pub fn is_blocking(self) -> bool {
        IS_BLOCKING.get(self.0 as usize).copied().unwrap_or(false)
    }

    /// Whether the command subscribes to channels (`SUBSCRIBE`, `PSUBSCRIBE`, `SSUBSCRIBE`).
    pub fn is_subscribe(self) -> bool {
        matches!(self, Self::SUBSCRIBE | Self::PSUBSCRIBE | Self::SSUBSCRIBE)
    }

    /// Whether the command unsubscribes (`UNSUBSCRIBE`, `PUNSUBSCRIBE`, `SUNSUBSCRIBE`).
    pub fn is_unsubscribe(self) -> bool {
        matches!(
            self,
            Self::UNSUBSCRIBE | Self::PUNSUBSCRIBE | Self::SUNSUBSCRIBE
        )
    }

    /// Whether a RedisPolicy mirror copies the command: it only reads data, or it sets up
    /// the connection (`SELECT`, `AUTH`, `HELLO`, ...).
    pub fn is_mirrored(self) -> bool {
        IS_MIRRORED.get(self.0 as usize).copied().unwrap_or(false)
    }

    /// The position of the command in the table ([`CommandId::known_count`] for
    /// [`CommandId::UNKNOWN`]), for per-command lookup tables.
    pub fn index(self) -> usize {
        self.0 as usize
    }

    /// Number of known commands in the table (excluding "unknown").
    pub const fn known_count() -> usize {
        NAMES.len()
    }

    /// All known commands, in table order.
    pub fn all() -> impl Iterator<Item = CommandId> {
        (0..NAMES.len() as u16).map(CommandId)
    }
}

impl std::fmt::Display for CommandId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
