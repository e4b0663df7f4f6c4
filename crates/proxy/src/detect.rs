//! Protocol detection from a connection's first bytes: TLS (with its SNI), HTTP/2's
//! preface, HTTP/1.x, Redis RESP, or else opaque TCP. Pure: the caller peeks at the socket
//! and asks again while the answer is [`Detected::NeedMore`]. [`tls_hello`] also reads the
//! ClientHello's ALPN offer, which tells a mesh client (Istio ALPN) from plain TLS on a
//! PERMISSIVE port.

use crate::config::Protocol;

/// The verdict on a prefix of the client's first bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Detected {
    /// The protocol, and for TLS the server name the client asked for.
    Protocol(Protocol, Option<String>),
    /// The bytes so far fit a known protocol; more are needed to decide.
    NeedMore,
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const METHODS: [&[u8]; 9] = [
    b"GET ",
    b"POST ",
    b"PUT ",
    b"HEAD ",
    b"DELETE ",
    b"OPTIONS ",
    b"PATCH ",
    b"CONNECT ",
    b"TRACE ",
];

/// True when `data` is a prefix of `pattern` or starts with it.
fn fits(data: &[u8], pattern: &[u8]) -> Option<bool> {
    let n = data.len().min(pattern.len());
    (data[..n] == pattern[..n]).then_some(data.len() >= pattern.len())
}

/// Classifies the first bytes of a client-first connection.
pub fn detect(data: &[u8]) -> Detected {
    use Protocol::*;
    if data.is_empty() {
        return Detected::NeedMore;
    }
    if data[0] == 0x16 {
        return match tls_client_hello(data) {
            Hello::Complete(sni) => Detected::Protocol(Tls, sni),
            Hello::Partial => Detected::NeedMore,
            Hello::NotTls => Detected::Protocol(Tcp, None),
        };
    }
    match fits(data, H2_PREFACE) {
        Some(true) => return Detected::Protocol(Http2, None),
        Some(false) => return Detected::NeedMore,
        None => {}
    }
    let mut maybe_http = false;
    for method in METHODS {
        match fits(data, method) {
            Some(true) => return Detected::Protocol(Http, None),
            Some(false) => maybe_http = true,
            None => {}
        }
    }
    if maybe_http {
        return Detected::NeedMore;
    }
    if data[0] == b'*' {
        return resp_array_start(&data[1..]);
    }
    Detected::Protocol(Tcp, None)
}

/// `*<count>\r\n$` opens a RESP command.
fn resp_array_start(rest: &[u8]) -> Detected {
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    let tail = &rest[digits..];
    if digits > 10 {
        return Detected::Protocol(Protocol::Tcp, None);
    }
    match fits(tail, b"\r\n$") {
        Some(true) if digits > 0 => Detected::Protocol(Protocol::Redis, None),
        Some(false) => Detected::NeedMore,
        _ => Detected::Protocol(Protocol::Tcp, None),
    }
}

enum Hello {
    Complete(Option<String>),
    Partial,
    NotTls,
}

/// What the start of a TLS connection says, for the server side of mutual TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsHello {
    /// Not a TLS handshake.
    NotTls,
    /// A ClientHello, not complete yet.
    Partial,
    /// A complete ClientHello: its server name, and whether it offers an Istio ALPN value
    /// (`istio`, `istio-peer-exchange`, ...), which marks a mesh client.
    Hello {
        /// Server name (SNI).
        sni: Option<String>,
        /// An ALPN value starting with `istio` is offered.
        mesh: bool,
    },
}

/// Reads a ClientHello far enough to tell a mesh client (Istio ALPN) from anything else.
pub fn tls_hello(data: &[u8]) -> TlsHello {
    if data.is_empty() {
        return TlsHello::Partial;
    }
    if data[0] != 0x16 {
        return TlsHello::NotTls;
    }
    match client_hello_fields(data) {
        Parsed::Partial => TlsHello::Partial,
        Parsed::NotTls => TlsHello::NotTls,
        Parsed::Hello { sni, mesh } => TlsHello::Hello { sni, mesh },
    }
}

enum Parsed {
    Partial,
    NotTls,
    Hello { sni: Option<String>, mesh: bool },
}

/// A bounds-checked reader over a byte slice.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }
    fn u8(&mut self) -> Option<usize> {
        self.take(1).map(|b| b[0] as usize)
    }
    fn u16(&mut self) -> Option<usize> {
        self.take(2).map(|b| (b[0] as usize) << 8 | b[1] as usize)
    }
    fn u24(&mut self) -> Option<usize> {
        self.take(3)
            .map(|b| (b[0] as usize) << 16 | (b[1] as usize) << 8 | b[2] as usize)
    }
}

