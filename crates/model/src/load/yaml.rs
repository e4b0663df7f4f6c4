//! Builds JSON values with node lines from saphyr-parser's YAML events.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, Span};
use serde_json::{Map, Value};

use super::pointer::{LineMap, escape_pointer_segment};
use super::scalar::{resolve_plain, resolve_tagged};

/// Deepest nesting accepted; deeper input is refused rather than risking the stack later.
const MAX_DEPTH: usize = 200;
/// Most nodes a source may expand to (aliases count their full size), against alias bombs.
const MAX_NODES: usize = 1_000_000;

/// A parsed, non-empty document before it is given its source and index.
pub struct ParsedDocument {
    pub line: usize,
    pub value: Value,
    pub lines: LineMap,
}

/// Why a source could not be parsed.
pub struct YamlError {
    pub line: Option<usize>,
    pub message: String,
}

/// What a mapping frame expects next.
enum Pending {
    Key,
    Value(String),
    Merge,
}

enum Kind {
    Seq(Vec<Value>),
    Map {
        map: Map<String, Value>,
        pending: Pending,
        merges: Vec<Map<String, Value>>,
    },
}

struct Frame {
    kind: Kind,
    anchor: usize,
    pointer: String,
    /// Whether this node is (inside) a complex mapping key, whose lines are not recorded.
    in_key: bool,
    nodes_at_start: usize,
}

/// Where the next node goes.
enum Slot {
    Root,
    Item(String),
    Key,
    Value(String),
    Merge(String),
}

struct Builder {
    stack: Vec<Frame>,
    anchors: HashMap<usize, (Value, usize)>,
    nodes: usize,
    docs: Vec<ParsedDocument>,
    doc_line: Option<usize>,
    lines: LineMap,
    root: Option<Value>,
}

fn err(line: usize, message: impl Into<String>) -> YamlError {
    YamlError {
        line: Some(line),
        message: message.into(),
    }
}

/// Parses all documents of `text`, skipping empty ones.
pub fn parse(text: &str) -> Result<Vec<ParsedDocument>, YamlError> {
    let mut builder = Builder {
        stack: Vec::new(),
        anchors: HashMap::new(),
        nodes: 0,
        docs: Vec::new(),
        doc_line: None,
        lines: LineMap::default(),
        root: None,
    };
    for event in Parser::new_from_str(text) {
        let (event, span) = event.map_err(|e| YamlError {
            line: Some(e.marker().line()),
            message: format!("YAML syntax error: {}", e.info()),
        })?;
        if builder.on_event(event, span)? {
            break;
        }
    }
    Ok(builder.docs)
}

