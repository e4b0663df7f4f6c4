//! The gRPC health check (`grpc.health.v1.Health/Check`), as the kubelet's grpc probe runs
//! it: the request and response messages hand-encoded (one string field in, one enum field
//! out), framed with gRPC's 5-byte message header, over HTTP/2.

use super::client::{self, Dest, Version};
use bytes::{BufMut, Bytes, BytesMut};
use http_body_util::Full;
use hyper::{Method, Request};
use std::fmt;

/// Path of the health check method.
pub const CHECK_PATH: &str = "/grpc.health.v1.Health/Check";

/// Largest health check reply read.
const MAX_REPLY: usize = 64 * 1024;

/// `HealthCheckResponse.ServingStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServingStatus {
    /// 0, or a field that was absent.
    Unknown,
    /// 1.
    Serving,
    /// 2.
    NotServing,
    /// 3: the server does not know the service.
    ServiceUnknown,
    /// A value this code does not know.
    Other(u64),
}

impl fmt::Display for ServingStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServingStatus::Unknown => f.write_str("UNKNOWN"),
            ServingStatus::Serving => f.write_str("SERVING"),
            ServingStatus::NotServing => f.write_str("NOT_SERVING"),
            ServingStatus::ServiceUnknown => f.write_str("SERVICE_UNKNOWN"),
            ServingStatus::Other(n) => write!(f, "status {n}"),
        }
    }
}

impl From<u64> for ServingStatus {
    fn from(n: u64) -> Self {
        match n {
            0 => ServingStatus::Unknown,
            1 => ServingStatus::Serving,
            2 => ServingStatus::NotServing,
            3 => ServingStatus::ServiceUnknown,
            n => ServingStatus::Other(n),
        }
    }
}

fn put_varint(out: &mut BytesMut, mut n: u64) {
    while n >= 0x80 {
        out.put_u8((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
    out.put_u8(n as u8);
}

fn varint(buf: &[u8], at: &mut usize) -> Result<u64, String> {
    let mut n: u64 = 0;
    for shift in (0..64).step_by(7) {
        let byte = *buf.get(*at).ok_or("truncated varint")?;
        *at += 1;
        n |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(n);
        }
    }
    Err("varint longer than 10 bytes".into())
}

/// The gRPC message of `HealthCheckRequest { service }`: the 5-byte header (not
/// compressed, big-endian length) and field 1 as a string when `service` is not empty.
pub fn encode_request(service: &str) -> Bytes {
    let mut message = BytesMut::new();
    if !service.is_empty() {
        message.put_u8(0x0a); // field 1, length-delimited
        put_varint(&mut message, service.len() as u64);
        message.put_slice(service.as_bytes());
    }
    let mut framed = BytesMut::with_capacity(5 + message.len());
    framed.put_u8(0);
    framed.put_u32(message.len() as u32);
    framed.put_slice(&message);
    framed.freeze()
}

/// Reads the status (field 1) of a framed `HealthCheckResponse`; other fields are skipped.
pub fn decode_response(framed: &[u8]) -> Result<ServingStatus, String> {
    let header = framed.get(..5).ok_or("the reply holds no gRPC message")?;
    if header[0] != 0 {
        return Err("the reply is compressed, which the health check did not ask for".into());
    }
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    let message = framed
        .get(5..5 + len)
        .ok_or("the reply's gRPC message is truncated")?;
    let mut status = ServingStatus::Unknown;
    let mut at = 0;
    while at < message.len() {
        let key = varint(message, &mut at)?;
        let (field, wire) = (key >> 3, key & 7);
        match wire {
            0 => {
                let value = varint(message, &mut at)?;
                if field == 1 {
                    status = value.into();
                }
            }
            1 => at += 8,
            2 => {
                let len = usize::try_from(varint(message, &mut at)?)
                    .map_err(|_| "field length out of range")?;
                at = at.checked_add(len).ok_or("field length out of range")?;
            }
            5 => at += 4,
            other => return Err(format!("unsupported protobuf wire type {other}")),
        }
        if at > message.len() {
            return Err("the reply's protobuf message is truncated".into());
        }
    }
    Ok(status)
}

/// Runs one health check against `dest`; `Ok` names the serving status when the server
/// answered the call, `Err` says why there was no answer.
pub async fn check(dest: &Dest, authority: &str, service: &str) -> Result<ServingStatus, String> {
    let dest = Dest {
        version: Version::Http2,
        ..dest.clone()
    };
    let scheme = if dest.tls_name.is_some() {
        "https"
    } else {
        "http"
    };
    let request = Request::builder()
        .method(Method::POST)
        .uri(format!("{scheme}://{authority}{CHECK_PATH}"))
        .header(hyper::header::CONTENT_TYPE, "application/grpc")
        .header(hyper::header::TE, "trailers")
        .header(hyper::header::USER_AGENT, "kube-probe/ferry")
        .body(Full::new(encode_request(service)))
        .map_err(|e| format!("cannot build the health check request: {e}"))?;
    let reply = client::send(&dest, request, Some(MAX_REPLY)).await?;
    if !reply.status.is_success() {
        return Err(format!("the server answered HTTP {}", reply.status));
    }
    // A reply with no message carries its status in the headers ("trailers-only").
    let grpc_status = |name: &str| {
        reply
            .trailers
            .as_ref()
            .and_then(|t| t.get(name))
            .or_else(|| reply.headers.get(name))
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    match grpc_status("grpc-status").as_deref() {
        Some("0") => {}
        Some(code) => {
            let message = grpc_status("grpc-message").unwrap_or_default();
            return Err(format!("gRPC status {code} {message}")
                .trim_end()
                .to_string());
        }
        None => return Err("the reply carries no grpc-status".into()),
    }
    decode_response(&reply.body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_encoding() {
        assert_eq!(&encode_request("")[..], &[0, 0, 0, 0, 0]);
        assert_eq!(&encode_request("x")[..], &[0, 0, 0, 0, 3, 0x0a, 1, b'x']);
        let long = "s".repeat(200);
        let framed = encode_request(&long);
        assert_eq!(&framed[..8], &[0, 0, 0, 0, 203, 0x0a, 0xc8, 0x01]);
    }

    #[test]
    fn response_decoding() {
        assert_eq!(
            decode_response(&[0, 0, 0, 0, 2, 0x08, 1]),
            Ok(ServingStatus::Serving)
        );
        assert_eq!(
            decode_response(&[0, 0, 0, 0, 2, 0x08, 2]),
            Ok(ServingStatus::NotServing)
        );
        // Empty message: the default, UNKNOWN.
        assert_eq!(
            decode_response(&[0, 0, 0, 0, 0]),
            Ok(ServingStatus::Unknown)
        );
        // Unknown fields are skipped.
        assert_eq!(
            decode_response(&[0, 0, 0, 0, 6, 0x12, 2, b'h', b'i', 0x08, 1]),
            Ok(ServingStatus::Serving)
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bad in [
            &[][..],
            &[0, 0, 0],
            &[1, 0, 0, 0, 0],
            &[0, 0, 0, 0, 9, 8],
            &[0, 0, 0, 0, 2, 0x08, 0x80],
            &[0, 0, 0, 0, 2, 0x12, 9],
            &[0, 0, 0, 0, 1, 0x0b],
            &[0, 0xff, 0xff, 0xff, 0xff],
        ] {
            assert!(decode_response(bad).is_err(), "{bad:?}");
        }
    }
}
