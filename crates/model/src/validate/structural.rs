//! Typed deserialization that reports every structural problem (unknown fields, wrong types,
//! unknown enum values) with its path, by removing each offending field and trying again.

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::path::{FieldPath, Segment};

/// Most structural errors collected from one value before giving up.
const MAX_ATTEMPTS: usize = 50;

/// A structural problem at a path.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    /// Where, relative to the value given.
    pub path: FieldPath,
    /// What is wrong.
    pub message: String,
}

/// Deserializes `value` as `T`, collecting every structural problem; returns the typed value
/// once the remaining fields deserialize (after dropping the offending ones).
pub fn deserialize_all<T: DeserializeOwned>(value: &Value) -> (Option<T>, Vec<Problem>) {
    let mut current = value.clone();
    let mut problems: Vec<Problem> = Vec::new();
    for _ in 0..MAX_ATTEMPTS {
        match serde_path_to_error::deserialize::<_, T>(&current) {
            Ok(typed) => return (Some(typed), problems),
            Err(err) => {
                let raw = err.inner().to_string();
                let mut path = convert_path(err.path());
                if let Some(field) = quoted_after(&raw, "unknown field `")
                    && path.segments().last() != Some(&Segment::Key(field.clone()))
                {
                    path = path.key(field);
                }
                let message = explain(&raw);
                let removable = !raw.starts_with("missing field") && !path.segments().is_empty();
                if problems
                    .iter()
                    .any(|p| p.path == path && p.message == message)
                    || !removable
                {
                    if !problems
                        .iter()
                        .any(|p| p.path == path && p.message == message)
                    {
                        problems.push(Problem { path, message });
                    }
                    return (None, problems);
                }
                remove_at(&mut current, path.segments());
                problems.push(Problem { path, message });
            }
        }
    }
    (None, problems)
}

fn convert_path(path: &serde_path_to_error::Path) -> FieldPath {
    let mut out = FieldPath::root();
    for segment in path.iter() {
        out = match segment {
            serde_path_to_error::Segment::Seq { index } => out.index(*index),
            serde_path_to_error::Segment::Map { key } => out.key(key.clone()),
            serde_path_to_error::Segment::Enum { .. } | serde_path_to_error::Segment::Unknown => {
                out
            }
        };
    }
    out
}

/// Removes the node at `segments`; sequence items are removed too, which shifts later indices.
fn remove_at(value: &mut Value, segments: &[Segment]) {
    let Some((last, parents)) = segments.split_last() else {
        return;
    };
    let mut node = value;
    for segment in parents {
        let next = match (segment, node) {
            (Segment::Key(k), Value::Object(map)) => map.get_mut(k),
            (Segment::Index(i), Value::Array(items)) => items.get_mut(*i),
            _ => None,
        };
        match next {
            Some(n) => node = n,
            None => return,
        }
    }
    match (last, node) {
        (Segment::Key(k), Value::Object(map)) => {
            map.shift_remove(k);
        }
        (Segment::Index(i), Value::Array(items)) if *i < items.len() => {
            items.remove(*i);
        }
        _ => {}
    }
}

/// The text between `start` and the next backtick.
fn quoted_after(text: &str, start: &str) -> Option<String> {
    let rest = &text[text.find(start)? + start.len()..];
    Some(rest[..rest.find('`')?].to_string())
}

/// Every backtick-quoted name after `expected`.
fn expected_names(text: &str) -> Vec<String> {
    let Some(pos) = text.find("expected") else {
        return Vec::new();
    };
    text[pos..]
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// The closest candidate to `word`, when it is close enough to be a likely typo.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let lower = word.to_ascii_lowercase();
    candidates
        .into_iter()
        .map(|c| (c, strsim::jaro_winkler(&lower, &c.to_ascii_lowercase())))
        .filter(|(_, score)| *score >= 0.8)
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(c, _)| c)
}

/// Rewrites serde's messages into Ferry's wording, with a suggestion for misspelt names.
fn explain(raw: &str) -> String {
    let expected = expected_names(raw);
    for (marker, what) in [("unknown field `", "field"), ("unknown variant `", "value")] {
        if let Some(word) = quoted_after(raw, marker) {
            return match did_you_mean(&word, expected.iter().map(String::as_str)) {
                Some(best) => format!("unknown {what} `{word}`, did you mean `{best}`?"),
                None if expected.is_empty() => format!("unknown {what} `{word}`"),
                None => format!(
                    "unknown {what} `{word}`; expected one of {}",
                    expected
                        .iter()
                        .map(|e| format!("`{e}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
        }
    }
    let mut text = raw.to_string();
    for (rust, words) in [
        ("expected u32", "expected a non-negative integer"),
        ("expected u64", "expected a non-negative integer"),
        ("expected i32", "expected an integer"),
        ("expected i64", "expected an integer"),
        ("expected f64", "expected a number"),
        ("expected a boolean", "expected true or false"),
    ] {
        text = text.replace(rust, words);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    struct Inner {
        host: Option<String>,
        subset: Option<String>,
        port: Option<u32>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Outer {
        #[serde(default)]
        items: Vec<Inner>,
        mode: Option<Mode>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(rename_all = "SCREAMING_SNAKE_CASE")]
    enum Mode {
        RoundRobin,
        Random,
    }

    #[test]
    fn collects_every_problem_with_paths() {
        let value = json!({
            "items": [{"host": "a", "subet": "v1"}, {"port": -1, "colour": "red"}],
            "mode": "ROUND_ROBN",
        });
        let (typed, problems) = deserialize_all::<Outer>(&value);
        let got: Vec<(String, String)> = problems
            .iter()
            .map(|p| (p.path.to_string(), p.message.clone()))
            .collect();
        let want = [
            (
                "items[0].subet",
                "unknown field `subet`, did you mean `subset`?",
            ),
            (
                "items[1].port",
                "invalid value: integer `-1`, expected a non-negative integer",
            ),
            (
                "items[1].colour",
                "unknown field `colour`; expected one of `host`, `subset`, `port`",
            ),
            (
                "mode",
                "unknown value `ROUND_ROBN`, did you mean `ROUND_ROBIN`?",
            ),
        ];
        assert_eq!(got.len(), want.len(), "{got:?}");
        for (g, (path, message)) in got.iter().zip(want) {
            assert_eq!(g.0, path);
            assert_eq!(g.1, message);
        }
        let typed = typed.unwrap_or_else(|| panic!("should deserialize after removals"));
        assert_eq!(typed.items[0].host.as_deref(), Some("a"));
    }

    #[test]
    fn suggestions() {
        let names = ["host", "subset", "port"];
        assert_eq!(did_you_mean("subet", names), Some("subset"));
        assert_eq!(did_you_mean("Host", names), Some("host"));
        assert_eq!(did_you_mean("weight", names), None);
    }
}
