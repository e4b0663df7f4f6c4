//! Table tests of validation: each case is a manifest and the diagnostics it must produce.

use super::*;
use crate::load::parse_documents;

fn run(text: &str) -> Report {
    let docs = parse_documents("t.yaml", text).unwrap_or_else(|e| panic!("load: {e}"));
    validate_documents(&docs)
}

/// `(line, field, message fragment)` of every error.
fn errors(text: &str) -> Vec<(usize, String, String)> {
    run(text)
        .errors
        .into_iter()
        .map(|d| (d.line, d.field, d.message))
        .collect()
}

fn vs(spec: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: r\n  namespace: ns\nspec:\n{spec}"
    )
}

fn dr(spec: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1beta1\nkind: DestinationRule\nmetadata:\n  name: r\nspec:\n{spec}"
    )
}

fn pa(spec: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: p\nspec:\n{spec}"
    )
}

/// Expected errors: line, field, message fragment.
type Expected = Vec<(usize, &'static str, &'static str)>;

const ROUTE: &str =
    "  hosts: [reviews]\n  http:\n  - route:\n    - destination:\n        host: reviews\n";

#[test]
fn valid_resources_have_no_errors() {
    let cases = [
        vs(ROUTE),
        vs(
            "  hosts: [reviews]\n  http:\n  - match:\n    - uri: {regex: '^/api/v[0-9]+'}\n      headers:\n        x-user: {exact: a}\n    route:\n    - destination: {host: reviews, subset: v1}\n      weight: 0\n    - destination: {host: reviews, subset: v2}\n      weight: 100\n    timeout: 1.5s\n    retries: {attempts: 3, perTryTimeout: 2s, retryOn: '5xx,connect-failure,503'}\n    corsPolicy: {allowOrigins: [{exact: 'https://a.example'}], allowMethods: [GET], maxAge: 24h}\n    mirror: {host: shadow}\n    mirrorPercentage: {value: 12.5}\n",
        ),
        vs(
            "  hosts: [a.example.com]\n  tls:\n  - match:\n    - sniHosts: [a.example.com]\n      port: 443\n    route:\n    - destination: {host: a.example.com}\n",
        ),
        vs("  http:\n  - route:\n    - destination: {host: reviews}\n"),
        vs(
            "  hosts: [r]\n  http:\n  - redirect: {uri: /new, redirectCode: 308}\n  - directResponse: {status: 503, body: {string: down}}\n  - delegate: {name: other, namespace: ns2}\n",
        ),
        dr(
            "  host: reviews\n  trafficPolicy:\n    loadBalancer:\n      consistentHash:\n        httpCookie: {name: user, ttl: 0s}\n        maglev: {tableSize: 65537}\n    connectionPool:\n      tcp: {maxConnections: 100, connectTimeout: 30ms, tcpKeepalive: {time: 7200s, interval: 75s}}\n      http: {http2MaxRequests: 1000, h2UpgradePolicy: UPGRADE}\n    outlierDetection: {consecutive5xxErrors: 7, interval: 5m, baseEjectionTime: 15m}\n    portLevelSettings:\n    - port: {number: 80}\n      loadBalancer: {simple: LEAST_REQUEST}\n  subsets:\n  - name: v1\n    labels: {version: v1}\n",
        ),
        pa("  mtls: {mode: STRICT}\n"),
        pa(
            "  selector:\n    matchLabels: {app: db}\n  portLevelMtls:\n    5432: {mode: DISABLE}\n",
        ),
        pa(""),
    ];
    for text in cases {
        let r = run(&text);
        assert!(r.errors.is_empty(), "{text}\n{:#?}", r.errors);
        assert_eq!(r.resources.len(), 1);
    }
}

