//! Semantic rules of Ferry's RedisPolicy (`ferry.dev/v1alpha1`).

use std::collections::HashSet;
use std::time::Duration as Std;

use super::checks::Checker;
use super::path::FieldPath;
use crate::ferry::redis_policy::{PASSED_THROUGH, RedisPolicySpec};
use crate::names;

const MS: Std = Std::from_millis(1);

/// Whether `name` can be a Redis command name (letters, digits, `_`, `-`, `.`, `|`).
fn command_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'|'))
}

fn percentage(c: &mut Checker<'_>, path: &FieldPath, p: Option<f64>) {
    if let Some(v) = p
        && !(0.0..=100.0).contains(&v)
    {
        c.error(path, format!("percentage {v} must be between 0 and 100"));
    }
}

/// Checks a command list; `seen` collects commands earlier entries claimed.
fn commands(
    c: &mut Checker<'_>,
    path: &FieldPath,
    list: &[String],
    seen: &mut HashSet<String>,
    what: &str,
) {
    if list.is_empty() && !seen.insert("*".to_string()) {
        c.warn(
            path,
            format!("an earlier {what} already applies to every command; this one never applies"),
        );
    }
    for (i, cmd) in list.iter().enumerate() {
        let at = path.index(i);
        if !command_name(cmd) {
            c.error(&at, format!("`{cmd}` is not a Redis command name"));
            continue;
        }
        let upper = cmd.to_ascii_uppercase();
        if PASSED_THROUGH.contains(&upper.as_str()) {
            c.warn(
                &at,
                format!(
                    "{upper} is passed through untouched (pub/sub, blocking, transactions, \
                     MONITOR and CLIENT are never faulted or timed out)"
                ),
            );
        }
        if seen.contains("*") || !seen.insert(upper.clone()) {
            c.warn(
                &at,
                format!("an earlier {what} already applies to {upper}; this one does not"),
            );
        }
    }
}

/// Checks a RedisPolicy spec found at `path`.
pub fn check(c: &mut Checker<'_>, spec: &RedisPolicySpec, path: &FieldPath) {
    match spec.host.as_deref() {
        None | Some("") => c.error(&path.key("host"), "host is required"),
        Some(h) if h.contains('*') => c.error(
            &path.key("host"),
            format!("host `{h}` must name one service or pod, without wildcards"),
        ),
        Some(h) => c.wildcard_host(&path.key("host"), h, false),
    }
    if let Some(p) = spec.port {
        c.port(&path.key("port"), p);
    }
    if let Some(s) = &spec.subset
        && !names::is_dns1123_label(s)
    {
        c.error(
            &path.key("subset"),
            format!("subset name `{s}` is not a valid DNS label"),
        );
    }
    if spec.faults.is_empty() && spec.timeouts.is_empty() && spec.mirror.is_none() {
        c.warn(
            path,
            "the policy sets no faults, timeouts or mirror: it does nothing",
        );
    }
    let mut seen = HashSet::new();
    for (i, f) in spec.faults.iter().enumerate() {
        let at = path.key("faults").index(i);
        match (&f.abort, &f.delay) {
            (None, None) => c.error(&at, "a fault needs `abort` or `delay`"),
            (Some(_), Some(_)) => c.error(
                &at,
                "a fault has either `abort` or `delay`, not both; write two faults",
            ),
            _ => {}
        }
        if let Some(a) = &f.abort {
            let aa = at.key("abort");
            percentage(c, &aa.key("percentage"), a.percentage);
            if let Some(e) = &a.error {
                if e.trim().is_empty() {
                    c.error(&aa.key("error"), "the error text must not be empty");
                } else if e.contains(['\r', '\n']) {
                    c.error(
                        &aa.key("error"),
                        "the error text must be one line (no CR or LF)",
                    );
                }
            }
        }
        if let Some(d) = &f.delay {
            let da = at.key("delay");
            percentage(c, &da.key("percentage"), d.percentage);
            match &d.fixed_delay {
                None => c.error(&da.key("fixedDelay"), "fixedDelay is required"),
                Some(v) => c.duration(&da.key("fixedDelay"), v, MS),
            }
        }
        commands(c, &at.key("commands"), &f.commands, &mut seen, "fault");
    }
    let mut seen = HashSet::new();
    for (i, t) in spec.timeouts.iter().enumerate() {
        let at = path.key("timeouts").index(i);
        match &t.timeout {
            None => c.error(&at.key("timeout"), "timeout is required"),
            Some(v) => c.duration(&at.key("timeout"), v, MS),
        }
        commands(c, &at.key("commands"), &t.commands, &mut seen, "timeout");
    }
    if let Some(m) = &spec.mirror {
        let at = path.key("mirror");
        match m.subset.as_deref() {
            None | Some("") => c.error(&at.key("subset"), "the mirror's subset is required"),
            Some(s) if !names::is_dns1123_label(s) => c.error(
                &at.key("subset"),
                format!("subset name `{s}` is not a valid DNS label"),
            ),
            Some(s) if m.host.is_none() && spec.subset.as_deref() == Some(s) => c.error(
                &at.key("subset"),
                "the mirror subset is the subset the policy applies to",
            ),
            _ => {}
        }
        if let Some(h) = &m.host {
            c.wildcard_host(&at.key("host"), h, false);
        }
        percentage(c, &at.key("percentage"), m.percentage);
    }
}

