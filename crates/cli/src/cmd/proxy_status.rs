//! `ferry proxy-status` and `ferry proxy-config`: what the control plane sent each proxy,
//! whether the proxies accepted it, the resources the control plane rejected, one proxy's
//! compiled configuration (or what the proxy itself holds), and with `proxy-config secret
//! POD` the workload certificate the mesh's CA issued to a pod's proxy (identity, validity,
//! next rotation, chain).
//!
//! Without `--control-plane`, the monitoring address of the mesh `ferry up` runs (its state
//! file) is used when there is one, else `127.0.0.1:15014`.

use super::local_http::{request, resolve};
use anyhow::Context;
use serde_json::Value;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

/// Arguments of `ferry proxy-status`.
#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    /// The control plane's monitoring address (default: the mesh `ferry up` runs, else
    /// `127.0.0.1:15014`).
    #[arg(long)]
    control_plane: Option<String>,
    /// Print the raw JSON.
    #[arg(short = 'o', long = "output", default_value = "table", value_parser = ["table", "json"])]
    output: String,
}

/// Arguments of `ferry proxy-config`.
#[derive(clap::Args, Debug)]
pub struct ConfigArgs {
    /// The pod whose proxy to show (`name`, or `namespace/name`); or `secret`, followed by
    /// the pod, for the workload certificate its proxy was issued.
    pod: String,
    /// With `secret`: the pod.
    #[arg(value_name = "POD")]
    secret_pod: Option<String>,
    /// Namespace of the pod.
    #[arg(short = 'n', long, default_value = "default")]
    namespace: String,
    /// The control plane's monitoring address (default: the mesh `ferry up` runs, else
    /// `127.0.0.1:15014`).
    #[arg(long)]
    control_plane: Option<String>,
    /// Show what the pod's proxy holds, from its admin address (`/config_dump`), instead of
    /// what the control plane compiles for it (refused when that proxy is another pod's).
    #[arg(long, value_name = "ADMIN_ADDR")]
    from_proxy: Option<String>,
    /// Output format.
    #[arg(short = 'o', long = "output", default_value = "yaml", value_parser = ["json", "yaml"])]
    output: String,
}

/// The monitoring address: `explicit`, else that of the mesh `ferry up` runs, else
/// `127.0.0.1:15014`.
fn monitoring(explicit: Option<&str>) -> String {
    if let Some(addr) = explicit {
        return addr.to_string();
    }
    let dir = std::env::var_os("FERRY_STATE_DIR").map_or_else(
        || PathBuf::from(ferry_local::state::DEFAULT_DIR),
        PathBuf::from,
    );
    ferry_local::state::State::load(&dir)
        .ok()
        .flatten()
        .and_then(|s| s.monitoring)
        .unwrap_or_else(|| "127.0.0.1:15014".to_string())
}

fn get_json(target: &str, path: &str) -> anyhow::Result<Value> {
    let addr = resolve(target)?;
    let (code, body) = request(addr, "GET", path)?;
    anyhow::ensure!(code == 200, "{addr}{path} answered {code}: {}", body.trim());
    serde_json::from_str(&body).with_context(|| format!("{addr}{path} did not answer JSON"))
}

