//! `ferry proxy`'s tracing flags (each also an environment variable, so that a pod's
//! `proxy.istio.io/config` `proxyMetadata` can set them), and the tracing part of Istio's
//! `ProxyConfig` that the injector hands the proxy in `PROXY_CONFIG`
//! (`tracing.sampling`, `tracing.zipkin.address`). The configuration the control plane
//! pushes (or a static `--config` file's `tracing`) wins over both.

use ferry_proxy::config::{Tracing, TracingProvider};
use serde_json::Value;

/// Tracing flags of `ferry proxy`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct TracingArgs {
    /// Where spans go: `otlp-grpc`, `otlp-http` or `zipkin` (needs `--tracing-endpoint`).
    #[arg(long, env = "FERRY_TRACING_PROVIDER", value_parser = provider)]
    tracing_provider: Option<TracingProvider>,
    /// The provider's URL: `http://collector:4317` (OTLP/gRPC),
    /// `http://collector:4318/v1/traces` (OTLP/HTTP), `http://zipkin:9411/api/v2/spans`.
    #[arg(long, env = "FERRY_TRACING_ENDPOINT")]
    tracing_endpoint: Option<String>,
    /// Percentage of new traces sampled (0-100; Istio's default is 1). Incoming sampling
    /// decisions are always honoured.
    #[arg(long, env = "FERRY_TRACING_SAMPLING", value_parser = percentage)]
    tracing_sampling: Option<f64>,
    /// Record a span per Redis command (command name and argument count, never keys).
    #[arg(long, env = "FERRY_TRACING_REDIS_SPANS")]
    tracing_redis_spans: bool,
}

fn provider(s: &str) -> Result<TracingProvider, String> {
    TracingProvider::parse(s).ok_or_else(|| format!("{s:?} is not otlp-grpc, otlp-http or zipkin"))
}

fn percentage(s: &str) -> Result<f64, String> {
    match s.trim().trim_end_matches('%').parse::<f64>() {
        Ok(p) if (0.0..=100.0).contains(&p) => Ok(p),
        _ => Err(format!("{s:?} is not a percentage between 0 and 100")),
    }
}

/// The tracing part of Istio's `ProxyConfig` (`PROXY_CONFIG`): `tracing.sampling` and a
/// Zipkin `tracing.zipkin.address` (`host:port`).
fn from_proxy_config(json: &str) -> (Option<Tracing>, Option<f64>) {
    let Ok(doc) = serde_json::from_str::<Value>(json) else {
        return (None, None);
    };
    let t = &doc["tracing"];
    let sampling = t["sampling"].as_f64().filter(|p| (0.0..=100.0).contains(p));
    let zipkin = t["zipkin"]["address"]
        .as_str()
        .filter(|a| !a.trim().is_empty())
        .map(|address| Tracing {
            provider: TracingProvider::Zipkin,
            endpoint: zipkin_url(address),
            sampling_percentage: sampling
                .unwrap_or(ferry_proxy::config::tracing::default_sampling()),
            redis_spans: false,
            spans: Default::default(),
            custom_tags: Vec::new(),
            max_tag_length: 0,
        });
    (zipkin, sampling)
}

/// `http://<address>/api/v2/spans` for a Zipkin `host:port` (a full URL is kept).
pub fn zipkin_url(address: &str) -> String {
    let a = address.trim();
    if a.starts_with("http://") || a.starts_with("https://") {
        a.to_string()
    } else {
        format!("http://{a}/api/v2/spans")
    }
}

impl TracingArgs {
    /// The tracing settings of the flags, over those of `proxy_config` (the `PROXY_CONFIG`
    /// JSON); `None` when neither names a provider.
    pub fn settings(&self, proxy_config: Option<&str>) -> anyhow::Result<Option<Tracing>> {
        let (annotated, annotated_sampling) = proxy_config.map_or((None, None), from_proxy_config);
        let sampling = self.tracing_sampling.or(annotated_sampling);
        let mut t = match (self.tracing_provider, &self.tracing_endpoint) {
            (Some(provider), Some(endpoint)) if !endpoint.trim().is_empty() => Tracing {
                provider,
                endpoint: endpoint.trim().to_string(),
                sampling_percentage: ferry_proxy::config::tracing::default_sampling(),
                redis_spans: false,
                spans: Default::default(),
                custom_tags: Vec::new(),
                max_tag_length: 0,
            },
            (Some(_), _) => anyhow::bail!("--tracing-provider needs --tracing-endpoint"),
            (None, Some(e)) if !e.trim().is_empty() => {
                anyhow::bail!("--tracing-endpoint needs --tracing-provider")
            }
            (None, _) => match annotated {
                Some(t) => t,
                None => return Ok(None),
            },
        };
        if let Some(p) = sampling {
            t.sampling_percentage = p;
        }
        t.redis_spans |= self.tracing_redis_spans;
        Ok(Some(t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(p: Option<&str>, e: Option<&str>, s: Option<f64>, r: bool) -> TracingArgs {
        TracingArgs {
            tracing_provider: p.and_then(TracingProvider::parse),
            tracing_endpoint: e.map(str::to_string),
            tracing_sampling: s,
            tracing_redis_spans: r,
        }
    }

    #[test]
    fn flags_and_proxy_config() {
        assert_eq!(
            args(None, None, None, false).settings(None).ok(),
            Some(None)
        );
        let t = args(Some("otlp-grpc"), Some("http://c:4317"), Some(100.0), true)
            .settings(None)
            .ok()
            .flatten()
            .expect("on");
        assert_eq!(t.provider, TracingProvider::OtlpGrpc);
        assert_eq!(t.sampling_percentage, 100.0);
        assert!(t.redis_spans);
        assert!(
            args(Some("zipkin"), None, None, false)
                .settings(None)
                .is_err()
        );
        assert!(
            args(None, Some("http://x"), None, false)
                .settings(None)
                .is_err()
        );

        let pc = r#"{"tracing":{"sampling":25,"zipkin":{"address":"198.18.0.1:9411"}}}"#;
        let t = args(None, None, None, false)
            .settings(Some(pc))
            .ok()
            .flatten()
            .expect("zipkin from PROXY_CONFIG");
        assert_eq!(t.provider, TracingProvider::Zipkin);
        assert_eq!(t.endpoint, "http://198.18.0.1:9411/api/v2/spans");
        assert_eq!(t.sampling_percentage, 25.0);
        // Flags win; the annotation's sampling applies when the flags set none.
        let t = args(
            Some("otlp-http"),
            Some("http://c:4318/v1/traces"),
            None,
            false,
        )
        .settings(Some(pc))
        .ok()
        .flatten()
        .expect("on");
        assert_eq!(t.provider, TracingProvider::OtlpHttp);
        assert_eq!(t.sampling_percentage, 25.0);
        // Malformed PROXY_CONFIG is ignored.
        assert_eq!(
            args(None, None, None, false).settings(Some("{")).ok(),
            Some(None)
        );
        assert!(percentage("101").is_err() && percentage("1%").is_ok());
    }
}