#[test]
fn invalid_resources_report_line_field_and_message() {
    let cases: Vec<(String, Expected)> = vec![
        (
            vs("  hosts: [reviews]\n  http:\n  - route:\n    - destination:\n        host: reviews\n        subet: v1\n"),
            vec![(12, "spec.http[0].route[0].destination.subet", "unknown field `subet`, did you mean `subset`?")],
        ),
        (
            vs("  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews}\n    timeout: 5x\n"),
            vec![(11, "spec.http[0].timeout", "invalid duration `5x`")],
        ),
        (
            vs("  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews}\n    mirror: {host: m}\n    mirrorPercentage: {value: 101}\n"),
            vec![(12, "spec.http[0].mirrorPercentage.value", "between 0 and 100")],
        ),
        (
            vs("  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews, subset: v1}\n      weight: 0\n    - destination: {host: reviews, subset: v2}\n      weight: 0\n"),
            vec![(9, "spec.http[0].route", "sum to 0")],
        ),
        (
            vs("  hosts: [reviews]\n  http:\n  - match:\n    - uri: {regex: '(unclosed'}\n    route:\n    - destination: {host: reviews}\n"),
            vec![(10, "spec.http[0].match[0].uri.regex", "invalid regular expression")],
        ),
        (
            vs("  hosts: [reviews]\n  http:\n  - match:\n    - headers:\n        X-User: {exact: a}\n    route:\n    - destination: {host: reviews}\n"),
            vec![(11, "spec.http[0].match[0].headers[\"X-User\"]", "must be lowercase")],
        ),
        (
            vs("  hosts: [reviews]\n  http:\n  - fault: {}\n    route:\n    - destination: {host: reviews}\n"),
            vec![(9, "spec.http[0].fault", "needs a `delay` or an `abort`")],
        ),
        (
            vs("  hosts: [reviews]\n  http:\n  - fault:\n      abort: {httpStatus: 700, grpcStatus: UNAVAILABLE}\n    route:\n    - destination: {host: reviews}\n"),
            vec![
                (10, "spec.http[0].fault.abort", "exactly one of"),
                (10, "spec.http[0].fault.abort.httpStatus", "between 200 and 599"),
            ],
        ),
        (
            vs("  hosts: [reviews]\n  http:\n  - redirect: {uri: /x, redirectCode: 200}\n"),
            vec![(9, "spec.http[0].redirect.redirectCode", "3xx")],
        ),
        (
            vs("  hosts: [reviews]\n  http:\n  - name: none\n"),
            vec![(9, "spec.http[0]", "needs one of")],
        ),
        (
            vs("  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews}\n    redirect: {uri: /x}\n"),
            vec![(9, "spec.http[0]", "only one of")],
        ),
        (
            vs("  hosts: ['foo.*.com']\n  gateways: [Bad_Gateway]\n  exportTo: [Bad]\n  tcp:\n  - route:\n    - destination: {host: a, port: {number: 70000}}\n      weight: -1\n"),
            vec![
                (7, "spec.hosts[0]", "is invalid"),
                (8, "spec.gateways[0]", "not a valid gateway name"),
                (9, "spec.exportTo[0]", "exportTo entry"),
                (12, "spec.tcp[0].route[0].destination.port.number", "between 1 and 65535"),
                (13, "spec.tcp[0].route[0].weight", "must not be negative"),
            ],
        ),
        (
            vs("  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews}\n    retries: {attempts: -1, perTryTimeout: 0s, retryOn: 'bogus'}\n"),
            vec![
                (11, "spec.http[0].retries.attempts", "must not be negative"),
                (11, "spec.http[0].retries.perTryTimeout", "at least 1ms"),
                (11, "spec.http[0].retries.retryOn", "unknown retry condition `bogus`"),
            ],
        ),
        (
            dr("  host: reviews\n  subsets:\n  - name: v1\n  - name: v1\n  - labels: {version: v3}\n"),
            vec![
                (9, "spec.subsets[1].name", "duplicate subset name `v1`"),
                (10, "spec.subsets[2].name", "subset name is required"),
            ],
        ),
        (
            dr("  trafficPolicy:\n    loadBalancer: {simple: ROUND_ROBN}\n    tls: {mode: ISTIO_MUTUAL, clientCertificate: /c.pem}\n    outlierDetection: {maxEjectionPercent: 150}\n"),
            vec![
                (5, "spec.host", "host is required"),
                (7, "spec.trafficPolicy.loadBalancer.simple", "did you mean `ROUND_ROBIN`?"),
                (8, "spec.trafficPolicy.tls", "ISTIO_MUTUAL"),
                (9, "spec.trafficPolicy.outlierDetection.maxEjectionPercent", "between 0 and 100"),
            ],
        ),
        (
            dr("  host: r\n  trafficPolicy:\n    loadBalancer:\n      consistentHash: {maglev: {tableSize: 1000}}\n"),
            vec![
                (9, "spec.trafficPolicy.loadBalancer.consistentHash", "needs one of"),
                (9, "spec.trafficPolicy.loadBalancer.consistentHash.maglev.tableSize", "prime"),
            ],
        ),
        (
            pa("  portLevelMtls:\n    8080: {mode: STRICT}\n"),
            vec![(6, "spec.portLevelMtls", "requires a workload selector")],
        ),
        (
            pa("  selector: {matchLabels: {app: a}}\n  mtls: {mode: strict}\n  portLevelMtls:\n    0: {mode: STRICT}\n"),
            vec![
                (7, "spec.mtls.mode", "did you mean `STRICT`?"),
                (9, "spec.portLevelMtls[\"0\"]", "between 1 and 65535"),
            ],
        ),
        (
            "kind: VirtualService\nmetadata: {}\nspec: {}\n".to_string(),
            vec![(1, "apiVersion", "`apiVersion` is required"), (2, "metadata.name", "required")],
        ),
        (
            "apiVersion: networking.istio.io/v2\nkind: VirtualService\nmetadata: {name: x}\nspc: {}\n".to_string(),
            vec![
                (1, "apiVersion", "unsupported version"),
                (1, "spec", "at least one of `http`, `tls` or `tcp`"),
                (4, "spc", "did you mean `spec`?"),
            ],
        ),
    ];
    for (text, want) in cases {
        let got = errors(&text);
        let ok = got.len() == want.len()
            && got
                .iter()
                .zip(&want)
                .all(|((l, f, m), (wl, wf, wm))| l == wl && f == wf && m.contains(wm));
        assert!(ok, "{text}\n got: {got:#?}\nwant: {want:#?}");
    }
}

