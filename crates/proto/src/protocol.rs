//! Protocols of service ports, declared the way Istio reads them: `appProtocol`, else the
//! port name's prefix (`redis`, `redis-cache`, `http-web`, `tcp-peer`); anything else is
//! sniffed from the first bytes.

use serde::{Deserialize, Serialize};

/// The protocol of a connection or a service port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// Opaque TCP.
    Tcp,
    /// HTTP/1.x.
    Http,
    /// HTTP/2 (cleartext, prior knowledge).
    Http2,
    /// gRPC (HTTP/2).
    Grpc,
    /// TLS, forwarded opaquely (SNI is read for routing).
    Tls,
    /// Redis RESP.
    Redis,
    /// Not declared: detect from the first bytes.
    Unknown,
}

impl Protocol {
    /// The protocol a service port declares.
    pub fn of_port(name: &str, app_protocol: Option<&str>) -> Protocol {
        if let Some(p) = app_protocol
            .map(Self::of_name)
            .filter(|p| *p != Protocol::Unknown)
        {
            return p;
        }
        let prefix = name.split('-').next().unwrap_or_default();
        Self::of_name(prefix)
    }

    fn of_name(name: &str) -> Protocol {
        match name.to_ascii_lowercase().as_str() {
            "tcp" | "mongo" | "mysql" => Protocol::Tcp,
            "http" | "kubernetes.io/h2c-http1" => Protocol::Http,
            "http2" | "kubernetes.io/h2c" => Protocol::Http2,
            "grpc" | "grpc-web" => Protocol::Grpc,
            "tls" | "https" | "kubernetes.io/wss" => Protocol::Tls,
            "redis" => Protocol::Redis,
            _ => Protocol::Unknown,
        }
    }

    /// Whether the protocol is proxied request by request (HTTP/1, HTTP/2, gRPC).
    pub fn is_http(self) -> bool {
        matches!(self, Protocol::Http | Protocol::Http2 | Protocol::Grpc)
    }

    /// The `request_protocol` metric label.
    pub fn metric_label(self) -> &'static str {
        match self {
            Protocol::Http | Protocol::Http2 => "http",
            Protocol::Grpc => "grpc",
            _ => "tcp",
        }
    }

    /// Lower-case name, for logs and the config dump.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Http => "http",
            Protocol::Http2 => "http2",
            Protocol::Grpc => "grpc",
            Protocol::Tls => "tls",
            Protocol::Redis => "redis",
            Protocol::Unknown => "unknown",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_declarations() {
        let cases = [
            ("redis", None, Protocol::Redis),
            ("redis-primary", None, Protocol::Redis),
            ("rediss", None, Protocol::Unknown),
            ("tcp-redis", None, Protocol::Tcp),
            ("http-web", None, Protocol::Http),
            ("http2-api", None, Protocol::Http2),
            ("grpc-api", None, Protocol::Grpc),
            ("tls-db", None, Protocol::Tls),
            ("https", None, Protocol::Tls),
            ("mysql", None, Protocol::Tcp),
            ("", None, Protocol::Unknown),
            ("client", None, Protocol::Unknown),
            ("tcp-cache", Some("redis"), Protocol::Redis),
            ("web", Some("http"), Protocol::Http),
            ("web", Some("kubernetes.io/h2c"), Protocol::Http2),
            ("http-x", Some("custom"), Protocol::Http),
        ];
        for (name, app, want) in cases {
            assert_eq!(Protocol::of_port(name, app), want, "{name} {app:?}");
        }
    }
}
