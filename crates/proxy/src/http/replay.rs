//! A request body that can be sent again, for retries: the first try streams the client's
//! body upstream while keeping a copy of its frames (up to [`LIMIT`] bytes, Envoy's default
//! buffer limit is 1 MiB); a retry replays the copy and then goes on reading the client's
//! body where the earlier try stopped. A body larger than the limit streams without a copy,
//! and the request is then not retried (as Envoy does).
//!
//! Only one try reads the client's body at a time: a new try takes over, and an earlier
//! one still held by the HTTP client ends early.

use super::body::{BoxError, ProxyBody};
use bytes::Bytes;
use hyper::HeaderMap;
use hyper::body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

/// Most bytes kept for replay.
pub const LIMIT: usize = 1 << 20;

enum Kept {
    Data(Bytes),
    Trailers(HeaderMap),
}

impl Kept {
    fn frame(&self) -> Frame<Bytes> {
        match self {
            Kept::Data(b) => Frame::data(b.clone()),
            Kept::Trailers(t) => Frame::trailers(t.clone()),
        }
    }
}

struct Shared {
    source: Option<ProxyBody>,
    kept: Vec<Kept>,
    kept_bytes: usize,
    /// Frames read from the source so far.
    read: usize,
    /// The copy is incomplete (over the limit): no more tries.
    overflowed: bool,
    /// The source failed.
    failed: bool,
    /// The try allowed to read the source.
    owner: u64,
    tries: u64,
}

/// The client's body, shared by the tries of one request.
#[derive(Clone)]
pub struct Replay {
    shared: Arc<Mutex<Shared>>,
    hint: SizeHint,
}

impl std::fmt::Debug for Replay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Replay")
    }
}

impl Replay {
    /// Wraps the client's body.
    pub fn new(body: ProxyBody) -> Replay {
        let hint = body.size_hint();
        let empty = body.is_end_stream();
        Replay {
            shared: Arc::new(Mutex::new(Shared {
                source: (!empty).then_some(body),
                kept: Vec::new(),
                kept_bytes: 0,
                read: 0,
                overflowed: false,
                failed: false,
                owner: 0,
                tries: 0,
            })),
            hint,
        }
    }

    /// The body of the next try (which takes over reading the client's body).
    pub fn body(&self) -> ReplayBody {
        let id = match self.shared.lock() {
            Ok(mut s) => {
                s.tries += 1;
                s.owner = s.tries;
                s.tries
            }
            Err(_) => 0,
        };
        ReplayBody {
            shared: self.shared.clone(),
            id,
            pos: 0,
            hint: self.hint,
        }
    }

    /// Whether another try can send the whole body again.
    pub fn replayable(&self) -> bool {
        self.shared
            .lock()
            .map(|s| !s.overflowed && !s.failed)
            .unwrap_or(false)
    }
}

/// One try's view of the client's body.
pub struct ReplayBody {
    shared: Arc<Mutex<Shared>>,
    id: u64,
    pos: usize,
    hint: SizeHint,
}

impl Body for ReplayBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let shared = self.shared.clone();
        let Ok(mut s) = shared.lock() else {
            return Poll::Ready(Some(Err("request body lost".into())));
        };
        if self.pos < s.read {
            // Replaying what an earlier try already sent.
            return match s.kept.get(self.pos) {
                Some(k) if !s.overflowed => {
                    self.pos += 1;
                    Poll::Ready(Some(Ok(k.frame())))
                }
                _ => Poll::Ready(Some(Err("request body cannot be replayed".into()))),
            };
        }
        if s.owner != self.id {
            // A later try took over.
            return Poll::Ready(None);
        }
        let Some(source) = s.source.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(source).poll_frame(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                s.source = None;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                s.failed = true;
                s.source = None;
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(Some(Ok(frame))) => {
                s.read += 1;
                self.pos += 1;
                if !s.overflowed {
                    let kept = if let Some(d) = frame.data_ref() {
                        s.kept_bytes += d.len();
                        Some(Kept::Data(d.clone()))
                    } else {
                        frame.trailers_ref().map(|t| Kept::Trailers(t.clone()))
                    };
                    if s.kept_bytes > LIMIT {
                        s.overflowed = true;
                        s.kept = Vec::new();
                    } else if let Some(k) = kept {
                        s.kept.push(k);
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.shared
            .lock()
            .map(|s| s.source.is_none() && self.pos >= s.read)
            .unwrap_or(true)
    }

    fn size_hint(&self) -> SizeHint {
        self.hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::body::boxed;
    use http_body_util::{BodyExt, StreamBody};

    fn streamed(chunks: Vec<&'static [u8]>) -> ProxyBody {
        let frames = chunks
            .into_iter()
            .map(|c| Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from_static(c))));
        boxed(StreamBody::new(futures_util_stream(frames)))
    }

    /// A stream from an iterator without extra dependencies.
    fn futures_util_stream<I: Iterator + Unpin>(it: I) -> IterStream<I> {
        IterStream(it)
    }

    struct IterStream<I>(I);

    impl<I: Iterator + Unpin> tokio_stream::Stream for IterStream<I> {
        type Item = I::Item;
        fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<I::Item>> {
            Poll::Ready(self.0.next())
        }
    }

    #[tokio::test]
    async fn tries_replay_then_continue() {
        let replay = Replay::new(streamed(vec![b"ab", b"cd", b"ef"]));
        let mut first = replay.body();
        let f = first.frame().await.expect("frame").expect("ok");
        assert_eq!(f.data_ref().map(|d| &d[..]), Some(&b"ab"[..]));
        // A second try takes over: the first one ends where the copy ends.
        let mut second = replay.body();
        assert!(first.frame().await.is_none());
        // The second replays "ab" and reads the rest from the client.
        let mut all = Vec::new();
        while let Some(f) = second.frame().await {
            all.extend_from_slice(f.expect("ok").data_ref().expect("data"));
        }
        assert_eq!(&all[..], b"abcdef");
        // A third try replays everything.
        let third = replay.body().collect().await.expect("body").to_bytes();
        assert_eq!(&third[..], b"abcdef");
        assert!(replay.replayable());
    }

    #[tokio::test]
    async fn empty_and_oversized_bodies() {
        let replay = Replay::new(crate::http::body::full(Bytes::new()));
        assert!(replay.body().is_end_stream());
        let big: &'static [u8] = Box::leak(vec![7u8; LIMIT + 1].into_boxed_slice());
        let replay = Replay::new(streamed(vec![big]));
        let n = replay
            .body()
            .collect()
            .await
            .expect("body")
            .to_bytes()
            .len();
        assert_eq!(n, LIMIT + 1);
        assert!(!replay.replayable());
    }
}
