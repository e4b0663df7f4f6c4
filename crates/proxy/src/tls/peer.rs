//! Peer metadata exchange over `istio-peer-exchange`: right after the mTLS handshake each
//! side writes one frame — Istio's header (magic `0x3D230467`, then the payload length, both
//! big-endian u32) and a `google.protobuf.Any` holding a `google.protobuf.Struct` of node
//! metadata (`NAME`, `NAMESPACE`, `WORKLOAD_NAME`, `SERVICE_ACCOUNT`, `CLUSTER_ID`, `LABELS`) —
//! and reads the other's before any application byte. Both sides then label their metrics
//! with the peer's workload, namespace, app and version, as Istio's sidecars do.

use crate::config::snapshot::Workload;
use prost::Message;
use prost_types::value::Kind;
use prost_types::{Any, Struct, Value};
use std::collections::BTreeMap;
use std::io;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Istio's metadata exchange magic number.
pub const MAGIC: u32 = 0x3D23_0467;
/// `type_url` of the payload.
pub const STRUCT_TYPE_URL: &str = "type.googleapis.com/google.protobuf.Struct";
/// Largest payload accepted.
pub const MAX_PAYLOAD: usize = 16 * 1024;

fn string(s: &str) -> Value {
    Value {
        kind: Some(Kind::StringValue(s.to_string())),
    }
}

/// The frame describing `me` (header and payload), written once per connection.
pub fn encode(me: &Workload, cluster: &str) -> Vec<u8> {
    let mut labels = BTreeMap::new();
    for (k, v) in [
        ("app", &me.app),
        ("version", &me.version),
        ("service.istio.io/canonical-name", &me.canonical_service),
        (
            "service.istio.io/canonical-revision",
            &me.canonical_revision,
        ),
    ] {
        if !v.is_empty() {
            labels.insert(k.to_string(), string(v));
        }
    }
    let mut fields = BTreeMap::new();
    for (k, v) in [
        ("NAME", &me.pod),
        ("NAMESPACE", &me.namespace),
        ("WORKLOAD_NAME", &me.name),
        ("SERVICE_ACCOUNT", &me.service_account),
    ] {
        if !v.is_empty() {
            fields.insert(k.to_string(), string(v));
        }
    }
    if !cluster.is_empty() {
        fields.insert("CLUSTER_ID".into(), string(cluster));
    }
    fields.insert(
        "LABELS".into(),
        Value {
            kind: Some(Kind::StructValue(Struct { fields: labels })),
        },
    );
    let any = Any {
        type_url: STRUCT_TYPE_URL.into(),
        value: Struct { fields }.encode_to_vec(),
    };
    let payload = any.encode_to_vec();
    let mut out = Vec::with_capacity(8 + payload.len());
    out.extend_from_slice(&MAGIC.to_be_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(&payload);
    out
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("peer metadata: {what}"))
}

/// The payload length a frame header announces.
pub fn header_len(header: [u8; 8]) -> io::Result<usize> {
    let magic = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
    if magic != MAGIC {
        return Err(bad("bad magic number"));
    }
    let len = u32::from_be_bytes([header[4], header[5], header[6], header[7]]) as usize;
    if len > MAX_PAYLOAD {
        return Err(bad("payload too large"));
    }
    Ok(len)
}