#[test]
fn kubernetes_and_unsupported_kinds() {
    let text = "\
apiVersion: v1
kind: Service
metadata: {name: s}
spec:
  ports:
  - port: http
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: d}
spec:
  selector: {matchLabels: {app: d}}
  template:
    metadata: {labels: {app: d}}
    spec:
      containers:
      - name: app
        image: x
        sidecarMode: fancy
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: g}
spec: {}
---
apiVersion: example.com/v1
kind: Widget
metadata: {name: w}
";
    let r = run(text);
    let errors: Vec<String> = r.errors.iter().map(ToString::to_string).collect();
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(errors[0].starts_with("t.yaml:6: Service/default/s: spec.ports[0].port: invalid type"));
    let warnings: Vec<String> = r.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(warnings.len(), 3, "{warnings:#?}");
    assert!(warnings[0].contains(
        "Deployment/default/d: spec.template.spec.containers[0].sidecarMode: unknown field"
    ));
    assert!(warnings[1].contains("Gateway/default/g: Gateway is not checked by Ferry yet"));
    assert!(warnings[2].contains("Widget/default/w"));
}

#[test]
fn list_items_are_validated_with_their_lines() {
    let text = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: networking.istio.io/v1\n  kind: DestinationRule\n  metadata: {name: a}\n  spec:\n    host: a\n    subsets:\n    - name: Bad\n";
    let got = errors(text);
    assert_eq!(
        got,
        vec![(
            10,
            "spec.subsets[0].name".to_string(),
            "subset name `Bad` is not a valid DNS label".to_string()
        )]
    );
}

#[test]
fn diagnostic_display() {
    let d = Diagnostic {
        source: "vs.yaml".into(),
        line: 14,
        resource: "VirtualService/default/reviews".into(),
        field: "spec.http[0].route[0].destination.subet".into(),
        message: "unknown field `subet`, did you mean `subset`?".into(),
        severity: Severity::Error,
    };
    assert_eq!(
        d.to_string(),
        "vs.yaml:14: VirtualService/default/reviews: spec.http[0].route[0].destination.subet: unknown field `subet`, did you mean `subset`?"
    );
}
