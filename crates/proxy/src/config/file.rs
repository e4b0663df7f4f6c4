//! Reading the proxy's configuration from a YAML/JSON file, with errors that name the file,
//! the line and the field, and every problem at once.

use super::{ProxyConfig, Snapshot};
use ferry_model::validate::deserialize_all;
use std::fmt;
use std::path::Path;

/// A configuration file that cannot be used; the proxy keeps its last good one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Every problem, as `file:line: field: message`.
    pub problems: Vec<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.problems.join("\n"))
    }
}

impl std::error::Error for ConfigError {}

fn single(message: String) -> ConfigError {
    ConfigError {
        problems: vec![message],
    }
}

/// Parses configuration text; `source` names it in errors.
pub fn parse(source: &str, text: &str) -> Result<ProxyConfig, ConfigError> {
    let docs = ferry_model::parse_documents(source, text).map_err(|e| single(e.to_string()))?;
    let doc = match docs.as_slice() {
        [doc] => doc,
        [] => return Err(single(format!("{source}: the file holds no configuration"))),
        [_, second, ..] => {
            return Err(single(format!(
                "{source}:{}: expected one document, found several",
                second.line
            )));
        }
    };
    let (config, problems) = deserialize_all::<ProxyConfig>(&doc.value);
    let mut out: Vec<String> = problems
        .iter()
        .map(|p| {
            format!(
                "{source}:{}: {}: {}",
                doc.line_of(&p.path.pointer()),
                p.path,
                p.message
            )
        })
        .collect();
    let Some(config) = config else {
        if out.is_empty() {
            out.push(format!("{source}:{}: not a proxy configuration", doc.line));
        }
        return Err(ConfigError { problems: out });
    };
    out.extend(check(&config).into_iter().map(|(pointer, msg)| {
        format!(
            "{source}:{}: {}: {msg}",
            doc.line_of(&pointer),
            pointer.trim_start_matches('/').replace('/', ".")
        )
    }));
    if out.is_empty() {
        Ok(config)
    } else {
        Err(ConfigError { problems: out })
    }
}

/// Checks an already typed configuration (the checks [`parse`] runs after the types);
/// problems are named by field path.
pub fn check_typed(source: &str, config: &ProxyConfig) -> Result<(), ConfigError> {
    let problems: Vec<String> = check(config)
        .into_iter()
        .map(|(pointer, msg)| {
            format!(
                "{source}: {}: {msg}",
                pointer.trim_start_matches('/').replace('/', ".")
            )
        })
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ConfigError { problems })
    }
}

/// Semantic checks the types cannot express; returns (JSON pointer, message) pairs.
fn check(config: &ProxyConfig) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (i, svc) in config.services.iter().enumerate() {
        if svc.name.is_empty() {
            out.push((
                format!("/services/{i}/name"),
                "must not be empty".to_string(),
            ));
        }
        for (j, port) in svc.ports.iter().enumerate() {
            if port.port == 0 {
                out.push((
                    format!("/services/{i}/ports/{j}/port"),
                    "must be in 1..65535".to_string(),
                ));
            }
            if port.target_port == Some(0) {
                out.push((
                    format!("/services/{i}/ports/{j}/targetPort"),
                    "must be in 1..65535".to_string(),
                ));
            }
        }
    }
    if config.settings.connect_timeout_ms == 0 {
        out.push((
            "/settings/connectTimeoutMs".into(),
            "must be greater than 0".into(),
        ));
    }
    out
}

/// Reads and compiles a configuration file.
pub fn load(path: &Path) -> Result<Snapshot, ConfigError> {
    load_after(path, None)
}

/// [`load`] for a configuration that replaces `previous`: clusters keep their live state
/// (see [`Snapshot::compile_after`]).
pub fn load_after(path: &Path, previous: Option<&Snapshot>) -> Result<Snapshot, ConfigError> {
    let source = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| single(format!("{source}: {e}")))?;
    Ok(Snapshot::compile_after(parse(&source, &text)?, previous))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_file() {
        let text = "identity:\n  pod: client-1\n  namespace: default\nservices:\n- name: redis\n  clusterIP: None\n  ports:\n  - name: tcp-redis\n    port: 6379\n  endpoints:\n  - ip: 198.18.0.2\n    pod: redis-0\n";
        let config = parse("proxy.yaml", text).expect("valid");
        assert_eq!(config.services[0].endpoints[0].pod, "redis-0");
        assert!(config.services[0].cluster_ip.is_none());
    }

    #[test]
    fn every_problem_names_file_line_and_field() {
        let text = "identity:\n  pod: x\nservices:\n- name: redis\n  clusterIP: nope\n  ports:\n  - name: tcp\n    port: 0\n    tagetPort: 7000\n";
        let err = parse("proxy.yaml", text).expect_err("invalid");
        let all = err.to_string();
        assert!(all.contains("proxy.yaml:5: services[0].clusterIP"), "{all}");
        assert!(
            all.contains("proxy.yaml:9: services[0].ports[0].tagetPort"),
            "{all}"
        );
        assert!(all.contains("targetPort"), "did you mean: {all}");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for text in [
            "",
            "- a\n- b",
            "identity: [",
            "services: 3",
            "---\na: 1\n---\nb: 2\n",
        ] {
            assert!(parse("x.yaml", text).is_err(), "{text:?}");
        }
    }
}

#[cfg(test)]
mod example_tests {
    #[test]
    fn the_documented_example_is_valid() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../examples/proxy/client-sidecar.yaml"
        );
        let snapshot = super::load(std::path::Path::new(path)).expect("example loads");
        assert_eq!(snapshot.config.services.len(), 2);
    }
}