/// The workload a payload describes (the cluster is returned beside it).
pub fn decode(payload: &[u8]) -> io::Result<(Workload, String)> {
    let any = Any::decode(payload).map_err(|_| bad("not a protobuf Any"))?;
    if any.type_url != STRUCT_TYPE_URL {
        return Err(bad("not a Struct"));
    }
    let s = Struct::decode(any.value.as_slice()).map_err(|_| bad("not a protobuf Struct"))?;
    let text = |fields: &BTreeMap<String, Value>, k: &str| match fields
        .get(k)
        .and_then(|v| v.kind.as_ref())
    {
        Some(Kind::StringValue(v)) => v.clone(),
        _ => String::new(),
    };
    let labels = match s.fields.get("LABELS").and_then(|v| v.kind.as_ref()) {
        Some(Kind::StructValue(l)) => l.fields.clone(),
        _ => BTreeMap::new(),
    };
    let label_map: BTreeMap<String, String> = labels
        .keys()
        .map(|k| (k.clone(), text(&labels, k)))
        .collect();
    let mut w = Workload::default();
    w.pod = text(&s.fields, "NAME");
    w.namespace = text(&s.fields, "NAMESPACE");
    w.name = text(&s.fields, "WORKLOAD_NAME");
    w.service_account = text(&s.fields, "SERVICE_ACCOUNT");
    w.app = label_map.get("app").cloned().unwrap_or_default();
    w.version = label_map.get("version").cloned().unwrap_or_default();
    w.canonical_service = label_map
        .get("service.istio.io/canonical-name")
        .cloned()
        .unwrap_or_else(|| w.name.clone());
    w.canonical_revision = label_map
        .get("service.istio.io/canonical-revision")
        .cloned()
        .unwrap_or_else(|| "latest".into());
    w.has_sidecar = true;
    Ok((w, text(&s.fields, "CLUSTER_ID")))
}

/// Reads the peer's frame (within `timeout`).
pub async fn read<S: AsyncRead + Unpin>(stream: &mut S, timeout: Duration) -> io::Result<Workload> {
    let read = async {
        let mut header = [0u8; 8];
        stream.read_exact(&mut header).await?;
        let len = header_len(header)?;
        let mut payload = vec![0u8; len];
        stream.read_exact(&mut payload).await?;
        decode(&payload).map(|(w, _)| w)
    };
    tokio::time::timeout(timeout, read)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "peer metadata: timed out"))?
}

/// Writes our frame.
pub async fn write<S: AsyncWrite + Unpin>(stream: &mut S, frame: &[u8]) -> io::Result<()> {
    stream.write_all(frame).await?;
    stream.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> Workload {
        Workload {
            pod: "redis-0".into(),
            name: "redis".into(),
            namespace: "default".into(),
            service_account: "redis".into(),
            app: "redis".into(),
            version: "v7".into(),
            canonical_service: "redis".into(),
            canonical_revision: "v7".into(),
            has_sidecar: true,
        }
    }

    #[test]
    fn round_trip() {
        let frame = encode(&me(), "Kubernetes");
        let len = header_len(frame[..8].try_into().expect("header")).expect("len");
        assert_eq!(len, frame.len() - 8);
        let (w, cluster) = decode(&frame[8..]).expect("decode");
        assert_eq!(w, me());
        assert_eq!(cluster, "Kubernetes");
    }

    #[test]
    fn refuses_bad_frames() {
        let mut frame = encode(&me(), "");
        assert!(header_len([0, 0, 0, 0, 0, 0, 0, 1]).is_err(), "magic");
        let mut big = MAGIC.to_be_bytes().to_vec();
        big.extend(((MAX_PAYLOAD + 1) as u32).to_be_bytes());
        assert!(header_len(big.try_into().expect("8")).is_err(), "size");
        assert!(decode(b"\xff\xff\xff").is_err(), "garbage");
        let other = Any {
            type_url: "type.googleapis.com/other".into(),
            value: vec![],
        };
        assert!(decode(&other.encode_to_vec()).is_err(), "type");
        // Truncated payloads never panic.
        for cut in 0..frame.len() {
            let _ = decode(&frame[8.min(cut)..cut]);
        }
        frame.truncate(8);
    }

    #[tokio::test]
    async fn exchange_over_a_stream() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        let frame = encode(&me(), "c");
        write(&mut a, &frame).await.expect("write");
        let got = read(&mut b, Duration::from_secs(1)).await.expect("read");
        assert_eq!(got.pod, "redis-0");
        drop(a);
        assert!(read(&mut b, Duration::from_secs(1)).await.is_err(), "eof");
    }
}
