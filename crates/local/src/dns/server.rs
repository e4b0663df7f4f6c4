//! The cluster DNS server (hickory-server, UDP and TCP on the bridge address, port 53):
//! each query is answered from the registry in force at that moment ([`super::answer`]),
//! so answers follow scaling and readiness. Answers are authoritative with a 5 s TTL, as
//! Kubernetes' DNS gives; a name that exists without an address of the asked type gets
//! NOERROR and no record.

use super::answer::{self, Answer};
use ferry_control::registry::Registry;
use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{Metadata, ResponseCode};
use hickory_server::proto::rr::rdata::{A, AAAA};
use hickory_server::proto::rr::{Name, RData, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// TTL of every answer (Kubernetes' DNS default).
pub const TTL: u32 = 5;

/// Where the answers come from: the registry in force.
pub type RegistrySource = Arc<dyn Fn() -> Arc<Registry> + Send + Sync>;

/// The records answering `qtype` for `name`.
pub fn records(name: &Name, qtype: RecordType, ips: &[IpAddr]) -> Vec<Record> {
    ips.iter()
        .filter_map(|ip| match (ip, qtype) {
            (IpAddr::V4(v4), RecordType::A | RecordType::ANY) => Some(RData::A(A(*v4))),
            (IpAddr::V6(v6), RecordType::AAAA | RecordType::ANY) => Some(RData::AAAA(AAAA(*v6))),
            _ => None,
        })
        .map(|rdata| Record::from_rdata(name.clone(), TTL, rdata))
        .collect()
}

struct Handler {
    registry: RegistrySource,
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let builder = MessageResponseBuilder::from_message_request(request);
        let info = match request.request_info() {
            Ok(info) => info,
            Err(_) => {
                let response = builder.error_msg(&request.metadata, ResponseCode::FormErr);
                return send(&mut response_handle, response, &request.metadata).await;
            }
        };
        let query = info.query.original();
        let name = query.name().clone();
        let registry = (self.registry)();
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.authoritative = true;
        let answers = match answer::resolve(&registry, Some(info.src.ip()), &name.to_ascii()) {
            Answer::Found(ips) => records(&name, query.query_type(), &ips),
            Answer::NxDomain => {
                metadata.response_code = ResponseCode::NXDomain;
                Vec::new()
            }
        };
        let response = builder.build(metadata, answers.iter(), [], [], []);
        send(&mut response_handle, response, &request.metadata).await
    }
}

async fn send<'a, R: ResponseHandler>(
    handle: &mut R,
    response: hickory_server::zone_handler::MessageResponse<
        '_,
        'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
    >,
    request: &Metadata,
) -> ResponseInfo {
    match handle.send_response(response).await {
        Ok(info) => info,
        Err(e) => {
            tracing::debug!("DNS answer not sent: {e}");
            let mut failed = Metadata::response_from_request(request);
            failed.response_code = ResponseCode::ServFail;
            hickory_server::proto::op::Header {
                metadata: failed,
                counts: Default::default(),
            }
            .into()
        }
    }
}

/// A running DNS server; stops when dropped.
pub struct DnsServer {
    server: hickory_server::Server<Handler>,
    /// The address it answers on (UDP and TCP).
    pub addr: SocketAddr,
}

impl DnsServer {
    /// Listens on `addr` (UDP and TCP) and answers from `registry`.
    pub async fn start(addr: SocketAddr, registry: RegistrySource) -> std::io::Result<DnsServer> {
        let udp = tokio::net::UdpSocket::bind(addr).await.map_err(|e| {
            let hint = if e.kind() == std::io::ErrorKind::AddrInUse {
                " (another DNS server listens on this port of every address; stop it or make it listen on specific addresses)"
            } else {
                ""
            };
            std::io::Error::new(e.kind(), format!("cluster DNS on udp {addr}: {e}{hint}"))
        })?;
        let addr = udp.local_addr()?;
        let tcp = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
            std::io::Error::new(e.kind(), format!("cluster DNS on tcp {addr}: {e}"))
        })?;
        let mut server = hickory_server::Server::new(Handler { registry });
        server.register_socket(udp);
        server.register_listener(tcp, Duration::from_secs(5), 64 * 1024);
        Ok(DnsServer { server, addr })
    }

    /// Stops answering.
    pub async fn stop(mut self) {
        let _ =
            tokio::time::timeout(Duration::from_secs(1), self.server.shutdown_gracefully()).await;
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.server.shutdown_token().cancel();
    }
}