/// Reads a TLS ClientHello record far enough to find its server name.
fn tls_client_hello(data: &[u8]) -> Hello {
    match client_hello_fields(data) {
        Parsed::Partial => Hello::Partial,
        Parsed::NotTls => Hello::NotTls,
        Parsed::Hello { sni, .. } => Hello::Complete(sni),
    }
}

/// Reads a TLS ClientHello record: server name and whether an Istio ALPN value is offered.
fn client_hello_fields(data: &[u8]) -> Parsed {
    let mut rec = Reader(data);
    let header = match rec.take(5) {
        Some(h) => h,
        None => {
            // Check what there is of the header.
            return if data.len() >= 2 && data[1] != 0x03 {
                Parsed::NotTls
            } else {
                Parsed::Partial
            };
        }
    };
    if header[1] != 0x03 || header[2] > 0x04 {
        return Parsed::NotTls;
    }
    let len = (header[3] as usize) << 8 | header[4] as usize;
    let Some(body) = rec.take(len) else {
        return Parsed::Partial;
    };
    let mut r = Reader(body);
    let mut sni = None;
    let mut mesh = false;
    let _ = (|| -> Option<()> {
        if r.u8()? != 1 {
            return None; // not a ClientHello
        }
        let _hello_len = r.u24()?;
        r.take(2 + 32)?; // version, random
        let sid = r.u8()?;
        r.take(sid)?;
        let suites = r.u16()?;
        r.take(suites)?;
        let comp = r.u8()?;
        r.take(comp)?;
        if r.0.is_empty() {
            return Some(());
        }
        let ext_len = r.u16()?;
        let mut exts = Reader(r.take(ext_len)?);
        while !exts.0.is_empty() {
            let kind = exts.u16()?;
            let len = exts.u16()?;
            let mut ext = Reader(exts.take(len)?);
            match kind {
                0 if sni.is_none() => {
                    let _list_len = ext.u16()?;
                    let name_type = ext.u8()?;
                    let name_len = ext.u16()?;
                    let name = ext.take(name_len)?;
                    if name_type == 0 {
                        sni = std::str::from_utf8(name).ok().map(str::to_string);
                    }
                }
                16 => {
                    let list_len = ext.u16()?;
                    let mut list = Reader(ext.take(list_len)?);
                    while !list.0.is_empty() {
                        let n = list.u8()?;
                        let proto = list.take(n)?;
                        mesh |= proto.starts_with(b"istio");
                    }
                }
                _ => {}
            }
        }
        Some(())
    })();
    // A handshake record that is not a well-formed ClientHello is still TLS on the wire.
    Parsed::Hello { sni, mesh }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Protocol::*;

    fn client_hello(sni: &str) -> Vec<u8> {
        let name = sni.as_bytes();
        let mut sni_ext = vec![0, 0];
        let list_len = name.len() + 3;
        sni_ext.extend([((list_len + 2) >> 8) as u8, (list_len + 2) as u8]);
        sni_ext.extend([
            (list_len >> 8) as u8,
            list_len as u8,
            0,
            (name.len() >> 8) as u8,
            name.len() as u8,
        ]);
        sni_ext.extend(name);
        let mut hello = vec![3, 3];
        hello.extend([7u8; 32]);
        hello.extend([0, 0, 2, 0x13, 0x01, 1, 0]);
        hello.extend([(sni_ext.len() >> 8) as u8, sni_ext.len() as u8]);
        hello.extend(&sni_ext);
        let mut handshake = vec![1, 0, (hello.len() >> 8) as u8, hello.len() as u8];
        handshake.extend(&hello);
        let mut record = vec![
            0x16,
            3,
            1,
            (handshake.len() >> 8) as u8,
            handshake.len() as u8,
        ];
        record.extend(&handshake);
        record
    }

    #[test]
    fn first_bytes_table() {
        let cases: Vec<(&[u8], Detected)> = vec![
            (
                b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n",
                Detected::Protocol(Redis, None),
            ),
            (b"*1\r\n$4\r\nPING\r\n", Detected::Protocol(Redis, None)),
            (b"*1", Detected::NeedMore),
            (b"*12\r", Detected::NeedMore),
            (b"*x", Detected::Protocol(Tcp, None)),
            (b"GET / HTTP/1.1\r\n", Detected::Protocol(Http, None)),
            (b"GE", Detected::NeedMore),
            (b"POST /x", Detected::Protocol(Http, None)),
            (
                b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
                Detected::Protocol(Http2, None),
            ),
            (b"PRI * HT", Detected::NeedMore),
            (b"SSH-2.0-OpenSSH\r\n", Detected::Protocol(Tcp, None)),
            (b"\x00\x01\x02", Detected::Protocol(Tcp, None)),
            (b"\x16\x03", Detected::NeedMore),
            (b"\x16\x09\x01", Detected::Protocol(Tcp, None)),
            (b"", Detected::NeedMore),
        ];
        for (data, want) in cases {
            assert_eq!(detect(data), want, "{:?}", String::from_utf8_lossy(data));
        }
    }

    #[test]
    fn tls_sni_at_every_split() {
        let hello = client_hello("redis-0.redis.default.svc.cluster.local");
        for cut in 0..hello.len() {
            assert_eq!(detect(&hello[..cut]), Detected::NeedMore, "cut {cut}");
        }
        assert_eq!(
            detect(&hello),
            Detected::Protocol(Tls, Some("redis-0.redis.default.svc.cluster.local".into()))
        );
    }

    /// A ClientHello with an SNI and an ALPN extension.
    fn client_hello_alpn(sni: &str, alpn: &[&[u8]]) -> Vec<u8> {
        let mut record = client_hello(sni);
        let mut list = Vec::new();
        for p in alpn {
            list.push(p.len() as u8);
            list.extend_from_slice(p);
        }
        let mut ext = vec![0, 16];
        ext.extend([((list.len() + 2) >> 8) as u8, (list.len() + 2) as u8]);
        ext.extend([(list.len() >> 8) as u8, list.len() as u8]);
        ext.extend(&list);
        // Grow the extensions block, the handshake and the record by the new extension.
        let grow = |hi: usize, lo: usize, rec: &mut Vec<u8>, by: usize| {
            let v = ((rec[hi] as usize) << 8 | rec[lo] as usize) + by;
            rec[hi] = (v >> 8) as u8;
            rec[lo] = v as u8;
        };
        let ext_len_at = 5 + 4 + 2 + 32 + 1 + 2 + 2 + 1 + 1;
        grow(ext_len_at, ext_len_at + 1, &mut record, ext.len());
        grow(7, 8, &mut record, ext.len());
        grow(3, 4, &mut record, ext.len());
        record.extend(&ext);
        record
    }

    #[test]
    fn mesh_clients_by_alpn() {
        let cases: Vec<(Vec<u8>, TlsHello)> = vec![
            (
                client_hello_alpn(
                    "outbound_.6379_._.redis",
                    &[b"istio-peer-exchange", b"istio"],
                ),
                TlsHello::Hello {
                    sni: Some("outbound_.6379_._.redis".into()),
                    mesh: true,
                },
            ),
            (
                client_hello_alpn("x", &[b"h2", b"istio-h2"]),
                TlsHello::Hello {
                    sni: Some("x".into()),
                    mesh: true,
                },
            ),
            (
                client_hello_alpn("redis.example", &[b"h2", b"http/1.1"]),
                TlsHello::Hello {
                    sni: Some("redis.example".into()),
                    mesh: false,
                },
            ),
            (
                client_hello("plain-tls"),
                TlsHello::Hello {
                    sni: Some("plain-tls".into()),
                    mesh: false,
                },
            ),
            (b"*1\r\n$4\r\nPING\r\n".to_vec(), TlsHello::NotTls),
            (vec![0x16, 0x03], TlsHello::Partial),
            (vec![], TlsHello::Partial),
        ];
        for (data, want) in cases {
            assert_eq!(tls_hello(&data), want);
        }
        let hello = client_hello_alpn("s", &[b"istio"]);
        for cut in 0..hello.len() {
            assert_eq!(tls_hello(&hello[..cut]), TlsHello::Partial, "cut {cut}");
        }
        assert_eq!(
            detect(&hello),
            Detected::Protocol(Tls, Some("s".into())),
            "detect() still sees TLS with its SNI"
        );
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut seed = 0x2545f4914f6cdd1du64;
        for _ in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = (seed % 64) as usize;
            let mut data: Vec<u8> = (0..len).map(|i| (seed >> (i % 8 * 8)) as u8).collect();
            if let Some(b) = data.first_mut() {
                *b = [0x16, b'*', b'G', b'P'][(seed % 4) as usize];
            }
            let whole = detect(&data);
            // A verdict on a prefix never changes when more bytes arrive.
            for cut in 0..data.len() {
                if let (Detected::Protocol(p, _), Detected::Protocol(q, _)) =
                    (detect(&data[..cut]), &whole)
                {
                    assert_eq!(p, *q, "{data:?} cut at {cut}");
                }
            }
        }
    }
}
