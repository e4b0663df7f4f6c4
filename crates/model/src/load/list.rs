//! Expanding Kubernetes `List` documents (`kind: List`, `kind: FooList`) into their items.

use serde_json::Value;

use super::Document;

/// The resources held by `doc`, each with the JSON pointer where it sits: the items of a `List`
/// kind (`/items/0`, `/items/1`, ...), or the document itself (pointer `""`).
pub fn expand_lists(doc: &Document) -> Vec<(String, Value)> {
    let is_list = doc
        .value
        .get("kind")
        .and_then(Value::as_str)
        .is_some_and(|k| k.ends_with("List"));
    match doc.value.get("items").and_then(Value::as_array) {
        Some(items) if is_list => items
            .iter()
            .enumerate()
            .map(|(i, item)| (format!("/items/{i}"), item.clone()))
            .collect(),
        _ => vec![(String::new(), doc.value.clone())],
    }
}
