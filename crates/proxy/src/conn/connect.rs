//! Opening upstream connections: with a timeout, `TCP_NODELAY`, and for inbound delivery a
//! source address of 127.0.0.6 (`::6`), the address the redirect rules let through, so the
//! application sees its peers as Istio's sidecars show them. That source is bound with
//! `IP_BIND_ADDRESS_NO_PORT`, so the kernel picks the port at `connect()` by the whole 4-tuple
//! and a sidecar taking many short connections does not run out of (or search through)
//! ports held by TIME_WAIT sockets.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::time::Duration;
use tokio::net::{TcpSocket, TcpStream};

/// Source address of inbound deliveries over IPv4.
pub const INBOUND_PASSTHROUGH_V4: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 6);
/// Source address of inbound deliveries over IPv6.
pub const INBOUND_PASSTHROUGH_V6: Ipv6Addr = Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 6);

/// Connects to `dst` within `timeout`, optionally from the inbound passthrough address.
pub async fn connect(
    dst: SocketAddr,
    timeout: Duration,
    inbound_source: bool,
) -> io::Result<TcpStream> {
    let socket = match dst {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_nodelay(true)?;
    if inbound_source {
        let src: IpAddr = match dst {
            SocketAddr::V4(_) => INBOUND_PASSTHROUGH_V4.into(),
            SocketAddr::V6(_) => INBOUND_PASSTHROUGH_V6.into(),
        };
        bind_address_no_port(&socket)?;
        // Binding ::6 needs it on an interface; fall back to the kernel's choice.
        if let Err(e) = socket.bind(SocketAddr::new(src, 0))
            && dst.is_ipv4()
        {
            return Err(e);
        }
    }
    match tokio::time::timeout(timeout, socket.connect(dst)).await {
        Ok(result) => result,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("connecting to {dst} took longer than {timeout:?}"),
        )),
    }
}

/// Defers the choice of the source port of a bound socket to `connect()`.
fn bind_address_no_port(socket: &TcpSocket) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: a valid socket descriptor and a pointer to a c_int of the length given.
    let r = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&raw const on).cast(),
            std::mem::size_of_val(&on) as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