impl Builder {
    /// Handles one event; returns `true` at the end of the stream.
    fn on_event(&mut self, event: Event<'_>, span: Span) -> Result<bool, YamlError> {
        let line = span.start.line();
        match event {
            Event::StreamStart | Event::Nothing => {}
            Event::StreamEnd => return Ok(true),
            Event::DocumentStart(_) => {
                self.doc_line = None;
                self.lines = LineMap::default();
                self.root = None;
                self.anchors.clear();
            }
            Event::DocumentEnd => self.end_document(),
            Event::Alias(id) => {
                let Some((value, size)) = self.anchors.get(&id) else {
                    return Err(err(line, "alias refers to an unknown anchor"));
                };
                let (value, size) = (value.clone(), *size);
                self.count(line, size)?;
                let slot = self.slot(line);
                self.place(slot, value, line)?;
            }
            Event::Scalar(text, style, anchor, tag) => {
                self.count(line, 1)?;
                let slot = self.slot(line);
                if matches!(slot, Slot::Key) {
                    if anchor != 0 {
                        self.anchors
                            .insert(anchor, (Value::String(text.to_string()), 1));
                    }
                    let merge = style == ScalarStyle::Plain && text == "<<";
                    self.set_key(text.into_owned(), merge, line)?;
                    return Ok(false);
                }
                let value = match (style, tag.as_deref()) {
                    (_, Some(tag)) if tag.is_yaml_core_schema() => {
                        resolve_tagged(&tag.suffix, &text)
                            .unwrap_or_else(|| Value::String(text.to_string()))
                    }
                    (ScalarStyle::Plain, _) => resolve_plain(&text),
                    _ => Value::String(text.into_owned()),
                };
                if anchor != 0 {
                    self.anchors.insert(anchor, (value.clone(), 1));
                }
                self.place(slot, value, line)?;
            }
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                self.count(line, 1)?;
                if self.stack.len() >= MAX_DEPTH {
                    return Err(err(line, format!("nesting deeper than {MAX_DEPTH} levels")));
                }
                let slot = self.slot(line);
                let in_key = self.stack.last().is_some_and(|f| f.in_key);
                let (pointer, in_key) = match slot {
                    Slot::Root => {
                        self.note_root(line);
                        (String::new(), in_key)
                    }
                    Slot::Item(p) | Slot::Value(p) | Slot::Merge(p) => (p, in_key),
                    Slot::Key => (String::new(), true),
                };
                let kind = if matches!(event, Event::SequenceStart(..)) {
                    Kind::Seq(Vec::new())
                } else {
                    Kind::Map {
                        map: Map::new(),
                        pending: Pending::Key,
                        merges: Vec::new(),
                    }
                };
                self.stack.push(Frame {
                    kind,
                    anchor,
                    pointer,
                    in_key,
                    nodes_at_start: self.nodes - 1,
                });
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let Some(frame) = self.stack.pop() else {
                    return Err(err(line, "unbalanced end of collection"));
                };
                let value = match frame.kind {
                    Kind::Seq(items) => Value::Array(items),
                    Kind::Map {
                        mut map, merges, ..
                    } => {
                        for merged in merges {
                            for (k, v) in merged {
                                if !map.contains_key(&k) {
                                    map.insert(k, v);
                                }
                            }
                        }
                        Value::Object(map)
                    }
                };
                let size = self.nodes - frame.nodes_at_start;
                if frame.anchor != 0 {
                    self.anchors.insert(frame.anchor, (value.clone(), size));
                }
                let slot = self.parent_slot();
                self.place(slot, value, line)?;
            }
        }
        Ok(false)
    }

    fn count(&mut self, line: usize, n: usize) -> Result<(), YamlError> {
        self.nodes = self.nodes.saturating_add(n);
        if self.nodes > MAX_NODES {
            return Err(err(
                line,
                "too many nodes (aliases expand beyond the limit)",
            ));
        }
        Ok(())
    }

    fn note_root(&mut self, line: usize) {
        if self.doc_line.is_none() {
            self.doc_line = Some(line);
            self.lines.insert(String::new(), line);
        }
    }

    /// Decides where a starting node goes and records its line.
    fn slot(&mut self, line: usize) -> Slot {
        let Some(frame) = self.stack.last() else {
            self.note_root(line);
            return Slot::Root;
        };
        let slot = match &frame.kind {
            Kind::Seq(items) => Slot::Item(format!("{}/{}", frame.pointer, items.len())),
            Kind::Map { pending, .. } => match pending {
                Pending::Key => Slot::Key,
                Pending::Value(key) => {
                    Slot::Value(format!("{}/{}", frame.pointer, escape_pointer_segment(key)))
                }
                Pending::Merge => Slot::Merge(format!("{}/<<", frame.pointer)),
            },
        };
        if let Slot::Item(p) = &slot
            && !frame.in_key
        {
            self.lines.insert(p.clone(), line);
        }
        slot
    }

    /// The slot of a just-finished collection, recomputed from its parent frame.
    fn parent_slot(&self) -> Slot {
        match self.stack.last() {
            None => Slot::Root,
            Some(frame) => match &frame.kind {
                Kind::Seq(_) => Slot::Item(String::new()),
                Kind::Map { pending, .. } => match pending {
                    Pending::Key => Slot::Key,
                    Pending::Value(_) => Slot::Value(String::new()),
                    Pending::Merge => Slot::Merge(String::new()),
                },
            },
        }
    }

    fn set_key(&mut self, key: String, merge: bool, line: usize) -> Result<(), YamlError> {
        let Some(frame) = self.stack.last_mut() else {
            return Err(err(line, "mapping key outside a mapping"));
        };
        let Kind::Map { map, pending, .. } = &mut frame.kind else {
            return Err(err(line, "mapping key inside a sequence"));
        };
        if merge {
            *pending = Pending::Merge;
            return Ok(());
        }
        if map.contains_key(&key) {
            return Err(err(line, format!("duplicate key `{key}`")));
        }
        if !frame.in_key {
            let pointer = format!("{}/{}", frame.pointer, escape_pointer_segment(&key));
            self.lines.insert(pointer, line);
        }
        *pending = Pending::Value(key);
        Ok(())
    }

    /// Puts a finished node into its slot.
    fn place(&mut self, slot: Slot, value: Value, line: usize) -> Result<(), YamlError> {
        match slot {
            Slot::Root => {
                self.note_root(line);
                self.root = Some(value);
                Ok(())
            }
            Slot::Key => {
                let key = match value {
                    Value::String(s) => s,
                    Value::Null => String::new(),
                    other => other.to_string(),
                };
                self.set_key(key, false, line)
            }
            Slot::Item(_) => {
                if let Some(Frame {
                    kind: Kind::Seq(items),
                    ..
                }) = self.stack.last_mut()
                {
                    items.push(value);
                }
                Ok(())
            }
            Slot::Value(_) => {
                if let Some(Frame {
                    kind: Kind::Map { map, pending, .. },
                    ..
                }) = self.stack.last_mut()
                    && let Pending::Value(key) = std::mem::replace(pending, Pending::Key)
                {
                    map.insert(key, value);
                }
                Ok(())
            }
            Slot::Merge(_) => {
                let mut found = Vec::new();
                match value {
                    Value::Object(m) => found.push(m),
                    Value::Array(items) => {
                        for item in items {
                            match item {
                                Value::Object(m) => found.push(m),
                                _ => {
                                    return Err(err(
                                        line,
                                        "merge key `<<` needs a mapping or a list of mappings",
                                    ));
                                }
                            }
                        }
                    }
                    _ => {
                        return Err(err(
                            line,
                            "merge key `<<` needs a mapping or a list of mappings",
                        ));
                    }
                }
                if let Some(Frame {
                    kind:
                        Kind::Map {
                            pending, merges, ..
                        },
                    ..
                }) = self.stack.last_mut()
                {
                    *pending = Pending::Key;
                    merges.extend(found);
                }
                Ok(())
            }
        }
    }

    fn end_document(&mut self) {
        let value = self.root.take().unwrap_or(Value::Null);
        let lines = std::mem::take(&mut self.lines);
        let line = self.doc_line.take().unwrap_or(1);
        if !value.is_null() {
            self.docs.push(ParsedDocument { line, value, lines });
        }
    }
}
