//! Bodies as the proxy streams them: the boxed body type of both directions, and a wrapper
//! that counts the bytes of a body and reports once it ends (or is dropped), so request
//! metrics measure the whole exchange without buffering anything.

use bytes::Bytes;
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::task::{Context, Poll};

/// The error type of proxied bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Any body the proxy forwards.
pub type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

/// Boxes a body into a [`ProxyBody`].
pub fn boxed<B>(body: B) -> ProxyBody
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed_unsync()
}

/// A fixed body.
pub fn full(data: impl Into<Bytes>) -> ProxyBody {
    boxed(http_body_util::Full::new(data.into()).map_err(|never| match never {}))
}

/// What a counted body saw.
#[derive(Debug, Clone, Copy, Default)]
pub struct Seen {
    /// Data bytes.
    pub bytes: u64,
    /// The `grpc-status` trailer, if one arrived.
    pub grpc_status: Option<u32>,
}

/// Wraps a body, counting its bytes; `on_end` runs exactly once, when the body ends, fails
/// or is dropped.
pub struct Counted<F: FnOnce(Seen)> {
    inner: ProxyBody,
    seen: Seen,
    on_end: Option<F>,
}

impl<F: FnOnce(Seen)> Counted<F> {
    /// Counts `inner`.
    pub fn new(inner: ProxyBody, on_end: F) -> Self {
        Self {
            inner,
            seen: Seen::default(),
            on_end: Some(on_end),
        }
    }

    fn finish(&mut self) {
        if let Some(f) = self.on_end.take() {
            f(self.seen);
        }
    }
}

impl<F: FnOnce(Seen)> Drop for Counted<F> {
    fn drop(&mut self) {
        self.finish();
    }
}

impl<F: FnOnce(Seen) + Unpin> Body for Counted<F> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.seen.bytes += data.len() as u64;
                }
                if let Some(status) = frame
                    .trailers_ref()
                    .and_then(|t| t.get("grpc-status"))
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok())
                {
                    self.seen.grpc_status = Some(status);
                }
            }
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => self.finish(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
