//! The mirror of a Redis connection under a RedisPolicy: a connection of its own to one
//! endpoint of the mirror cluster, fed the client's read-only commands (and the commands that
//! set up the connection) through a bounded queue; its replies are read and dropped. Fire
//! and forget: when the mirror is slow or gone, copies are dropped, never the client's
//! traffic.

use crate::cluster::{PickContext, UpstreamCluster};
use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

/// Copies queued before the mirror drops them.
const QUEUE: usize = 256;

/// The sending side of a mirror connection.
#[derive(Debug)]
pub struct Mirror {
    tx: mpsc::Sender<Bytes>,
}

impl Mirror {
    /// Starts a mirror connection to an endpoint of `cluster` (on the current runtime).
    pub fn start(cluster: Arc<UpstreamCluster>, connect_timeout: Duration) -> Option<Mirror> {
        let picked = cluster.pick(PickContext::default())?;
        let (tx, mut rx) = mpsc::channel::<Bytes>(QUEUE);
        let addr = picked.addr;
        tokio::spawn(async move {
            let _picked = picked;
            let connected =
                tokio::time::timeout(connect_timeout, tokio::net::TcpStream::connect(addr)).await;
            let Ok(Ok(stream)) = connected else {
                return;
            };
            let _ = stream.set_nodelay(true);
            let (mut r, mut w) = stream.into_split();
            let mut sink = vec![0u8; 16 * 1024];
            loop {
                tokio::select! {
                    copy = rx.recv() => match copy {
                        Some(bytes) => {
                            if w.write_all(&bytes).await.is_err() {
                                return;
                            }
                        }
                        None => return,
                    },
                    read = r.read(&mut sink) => match read {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    },
                }
            }
        });
        Some(Mirror { tx })
    }

    /// Queues a copy; `false` when it was dropped.
    pub fn send(&self, bytes: Bytes) -> bool {
        self.tx.try_send(bytes).is_ok()
    }
}
