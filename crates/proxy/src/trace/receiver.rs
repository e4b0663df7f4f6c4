//! An OTLP/gRPC span receiver: what `ferry trace-collector` (and the tests) serve.
//!
//! [`serve_otlp_receiver`] runs opentelemetry-proto's `TraceService` on a bound listener and
//! yields every received span, flattened to a [`ReceivedSpan`], on a channel.

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value};
use std::collections::BTreeMap;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// One received span, flattened (ids in hex, attributes as strings).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceivedSpan {
    /// The sender's `service.name`.
    pub service_name: String,
    /// 32 hex.
    pub trace_id: String,
    /// 16 hex.
    pub span_id: String,
    /// 16 hex, `None` for a root.
    pub parent_span_id: Option<String>,
    /// Operation name.
    pub name: String,
    /// `client`, `server`, or another OTLP kind in lower case.
    pub kind: String,
    /// Start, ns since the epoch.
    pub start_unix_nanos: u64,
    /// End, ns since the epoch.
    pub end_unix_nanos: u64,
    /// Attributes, as strings.
    pub attributes: BTreeMap<String, String>,
    /// OTLP status ERROR.
    pub error: bool,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn any_to_string(v: &Option<AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

/// Flattens an export request into its spans.
pub fn flatten(req: &ExportTraceServiceRequest) -> Vec<ReceivedSpan> {
    let mut out = Vec::new();
    for rs in &req.resource_spans {
        let service_name = rs
            .resource
            .as_ref()
            .and_then(|r| r.attributes.iter().find(|kv| kv.key == "service.name"))
            .map(|kv| any_to_string(&kv.value))
            .unwrap_or_default();
        for ss in &rs.scope_spans {
            for s in &ss.spans {
                let kind = match s.kind {
                    1 => "internal",
                    2 => "server",
                    3 => "client",
                    4 => "producer",
                    5 => "consumer",
                    _ => "unspecified",
                };
                out.push(ReceivedSpan {
                    service_name: service_name.clone(),
                    trace_id: hex(&s.trace_id),
                    span_id: hex(&s.span_id),
                    parent_span_id: (!s.parent_span_id.is_empty()).then(|| hex(&s.parent_span_id)),
                    name: s.name.clone(),
                    kind: kind.to_string(),
                    start_unix_nanos: s.start_time_unix_nano,
                    end_unix_nanos: s.end_time_unix_nano,
                    attributes: s
                        .attributes
                        .iter()
                        .map(|kv| (kv.key.clone(), any_to_string(&kv.value)))
                        .collect(),
                    error: s.status.as_ref().is_some_and(|st| st.code == 2),
                });
            }
        }
    }
    out
}

struct Receiver {
    tx: mpsc::Sender<ReceivedSpan>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        for span in flatten(request.get_ref()) {
            if self.tx.send(span).await.is_err() {
                break;
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// Serves an OTLP/gRPC `TraceService` on `listener`; received spans arrive on the returned
/// channel (capacity `buffer`; a full channel slows the sender down, as backpressure). The task
/// ends when the receiver side is dropped and the server errors, or when aborted.
pub fn serve_otlp_receiver(
    listener: TcpListener,
    buffer: usize,
) -> (mpsc::Receiver<ReceivedSpan>, JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(buffer.max(1));
    let task = tokio::spawn(async move {
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let result = tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(Receiver { tx }))
            .serve_with_incoming(incoming)
            .await;
        if let Err(e) = result {
            tracing::warn!(error = %e, "otlp receiver stopped");
        }
    });
    (rx, task)
}

/// Renders spans as indented trees, one per trace (children under their parent, by start
/// time), e.g. for `ferry trace-collector`.
pub fn render_tree(spans: &[ReceivedSpan]) -> String {
    use std::fmt::Write;
    let mut by_trace: BTreeMap<&str, Vec<&ReceivedSpan>> = BTreeMap::new();
    for s in spans {
        by_trace.entry(&s.trace_id).or_default().push(s);
    }
    let mut out = String::new();
    for (trace, mut list) in by_trace {
        list.sort_by_key(|s| s.start_unix_nanos);
        let _ = writeln!(out, "trace {trace}");
        let ids: std::collections::HashSet<&str> =
            list.iter().map(|s| s.span_id.as_str()).collect();
        fn walk(
            out: &mut String,
            list: &[&ReceivedSpan],
            parent: Option<&str>,
            ids: &std::collections::HashSet<&str>,
            depth: usize,
        ) {
            for s in list {
                let p = s.parent_span_id.as_deref().filter(|p| ids.contains(p));
                if p == parent {
                    let ms = s.end_unix_nanos.saturating_sub(s.start_unix_nanos) as f64 / 1e6;
                    let _ = writeln!(
                        out,
                        "{:indent$}{} {} [{}] {:.3}ms{}",
                        "",
                        s.kind,
                        s.name,
                        s.service_name,
                        ms,
                        if s.error { " ERROR" } else { "" },
                        indent = 2 + depth * 2
                    );
                    if depth < 64 {
                        walk(out, list, Some(&s.span_id), ids, depth + 1);
                    }
                }
            }
        }
        walk(&mut out, &list, None, &ids, 0);
    }
    out
}
