//! Reading manifest sources: files, directories (recursively) and stdin.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::{Document, LoadError, parse_documents};

/// File extensions read from directories.
const EXTENSIONS: [&str; 3] = ["yaml", "yml", "json"];

/// Loads every document from `paths`: files, directories (recursively, `*.yaml`, `*.yml` and
/// `*.json` in sorted order) and `-` for stdin. Sources that fail are reported, the rest loaded.
pub fn load_paths(paths: &[PathBuf]) -> (Vec<Document>, Vec<LoadError>) {
    let mut docs = Vec::new();
    let mut errors = Vec::new();
    for path in paths {
        if path.as_os_str() == "-" {
            let mut text = String::new();
            match std::io::stdin().read_to_string(&mut text) {
                Ok(_) => collect("<stdin>", &text, &mut docs, &mut errors),
                Err(e) => errors.push(io_error("<stdin>", &e)),
            }
        } else if path.is_dir() {
            let mut files = Vec::new();
            if let Err(e) = walk(path, &mut files, 0) {
                errors.push(e);
            }
            files.sort();
            for file in files {
                load_file(&file, &mut docs, &mut errors);
            }
        } else {
            load_file(path, &mut docs, &mut errors);
        }
    }
    (docs, errors)
}

fn load_file(path: &Path, docs: &mut Vec<Document>, errors: &mut Vec<LoadError>) {
    let name = path.display().to_string();
    match std::fs::read(path) {
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(text) => collect(&name, &text, docs, errors),
            Err(_) => errors.push(LoadError {
                source: name,
                line: None,
                message: "not valid UTF-8".to_string(),
            }),
        },
        Err(e) => errors.push(io_error(&name, &e)),
    }
}

fn collect(name: &str, text: &str, docs: &mut Vec<Document>, errors: &mut Vec<LoadError>) {
    match parse_documents(name, text) {
        Ok(found) => docs.extend(found),
        Err(e) => errors.push(e),
    }
}

fn io_error(name: &str, e: &std::io::Error) -> LoadError {
    LoadError {
        source: name.to_string(),
        line: None,
        message: format!("cannot read: {e}"),
    }
}

/// Collects manifest files under `dir`; stops at a depth of 64 against symlink loops.
fn walk(dir: &Path, files: &mut Vec<PathBuf>, depth: usize) -> Result<(), LoadError> {
    let name = dir.display().to_string();
    if depth > 64 {
        return Err(LoadError {
            source: name,
            line: None,
            message: "directories nested too deeply (a symlink loop?)".to_string(),
        });
    }
    let entries = std::fs::read_dir(dir).map_err(|e| io_error(&name, &e))?;
    for entry in entries {
        let entry = entry.map_err(|e| io_error(&name, &e))?;
        let path = entry.path();
        if path.is_dir() {
            walk(&path, files, depth + 1)?;
        } else if path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| EXTENSIONS.contains(&e))
        {
            files.push(path);
        }
    }
    Ok(())
}
