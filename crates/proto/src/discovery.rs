//! The configuration stream between the control plane and the proxies: the gRPC service
//! `ferry.discovery.v1.ConfigDiscovery` (`proto/ferry/discovery/v1/discovery.proto`).
//!
//! The Rust code is generated at build time: `protox` (a protobuf compiler in Rust, so no
//! `protoc` binary is needed) compiles the `.proto` file and tonic's prost generator turns
//! the descriptors into message types, a client and a server trait. The configuration
//! travels as JSON (serde's form of [`crate::config::ProxyConfig`]) cut into
//! [`v1::ConfigChunk`]s, which keeps the evolving configuration model out of the `.proto`
//! file (only the envelope — identity, versions, chunks, ACK/NACK — is protobuf) and keeps
//! every stream's buffers small. `config_json` is a [`prost::bytes::Bytes`], so a chunk can
//! be a slice of a configuration shared between streams.
//!
//! The same stream carries the mesh roots: a [`ConfigChunk`] whose `trust` is set (built by
//! [`trust_chunk`]) is not part of a snapshot but a [`v1::TrustUpdate`] (the roots to trust,
//! and a renewal request during a root rollover), which the proxy answers with a
//! [`v1::TrustReport`]. The control plane never sends one between two chunks of a snapshot.
//!
//! Both ends of the chunking live here: [`chunks`] cuts a snapshot (the control plane) and
//! [`Reassembly`] puts it back together (the proxy). Pure, no I/O. So does the gRPC
//! [`Codec`] of the generated code: prost's, with buffers sized for many long-lived streams.

use prost::Message;
use prost::bytes::{Bytes, BytesMut};
use std::marker::PhantomData;
use tonic::codec::BufferSettings;
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};
use v1::ConfigChunk;

/// Version 1 of the protocol: messages, `config_discovery_client` and
/// `config_discovery_server`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("ferry.discovery.v1");
}

/// The largest chunk the control plane sends. Small enough that a stream's gRPC buffers
/// stay small (tonic keeps each stream's encode buffer at the size of the largest
/// message it carried), large enough that the per-message overhead does not matter.
pub const CHUNK_BYTES: usize = 8 * 1024;

/// The buffer tonic allocates per call and direction, and grows by: the messages a proxy
/// sends are a few hundred bytes, and a control plane holds a stream per proxy.
const CODEC_BUFFER_BYTES: usize = 1024;

/// prost's codec with tonic's buffers sized for the configuration stream (tonic's defaults,
/// 8 KiB allocated per call and direction and up to 32 KiB batched, are tens of MiB for a
/// thousand idle streams): encoding hands one chunk at a time to HTTP/2, decoding starts
/// small. The generated client and server use it (`build.rs`).
#[derive(Debug, Clone, Copy)]
pub struct Codec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for Codec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> tonic::codec::Codec for Codec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(BufferSettings::new(CODEC_BUFFER_BYTES, CHUNK_BYTES))
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<T, U>::raw_decoder(BufferSettings::new(CODEC_BUFFER_BYTES, CHUNK_BYTES))
    }
}

/// The chunks of the snapshot `version` whose JSON is the concatenation of `pieces`, each
/// at most `max` bytes (at least 1). Pieces of `max` bytes or more are sliced without
/// copying; only the small pieces and the ends of large ones are copied, to make up full
/// chunks. An empty snapshot is one empty chunk.
pub fn chunks(version: &str, hash: &str, pieces: &[Bytes], max: usize) -> Vec<ConfigChunk> {
    let max = max.max(1);
    let size: usize = pieces.iter().map(Bytes::len).sum();
    let mut data = Vec::with_capacity(size.div_ceil(max));
    let mut pending = BytesMut::new();
    for piece in pieces {
        let mut piece = piece.clone();
        while !piece.is_empty() {
            if pending.is_empty() && piece.len() >= max {
                data.push(piece.split_to(max));
                continue;
            }
            let take = (max - pending.len()).min(piece.len());
            pending.extend_from_slice(&piece.split_to(take));
            if pending.len() == max {
                data.push(pending.split().freeze());
            }
        }
    }
    if !pending.is_empty() || data.is_empty() {
        data.push(pending.freeze());
    }
    let mut offset = 0u64;
    data.into_iter()
        .enumerate()
        .map(|(i, config_json)| {
            let chunk = ConfigChunk {
                version: version.to_string(),
                hash: if i == 0 {
                    hash.to_string()
                } else {
                    String::new()
                },
                offset,
                size: size as u64,
                config_json,
                trust: None,
            };
            offset += chunk.config_json.len() as u64;
            chunk
        })
        .collect()
}

