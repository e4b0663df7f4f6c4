//! Application probe rewriting. Under strict mTLS the kubelet cannot reach the
//! application's own ports, so httpGet, tcpSocket and grpc probes (and httpGet/tcpSocket
//! lifecycle hooks) are pointed at the proxy's status port, at
//! `/app-health/<container>/livez|readyz|startupz` and `/app-lifecycle/<container>/...`.
//! The originals are kept in a JSON map (`ISTIO_KUBE_APP_PROBERS`) for the proxy to run.

use serde_json::{Map, Value, json};

/// Environment variable of the proxy that holds the original probes.
pub const PROBERS_ENV: &str = "ISTIO_KUBE_APP_PROBERS";

/// Probe fields of a container, with their path suffix.
const PROBES: [(&str, &str); 3] = [
    ("livenessProbe", "livez"),
    ("readinessProbe", "readyz"),
    ("startupProbe", "startupz"),
];

/// Lifecycle hooks of a container, with their path suffix.
const HOOKS: [(&str, &str); 2] = [("postStart", "poststartz"), ("preStop", "prestopz")];

/// Probe handlers that the proxy can run on the kubelet's behalf.
const HANDLERS: [&str; 3] = ["httpGet", "tcpSocket", "grpc"];

/// A named container port resolved to its number; numbers and unknown names pass through.
fn resolve_port(container: &Value, port: &Value) -> Value {
    let Some(name) = port.as_str() else {
        return port.clone();
    };
    if let Ok(n) = name.parse::<u16>() {
        return json!(n);
    }
    container["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"].as_str() == Some(name))
        .and_then(|p| p.get("containerPort").cloned())
        .unwrap_or_else(|| port.clone())
}

/// The original handler as the proxy needs it: handler kind with the port resolved, plus the
/// probe's timeout when set.
fn original(container: &Value, probe: &Map<String, Value>, handler: &str) -> Value {
    let mut action = probe[handler].clone();
    if let Some(obj) = action.as_object_mut()
        && let Some(port) = obj.get("port").cloned()
    {
        obj.insert("port".into(), resolve_port(container, &port));
    }
    let mut out = Map::new();
    out.insert(handler.to_string(), action);
    if let Some(timeout) = probe.get("timeoutSeconds") {
        out.insert("timeoutSeconds".into(), timeout.clone());
    }
    Value::Object(out)
}

/// Points one probe or hook at `path` on the status port; returns the original handler.
fn rewrite_one(
    container: &Value,
    probe: &mut Value,
    path: &str,
    status_port: u16,
) -> Option<Value> {
    let obj = probe.as_object_mut()?;
    let handler = HANDLERS.into_iter().find(|h| obj.contains_key(*h))?;
    let saved = original(container, obj, handler);
    obj.remove(handler);
    obj.insert(
        "httpGet".into(),
        json!({ "path": path, "port": status_port }),
    );
    Some(saved)
}

/// Rewrites the probes and lifecycle hooks of the application containers; returns the map
/// from rewritten path to original handler (empty when nothing was rewritten).
pub fn rewrite(containers: &mut [Value], status_port: u16) -> Map<String, Value> {
    let mut probers = Map::new();
    for container in containers.iter_mut() {
        let snapshot = container.clone();
        let Some(name) = snapshot["name"].as_str() else {
            continue;
        };
        for (field, suffix) in PROBES {
            let path = format!("/app-health/{name}/{suffix}");
            if let Some(probe) = container.get_mut(field)
                && let Some(saved) = rewrite_one(&snapshot, probe, &path, status_port)
            {
                probers.insert(path, saved);
            }
        }
        for (field, suffix) in HOOKS {
            let path = format!("/app-lifecycle/{name}/{suffix}");
            if let Some(hook) = container
                .get_mut("lifecycle")
                .and_then(|l| l.get_mut(field))
                && let Some(saved) = rewrite_one(&snapshot, hook, &path, status_port)
            {
                probers.insert(path, saved);
            }
        }
    }
    probers
}

