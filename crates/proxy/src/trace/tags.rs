//! Istio's span settings beyond the provider, as pure logic: which span kinds a proxy reports
//! ([`SpanModes`], Telemetry `tracing[].match.mode`), custom tags ([`CustomTags`], Telemetry
//! `customTags`: a literal, an environment variable of the proxy read when the settings take
//! effect, or a request header read when a sampled request starts), and the cut of long tag
//! values at export ([`truncate_attributes`], the provider's `maxTagLength`).

use super::span::{AttrValue, Span, SpanKind};
use crate::config::tracing::{CustomTag, SpanMode, TagSource};
use hyper::http::HeaderMap;
use hyper::http::header::HeaderName;
use std::borrow::Cow;

/// Which span kinds this proxy reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpanModes {
    /// Client (outbound) spans.
    pub client: bool,
    /// Server (inbound) spans.
    pub server: bool,
}

impl Default for SpanModes {
    fn default() -> Self {
        SpanModes::from(SpanMode::ClientAndServer)
    }
}

impl From<SpanMode> for SpanModes {
    fn from(m: SpanMode) -> Self {
        SpanModes {
            client: m.client(),
            server: m.server(),
        }
    }
}

impl SpanModes {
    /// Whether spans of `kind` are reported.
    #[inline]
    pub fn reports(&self, kind: SpanKind) -> bool {
        match kind {
            SpanKind::Client => self.client,
            SpanKind::Server => self.server,
        }
    }
}

/// A custom tag read from a request header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderTag {
    /// The tag's name.
    pub tag: Cow<'static, str>,
    /// The request header.
    pub header: HeaderName,
    /// The value when the request has no such header (or an empty or non-text one).
    pub default_value: Option<String>,
}

/// The custom tags of one span kind, ready for the data path.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KindTags {
    /// Tags whose value is known once the settings take effect (literals and environment
    /// variables), empty values left out.
    pub fixed: Vec<(Cow<'static, str>, String)>,
    /// Tags read from each request's headers.
    pub headers: Vec<HeaderTag>,
}

impl KindTags {
    /// Whether there are no custom tags.
    pub fn is_empty(&self) -> bool {
        self.fixed.is_empty() && self.headers.is_empty()
    }

    /// The header tags' values of a request (its header, else the default; empty values are
    /// left out). Called only for sampled requests.
    pub fn capture(&self, headers: &HeaderMap) -> Vec<(Cow<'static, str>, String)> {
        self.headers
            .iter()
            .filter_map(|h| {
                let value = headers
                    .get(&h.header)
                    .and_then(|v| v.to_str().ok())
                    .filter(|v| !v.is_empty())
                    .map(str::to_string)
                    .or_else(|| h.default_value.clone())
                    .filter(|v| !v.is_empty())?;
                Some((h.tag.clone(), value))
            })
            .collect()
    }

    /// Adds the fixed tags and `captured` (from [`KindTags::capture`]) to `span`, replacing
    /// a standard tag of the same name.
    pub fn apply(&self, span: &mut Span, captured: Vec<(Cow<'static, str>, String)>) {
        for (k, v) in &self.fixed {
            span.set(k.clone(), v.clone());
        }
        for (k, v) in captured {
            span.set(k, v);
        }
    }
}

/// The custom tags of a proxy, per span kind.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CustomTags {
    /// On client spans.
    pub client: KindTags,
    /// On server spans.
    pub server: KindTags,
}

impl CustomTags {
    /// Resolves `tags`: environment variables are read with `env` (the proxy's own
    /// environment in production), header names checked (a tag with an invalid header name
    /// is left out and logged). Header tags only apply to HTTP spans.
    pub fn resolve(tags: &[CustomTag], env: impl Fn(&str) -> Option<String>) -> CustomTags {
        let mut out = CustomTags::default();
        for t in tags {
            let name: Cow<'static, str> = Cow::Owned(t.tag.clone());
            let kinds = [
                t.spans.client().then_some(&mut out.client),
                t.spans.server().then_some(&mut out.server),
            ];
            match &t.source {
                TagSource::Literal { value } => {
                    if value.is_empty() {
                        continue;
                    }
                    for k in kinds.into_iter().flatten() {
                        k.fixed.push((name.clone(), value.clone()));
                    }
                }
                TagSource::Environment {
                    name: var,
                    default_value,
                } => {
                    let Some(value) = env(var)
                        .or_else(|| default_value.clone())
                        .filter(|v| !v.is_empty())
                    else {
                        continue;
                    };
                    for k in kinds.into_iter().flatten() {
                        k.fixed.push((name.clone(), value.clone()));
                    }
                }
                TagSource::Header {
                    name: header,
                    default_value,
                } => {
                    let Ok(header) = HeaderName::from_bytes(header.trim().as_bytes()) else {
                        tracing::warn!(tag = %t.tag, header = %header, "custom tag: not a header name");
                        continue;
                    };
                    for k in kinds.into_iter().flatten() {
                        k.headers.push(HeaderTag {
                            tag: name.clone(),
                            header: header.clone(),
                            default_value: default_value.clone(),
                        });
                    }
                }
            }
        }
        out
    }

