//! Loading manifests: multi-document YAML or JSON from files, directories or stdin, keeping the
//! line of every node so later errors can point at `file:line`.

mod files;
mod list;
mod pointer;
mod scalar;
mod yaml;

use std::fmt;
use std::sync::Arc;

pub use files::load_paths;
pub use list::expand_lists;
pub use pointer::{LineMap, escape_pointer_segment, parent_pointer};

/// One document of a manifest source, with the lines of its nodes.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// The file path as given on the command line, or `<stdin>`.
    pub source: Arc<str>,
    /// 0-based index of the document within its source, counting only non-empty documents.
    pub index: usize,
    /// 1-based line where the document's content starts.
    pub line: usize,
    /// The document itself; mapping keys keep their order.
    pub value: serde_json::Value,
    /// Lines of the document's nodes, by JSON pointer.
    pub lines: LineMap,
}

impl Document {
    /// The 1-based line of the node at `pointer` (a JSON pointer such as `/spec/hosts/0`), or of
    /// its nearest ancestor whose line is known, or else the document's line.
    pub fn line_of(&self, pointer: &str) -> usize {
        self.lines.nearest(pointer).unwrap_or(self.line)
    }
}

/// A source that could not be read or parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError {
    /// The file path as given, or `<stdin>`.
    pub source: String,
    /// The 1-based line of the problem, when known.
    pub line: Option<usize>,
    /// What went wrong.
    pub message: String,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}", self.source, line, self.message),
            None => write!(f, "{}: {}", self.source, self.message),
        }
    }
}

impl std::error::Error for LoadError {}

/// Parses every document of `text` (multi-document YAML, or JSON), naming `source` in errors.
///
/// Empty documents (only comments, or a bare `---`) are skipped. JSON that the YAML parser
/// refuses is read by `serde_json` instead, with every node on the document's first line.
pub fn parse_documents(source: &str, text: &str) -> Result<Vec<Document>, LoadError> {
    let shared: Arc<str> = Arc::from(source);
    let parsed = std::panic::catch_unwind(|| yaml::parse(text)).unwrap_or_else(|_| {
        Err(yaml::YamlError {
            line: None,
            message: "the YAML parser failed on this input".to_string(),
        })
    });
    match parsed {
        Ok(docs) => Ok(docs
            .into_iter()
            .enumerate()
            .map(|(index, doc)| Document {
                source: shared.clone(),
                index,
                line: doc.line,
                value: doc.value,
                lines: doc.lines,
            })
            .collect()),
        Err(err) => match json_fallback(text) {
            Some(value) => {
                let mut lines = LineMap::default();
                lines.insert(String::new(), 1);
                Ok(vec![Document {
                    source: shared,
                    index: 0,
                    line: 1,
                    value,
                    lines,
                }])
            }
            None => Err(LoadError {
                source: source.to_string(),
                line: err.line,
                message: err.message,
            }),
        },
    }
}

/// Reads `text` as one JSON value when it is one (and not `null`).
fn json_fallback(text: &str) -> Option<serde_json::Value> {
    let trimmed = text.trim_start();
    if !(trimmed.starts_with('{') || trimmed.starts_with('[')) {
        return None;
    }
    serde_json::from_str::<serde_json::Value>(text)
        .ok()
        .filter(|v| !v.is_null())
}

#[cfg(test)]
mod tests;