/// Undoes [`rewrite`] with the saved map, so that a pod can be injected again from scratch.
pub fn restore(containers: &mut [Value], probers: &Map<String, Value>) {
    for container in containers {
        let Some(name) = container["name"].as_str().map(str::to_string) else {
            continue;
        };
        let slots = PROBES
            .iter()
            .map(|(f, s)| (None, *f, format!("/app-health/{name}/{s}")))
            .chain(
                HOOKS
                    .iter()
                    .map(|(f, s)| (Some("lifecycle"), *f, format!("/app-lifecycle/{name}/{s}"))),
            );
        for (parent, field, path) in slots {
            let Some(saved) = probers.get(&path).and_then(Value::as_object) else {
                continue;
            };
            let target = match parent {
                Some(p) => container.get_mut(p).and_then(|l| l.get_mut(field)),
                None => container.get_mut(field),
            };
            let Some(obj) = target.and_then(Value::as_object_mut) else {
                continue;
            };
            if obj["httpGet"]["path"].as_str() != Some(path.as_str()) {
                continue;
            }
            obj.remove("httpGet");
            for (k, v) in saved {
                obj.insert(k.clone(), v.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app() -> Value {
        json!({
            "name": "hello",
            "ports": [{"name": "http", "containerPort": 8080}],
            "livenessProbe": {"httpGet": {"path": "/live", "port": "http"}, "periodSeconds": 5, "timeoutSeconds": 2},
            "readinessProbe": {"tcpSocket": {"port": 8080}},
            "startupProbe": {"grpc": {"port": 9000, "service": "health"}},
            "lifecycle": {"preStop": {"httpGet": {"path": "/stop", "port": 8080}}, "postStart": {"exec": {"command": ["true"]}}}
        })
    }

    #[test]
    fn rewrites_every_kind_and_keeps_the_rest() {
        let mut containers = vec![
            app(),
            json!({"name": "sidecarless", "readinessProbe": {"exec": {"command": ["cat"]}}}),
        ];
        let probers = rewrite(&mut containers, 15020);
        let c = &containers[0];
        assert_eq!(
            c["livenessProbe"],
            json!({"periodSeconds": 5, "timeoutSeconds": 2, "httpGet": {"path": "/app-health/hello/livez", "port": 15020}})
        );
        assert_eq!(
            c["readinessProbe"]["httpGet"]["path"],
            "/app-health/hello/readyz"
        );
        assert_eq!(
            c["startupProbe"]["httpGet"]["path"],
            "/app-health/hello/startupz"
        );
        assert_eq!(
            c["lifecycle"]["preStop"]["httpGet"]["path"],
            "/app-lifecycle/hello/prestopz"
        );
        assert_eq!(
            c["lifecycle"]["postStart"],
            json!({"exec": {"command": ["true"]}})
        );
        assert_eq!(
            containers[1]["readinessProbe"],
            json!({"exec": {"command": ["cat"]}})
        );
        assert_eq!(
            Value::Object(probers),
            json!({
                "/app-health/hello/livez": {"httpGet": {"path": "/live", "port": 8080}, "timeoutSeconds": 2},
                "/app-health/hello/readyz": {"tcpSocket": {"port": 8080}},
                "/app-health/hello/startupz": {"grpc": {"port": 9000, "service": "health"}},
                "/app-lifecycle/hello/prestopz": {"httpGet": {"path": "/stop", "port": 8080}}
            })
        );
    }

    #[test]
    fn restore_then_rewrite_is_stable() {
        let mut once = vec![app()];
        let probers = rewrite(&mut once, 15020);
        let mut restored = once.clone();
        restore(&mut restored, &probers);
        assert_eq!(
            restored[0]["readinessProbe"],
            json!({"tcpSocket": {"port": 8080}})
        );
        let again = rewrite(&mut restored, 15020);
        assert_eq!(restored, once);
        assert_eq!(again, probers);
    }
}