/// How both ends name a root certificate (the roots of a [`v1::TrustUpdate`] as a proxy
/// reports them in its [`v1::TrustReport`]): the lowercase hex SHA-256 of its DER.
pub fn root_fingerprint(der: &[u8]) -> String {
    sha256_hex(der)
}

/// The lowercase hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A trust message: a chunk carrying `update` and no snapshot data.
pub fn trust_chunk(update: v1::TrustUpdate) -> ConfigChunk {
    ConfigChunk {
        trust: Some(update),
        ..ConfigChunk::default()
    }
}

/// A snapshot put back together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assembled {
    /// Its version label.
    pub version: String,
    /// Its content hash, as the first chunk said.
    pub hash: String,
    /// The JSON.
    pub json: Vec<u8>,
}

/// What a chunk completed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Completed {
    /// A whole snapshot, to validate and apply (or reject).
    Snapshot(Assembled),
    /// A snapshot that cannot be put together (too large, chunks out of order): to reject
    /// with the reason. Its remaining chunks are ignored.
    Broken {
        /// The snapshot's version.
        version: String,
        /// Why.
        reason: String,
    },
}

/// Puts the snapshots of one stream back together from their chunks, and says exactly once
/// per snapshot when it is complete or broken.
#[derive(Debug, Default)]
pub struct Reassembly {
    /// The snapshot being received: version, hash, size, bytes so far.
    current: Option<(String, String, u64, Vec<u8>)>,
    /// A broken snapshot whose remaining chunks are skipped.
    skipping: Option<String>,
    /// The largest snapshot accepted.
    limit: u64,
}

