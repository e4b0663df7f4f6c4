//! `ferry proxy-status` and `ferry proxy-config`: what the control plane sent each proxy,
//! whether the proxies accepted it, the resources the control plane rejected, and one proxy's compiled configuration (or what the
//! proxy itself holds).

use super::local_http::{request, resolve};
use anyhow::Context;
use serde_json::Value;
use std::process::ExitCode;

/// Arguments of `ferry proxy-status`.
#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    /// The control plane's monitoring address.
    #[arg(long, default_value = "127.0.0.1:15014")]
    control_plane: String,
    /// Print the raw JSON.
    #[arg(short = 'o', long = "output", default_value = "table", value_parser = ["table", "json"])]
    output: String,
}

/// Arguments of `ferry proxy-config`.
#[derive(clap::Args, Debug)]
pub struct ConfigArgs {
    /// The pod whose proxy to show (`name`, or `namespace/name`).
    pod: String,
    /// Namespace of the pod.
    #[arg(short = 'n', long, default_value = "default")]
    namespace: String,
    /// The control plane's monitoring address.
    #[arg(long, default_value = "127.0.0.1:15014")]
    control_plane: String,
    /// Show what the proxy holds, from its admin address (`/config_dump`), instead of what
    /// the control plane compiles for it.
    #[arg(long, value_name = "ADMIN_ADDR")]
    from_proxy: Option<String>,
    /// Output format.
    #[arg(short = 'o', long = "output", default_value = "yaml", value_parser = ["json", "yaml"])]
    output: String,
}

fn get_json(target: &str, path: &str) -> anyhow::Result<Value> {
    let addr = resolve(target)?;
    let (code, body) = request(addr, "GET", path)?;
    anyhow::ensure!(code == 200, "{addr}{path} answered {code}: {}", body.trim());
    serde_json::from_str(&body).with_context(|| format!("{addr}{path} did not answer JSON"))
}

/// Runs `ferry proxy-status`.
pub fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let mut answer = get_json(&args.control_plane, "/debug/proxy-status")?;
    let rejections = get_json(&args.control_plane, "/debug/rejections")?
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
    let (namespace, pod) = match args.pod.split_once('/') {
        Some((ns, pod)) => (ns.to_string(), pod.to_string()),
        None => (args.namespace.clone(), args.pod.clone()),
    };
    let answer = match &args.from_proxy {
        Some(admin) => get_json(admin, "/config_dump")?,
        None => get_json(
            &args.control_plane,
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