#[cfg(test)]
mod tests {
    use crate::load::parse_documents;
    use crate::validate::{Report, validate_documents};

    fn run(spec: &str) -> Report {
        let text = format!(
            "apiVersion: ferry.dev/v1alpha1\nkind: RedisPolicy\nmetadata:\n  name: p\n  namespace: ns\nspec:\n{spec}"
        );
        let docs = parse_documents("p.yaml", &text).unwrap_or_else(|e| panic!("load: {e}"));
        validate_documents(&docs)
    }

    fn found(report: &[crate::validate::Diagnostic]) -> Vec<(usize, String, String)> {
        report
            .iter()
            .map(|d| (d.line, d.field.clone(), d.message.clone()))
            .collect()
    }

    #[test]
    fn a_valid_policy_is_typed() {
        let r = run(
            "  host: redis\n  port: 6379\n  subset: v1\n  faults:\n  - commands: [GET, mget]\n    abort: {error: READONLY injected, percentage: 20}\n  - commands: [SET]\n    delay: {fixedDelay: 50ms, percentage: 10.5}\n  timeouts:\n  - timeout: 100ms\n  mirror: {subset: v2, percentage: 50}\n",
        );
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);
        assert_eq!(r.redis_policies.len(), 1);
        let p = &r.redis_policies[0];
        assert_eq!(p.spec.faults[0].commands, ["GET", "mget"]);
        assert_eq!(
            p.spec.timeouts[0]
                .timeout
                .as_ref()
                .map(|d| d.get().as_millis()),
            Some(100)
        );
        assert!(r.resources.is_empty(), "kept apart from the Istio kinds");
    }

    #[test]
    fn errors_name_the_field_and_line() {
        let r = run(
            "  port: 70000\n  subset: V_1\n  faults:\n  - commands: [GET]\n  - abort: {percentage: 120}\n    delay: {fixedDelay: 1s}\n  - commands: ['GET X']\n    delay: {percentage: 5}\n  - abort: {error: \"two\\nlines\"}\n  timeouts:\n  - commands: [GET]\n  mirror: {percentage: 5}\n  nonsense: 1\n",
        );
        let errors = found(&r.errors);
        let fields: Vec<&str> = errors.iter().map(|(_, f, _)| f.as_str()).collect();
        for want in [
            "spec.host",
            "spec.port",
            "spec.subset",
            "spec.faults[0]",
            "spec.faults[1]",
            "spec.faults[1].abort.percentage",
            "spec.faults[2].delay.fixedDelay",
            "spec.faults[2].commands[0]",
            "spec.faults[3].abort.error",
            "spec.timeouts[0].timeout",
            "spec.mirror.subset",
            "spec.nonsense",
        ] {
            assert!(fields.contains(&want), "{want} missing from {errors:?}");
        }
        assert!(errors.iter().all(|(line, _, _)| *line > 0), "{errors:?}");
        assert!(r.redis_policies.is_empty());
    }

    #[test]
    fn warnings_for_passed_through_and_shadowed_commands() {
        let r = run(
            "  host: redis.ns.svc.cluster.local\n  faults:\n  - commands: [subscribe, BLPOP]\n    abort: {}\n  - commands: [GET]\n    abort: {}\n  - commands: [get]\n    delay: {fixedDelay: 1ms}\n",
        );
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        let w = found(&r.warnings);
        assert_eq!(w.len(), 3, "{w:?}");
        assert!(w[0].2.contains("SUBSCRIBE is passed through"), "{w:?}");
        assert!(w[2].2.contains("already applies to GET"), "{w:?}");
        let r = run("  host: redis\n");
        assert!(found(&r.warnings)[0].2.contains("does nothing"));
        let r = run("  host: '*.example.com'\n  timeouts: [{timeout: 1s}]\n");
        assert_eq!(found(&r.errors)[0].1, "spec.host");
    }
}
