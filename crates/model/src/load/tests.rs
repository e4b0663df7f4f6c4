//! Table tests of the loader.

use super::*;
use serde_json::json;

fn one(text: &str) -> Document {
    let docs = parse_documents("t.yaml", text).unwrap_or_else(|e| panic!("parse failed: {e}"));
    assert_eq!(docs.len(), 1, "{docs:?}");
    docs.into_iter().next().unwrap_or_else(|| unreachable!())
}

#[test]
fn values_and_styles() {
    let cases: &[(&str, serde_json::Value)] = &[
        ("a: 1", json!({"a": 1})),
        ("a: '1'", json!({"a": "1"})),
        ("a: \"true\"", json!({"a": "true"})),
        ("a: true", json!({"a": true})),
        ("a:", json!({"a": null})),
        ("a: |\n  x\n  y\n", json!({"a": "x\ny\n"})),
        ("a: >-\n  x\n  y\n", json!({"a": "x y"})),
        ("a: !!str 5", json!({"a": "5"})),
        ("- 1\n- x\n- 1.5", json!([1, "x", 1.5])),
        (
            "{\"a\": [1, 2, {\"b\": null}]}",
            json!({"a": [1, 2, {"b": null}]}),
        ),
        ("80: STRICT", json!({"80": "STRICT"})),
        ("? [a, b]\n: 1", json!({"[\"a\",\"b\"]": 1})),
        ("a: &x {b: 1}\nc: *x", json!({"a": {"b": 1}, "c": {"b": 1}})),
        (
            "base: &b {x: 1, y: 2}\nd:\n  <<: *b\n  y: 3",
            json!({"base": {"x": 1, "y": 2}, "d": {"y": 3, "x": 1}}),
        ),
        (
            "a: &a {x: 1}\nb: &b {z: 2}\nd:\n  <<: [*a, *b]",
            json!({"a": {"x": 1}, "b": {"z": 2}, "d": {"x": 1, "z": 2}}),
        ),
    ];
    for (text, want) in cases {
        assert_eq!(&one(text).value, want, "input {text:?}");
    }
}

#[test]
fn key_order_is_kept() {
    let doc = one("z: 1\na: 2\nm: 3");
    let keys: Vec<&String> = doc
        .value
        .as_object()
        .map(|m| m.keys().collect())
        .unwrap_or_default();
    assert_eq!(keys, ["z", "a", "m"]);
}

#[test]
fn lines_of_nodes() {
    let text = "\
# comment
apiVersion: v1
kind: VirtualService
spec:
  hosts:
  - reviews
  http:
  - route:
    - destination:
        host: reviews
        subset: v1
";
    let doc = one(text);
    assert_eq!(doc.line, 2);
    let cases = [
        ("", 2),
        ("/kind", 3),
        ("/spec", 4),
        ("/spec/hosts", 5),
        ("/spec/hosts/0", 6),
        ("/spec/http/0", 8),
        ("/spec/http/0/route/0/destination/subset", 11),
        ("/spec/http/0/route/0/destination/missing", 9),
        ("/nothing/here", 2),
    ];
    for (pointer, line) in cases {
        assert_eq!(doc.line_of(pointer), line, "pointer {pointer:?}");
    }
}

#[test]
fn pointer_escapes_keys() {
    let doc = one("metadata:\n  annotations:\n    a/b~c: x\n");
    assert_eq!(doc.line_of("/metadata/annotations/a~1b~0c"), 3);
}

#[test]
fn multiple_documents_and_empty_ones() {
    let text = "---\n# only a comment\n---\na: 1\n---\n---\nb: 2\n...\n";
    let docs = parse_documents("m.yaml", text).unwrap_or_default();
    assert_eq!(docs.len(), 2);
    assert_eq!((docs[0].index, docs[0].line), (0, 4));
    assert_eq!((docs[1].index, docs[1].line), (1, 7));
    assert_eq!(&*docs[1].source, "m.yaml");
}

