//! Accepting connections: the outbound (15001) and inbound (15006) capture listeners, and
//! the explicit forward listener, each handing every connection to its handler until the
//! proxy starts draining.

pub mod orig_dst;

use crate::conn::{ActiveGuard, Ctx, inbound, outbound};
use crate::lifecycle::Phase;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpSocket};
use tracing::warn;

/// Which handler a listener feeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// The application calling out (15001, and `ferry proxy forward`).
    Outbound,
    /// Peers calling the application (15006).
    Inbound,
}

/// Binds a listening socket with `SO_REUSEADDR` and a deep backlog.
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

/// Accepts connections until the proxy drains, spawning a task per connection on the
/// current runtime.
pub async fn serve(listener: TcpListener, direction: Direction, ctx: Arc<Ctx>) {
    let draining = ctx.lifecycle.reached(Phase::Draining);
    tokio::pin!(draining);
    loop {
        let accepted = tokio::select! {
            _ = &mut draining => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, _peer)) => {
                let ctx = ctx.clone();
                let guard = ActiveGuard::new(ctx.clone());
                tokio::spawn(async move {
                    match direction {
                        Direction::Outbound => outbound::handle(ctx, stream).await,
                        Direction::Inbound => inbound::handle(ctx, stream).await,
                    }
                    drop(guard);
                });
            }
            Err(e) => {
                // Out of file descriptors and similar: back off instead of spinning.
                warn!("accept on {:?}: {e}", listener.local_addr().ok());
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
