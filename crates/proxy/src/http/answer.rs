//! Answers the proxy gives itself instead of forwarding: redirects, direct responses,
//! injected aborts (HTTP status, or a trailers-only gRPC status), CORS preflights, and the
//! Envoy-worded errors (`no healthy upstream`, `upstream request timeout`, ...). Pure
//! functions from the request head and the rule to a response.

use super::body::{ProxyBody, full};
use crate::route::http::{Abort, Cors, Redirect};
use bytes::Bytes;
use ferry_model::istio::virtual_service::RedirectPortSelection;
use hyper::header::{HeaderName, HeaderValue};
use hyper::http::request::Parts;
use hyper::{Response, StatusCode};

/// A response with `status` and a text body.
pub fn text(status: u16, body: &str) -> Response<ProxyBody> {
    let mut r = Response::new(full(Bytes::from(body.to_string())));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if !body.is_empty() {
        r.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain"),
        );
    }
    r
}

/// A direct response.
pub fn direct(status: u16, body: Bytes) -> Response<ProxyBody> {
    let mut r = Response::new(full(body));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    r
}

/// Marks an answer that is not sent: the downstream stream is reset with this HTTP/2 error
/// code instead (an HTTP/1.1 connection is closed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResetStream(pub u32);

/// An injected abort, as Envoy's fault filter answers it.
pub fn abort(kind: Abort) -> Response<ProxyBody> {
    match kind {
        Abort::Http(status) => text(status, "fault filter abort"),
        Abort::Http2(code) => {
            let mut r = Response::new(full(Bytes::new()));
            r.extensions_mut().insert(ResetStream(code));
            r
        }
        Abort::Grpc(code) => {
            let mut r = Response::new(full(Bytes::new()));
            let h = r.headers_mut();
            h.insert(
                hyper::header::CONTENT_TYPE,
                HeaderValue::from_static("application/grpc"),
            );
            if let Ok(v) = HeaderValue::try_from(code.to_string()) {
                h.insert("grpc-status", v);
            }
            h.insert(
                "grpc-message",
                HeaderValue::from_static("fault filter abort"),
            );
            r
        }
    }
}

fn host_and_port(authority: &str) -> (&str, Option<&str>) {
    // `[::1]:80`, `host:80`, `host`.
    if authority.starts_with('[')
        && let Some(end) = authority.find(']')
    {
        let host = authority.get(..=end).unwrap_or(authority);
        let rest = authority.get(end + 1..).unwrap_or("");
        return (host, rest.strip_prefix(':'));
    }
    match authority.rsplit_once(':') {
        Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => (h, Some(p)),
        _ => (authority, None),
    }
}

/// The `Location` of a redirect for a request with head `parts` on `port`, whose authority
/// is `authority`.
pub fn location(r: &Redirect, parts: &Parts, authority: &str, port: u16) -> String {
    let scheme = r.scheme.as_deref().unwrap_or("http");
    let original = r.authority.as_deref().unwrap_or(authority);
    let (host, given_port) = host_and_port(original);
    let port_text = match (r.port, r.derive_port) {
        (Some(p), _) => Some(p.to_string()),
        (None, Some(RedirectPortSelection::FromRequestPort)) => Some(port.to_string()),
        (None, Some(RedirectPortSelection::FromProtocolDefault)) => None,
        (None, None) => given_port.map(str::to_string),
    };
    let default_port = match scheme {
        "https" => "443",
        _ => "80",
    };
    let authority = match port_text {
        Some(p) if p != default_port => format!("{host}:{p}"),
        _ => host.to_string(),
    };
    let path = match &r.uri {
        Some(uri) if uri.contains('?') => uri.clone(),
        Some(uri) => match parts.uri.query() {
            Some(q) => format!("{uri}?{q}"),
            None => uri.clone(),
        },
        None => parts
            .uri
            .path_and_query()
            .map_or("/".to_string(), |p| p.as_str().to_string()),
    };
    format!("{scheme}://{authority}{path}")
}