    /// The tags of `kind`'s spans.
    #[inline]
    pub fn of(&self, kind: SpanKind) -> &KindTags {
        match kind {
            SpanKind::Client => &self.client,
            SpanKind::Server => &self.server,
        }
    }
}

/// `s` cut to at most `max` bytes, at a character boundary (never splitting a UTF-8
/// sequence).
pub fn truncate_str(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Cuts every string attribute of `span` longer than `max` bytes (at a character boundary);
/// the exporter calls it on each span before sending it.
pub fn truncate_attributes(span: &mut Span, max: usize) {
    for (_, v) in &mut span.attributes {
        if let AttrValue::Str(s) = v
            && s.len() > max
        {
            let cut = truncate_str(s, max).to_string();
            *v = AttrValue::Str(Cow::Owned(cut));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::context::Sampler;
    use std::time::SystemTime;

    fn tag(name: &str, source: TagSource, spans: SpanMode) -> CustomTag {
        CustomTag {
            tag: name.into(),
            source,
            spans,
        }
    }

    fn lit(v: &str) -> TagSource {
        TagSource::Literal { value: v.into() }
    }

    fn env(name: &str, default: Option<&str>) -> TagSource {
        TagSource::Environment {
            name: name.into(),
            default_value: default.map(String::from),
        }
    }

    fn header(name: &str, default: Option<&str>) -> TagSource {
        TagSource::Header {
            name: name.into(),
            default_value: default.map(String::from),
        }
    }

    fn fixed(k: &KindTags) -> Vec<(String, String)> {
        k.fixed
            .iter()
            .map(|(a, b)| (a.to_string(), b.clone()))
            .collect()
    }

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn truncate_str_table() {
        // (value, max, expected)
        let cases = [
            ("abcdef", 10, "abcdef"),
            ("abcdef", 6, "abcdef"),
            ("abcdef", 3, "abc"),
            ("abcdef", 0, ""),
            // é is 2 bytes: a cut inside it backs off to the boundary before it.
            ("héllo", 2, "h"),
            ("héllo", 3, "hé"),
            // 🚀 is 4 bytes.
            ("a🚀b", 4, "a"),
            ("a🚀b", 5, "a🚀"),
            ("日本語", 7, "日本"),
        ];
        for (value, max, want) in cases {
            assert_eq!(truncate_str(value, max), want, "{value:?} at {max}");
        }
    }

    #[test]
    fn truncate_attributes_cuts_only_long_strings() {
        let ctx = Sampler::new(100.0).child_of(&Default::default());
        let mut s = Span::new(&ctx, "n".into(), SpanKind::Client, SystemTime::now());
        s.attr("short", "abc")
            .attr("long", "x".repeat(300))
            .attr("utf8", "é".repeat(10))
            .attr("int", 123456789i64)
            .attr("bool", true);
        truncate_attributes(&mut s, 5);
        assert_eq!(s.get("short"), Some(&AttrValue::from("abc")));
        assert_eq!(s.get("long"), Some(&AttrValue::from("xxxxx".to_string())));
        assert_eq!(s.get("utf8"), Some(&AttrValue::from("éé".to_string())));
        assert_eq!(s.get("int"), Some(&AttrValue::Int(123456789)));
        assert_eq!(s.get("bool"), Some(&AttrValue::Bool(true)));
    }

    #[test]
    fn resolve_table() {
        let environment = |name: &str| match name {
            "ZONE" => Some("z1".to_string()),
            "EMPTY" => Some(String::new()),
            _ => None,
        };
        let both = SpanMode::ClientAndServer;
        // (tags, expected client fixed tags, server fixed tags, client header tags, server
        // header tags)
        type Case = (
            Vec<CustomTag>,
            Vec<(String, String)>,
            Vec<(String, String)>,
            usize,
            usize,
        );
        let cases: Vec<Case> = vec![
            (vec![], vec![], vec![], 0, 0),
            (
                vec![tag("team", lit("shop"), both)],
                pairs(&[("team", "shop")]),
                pairs(&[("team", "shop")]),
                0,
                0,
            ),
            (vec![tag("empty", lit(""), both)], vec![], vec![], 0, 0),
            (
                vec![tag("zone", env("ZONE", Some("z0")), both)],
                pairs(&[("zone", "z1")]),
                pairs(&[("zone", "z1")]),
                0,
                0,
            ),
            (
                vec![tag("zone", env("UNSET", Some("z0")), SpanMode::Client)],
                pairs(&[("zone", "z0")]),
                vec![],
                0,
                0,
            ),
            (
                vec![tag("zone", env("UNSET", None), both)],
                vec![],
                vec![],
                0,
                0,
            ),
            // An empty variable counts as set (Envoy's behaviour): no tag.
            (
                vec![tag("e", env("EMPTY", Some("d")), both)],
                vec![],
                vec![],
                0,
                0,
            ),
            (
                vec![tag("user", header("x-user", None), SpanMode::Server)],
                vec![],
                vec![],
                0,
                1,
            ),
            (
                vec![tag("bad", header("x user", None), both)],
                vec![],
                vec![],
                0,
                0,
            ),
            (
                vec![
                    tag("a", lit("1"), SpanMode::Client),
                    tag("a", lit("2"), SpanMode::Server),
                    tag("h", header("X-User", Some("anon")), both),
                ],
                pairs(&[("a", "1")]),
                pairs(&[("a", "2")]),
                1,
                1,
            ),
        ];
        for (i, (tags, client, server, ch, sh)) in cases.into_iter().enumerate() {
            let r = CustomTags::resolve(&tags, environment);
            assert_eq!(fixed(&r.client), client, "case {i}");
            assert_eq!(fixed(&r.server), server, "case {i}");
            assert_eq!(r.client.headers.len(), ch, "case {i}");
            assert_eq!(r.server.headers.len(), sh, "case {i}");
            assert_eq!(r.of(SpanKind::Client), &r.client);
            assert_eq!(r.of(SpanKind::Server), &r.server);
        }
    }

    #[test]
    fn capture_and_apply() {
        let tags = CustomTags::resolve(
            &[
                tag("user", header("X-User", None), SpanMode::ClientAndServer),
                tag(
                    "plan",
                    header("x-plan", Some("free")),
                    SpanMode::ClientAndServer,
                ),
                tag("http.method", lit("OVERRIDDEN"), SpanMode::ClientAndServer),
            ],
            |_| None,
        );
        let k = tags.of(SpanKind::Client);
        // (request headers, expected captured tags)
        type Case = (Vec<(&'static str, &'static str)>, Vec<(String, String)>);
        let cases: Vec<Case> = vec![
            (vec![], pairs(&[("plan", "free")])),
            (
                vec![("x-user", "ann"), ("x-plan", "gold")],
                pairs(&[("user", "ann"), ("plan", "gold")]),
            ),
            // An empty header falls back to the default (or no tag).
            (
                vec![("x-user", ""), ("x-plan", "")],
                pairs(&[("plan", "free")]),
            ),
        ];
        for (headers, want) in cases {
            let mut map = HeaderMap::new();
            for (n, v) in &headers {
                map.insert(
                    HeaderName::from_static(n),
                    hyper::http::HeaderValue::from_static(v),
                );
            }
            let got: Vec<(String, String)> = k
                .capture(&map)
                .into_iter()
                .map(|(a, b)| (a.to_string(), b))
                .collect();
            assert_eq!(got, want, "{headers:?}");
        }
        // Applied to a span: added, and a standard tag of the same name replaced.
        let ctx = Sampler::new(100.0).child_of(&Default::default());
        let mut s = Span::new(&ctx, "n".into(), SpanKind::Client, SystemTime::now());
        s.attr("http.method", "GET");
        k.apply(&mut s, vec![(Cow::Borrowed("user"), "ann".into())]);
        assert_eq!(s.get("http.method"), Some(&AttrValue::from("OVERRIDDEN")));
        assert_eq!(s.get("user"), Some(&AttrValue::from("ann")));
        assert_eq!(
            s.attributes
                .iter()
                .filter(|(k, _)| k == "http.method")
                .count(),
            1
        );
    }

    #[test]
    fn span_modes_table() {
        for (mode, client, server) in [
            (SpanMode::ClientAndServer, true, true),
            (SpanMode::Client, true, false),
            (SpanMode::Server, false, true),
        ] {
            let m = SpanModes::from(mode);
            assert_eq!(m.reports(SpanKind::Client), client, "{mode:?}");
            assert_eq!(m.reports(SpanKind::Server), server, "{mode:?}");
        }
        assert_eq!(
            SpanModes::default(),
            SpanModes::from(SpanMode::ClientAndServer)
        );
    }
}

#[cfg(test)]
mod static_file {
    use crate::config::tracing::{SpanMode, TagSource};

    /// The span settings in a static configuration file, in the form docs/tracing.md shows.
    #[test]
    fn span_settings_read_from_a_static_file() {
        let text = r#"
tracing:
  provider: otlp-grpc
  endpoint: http://127.0.0.1:4317
  spans: client
  maxTagLength: 128
  customTags:
  - {tag: team, source: {literal: {value: shop}}}
  - {tag: zone, source: {environment: {name: ZONE, defaultValue: z0}}}
  - {tag: user, source: {header: {name: x-user}}, spans: server}
"#;
        let c = crate::config::file::parse("static.yaml", text).expect("parses");
        let t = c.tracing.expect("tracing");
        assert_eq!(t.spans, SpanMode::Client);
        assert_eq!(t.max_tag_length(), 128);
        assert_eq!(t.custom_tags.len(), 3);
        assert_eq!(
            t.custom_tags[1].source,
            TagSource::Environment {
                name: "ZONE".into(),
                default_value: Some("z0".into())
            }
        );
        assert_eq!(t.custom_tags[2].spans, SpanMode::Server);
        // A typo is refused, not ignored.
        let bad = text.replace("defaultValue", "default");
        assert!(crate::config::file::parse("static.yaml", &bad).is_err());
    }
}
