//! Where a redirected connection was going. Behind a trait so the whole proxy runs
//! in-process in unprivileged tests (a fixed destination) as well as behind iptables
//! (`SO_ORIGINAL_DST`).

use socket2::SockRef;
use std::io;
use std::net::SocketAddr;
use tokio::net::TcpStream;

/// Looks up the destination a client dialled before it was redirected to the proxy.
pub trait OriginalDst: Send + Sync + 'static {
    /// The original destination of an accepted connection.
    fn original_dst(&self, stream: &TcpStream) -> io::Result<SocketAddr>;
}

/// `SO_ORIGINAL_DST` / `IP6T_SO_ORIGINAL_DST`, set by the nat table's REDIRECT.
#[derive(Debug, Default, Clone, Copy)]
pub struct SocketOriginalDst;

impl OriginalDst for SocketOriginalDst {
    fn original_dst(&self, stream: &TcpStream) -> io::Result<SocketAddr> {
        let sock = SockRef::from(stream);
        let addr = match stream.local_addr()? {
            SocketAddr::V4(_) => sock.original_dst_v4()?,
            SocketAddr::V6(_) => sock.original_dst_v6()?,
        };
        addr.as_socket().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                "original destination is not an IP address",
            )
        })
    }
}

/// Every connection goes to one fixed address: `ferry proxy forward`, and tests.
#[derive(Debug, Clone, Copy)]
pub struct FixedDst(pub SocketAddr);

impl OriginalDst for FixedDst {
    fn original_dst(&self, _stream: &TcpStream) -> io::Result<SocketAddr> {
        Ok(self.0)
    }
}
