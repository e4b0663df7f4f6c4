//! The image table: what to run for a container that gives only an image (no `command`).
//!
//! | image                          | program                                                     |
//! |--------------------------------|-------------------------------------------------------------|
//! | `redis*`                       | `redis-server --bind 0.0.0.0 --port <containerPort or 6379> --save '' --appendonly no --protected-mode no` |
//! | `busybox*`, `alpine*`, `debian*`, `ubuntu*` | `sleep infinity`                               |
//!
//! A container with `args` but no `command` runs the table's program name with those args.

/// The image's short name: `docker.io/library/redis:7-alpine` -> `redis`.
pub fn short_name(image: &str) -> &str {
    let last = image.rsplit('/').next().unwrap_or(image);
    let last = last.split('@').next().unwrap_or(last);
    last.split(':').next().unwrap_or(last)
}

/// The program for an image when the container gives neither `command` nor `args`.
pub fn program(image: &str, ports: &[u16]) -> Option<Vec<String>> {
    let name = short_name(image);
    if name.starts_with("redis") {
        let port = ports.first().copied().unwrap_or(6379).to_string();
        let argv = [
            "redis-server",
            "--bind",
            "0.0.0.0",
            "--port",
            &port,
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "no",
        ];
        return Some(argv.iter().map(|s| s.to_string()).collect());
    }
    if ["busybox", "alpine", "debian", "ubuntu"]
        .iter()
        .any(|p| name.starts_with(p))
    {
        return Some(vec!["sleep".into(), "infinity".into()]);
    }
    None
}

/// The entrypoint used when a container gives `args` without `command`.
pub fn entrypoint(image: &str) -> Option<&'static str> {
    let name = short_name(image);
    if name.starts_with("redis") {
        Some("redis-server")
    } else if ["busybox", "alpine", "debian", "ubuntu"]
        .iter()
        .any(|p| name.starts_with(p))
    {
        Some("/bin/sh")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        assert_eq!(short_name("docker.io/library/redis:7-alpine"), "redis");
        let redis = program("redis:alpine", &[6380]).unwrap_or_default();
        assert_eq!(
            redis[..5],
            ["redis-server", "--bind", "0.0.0.0", "--port", "6380"]
        );
        assert_eq!(
            program("busybox", &[]),
            Some(vec!["sleep".to_string(), "infinity".to_string()])
        );
        assert_eq!(program("nginx", &[]), None);
    }
}
