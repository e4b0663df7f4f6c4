//! Pooled upstream HTTP clients (hyper-util's), one per flavour: HTTP/1.1 or HTTP/2 with
//! prior knowledge, outbound or inbound (inbound connections leave from 127.0.0.6).
//! Connections are kept alive and reused across requests and downstream connections.

use super::body::ProxyBody;
use crate::config::Protocol;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

/// A pooled client.
pub type PooledClient = Client<HttpConnector, ProxyBody>;

/// The four upstream clients.
#[derive(Clone)]
pub struct Clients {
    outbound_h1: PooledClient,
    outbound_h2: PooledClient,
    inbound_h1: PooledClient,
    inbound_h2: PooledClient,
}

impl std::fmt::Debug for Clients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Clients")
    }
}

fn connector(inbound: bool, connect_timeout: Duration) -> HttpConnector {
    let mut c = HttpConnector::new();
    c.set_nodelay(true);
    c.set_connect_timeout(Some(connect_timeout));
    c.enforce_http(true);
    if inbound {
        c.set_local_addresses(Ipv4Addr::new(127, 0, 0, 6), Ipv6Addr::UNSPECIFIED);
    }
    c
}

fn client(inbound: bool, http2: bool, connect_timeout: Duration) -> PooledClient {
    let mut builder = Client::builder(TokioExecutor::new());
    builder
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(64)
        .http2_only(http2);
    builder.build(connector(inbound, connect_timeout))
}

impl Clients {
    /// Fresh pools with the given connect timeout.
    pub fn new(connect_timeout: Duration) -> Self {
        Self {
            outbound_h1: client(false, false, connect_timeout),
            outbound_h2: client(false, true, connect_timeout),
            inbound_h1: client(true, false, connect_timeout),
            inbound_h2: client(true, true, connect_timeout),
        }
    }

    /// The client for a direction and protocol.
    pub fn pick(&self, inbound: bool, protocol: Protocol) -> &PooledClient {
        let h2 = matches!(protocol, Protocol::Http2 | Protocol::Grpc);
        match (inbound, h2) {
            (false, false) => &self.outbound_h1,
            (false, true) => &self.outbound_h2,
            (true, false) => &self.inbound_h1,
            (true, true) => &self.inbound_h2,
        }
    }
}