/// Runs `ferry proxy-status`.
pub fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let control_plane = monitoring(args.control_plane.as_deref());
    let mut answer = get_json(&control_plane, "/debug/proxy-status")?;
    let rejections = get_json(&control_plane, "/debug/rejections")?
        .get("rejections")
        .cloned()
        .unwrap_or_default();
    if args.output == "json" {
        if let Some(obj) = answer.as_object_mut() {
            obj.insert("rejections".into(), rejections);
        }
        println!("{}", serde_json::to_string_pretty(&answer)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<40} {:<10} {:<22} {:<22} STATUS",
        "PROXY", "PUSHES", "SENT", "ACKED"
    );
    for p in answer["proxies"].as_array().into_iter().flatten() {
        let s = |k: &str| p[k].as_str().unwrap_or("-").to_string();
        let name = format!("{}.{}", s("pod"), s("namespace"));
        let state = match p["lastNack"].as_object() {
            Some(n) => format!(
                "NACK: {}",
                n.get("reason").and_then(Value::as_str).unwrap_or("")
            ),
            None if p["synced"].as_bool() == Some(true) => "SYNCED".to_string(),
            None => "STALE".to_string(),
        };
        println!(
            "{:<40} {:<10} {:<22} {:<22} {}",
            name,
            p["pushes"],
            s("lastSent"),
            s("lastAcked"),
            state
        );
    }
    let rejected: Vec<&str> = rejections
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if !rejected.is_empty() {
        println!(
            "\nREJECTED RESOURCES ({}; the last valid version of each stays in force):",
            rejected.len()
        );
        for r in rejected {
            println!("  {r}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `ferry proxy-config`.
pub fn config(args: ConfigArgs) -> anyhow::Result<ExitCode> {
    let control_plane = monitoring(args.control_plane.as_deref());
    let (target, secret) = match (&args.secret_pod, args.pod.as_str()) {
        (Some(pod), "secret") => (pod.clone(), true),
        (Some(extra), _) => anyhow::bail!(
            "unexpected argument {extra:?}: `ferry proxy-config POD` or `ferry proxy-config secret POD`"
        ),
        (None, _) => (args.pod.clone(), false),
    };
    let (namespace, pod) = match target.split_once('/') {
        Some((ns, pod)) => (ns.to_string(), pod.to_string()),
        None => (args.namespace.clone(), target.clone()),
    };
    let pod = full_pod_name(&namespace, &pod);
    let answer = match (&args.from_proxy, secret) {
        (Some(_), true) => anyhow::bail!(
            "--from-proxy shows the configuration a proxy holds, not its certificate: use `ferry proxy-config secret {pod}` (what the CA issued), or the proxy's admin `/certs`"
        ),
        (None, true) => secret_view(get_json(
            &control_plane,
            &format!("/debug/certs?proxy={namespace}/{pod}"),
        )?),
        (Some(admin), false) => {
            let dump = get_json(admin, "/config_dump")?;
            check_held_by(&dump, admin, &namespace, &pod)?;
            dump
        }
        (None, false) => get_json(
            &control_plane,
            &format!("/debug/config_dump?proxy={namespace}/{pod}"),
        )?,
    };
    let text = if args.output == "json" {
        serde_json::to_string_pretty(&answer)? + "\n"
    } else {
        serde_yaml_ng::to_string(&answer)?
    };
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}

/// Fails unless the admin `/config_dump` read from `admin` is that of the proxy of
/// `namespace/pod`: an admin address serves only its own proxy's configuration, and a wrong
/// address must not pass for the pod asked for. A dump whose identity names no pod (a
/// proxy on a static file without one) is taken as it is.
fn check_held_by(dump: &Value, admin: &str, namespace: &str, pod: &str) -> anyhow::Result<()> {
    let identity = &dump["config"]["identity"];
    let held_pod = identity["pod"].as_str().unwrap_or_default();
    let held_ns = identity["namespace"].as_str().unwrap_or_default();
    let held_ns = if held_ns.is_empty() {
        "default"
    } else {
        held_ns
    };
    anyhow::ensure!(
        held_pod.is_empty() || (held_pod == pod && held_ns == namespace),
        "the proxy at {admin} is that of {held_ns}/{held_pod}, not of {namespace}/{pod} (an admin address serves only its own proxy's configuration)"
    );
    Ok(())
}

/// A pod's full name: `name` itself, or the one pod of the `ferry up` mesh whose name starts
/// with `name-` (a Deployment's name, as `ferry exec` takes it).
fn full_pod_name(namespace: &str, name: &str) -> String {
    let dir = std::env::var_os("FERRY_STATE_DIR").map_or_else(
        || PathBuf::from(ferry_local::state::DEFAULT_DIR),
        PathBuf::from,
    );
    ferry_local::state::State::load(&dir)
        .ok()
        .flatten()
        .and_then(|s| {
            s.find_pod(&format!("{namespace}/{name}"))
                .map(|p| p.name.clone())
        })
        .unwrap_or_else(|| name.to_string())
}

/// A duration in words: `3h 12m`, `47s`.
fn words(d: Duration) -> String {
    let s = d.as_secs();
    match (s / 3600, (s % 3600) / 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m {s}s"),
        (h, m, _) => format!("{h}h {m}m"),
    }
}

/// The control plane's record of a certificate, with its next rotation: what the proxy's
/// metrics say (`ferry_identity_cert_next_renewal_timestamp_seconds` on its 15090) or,
/// when the proxy cannot be reached, the plan (half the lifetime, ±5 %).
fn secret_view(record: Value) -> Value {
    let secs = |k: &str| record[k].as_u64().unwrap_or(0);
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (not_before, not_after) = (secs("notBefore"), secs("notAfter"));
    let from_proxy = record["podIP"]
        .as_str()
        .and_then(|ip| {
            let addr = format!("{ip}:15090");
            let (code, body) = request(resolve(&addr).ok()?, "GET", "/stats/prometheus").ok()?;
            (code == 200).then_some(body)
        })
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("ferry_identity_cert_next_renewal_timestamp_seconds "))
                .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        })
        .filter(|t| *t > 0.0)
        .map(|t| t as u64);
    let (next, source) = match from_proxy {
        Some(t) => (t, "the proxy's metrics"),
        None => (
            not_before + not_after.saturating_sub(not_before) / 2,
            "planned: half the lifetime, ±5 %",
        ),
    };
    let chain: Vec<Value> = record["chain"].as_array().cloned().unwrap_or_default();
    serde_json::json!({
        "identity": record["identity"],
        "pod": format!(
            "{}/{}",
            record["namespace"].as_str().unwrap_or_default(),
            record["pod"].as_str().unwrap_or("-")
        ),
        "serial": record["serial"],
        "validFrom": record["validFrom"],
        "validUntil": record["validUntil"],
        "expiresIn": words(Duration::from_secs(not_after.saturating_sub(now))),
        "nextRotation": {
            "at": next,
            "in": words(Duration::from_secs(next.saturating_sub(now))),
            "source": source,
        },
        "chain": chain,
        // What the proxy reported trusting (both roots during a root rollover) and the root
        // its certificate chains to (sha256 fingerprints).
        "trustedRoots": record["trust"]["roots"],
        "chainRoot": record["trust"]["certRoot"],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_by_matches_the_pod_asked_for() {
        let dump = |ns: &str, pod: &str| serde_json::json!({"version": "1-abc", "config": {"identity": {"pod": pod, "namespace": ns}}});
        // (dump, asked namespace, asked pod, accepted)
        let rows = [
            (dump("default", "redis-0"), "default", "redis-0", true),
            (dump("default", "redis-0"), "default", "redis-1", false),
            (dump("other", "redis-0"), "default", "redis-0", false),
            (dump("", "redis-0"), "default", "redis-0", true),
            (dump("", "redis-0"), "other", "redis-0", false),
            (dump("default", ""), "other", "anything", true),
            (
                serde_json::json!({"config": {}}),
                "default",
                "redis-0",
                true,
            ),
        ];
        for (dump, ns, pod, accepted) in rows {
            let got = check_held_by(&dump, "127.0.0.1:15000", ns, pod);
            assert_eq!(got.is_ok(), accepted, "{dump} asked {ns}/{pod}: {got:?}");
        }
        let err = check_held_by(
            &dump("default", "redis-0"),
            "127.0.0.1:15000",
            "default",
            "redis-1",
        )
        .expect_err("wrong pod");
        assert_eq!(
            err.to_string(),
            "the proxy at 127.0.0.1:15000 is that of default/redis-0, not of default/redis-1 (an admin address serves only its own proxy's configuration)"
        );
    }
}