/// A redirect response.
pub fn redirect(r: &Redirect, parts: &Parts, authority: &str, port: u16) -> Response<ProxyBody> {
    let mut resp = direct(r.code, Bytes::new());
    if let Ok(v) = HeaderValue::try_from(location(r, parts, authority, port)) {
        resp.headers_mut().insert(hyper::header::LOCATION, v);
    }
    resp
}

/// Whether a request is a CORS preflight.
pub fn is_preflight(parts: &Parts) -> bool {
    parts.method == hyper::Method::OPTIONS
        && parts.headers.contains_key(hyper::header::ORIGIN)
        && parts
            .headers
            .contains_key(hyper::header::ACCESS_CONTROL_REQUEST_METHOD)
}

fn set(headers: &mut hyper::HeaderMap, name: HeaderName, value: &str) {
    if value.is_empty() {
        return;
    }
    if let Ok(v) = HeaderValue::try_from(value) {
        headers.insert(name, v);
    }
}

/// The answer to an allowed preflight from `origin`.
pub fn preflight(cors: &Cors, origin: &str) -> Response<ProxyBody> {
    use hyper::header::*;
    let mut r = direct(200, Bytes::new());
    let h = r.headers_mut();
    set(h, ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    set(h, ACCESS_CONTROL_ALLOW_METHODS, &cors.methods);
    set(h, ACCESS_CONTROL_ALLOW_HEADERS, &cors.headers);
    if let Some(age) = cors.max_age {
        set(h, ACCESS_CONTROL_MAX_AGE, &age.to_string());
    }
    if cors.credentials {
        set(h, ACCESS_CONTROL_ALLOW_CREDENTIALS, "true");
    }
    r
}

/// Adds the CORS headers of an actual (non-preflight) request from an allowed `origin`.
pub fn cors_headers(cors: &Cors, origin: &str, headers: &mut hyper::HeaderMap) {
    use hyper::header::*;
    set(headers, ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    set(headers, ACCESS_CONTROL_EXPOSE_HEADERS, &cors.expose);
    if cors.credentials {
        set(headers, ACCESS_CONTROL_ALLOW_CREDENTIALS, "true");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(uri: &str) -> Parts {
        hyper::Request::builder()
            .uri(uri)
            .body(())
            .expect("request")
            .into_parts()
            .0
    }

    #[test]
    fn redirect_locations() {
        let p = parts("/v1/items?x=1");
        let r = |f: fn(&mut Redirect)| {
            let mut r = Redirect {
                uri: None,
                authority: None,
                port: None,
                derive_port: None,
                scheme: None,
                code: 301,
            };
            f(&mut r);
            location(&r, &p, "shop:8080", 8080)
        };
        assert_eq!(r(|_| {}), "http://shop:8080/v1/items?x=1");
        assert_eq!(
            r(|r| r.uri = Some("/v2/items".into())),
            "http://shop:8080/v2/items?x=1"
        );
        assert_eq!(
            r(|r| r.authority = Some("new.example.com".into())),
            "http://new.example.com/v1/items?x=1"
        );
        assert_eq!(
            r(|r| {
                r.scheme = Some("https".into());
                r.derive_port = Some(RedirectPortSelection::FromProtocolDefault);
            }),
            "https://shop/v1/items?x=1"
        );
        assert_eq!(r(|r| r.port = Some(9090)), "http://shop:9090/v1/items?x=1");
        assert_eq!(
            r(|r| {
                r.authority = Some("other".into());
                r.derive_port = Some(RedirectPortSelection::FromRequestPort);
            }),
            "http://other:8080/v1/items?x=1"
        );
    }

    #[test]
    fn grpc_abort_is_trailers_only() {
        let r = abort(Abort::Grpc(14));
        assert_eq!(r.status(), 200);
        assert_eq!(
            r.headers().get("grpc-status").map(|v| v.as_bytes()),
            Some(&b"14"[..])
        );
        assert_eq!(abort(Abort::Http(503)).status(), 503);
    }
}
