//! `ferry version`: the client's version and, when it can be reached, the control plane's
//! (its monitoring endpoint's `/version`, directly with `--control-plane HOST:PORT`, or
//! through the API server's service proxy of the current kubeconfig context).

use std::process::ExitCode;

use ferry_control::install::{self, apply};

use super::local_http;

/// Arguments of `ferry version`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Print only the client's version.
    #[arg(long)]
    client: bool,
    /// The control plane's monitoring address (e.g. `127.0.0.1:15014` after
    /// `kubectl port-forward`); without it the API server's service proxy is used.
    #[arg(long, value_name = "HOST:PORT")]
    control_plane: Option<String>,
    /// Namespace of the control plane (for the service proxy).
    #[arg(short, long, default_value = install::DEFAULT_NAMESPACE)]
    namespace: String,
}

/// The version a `/version` body names: `{"version": "x"}` or plain text.
fn parse_version(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["version"].as_str().map(str::to_string))
        .unwrap_or_else(|| body.trim().to_string())
}

fn control_plane_version(args: &Args) -> Result<String, String> {
    if let Some(target) = &args.control_plane {
        let addr = local_http::resolve(target).map_err(|e| format!("{e:#}"))?;
        return match local_http::request(addr, "GET", "/version") {
            Ok((200, body)) => Ok(parse_version(&body)),
            Ok((404, _)) => Err(format!("{target} answers but serves no /version")),
            Ok((code, _)) => Err(format!("{target} answered {code}")),
            Err(e) => Err(format!("{e:#}")),
        };
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let lookup = async {
            let client = apply::default_client()
                .await
                .map_err(|e| format!("no cluster: {e}"))?;
            apply::control_plane_version(&client, &args.namespace)
                .await
                .map(|body| parse_version(&body))
                .map_err(|e| e.to_string())
        };
        tokio::time::timeout(std::time::Duration::from_secs(5), lookup)
            .await
            .unwrap_or_else(|_| Err("timed out".into()))
    })
}

/// Runs `ferry version`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    println!("client: {}", install::values::VERSION);
    if args.client {
        return Ok(ExitCode::SUCCESS);
    }
    match control_plane_version(&args) {
        Ok(version) => println!("control plane: {version}"),
        Err(why) => println!("control plane: unavailable ({why})"),
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_from_json_or_text() {
        assert_eq!(parse_version(r#"{"version":"0.1.0"}"#), "0.1.0");
        assert_eq!(parse_version("0.2.0\n"), "0.2.0");
    }
}
