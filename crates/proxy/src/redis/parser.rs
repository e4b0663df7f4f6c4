//! Incremental RESP2/RESP3 scanner: a byte-at-a-time-resumable state machine that walks the
//! values of one direction of a Redis connection without copying or buffering them.
//!
//! The scanner keeps only what it needs to resume at any byte boundary (the type byte, a number
//! being accumulated, the bytes of a bulk payload still to skip, and a stack of element counts).
//! Bulk payloads are skipped by counting. Short strings at the top two levels (the command name
//! and the first arguments, an error's first word, a push's kind) are captured, ASCII-uppercased,
//! into a fixed 32-byte [`Token`]. Any malformed byte or exceeded limit makes the scanner
//! terminally opaque; it never panics on any input.

/// Deepest nesting of aggregates accepted before the stream is declared opaque.
pub const MAX_DEPTH: usize = 128;
/// Longest bulk string accepted (Redis' `proto-max-bulk-len` default, 512 MB).
pub const MAX_BULK_LEN: u64 = 512 * 1024 * 1024;
/// Largest aggregate element count accepted (`i32::MAX`, Redis' own multibulk limit).
pub const MAX_AGGREGATE_LEN: u64 = i32::MAX as u64;
/// Longest inline command line accepted (Redis' `PROTO_INLINE_MAX_SIZE`, 64 KB).
pub const MAX_INLINE_LEN: u32 = 64 * 1024;
/// Capacity of a [`Token`] in bytes.
pub const TOKEN_CAP: usize = 32;

/// Which side of the connection a scanner reads.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Direction {
    /// Client to server: commands, as arrays of bulk strings or inline lines.
    Client,
    /// Server to client: RESP2/RESP3 replies and pushes.
    Server,
}

/// The type of a complete value (attributes are never reported as values).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    /// `+` simple string.
    Simple,
    /// `-` simple error.
    Error,
    /// `:` integer.
    Integer,
    /// `$` bulk string.
    Bulk,
    /// `_`, `$-1` or `*-1`.
    Null,
    /// `*` array.
    Array,
    /// `,` double.
    Double,
    /// `#` boolean.
    Boolean,
    /// `!` blob error.
    BlobError,
    /// `=` verbatim string.
    Verbatim,
    /// `(` big number.
    BigNumber,
    /// `%` map.
    Map,
    /// `~` set.
    Set,
    /// `>` push (out-of-band server message).
    Push,
    /// A client inline command line (`PING\r\n`).
    Inline,
}

impl Kind {
    /// Whether the value is an error reply (`-` or `!`).
    pub fn is_error(self) -> bool {
        matches!(self, Kind::Error | Kind::BlobError)
    }

    /// Whether the value is an aggregate (array, map, set, push, inline command).
    pub fn is_aggregate(self) -> bool {
        matches!(
            self,
            Kind::Array | Kind::Map | Kind::Set | Kind::Push | Kind::Inline
        )
    }

    fn from_type_byte(b: u8) -> Kind {
        match b {
            b'+' => Kind::Simple,
            b'-' => Kind::Error,
            b':' => Kind::Integer,
            b'$' => Kind::Bulk,
            b'*' => Kind::Array,
            b',' => Kind::Double,
            b'#' => Kind::Boolean,
            b'!' => Kind::BlobError,
            b'=' => Kind::Verbatim,
            b'(' => Kind::BigNumber,
            b'%' => Kind::Map,
            b'~' => Kind::Set,
            b'>' => Kind::Push,
            _ => Kind::Null,
        }
    }
}

/// A short string captured from the stream, ASCII-uppercased, at most [`TOKEN_CAP`] bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Token {
    buf: [u8; TOKEN_CAP],
    len: u8,
    truncated: bool,
}

impl Default for Token {
    fn default() -> Self {
        Token::new()
    }
}

impl Token {
    /// An empty token.
    pub const fn new() -> Self {
        Token {
            buf: [0; TOKEN_CAP],
            len: 0,
            truncated: false,
        }
    }

    /// A token holding `bytes` uppercased (truncated past [`TOKEN_CAP`]).
    pub fn from_bytes(bytes: &[u8]) -> Self {
        let mut t = Token::new();
        t.push(bytes);
        t
    }