impl Reassembly {
    /// Accepts snapshots of up to `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self {
            current: None,
            skipping: None,
            limit: limit as u64,
        }
    }

    /// Takes the next chunk of the stream. A chunk at offset 0 starts a snapshot (an
    /// incomplete one before it is dropped: the control plane never abandons one).
    pub fn push(&mut self, chunk: ConfigChunk) -> Option<Completed> {
        let ConfigChunk {
            version,
            hash,
            config_json,
            offset,
            size,
            trust: _,
        } = chunk;
        if offset == 0 {
            self.current = None;
            self.skipping = None;
            if size > self.limit {
                return self.broken(
                    version,
                    format!(
                        "snapshot of {size} bytes is larger than the limit of {} bytes",
                        self.limit
                    ),
                );
            }
            // `size` is within the limit; allocate once.
            let json = Vec::with_capacity(size as usize);
            self.current = Some((version.clone(), hash, size, json));
        } else if self.skipping.as_deref() == Some(version.as_str()) {
            return None;
        }
        let Some((current, _, expected_size, json)) = self.current.as_mut() else {
            return self.broken(
                version,
                format!("chunk at offset {offset} without the snapshot's first chunk"),
            );
        };
        let received = json.len() as u64;
        if *current != version || offset != received || size != *expected_size {
            let reason = format!(
                "chunk of version {version} at offset {offset} (size {size}) does not continue \
                 version {current} at offset {received} (size {expected_size})"
            );
            self.current = None;
            return self.broken(version, reason);
        }
        let end = received + config_json.len() as u64;
        if end > size {
            self.current = None;
            return self.broken(
                version,
                format!("chunk at offset {offset} runs past the snapshot's size {size}"),
            );
        }
        json.extend_from_slice(&config_json);
        if end < size {
            return None;
        }
        let (version, hash, _, json) = self.current.take()?;
        Some(Completed::Snapshot(Assembled {
            version,
            hash,
            json,
        }))
    }

    fn broken(&mut self, version: String, reason: String) -> Option<Completed> {
        self.skipping = Some(version.clone());
        Some(Completed::Broken { version, reason })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(texts: &[&str]) -> Vec<Bytes> {
        texts
            .iter()
            .map(|t| Bytes::copy_from_slice(t.as_bytes()))
            .collect()
    }

    fn chunk(version: &str, offset: u64, size: u64, data: &str) -> ConfigChunk {
        ConfigChunk {
            version: version.into(),
            hash: String::new(),
            config_json: Bytes::copy_from_slice(data.as_bytes()),
            offset,
            size,
            trust: None,
        }
    }

    #[test]
    fn trust_messages_carry_no_snapshot() {
        let update = v1::TrustUpdate {
            generation: 3,
            roots: vec!["PEM".into()],
            renew: 1,
        };
        let chunk = trust_chunk(update.clone());
        assert_eq!(chunk.trust, Some(update));
        assert!(chunk.version.is_empty() && chunk.config_json.is_empty());
        assert!(
            chunks("1-a", "a", &pieces(&["{}"]), 4)
                .iter()
                .all(|c| c.trust.is_none())
        );
    }

    #[test]
    fn chunks_cover_the_pieces_in_order_and_within_the_bound() {
        // (pieces, max, expected chunk contents)
        let rows: &[(&[&str], usize, &[&str])] = &[
            (&[], 4, &[""]),
            (&[""], 4, &[""]),
            (&["abc"], 4, &["abc"]),
            (&["abcd"], 4, &["abcd"]),
            (&["abcdefghij"], 4, &["abcd", "efgh", "ij"]),
            (&["a", "b", "c", "d", "e"], 4, &["abcd", "e"]),
            (&["ab", "cdefghij", "k"], 4, &["abcd", "efgh", "ijk"]),
            (&["abc"], 0, &["a", "b", "c"]),
        ];
        for (input, max, want) in rows {
            let got = chunks("1-abc", "abc", &pieces(input), *max);
            let texts: Vec<String> = got
                .iter()
                .map(|c| String::from_utf8(c.config_json.to_vec()).unwrap())
                .collect();
            assert_eq!(texts, *want, "{input:?} / {max}");
            let size: usize = input.iter().map(|p| p.len()).sum();
            let mut offset = 0;
            for (i, c) in got.iter().enumerate() {
                assert_eq!(c.version, "1-abc");
                assert_eq!(c.hash, if i == 0 { "abc" } else { "" });
                assert_eq!((c.offset, c.size), (offset, size as u64));
                offset += c.config_json.len() as u64;
            }
        }
    }

    #[test]
    fn large_pieces_are_sliced_not_copied() {
        let big = Bytes::from(vec![7u8; 10]);
        let got = chunks("v", "", std::slice::from_ref(&big), 4);
        assert_eq!(got[0].config_json.as_ptr(), big.as_ptr());
        assert_eq!(got[1].config_json.as_ptr(), big[4..].as_ptr());
    }

    #[test]
    fn reassembly_gives_back_what_was_cut() {
        let json = "{\"services\":[1,2,3],\"x\":\"0123456789\"}";
        for max in [1, 3, 7, 64] {
            let mut r = Reassembly::new(1 << 20);
            let mut done = Vec::new();
            for c in chunks("2-ab", "ab", &pieces(&[json]), max) {
                done.extend(r.push(c));
            }
            assert_eq!(
                done,
                [Completed::Snapshot(Assembled {
                    version: "2-ab".into(),
                    hash: "ab".into(),
                    json: json.as_bytes().to_vec(),
                })],
                "max {max}"
            );
        }
    }

    #[test]
    fn broken_snapshots_are_reported_once() {
        let broken = |version: &str| Completed::Broken {
            version: version.into(),
            reason: String::new(),
        };
        let snapshot = |version: &str, json: &str| {
            Completed::Snapshot(Assembled {
                version: version.into(),
                hash: String::new(),
                json: json.as_bytes().to_vec(),
            })
        };
        // (chunks, what each push completes; reasons are not compared)
        type Row = (
            &'static [(&'static str, u64, u64, &'static str)],
            Vec<Option<Completed>>,
        );
        let rows: Vec<Row> = vec![
            // Too large: one answer, the rest skipped, the next snapshot is fine.
            (
                &[("1", 0, 100, "ab"), ("1", 2, 100, "cd"), ("2", 0, 2, "ok")],
                vec![Some(broken("1")), None, Some(snapshot("2", "ok"))],
            ),
            // A gap.
            (
                &[("1", 0, 6, "ab"), ("1", 3, 6, "cd"), ("1", 5, 6, "e")],
                vec![None, Some(broken("1")), None],
            ),
            // Another version in the middle.
            (
                &[("1", 0, 4, "ab"), ("2", 2, 4, "cd")],
                vec![None, Some(broken("2"))],
            ),
            // No first chunk.
            (&[("1", 2, 4, "cd")], vec![Some(broken("1"))]),
            // Past the size.
            (&[("1", 0, 2, "abc")], vec![Some(broken("1"))]),
            // A new snapshot replaces an incomplete one.
            (
                &[("1", 0, 4, "ab"), ("2", 0, 2, "xy")],
                vec![None, Some(snapshot("2", "xy"))],
            ),
            // Empty.
            (&[("1", 0, 0, "")], vec![Some(snapshot("1", ""))]),
        ];
        for (input, want) in rows {
            let mut r = Reassembly::new(10);
            let got: Vec<Option<Completed>> = input
                .iter()
                .map(|(v, o, s, d)| {
                    r.push(chunk(v, *o, *s, d)).map(|c| match c {
                        Completed::Broken { version, reason } => {
                            assert!(!reason.is_empty());
                            broken(&version)
                        }
                        other => other,
                    })
                })
                .collect();
            assert_eq!(got, want, "{input:?}");
        }
    }
}