#[test]
fn errors_name_file_and_line() {
    let cases = [
        ("a: 1\na: 2\n", 2, "duplicate key `a`"),
        ("a: 1\nb: [1, 2\n", 3, "YAML syntax error"),
        ("a:\n  - b\n  c: d\n", 3, "YAML syntax error"),
        ("a: *nope\n", 1, ""),
        ("a: &x 1\nb:\n  <<: *x\n", 3, "merge key"),
    ];
    for (text, line, message) in cases {
        let e = parse_documents("bad.yaml", text).err();
        let Some(e) = e else {
            panic!("{text:?} should fail");
        };
        assert_eq!(e.source, "bad.yaml");
        assert_eq!(e.line, Some(line), "{text:?}: {e}");
        assert!(e.message.contains(message), "{text:?}: {e}");
        assert!(e.to_string().starts_with(&format!("bad.yaml:{line}: ")));
    }
}

#[test]
fn json_fallback_when_yaml_refuses() {
    // A tab before a key is fine in JSON but not in YAML block context.
    let text = "{\n\t\"a\": 1,\n\t\"b\": \"\\u00e9\"\n}";
    let doc = one(text);
    assert_eq!(doc.value, json!({"a": 1, "b": "é"}));
    assert_eq!(doc.line, 1);
}

#[test]
fn alias_bombs_are_refused() {
    let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..10 {
        let p = i - 1;
        text.push_str(&format!(
            "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
        ));
    }
    let e = parse_documents("bomb.yaml", &text).err();
    assert!(e.is_some_and(|e| e.message.contains("too many nodes")));
}

#[test]
fn deep_nesting_is_refused() {
    let text = "[".repeat(10_000);
    assert!(parse_documents("deep.yaml", &text).is_err());
}

#[test]
fn lists_expand_to_items() {
    let doc = one("kind: List\nitems:\n- kind: Pod\n- kind: Service\n");
    let items = expand_lists(&doc);
    assert_eq!(items.len(), 2);
    assert_eq!(items[1].0, "/items/1");
    assert_eq!(items[1].1, json!({"kind": "Service"}));
    let plain = one("kind: Pod\nitems: [1]\n");
    assert_eq!(
        expand_lists(&plain),
        vec![(String::new(), plain.value.clone())]
    );
}

#[test]
fn load_paths_reads_dirs_sorted_and_reports_errors() -> std::io::Result<()> {
    let dir = std::env::temp_dir().join(format!("ferry-model-load-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("sub"))?;
    std::fs::write(dir.join("b.yaml"), "kind: B\n")?;
    std::fs::write(dir.join("a.yml"), "kind: A\n---\nkind: A2\n")?;
    std::fs::write(dir.join("sub/c.json"), "{\"kind\": \"C\"}")?;
    std::fs::write(dir.join("notes.txt"), "kind: ignored\n")?;
    std::fs::write(dir.join("sub/bad.yaml"), "a: [\n")?;
    let (docs, errors) = load_paths(&[dir.clone(), dir.join("missing.yaml")]);
    let kinds: Vec<&str> = docs
        .iter()
        .filter_map(|d| d.value["kind"].as_str())
        .collect();
    assert_eq!(kinds, ["A", "A2", "B", "C"]);
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors[0].source.ends_with("bad.yaml"));
    assert!(errors[1].source.ends_with("missing.yaml") && errors[1].line.is_none());
    std::fs::remove_dir_all(&dir)
}

mod never_panics {
    use super::parse_documents;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn random_strings(text in "\\PC*") {
            let _ = parse_documents("p.yaml", &text);
        }

        #[test]
        fn yamlish_strings(text in "[-:{}\\[\\],&*!|>'\"#?<~ \\n\\ta-z0-9]{0,80}") {
            let _ = parse_documents("p.yaml", &text);
        }

        #[test]
        fn random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let text = String::from_utf8_lossy(&bytes);
            let _ = parse_documents("p.yaml", &text);
        }
    }
}