    /// The first (up to) 8 bytes as a little-endian word, zero-padded.
    #[inline]
    pub fn first_word(&self) -> u64 {
        // Byte loads: the bytes were just stored one by one, and a wide load of them would
        // miss store forwarding.
        let mut w = 0u64;
        for (i, &b) in self.prefix().iter().take(8).enumerate() {
            w |= u64::from(b) << (8 * i);
        }
        w
    }

    /// The captured (uppercased) bytes; only a prefix when [`Token::is_truncated`].
    #[inline]
    pub fn prefix(&self) -> &[u8] {
        &self.buf[..(self.len as usize).min(TOKEN_CAP)]
    }

    /// The whole string, or `None` when it was longer than [`TOKEN_CAP`].
    #[inline]
    pub fn get(&self) -> Option<&[u8]> {
        if self.truncated {
            None
        } else {
            Some(self.prefix())
        }
    }

    /// Whether the string was longer than [`TOKEN_CAP`] bytes.
    pub fn is_truncated(&self) -> bool {
        self.truncated
    }

    /// Whether the whole string equals `s` (which should be uppercase).
    #[inline]
    pub fn is(&self, s: &[u8]) -> bool {
        !self.truncated && self.prefix() == s
    }

    #[inline]
    fn clear(&mut self) {
        self.len = 0;
        self.truncated = false;
    }

    /// Appends `bytes` uppercased; returns false when they did not all fit.
    #[inline]
    fn push(&mut self, bytes: &[u8]) -> bool {
        let at = self.len as usize;
        let room = TOKEN_CAP.saturating_sub(at);
        let take = bytes.len().min(room);
        if let (Some(dst), Some(src)) = (self.buf.get_mut(at..at + take), bytes.get(..take)) {
            for (d, s) in dst.iter_mut().zip(src) {
                *d = s.to_ascii_uppercase();
            }
        }
        self.len = (at + take) as u8;
        if take < bytes.len() {
            self.truncated = true;
            return false;
        }
        true
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self.prefix()))?;
        if self.truncated {
            f.write_str("...")?;
        }
        Ok(())
    }
}

/// A complete element directly inside a top-level aggregate (an argument of a command, an
/// element of a reply). Elements of nested aggregates and of attributes are not reported.
#[derive(Clone, Copy, Debug)]
pub struct Element<'a> {
    /// Position in the top-level aggregate (0 = the command name / first element).
    pub index: u32,
    /// The element's type.
    pub kind: Kind,
    /// The captured string (for strings and errors, when the visitor asked for it).
    pub token: Option<&'a Token>,
    /// The value of an integer element.
    pub int: Option<i64>,
}

/// A complete top-level value: one command (client) or one reply or push (server).
#[derive(Clone, Copy, Debug)]
pub struct Value<'a> {
    /// The value's type.
    pub kind: Kind,
    /// Declared element count for aggregates (pairs for maps; words for inline commands),
    /// payload length for bulk strings, 0 otherwise.
    pub len: u64,
    /// For aggregates, the first element's string (the command name); for simple strings and
    /// errors, the string itself (for errors only its first word).
    pub head: Option<&'a Token>,
    /// The last integer element of a top-level aggregate (a subscription count), or the value of
    /// a top-level integer.
    pub last_int: Option<i64>,
}

