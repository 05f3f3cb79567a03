//! Where a config repo's files come from. Render reads through this trait only, so a git tree
//! at any commit can feed it without a checkout (a later adapter), and tests can feed it
//! from memory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{path}: cannot read: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: no such file in the config repo")]
    NotFound { path: String },
    #[error("{0}")]
    Other(String),
}

/// A snapshot of a config repo: its file list and their contents.
pub trait ConfigSource {
    /// Every file, as a repo-relative path with `/` separators. Any order.
    fn files(&self) -> Result<Vec<String>, SourceError>;
    fn read(&self, path: &str) -> Result<Vec<u8>, SourceError>;
}

/// A directory on disk (a working tree, or `config-repo-example/`). Hidden entries such as
/// `.git` are skipped.
#[derive(Debug, Clone)]
pub struct DirSource {
    root: PathBuf,
}

impl DirSource {
    pub fn new(root: impl Into<PathBuf>) -> DirSource {
        DirSource { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
}

impl ConfigSource for DirSource {
    fn files(&self) -> Result<Vec<String>, SourceError> {
        let mut out = Vec::new();
        let mut stack = vec![(self.root.clone(), String::new())];
        while let Some((dir, rel)) = stack.pop() {
            let entries = std::fs::read_dir(&dir).map_err(|source| SourceError::Io {
                path: if rel.is_empty() {
                    dir.display().to_string()
                } else {
                    rel.clone()
                },
                source,
            })?;
            for entry in entries {
                let entry = entry.map_err(|source| SourceError::Io {
                    path: rel.clone(),
                    source,
                })?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') {
                    continue;
                }
                let path = if rel.is_empty() {
                    name
                } else {
                    format!("{rel}/{name}")
                };
                let kind = entry.file_type().map_err(|source| SourceError::Io {
                    path: path.clone(),
                    source,
                })?;
                if kind.is_dir() {
                    stack.push((entry.path(), path));
                } else {
                    out.push(path);
                }
            }
        }
        Ok(out)
    }

    fn read(&self, path: &str) -> Result<Vec<u8>, SourceError> {
        std::fs::read(self.root.join(path)).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                SourceError::NotFound {
                    path: path.to_string(),
                }
            } else {
                SourceError::Io {
                    path: path.to_string(),
                    source,
                }
            }
        })
    }
}

/// Files held in memory: for tests, and for sources assembled by other adapters.
#[derive(Debug, Clone, Default)]
pub struct MemSource {
    pub files: BTreeMap<String, Vec<u8>>,
}

impl MemSource {
    pub fn insert(&mut self, path: &str, text: &str) {
        self.files
            .insert(path.to_string(), text.as_bytes().to_vec());
    }
}

impl ConfigSource for MemSource {
    fn files(&self) -> Result<Vec<String>, SourceError> {
        Ok(self.files.keys().cloned().collect())
    }

    fn read(&self, path: &str) -> Result<Vec<u8>, SourceError> {
        self.files
            .get(path)
            .cloned()
            .ok_or_else(|| SourceError::NotFound {
                path: path.to_string(),
            })
    }
}
