//! `ferry trace-collector`: a small OTLP/gRPC trace receiver for the one-machine mesh. It
//! prints one line per span as proxies export them and, when stopped, every trace as a tree.

use anyhow::Context;
use ferry_proxy::trace::receiver::render_tree;
use ferry_proxy::trace::{ReceivedSpan, serve_otlp_receiver};
use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;

/// Arguments of `ferry trace-collector`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Address of the OTLP/gRPC receiver (the OpenTelemetry default port is 4317).
    #[arg(long, default_value = "127.0.0.1:4317")]
    listen: SocketAddr,
    /// Print each span as one JSON object (ids, kind, name, service, times, attributes)
    /// instead of a line of text.
    #[arg(long)]
    json: bool,
}

/// One span as a JSON object.
fn json_line(s: &ReceivedSpan) -> String {
    serde_json::json!({
        "traceId": s.trace_id,
        "spanId": s.span_id,
        "parentSpanId": s.parent_span_id,
        "service": s.service_name,
        "kind": s.kind,
        "name": s.name,
        "startUnixNanos": s.start_unix_nanos,
        "endUnixNanos": s.end_unix_nanos,
        "error": s.error,
        "attributes": s.attributes,
    })
    .to_string()
}

/// One line for a span: trace, span, parent, service, kind, duration, name.
fn line(s: &ReceivedSpan) -> String {
    let micros = s.end_unix_nanos.saturating_sub(s.start_unix_nanos) / 1_000;
    format!(
        "trace={} span={} parent={} service={} kind={} duration={}us{} {}",
        s.trace_id,
        s.span_id,
        s.parent_span_id.as_deref().unwrap_or("-"),
        s.service_name,
        s.kind,
        micros,
        if s.error { " error" } else { "" },
        s.name
    )
}

/// Runs `ferry trace-collector` until Ctrl-C or SIGTERM.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        eprintln!(
            "receiving OTLP/gRPC traces on {}; Ctrl-C prints the traces as trees",
            listener.local_addr()?
        );
        let (mut spans, task) = serve_otlp_receiver(listener, 1024);
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut seen = Vec::new();
        loop {
            tokio::select! {
                span = spans.recv() => {
                    let Some(span) = span else { break };
                    let mut out = std::io::stdout().lock();
                    let text = if args.json { json_line(&span) } else { line(&span) };
                    let _ = writeln!(out, "{text}");
                    let _ = out.flush();
                    seen.push(span);
                }
                _ = term.recv() => break,
                _ = tokio::signal::ctrl_c() => break,
            }
        }
        task.abort();
        if !args.json {
            print!("{}", render_tree(&seen));
        }
        Ok(ExitCode::SUCCESS)
    })
}