/// Receives the scanner's events. Calls happen during [`Scanner::feed`], in stream order.
pub trait Visitor {
    /// A top-level value starts (after its header line, for aggregates).
    fn begin(&mut self, _kind: Kind) {}
    /// Whether to capture the string of top-level element `index` (>= 1; 0 is always captured).
    fn wants_token(&self, _index: u32) -> bool {
        false
    }
    /// An element of the top-level aggregate is complete.
    fn element(&mut self, _element: &Element<'_>) {}
    /// A top-level value is complete.
    fn value(&mut self, value: &Value<'_>);
    /// Whether [`Scanner::scan`] should stop after the event just reported.
    fn pause(&self) -> bool {
        false
    }
    /// The command the last element 0 named, when this visitor looked it up (so that a
    /// visitor beside it need not look it up again).
    fn command(&self) -> Option<super::command::CommandId> {
        None
    }
    /// [`Visitor::element`], with the command already looked up by another visitor.
    fn element_of(&mut self, element: &Element<'_>, _command: Option<super::command::CommandId>) {
        self.element(element);
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    /// Expecting a type byte.
    Type,
    /// Inside the line after a type byte.
    Line,
    /// Saw `\r` at the end of a line; expecting `\n`.
    LineLf,
    /// Skipping a bulk payload.
    Bulk,
    /// Expecting the `\r` after a bulk payload.
    BulkCr,
    /// Expecting the `\n` after a bulk payload.
    BulkLf,
    /// Inside a client inline command line.
    Inline,
    /// Malformed input seen; nothing more is parsed.
    Opaque,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Capture {
    /// Not capturing.
    Off,
    /// Capturing the whole string.
    Whole,
    /// Capturing up to the first space (error codes).
    Word,
    /// Captured what was wanted; ignoring the rest.
    Done,
}

/// The incremental RESP scanner for one direction of one connection: no heap, about 750 bytes
/// with the default depth limit, about 120 with `D = 1`.
pub struct Scanner<const D: usize = MAX_DEPTH> {
    dir: Direction,
    state: State,
    /// Type byte of the line or bulk being read.
    ty: u8,
    neg: bool,
    num: u64,
    /// Characters seen in the current line.
    chars: u32,
    /// Bulk payload bytes still to skip.
    remaining: u64,
    cap: Capture,
    tok: Token,
    head: Token,
    head_set: bool,
    /// Whether the string being captured goes to `head` (top-level scalar, element 0).
    into_head: bool,
    last_int: Option<i64>,
    top_len: u64,
    /// Index of the next element of the top-level aggregate.
    index: u32,
    depth: usize,
    in_attr: u32,
    attr_bits: u128,
    counts: [u32; D],
    kinds: [u8; D],
    inline_in_word: bool,
    /// Bytes scanned before the current [`Scanner::scan`] call (the stream position).
    consumed: u64,
    /// Stream position where the current (or last) top-level value starts.
    top_start: u64,
}

impl Scanner {
    /// A scanner at the start of a stream, accepting nesting up to [`MAX_DEPTH`].
    pub fn new(dir: Direction) -> Self {
        Scanner::with_depth(dir)
    }
}

impl<const D: usize> Scanner<D> {
    const DEPTH_FITS: () = assert!(D >= 1 && D <= MAX_DEPTH, "depth must be in 1..=128");

    /// A scanner accepting nesting up to `D` levels (`D` = 1 suffices for a client stream,
    /// whose commands are flat arrays; it keeps the scanner small).
    pub fn with_depth(dir: Direction) -> Self {
        let () = Self::DEPTH_FITS;
        Scanner {
            dir,
            state: State::Type,
            ty: 0,
            neg: false,
            num: 0,
            chars: 0,
            remaining: 0,
            cap: Capture::Off,
            tok: Token::new(),
            head: Token::new(),
            head_set: false,
            into_head: false,
            last_int: None,
            top_len: 0,
            index: 0,
            depth: 0,
            in_attr: 0,
            attr_bits: 0,
            counts: [0; D],
            kinds: [0; D],
            inline_in_word: false,
            consumed: 0,
            top_start: 0,
        }
    }

    /// The direction this scanner reads.
    pub fn direction(&self) -> Direction {
        self.dir
    }

    /// Whether malformed input made the scanner give up (terminal).
    pub fn is_opaque(&self) -> bool {
        self.state == State::Opaque
    }

    /// Bytes scanned so far, over the whole stream.
    pub fn position(&self) -> u64 {
        self.consumed
    }

    /// Stream position where the top-level value under way (or the last one) starts.
    pub fn value_start(&self) -> u64 {
        self.top_start
    }

    /// Whether the scanner is between top-level values (no partial value buffered in its state).
    pub fn at_boundary(&self) -> bool {
        self.state == State::Type && self.depth == 0
    }

    /// Scans `data`, reporting events to `v`. Returns false once the stream is opaque.
    pub fn feed<V: Visitor>(&mut self, data: &[u8], v: &mut V) -> bool {
        self.scan(data, v).is_some()
    }

    /// Scans `data` like [`Scanner::feed`], but stops right after an event that makes
    /// [`Visitor::pause`] true: returns the bytes consumed (all of `data` when it did not
    /// pause), or `None` once the stream is opaque. Scanning resumes with the rest.
    pub fn scan<V: Visitor>(&mut self, data: &[u8], v: &mut V) -> Option<usize> {
        let mut i = 0;
        let n = data.len();
        while i < n {
            let Some(&b) = data.get(i) else { break };
            match self.state {
                State::Type => {
                    if self.depth == 0 {
                        self.top_start = self.consumed + i as u64;
                    }
                    if self.dir == Direction::Client && self.depth == 0 && b != b'*' {
                        self.state = State::Inline;
                        self.chars = 0;
                        self.num = 0;
                        self.inline_in_word = false;
                        continue;
                    }
                    let bulk_ok = b == b'$' && (self.dir == Direction::Server || self.depth == 1);
                    if bulk_ok && let Some(next) = self.fast_bulk(data, i, v) {
                        i = next;
                    } else {
                        i += 1;
                        if !self.start(b, v) {
                            return self.fail_scan();
                        }
                        // The line usually follows in the same read: go straight on.
                        match self.read_line(data, i, v) {
                            Some(next) => i = next,
                            None => return self.fail_scan(),
                        }
                    }
                }
                State::Line => match self.read_line(data, i, v) {
                    Some(next) => i = next,
                    None => return self.fail_scan(),
                },
                State::LineLf => {
                    if b != b'\n' {
                        return self.fail_scan();
                    }
                    i += 1;
                    if !self.end_line(v) {
                        return self.fail_scan();
                    }
                }
                State::Bulk => i = self.bulk(data, i, v),
                State::BulkCr => {
                    if b != b'\r' {
                        return self.fail_scan();
                    }
                    i += 1;
                    self.state = State::BulkLf;
                }
                State::BulkLf => {
                    if b != b'\n' {
                        return self.fail_scan();
                    }
                    i += 1;
                    let kind = Kind::from_type_byte(self.ty);
                    self.done(kind, None, v);
                }
                State::Inline => {
                    i += 1;
                    if !self.inline_byte(b, v) {
                        return self.fail_scan();
                    }
                }
                State::Opaque => return None,
            }
            if v.pause() {
                self.consumed += i as u64;
                return Some(i);
            }
        }
        self.consumed += n as u64;
        (self.state != State::Opaque).then_some(n)
    }

    fn fail_scan(&mut self) -> Option<usize> {
        self.state = State::Opaque;
        None
    }

    /// Reads line content from `data[i..]`; finishes the line when its CRLF is there too.
    /// Returns the next index, or `None` on malformed input.
    #[inline]
    fn read_line<V: Visitor>(&mut self, data: &[u8], i: usize, v: &mut V) -> Option<usize> {
        let rest = data.get(i..).unwrap_or_default();
        match rest.iter().position(|&c| c == b'\r') {
            Some(p) => {
                if !self.line(rest.get(..p).unwrap_or_default()) {
                    return None;
                }
                if rest.get(p + 1) == Some(&b'\n') {
                    if !self.end_line(v) {
                        return None;
                    }
                    let next = i + p + 2;
                    if self.state == State::Bulk {
                        return Some(self.bulk(data, next, v));
                    }
                    Some(next)
                } else {
                    self.state = State::LineLf;
                    Some(i + p + 1)
                }
            }
            None => {
                if !self.line(rest) {
                    return None;
                }
                Some(data.len())
            }
        }
    }

    /// Skips bulk payload bytes from `data[i..]` (capturing a prefix if wanted) and finishes
    /// the bulk string when its CRLF is there too. Returns the next index.
    #[inline]
    fn bulk<V: Visitor>(&mut self, data: &[u8], mut i: usize, v: &mut V) -> usize {
        let avail = data.len().saturating_sub(i) as u64;
        let take = self.remaining.min(avail) as usize;
        if matches!(self.cap, Capture::Whole | Capture::Word) {
            let chunk = data.get(i..i + take).unwrap_or_default();
            self.capture(chunk);
        }
        i += take;
        self.remaining -= take as u64;
        if self.remaining == 0 {
            // The trailing CRLF is usually right there.
            if data.get(i..i + 2) == Some(&b"\r\n"[..]) {
                i += 2;
                let kind = Kind::from_type_byte(self.ty);
                self.done(kind, None, v);
            } else {
                self.state = State::BulkCr;
            }
        }
        i
    }

    /// Handles a type byte: prepares the line state and the capture mode.
    #[inline]
    fn start<V: Visitor>(&mut self, b: u8, v: &V) -> bool {
        let valid = match self.dir {
            // A client sends arrays of bulk strings only (inline lines are handled before).
            Direction::Client => (self.depth == 0 && b == b'*') || (self.depth == 1 && b == b'$'),
            Direction::Server => matches!(
                b,
                b'+' | b'-'
                    | b':'
                    | b'$'
                    | b'*'
                    | b'_'
                    | b','
                    | b'#'
                    | b'!'
                    | b'='
                    | b'('
                    | b'%'
                    | b'~'
                    | b'>'
                    | b'|'
            ),
        };
        if !valid {
            return false;
        }
        self.ty = b;
        self.neg = false;
        self.num = 0;
        self.chars = 0;
        self.state = State::Line;
        self.begin_capture(b, v);
        true
    }

    /// Decides whether the string value starting with type byte `b` is captured, and where.
    #[inline]
    fn begin_capture<V: Visitor>(&mut self, b: u8, v: &V) {
        self.cap = Capture::Off;
        if self.in_attr == 0 {
            let wanted = match self.depth {
                0 => matches!(b, b'+' | b'-' | b'!'),
                1 => {
                    matches!(b, b'+' | b'-' | b'!' | b'$' | b'=')
                        && (self.index == 0 || v.wants_token(self.index))
                }
                _ => false,
            };
            if wanted {
                self.into_head = self.depth == 0 || self.index == 0;
                self.cur_tok().clear();
                self.cap = if matches!(b, b'-' | b'!') {
                    Capture::Word
                } else {
                    Capture::Whole
                };
            }
        }
    }

    /// Fast path for a bulk string that lies whole in `data` from `i` (its `$`): no state is
    /// touched unless it succeeds. Returns the index after it, or `None` to take the slow path.
    #[inline]
    fn fast_bulk<V: Visitor>(&mut self, data: &[u8], i: usize, v: &mut V) -> Option<usize> {
        let rest = data.get(i + 1..)?;
        let mut len: u64 = 0;
        let mut p = 0;
        loop {
            let c = *rest.get(p)?;
            if c.is_ascii_digit() && p < 10 {
                len = len * 10 + u64::from(c - b'0');
                p += 1;
            } else if c == b'\r' && p > 0 {
                break;
            } else {
                return None;
            }
        }
        if rest.get(p + 1) != Some(&b'\n') || len > MAX_BULK_LEN {
            return None;
        }
        let start = p + 2;
        let end = start.checked_add(usize::try_from(len).ok()?)?;
        if rest.get(end..end + 2) != Some(&b"\r\n"[..]) {
            return None;
        }
        let payload = rest.get(start..end)?;
        self.ty = b'$';
        if self.depth == 0 {
            self.top_len = len;
        }
        self.begin_capture(b'$', v);
        if self.cap != Capture::Off {
            self.capture(payload);
        }
        self.done(Kind::Bulk, None, v);
        Some(i + 1 + end + 2)
    }

    #[inline]
    fn cur_tok(&mut self) -> &mut Token {
        if self.into_head {
            &mut self.head
        } else {
            &mut self.tok
        }
    }

    #[inline]
    fn capture(&mut self, bytes: &[u8]) {
        match self.cap {
            Capture::Whole => {
                if !self.cur_tok().push(bytes) {
                    self.cap = Capture::Done;
                }
            }
            Capture::Word => {
                let (word, ended) = match bytes.iter().position(|&c| c == b' ') {
                    Some(p) => (bytes.get(..p).unwrap_or_default(), true),
                    None => (bytes, false),
                };
                if !self.cur_tok().push(word) || ended {
                    self.cap = Capture::Done;
                }
            }
            Capture::Off | Capture::Done => {}
        }
    }

    /// Consumes line content (never containing `\r`) for the current type byte.
    #[inline]
    fn line(&mut self, s: &[u8]) -> bool {
        match self.ty {
            b'+' | b'-' => {
                if s.contains(&b'\n') {
                    return false;
                }
                if self.cap != Capture::Off {
                    self.capture(s);
                }
            }
            b':' | b'$' | b'*' | b'%' | b'~' | b'>' | b'|' | b'=' | b'!' => {
                let allow_neg = matches!(self.ty, b':' | b'$' | b'*');
                for &c in s {
                    match c {
                        b'0'..=b'9' => {
                            let Some(n) = self
                                .num
                                .checked_mul(10)
                                .and_then(|n| n.checked_add(u64::from(c - b'0')))
                            else {
                                return false;
                            };
                            self.num = n;
                        }
                        b'-' if allow_neg && self.chars == 0 => self.neg = true,
                        _ => return false,
                    }
                    self.chars += 1;
                }
                return true;
            }
            b'(' => {
                for &c in s {
                    let ok = c.is_ascii_digit() || (self.chars == 0 && (c == b'-' || c == b'+'));
                    if !ok {
                        return false;
                    }
                    if c.is_ascii_digit() {
                        self.num = 1;
                    }
                    self.chars = self.chars.saturating_add(1);
                }
                return true;
            }
            b',' => {
                let ok = s.iter().all(|&c| {
                    c.is_ascii_digit()
                        || matches!(
                            c,
                            b'+' | b'-' | b'.' | b'e' | b'E' | b'i' | b'n' | b'f' | b'a'
                        )
                });
                if !ok {
                    return false;
                }
            }
            b'#' => {
                if s.iter().any(|&c| c != b't' && c != b'f') {
                    return false;
                }
            }
            b'_' => {
                if !s.is_empty() {
                    return false;
                }
            }
            _ => return false,
        }
        self.chars = self.chars.saturating_add(s.len() as u32);
        true
    }

    /// The line's CRLF arrived: finish a scalar, or open a bulk payload or an aggregate.
    #[inline]
    fn end_line<V: Visitor>(&mut self, v: &mut V) -> bool {
        let digits = self.chars as usize - usize::from(self.neg);
        match self.ty {
            b'+' | b'-' => {
                let kind = Kind::from_type_byte(self.ty);
                self.done(kind, None, v);
            }
            b',' | b'(' => {
                if self.chars == 0 || (self.ty == b'(' && self.num == 0) {
                    return false;
                }
                let kind = Kind::from_type_byte(self.ty);
                self.done(kind, None, v);
            }
            b'#' => {
                if self.chars != 1 {
                    return false;
                }
                self.done(Kind::Boolean, None, v);
            }
            b'_' => self.done(Kind::Null, None, v),
            b':' => {
                if digits == 0 {
                    return false;
                }
                let value = if self.neg {
                    if self.num > i64::MAX as u64 + 1 {
                        return false;
                    }
                    (self.num as i64).wrapping_neg()
                } else {
                    let Ok(x) = i64::try_from(self.num) else {
                        return false;
                    };
                    x
                };
                self.done(Kind::Integer, Some(value), v);
            }
            b'$' | b'=' | b'!' => {
                if digits == 0 {
                    return false;
                }
                if self.neg {
                    if self.ty == b'$' && self.num == 1 && self.dir == Direction::Server {
                        self.cap = Capture::Off;
                        self.done(Kind::Null, None, v);
                        return true;
                    }
                    return false;
                }
                if self.num > MAX_BULK_LEN {
                    return false;
                }
                self.remaining = self.num;
                self.state = if self.num == 0 {
                    State::BulkCr
                } else {
                    State::Bulk
                };
                if self.depth == 0 {
                    self.top_len = self.num;
                }
            }
            _ => return self.open_aggregate(digits, v),
        }
        true
    }

    fn open_aggregate<V: Visitor>(&mut self, digits: usize, v: &mut V) -> bool {
        if digits == 0 {
            return false;
        }
        if self.neg {
            if self.dir == Direction::Client {
                // Redis ignores a multibulk header <= 0: no command, no reply.
                self.state = State::Type;
                return true;
            }
            if self.ty == b'*' && self.num == 1 {
                self.done(Kind::Null, None, v);
                return true;
            }
            return false;
        }
        if self.num > MAX_AGGREGATE_LEN {
            return false;
        }
        let pairs = matches!(self.ty, b'%' | b'|');
        let count = if pairs { self.num * 2 } else { self.num };
        let kind = Kind::from_type_byte(self.ty);
        if self.ty == b'|' {
            if count == 0 {
                self.state = State::Type;
                return true;
            }
        } else if count == 0 {
            if self.dir == Direction::Client {
                self.state = State::Type;
                return true;
            }
            self.done(kind, None, v);
            return true;
        }
        if self.depth >= D {
            return false;
        }
        let Ok(count32) = u32::try_from(count) else {
            return false;
        };
        if self.ty == b'|' {
            self.attr_bits |= 1u128 << self.depth;
            self.in_attr += 1;
        } else if self.depth == 0 {
            self.top_len = self.num;
            self.index = 0;
            self.head_set = false;
            self.last_int = None;
            v.begin(kind);
        }
        if let (Some(c), Some(k)) = (
            self.counts.get_mut(self.depth),
            self.kinds.get_mut(self.depth),
        ) {
            *c = count32;
            *k = self.ty;
        }
        self.depth += 1;
        self.state = State::Type;
        true
    }

    /// A value of `kind` completed: report it and close every aggregate it completes.
    #[inline(always)]
    fn done<V: Visitor>(&mut self, mut kind: Kind, mut int: Option<i64>, v: &mut V) {
        self.state = State::Type;
        let mut captured = self.cap != Capture::Off;
        self.cap = Capture::Off;
        let mut closing = false;
        loop {
            if self.depth == 0 {
                if closing {
                    // A top-level aggregate closed (its begin was reported when it opened).
                    let value = Value {
                        kind,
                        len: self.top_len,
                        head: if self.head_set {
                            Some(&self.head)
                        } else {
                            None
                        },
                        last_int: self.last_int,
                    };
                    v.value(&value);
                } else {
                    v.begin(kind);
                    let len = if matches!(kind, Kind::Bulk | Kind::Verbatim | Kind::BlobError) {
                        self.top_len
                    } else {
                        0
                    };
                    let value = Value {
                        kind,
                        len,
                        head: if captured { Some(&self.head) } else { None },
                        last_int: int,
                    };
                    v.value(&value);
                }
                return;
            }
            let parent = self.depth - 1;
            if parent == 0 && self.in_attr == 0 {
                let element = Element {
                    index: self.index,
                    kind,
                    token: if !captured {
                        None
                    } else if self.into_head {
                        Some(&self.head)
                    } else {
                        Some(&self.tok)
                    },
                    int,
                };
                v.element(&element);
                if self.index == 0 && captured {
                    self.head_set = true;
                }
                if int.is_some() {
                    self.last_int = int;
                }
                self.index = self.index.saturating_add(1);
            }
            let Some(count) = self.counts.get_mut(parent) else {
                return;
            };
            *count = count.saturating_sub(1);
            if *count != 0 {
                return;
            }
            self.depth = parent;
            if self.attr_bits & (1u128 << parent) != 0 {
                // An attribute only annotates the value that follows it.
                self.attr_bits &= !(1u128 << parent);
                self.in_attr = self.in_attr.saturating_sub(1);
                return;
            }
            kind = Kind::from_type_byte(self.kinds.get(parent).copied().unwrap_or(0));
            int = None;
            captured = false;
            closing = true;
        }
    }

    /// One byte of a client inline command line (words separated by whitespace).
    fn inline_byte<V: Visitor>(&mut self, b: u8, v: &mut V) -> bool {
        if b == b'\n' {
            if self.inline_in_word {
                self.end_inline_word(v);
            }
            let words = self.num;
            self.state = State::Type;
            if words > 0 {
                let value = Value {
                    kind: Kind::Inline,
                    len: words,
                    head: if self.head_set {
                        Some(&self.head)
                    } else {
                        None
                    },
                    last_int: None,
                };
                v.value(&value);
            }
            return true;
        }
        self.chars += 1;
        if self.chars > MAX_INLINE_LEN {
            return false;
        }
        if matches!(b, b' ' | b'\t' | b'\r' | 0x0b | 0x0c) {
            if self.inline_in_word {
                self.end_inline_word(v);
            }
            return true;
        }
        if !self.inline_in_word {
            self.inline_in_word = true;
            if self.num == 0 {
                self.head_set = false;
                v.begin(Kind::Inline);
            }
            let index = self.num as u32;
            self.cap = if index == 0 || v.wants_token(index) {
                Capture::Whole
            } else {
                Capture::Off
            };
            self.into_head = index == 0;
            self.cur_tok().clear();
        }
        if self.cap == Capture::Whole {
            self.capture(std::slice::from_ref(&b));
        }
        true
    }

    fn end_inline_word<V: Visitor>(&mut self, v: &mut V) {
        self.inline_in_word = false;
        let index = self.num as u32;
        let captured = self.cap != Capture::Off;
        self.cap = Capture::Off;
        let element = Element {
            index,
            kind: Kind::Bulk,
            token: if !captured {
                None
            } else if self.into_head {
                Some(&self.head)
            } else {
                Some(&self.tok)
            },
            int: None,
        };
        v.element(&element);
        if index == 0 && captured {
            self.head_set = true;
        }
        self.num += 1;
    }
}

impl<const D: usize> std::fmt::Debug for Scanner<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scanner")
            .field("dir", &self.dir)
            .field("state", &self.state)
            .field("depth", &self.depth)
            .finish_non_exhaustive()
    }
}
