//! JSON pointers and the map from a node's pointer to its source line.

use std::collections::HashMap;

/// Lines of a document's nodes, keyed by JSON pointer (`""` is the root, `/spec/hosts/0` a node).
///
/// For a mapping entry the line is the key's line; for a sequence item, the item's first line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LineMap {
    lines: HashMap<String, usize>,
}

impl LineMap {
    /// Records `line` for `pointer` unless a line is already known for it.
    pub fn insert(&mut self, pointer: String, line: usize) {
        self.lines.entry(pointer).or_insert(line);
    }

    /// The line recorded for exactly `pointer`.
    pub fn get(&self, pointer: &str) -> Option<usize> {
        self.lines.get(pointer).copied()
    }

    /// The line of `pointer`, or of its nearest ancestor with a known line.
    pub fn nearest(&self, pointer: &str) -> Option<usize> {
        let mut current = pointer;
        loop {
            if let Some(line) = self.get(current) {
                return Some(line);
            }
            if current.is_empty() {
                return None;
            }
            current = parent_pointer(current);
        }
    }

    /// How many nodes have a recorded line.
    pub fn len(&self) -> usize {
        self.lines.len()
    }

    /// Whether no line is recorded.
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }
}

/// The pointer of the parent of `pointer` (`""` for the root and its children).
pub fn parent_pointer(pointer: &str) -> &str {
    match pointer.rfind('/') {
        Some(pos) => &pointer[..pos],
        None => "",
    }
}

/// Escapes one key for use in a JSON pointer (`~` becomes `~0`, `/` becomes `~1`).
pub fn escape_pointer_segment(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}
