//! Where a config repo's files come from. Render reads through this trait only, so a git tree
//! at any commit ([`crate::git::GitSource`]), a working tree ([`DirSource`]) and tests
//! ([`MemSource`]) all feed it.
//!
//! A working tree and a git tree are read by one rule set ([`rule`], [`target_rule`],
//! [`check_size`] and the driver [`read_by_rules`]), so the same tree gives the same verdict
//! from both, the way git stores it:
//!
//! - regular files only: FIFOs, sockets, devices, directories and git submodules are refused
//!   without being opened;
//! - a symlink is followed only when its target, resolved against the link's directory,
//!   stays inside the repo (not absolute, no `..` above the root, no hidden component such
//!   as `.git`) and is a regular file of the repo (not another symlink, a directory or
//!   anything else); a git tree's symlink entry holds its target path as its blob and is
//!   resolved within the tree the same way;
//! - a file (or a link's target) larger than [`MAX_FILE_BYTES`] is refused; the limit is
//!   enforced while reading, not from metadata alone.
//!
//! A refusal is a [`SourceError::Refused`], which loading reports as a diagnostic at the path
//! (`accounts/x.yaml:1:1: is a FIFO ...`), collected with every other problem.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};

/// The most bytes one file of a config repo may hold: 32 MiB. Real OpenAPI documents reach
/// 20 MB (large merged provider specs); nothing fleetgate reads needs more, and a bound
/// keeps a hostile tree from exhausting memory.
pub const MAX_FILE_BYTES: u64 = 32 * 1024 * 1024;

/// The longest symlink target followed (the usual PATH_MAX). Git stores a link's target as
/// a blob of any size; a checkout could not create a longer one.
pub const MAX_LINK_TARGET_BYTES: usize = 4096;

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
    /// The path exists but the rules refuse to read it (not a regular file, a symlink out of
    /// the repo, over the size limit).
    #[error("{path}: {refusal}")]
    Refused { path: String, refusal: Refusal },
    #[error("{0}")]
    Other(String),
}

/// A snapshot of a config repo: its file list and their contents.
pub trait ConfigSource {
    /// Every entry that is not a directory (files, symlinks, special files, submodules), as
    /// a repo-relative path with `/` separators. Any order. Reading one that is not a
    /// regular file (or a symlink to one) gives [`SourceError::Refused`].
    fn files(&self) -> Result<Vec<String>, SourceError>;
    fn read(&self, path: &str) -> Result<Vec<u8>, SourceError>;
}

/// A special file: never opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Special {
    Fifo,
    Socket,
    CharDevice,
    BlockDevice,
    /// Anything else a filesystem may hold.
    Unknown,
}

impl std::fmt::Display for Special {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Special::Fifo => "FIFO (named pipe)",
            Special::Socket => "socket",
            Special::CharDevice => "character device",
            Special::BlockDevice => "block device",
            Special::Unknown => "special file",
        })
    }
}

/// What a path of a snapshot is, seen without opening it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    File,
    /// A symlink and its target as stored (the link's text, or a git symlink entry's blob).
    Symlink(Vec<u8>),
    Dir,
    /// A git submodule: a gitlink entry in a tree, a directory holding `.git` on disk.
    Submodule,
    Special(Special),
}

/// What to do with an entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// A regular file: read it (within [`MAX_FILE_BYTES`]).
    Read,
    /// A symlink: read this repo path instead, if [`target_rule`] accepts what is there.
    Follow(String),
}

/// Why a symlink is not followed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkRefusal {
    Absolute,
    Escapes,
    Hidden,
    Empty,
    TooLong,
    Missing,
    ToLink,
    ToDir,
    ToSubmodule,
    ToSpecial(Special),
    TargetTooLarge,
}

impl std::fmt::Display for LinkRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LinkRefusal::Absolute => f.write_str("an absolute target is outside the repo"),
            LinkRefusal::Escapes => f.write_str("its target leaves the repo (`..` above the root)"),
            LinkRefusal::Hidden => f.write_str(
                "its target is inside a hidden path (such as .git), which is not part of the config repo",
            ),
            LinkRefusal::Empty => f.write_str("its target is empty"),
            LinkRefusal::TooLong => write!(
                f,
                "its target is longer than {MAX_LINK_TARGET_BYTES} bytes"
            ),
            LinkRefusal::Missing => f.write_str("no such file in the repo"),
            LinkRefusal::ToLink => {
                f.write_str("its target is itself a symlink (link to the file directly)")
            }
            LinkRefusal::ToDir => f.write_str("its target is a directory, not a file"),
            LinkRefusal::ToSubmodule => f.write_str("its target is a git submodule"),
            LinkRefusal::ToSpecial(kind) => write!(
                f,
                "its target is a {kind}; only regular files are read, and it was not opened"
            ),
            LinkRefusal::TargetTooLarge => write!(f, "its target {}", TOO_LARGE),
        }
    }
}

const TOO_LARGE: &str = "is larger than the per-file limit of 32 MiB (33554432 bytes)";

/// Why a path was not read. The message does not repeat the path: a diagnostic locates it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("is a {0}; only regular files are read, and it was not opened")]
    Special(Special),
    #[error("is a directory, not a file")]
    Dir,
    #[error("is a git submodule; only files stored in this repository are read")]
    Submodule,
    #[error("{}", TOO_LARGE)]
    TooLarge,
    #[error("symlink to {target:?} is not followed: {why}")]
    Link { target: String, why: LinkRefusal },
}

impl Refusal {
    /// The same problem met at a symlink's target, told at the link.
    fn via_link(self, target: &str) -> Refusal {
        let why = match self {
            Refusal::Special(kind) => LinkRefusal::ToSpecial(kind),
            Refusal::Dir => LinkRefusal::ToDir,
            Refusal::Submodule => LinkRefusal::ToSubmodule,
            Refusal::TooLarge => LinkRefusal::TargetTooLarge,
            link @ Refusal::Link { .. } => return link,
        };
        Refusal::Link {
            target: target.to_string(),
            why,
        }
    }
}

/// The rule for one entry at `path`: a regular file is read; a symlink is followed to the
/// repo path its target names, if that stays inside the repo; anything else is refused.
pub fn rule(path: &str, entry: &Entry) -> Result<Decision, Refusal> {
    match entry {
        Entry::File => Ok(Decision::Read),
        Entry::Symlink(target) => resolve_link(path, target).map(Decision::Follow),
        Entry::Dir => Err(Refusal::Dir),
        Entry::Submodule => Err(Refusal::Submodule),
        Entry::Special(kind) => Err(Refusal::Special(*kind)),
    }
}

/// The rule for what a followed symlink's target is (`None`: nothing at that path): only a
/// regular file is read. `target` is the link's text, for the message.
pub fn target_rule(target: &str, entry: Option<&Entry>) -> Result<(), Refusal> {
    let why = match entry {
        Some(Entry::File) => return Ok(()),
        None => LinkRefusal::Missing,
        Some(Entry::Symlink(_)) => LinkRefusal::ToLink,
        Some(Entry::Dir) => LinkRefusal::ToDir,
        Some(Entry::Submodule) => LinkRefusal::ToSubmodule,
        Some(Entry::Special(kind)) => LinkRefusal::ToSpecial(*kind),
    };
    Err(Refusal::Link {
        target: target.to_string(),
        why,
    })
}

/// The size rule: at most [`MAX_FILE_BYTES`].
pub fn check_size(len: u64) -> Result<(), Refusal> {
    if len > MAX_FILE_BYTES {
        Err(Refusal::TooLarge)
    } else {
        Ok(())
    }
}

/// Resolves a symlink's target against the link's directory, lexically, to a repo path.
/// Absolute targets, `..` above the root and hidden components (`.git`) are refused.
pub fn resolve_link(link: &str, target: &[u8]) -> Result<String, Refusal> {
    if target.len() > MAX_LINK_TARGET_BYTES {
        return Err(Refusal::Link {
            target: format!("{}...", String::from_utf8_lossy(&target[..64])),
            why: LinkRefusal::TooLong,
        });
    }
    let text = String::from_utf8_lossy(target).into_owned();
    let refuse = |why| {
        Err(Refusal::Link {
            target: text.clone(),
            why,
        })
    };
    if target.is_empty() {
        return refuse(LinkRefusal::Empty);
    }
    if target.starts_with(b"/") {
        return refuse(LinkRefusal::Absolute);
    }
    let mut parts: Vec<&str> = link.split('/').collect();
    parts.pop();
    for part in text.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return refuse(LinkRefusal::Escapes);
                }
            }
            p => parts.push(p),
        }
    }
    if parts.iter().any(|p| p.starts_with('.')) {
        return refuse(LinkRefusal::Hidden);
    }
    if parts.is_empty() {
        // The repo's root directory.
        return refuse(LinkRefusal::ToDir);
    }
    Ok(parts.join("/"))
}

/// Whether `path` is a repo path a snapshot lists: relative, `/`-separated, no empty, `.`,
/// `..` or hidden components.
fn listable(path: &str) -> bool {
    !path.is_empty()
        && path
            .split('/')
            .all(|p| !p.is_empty() && !p.starts_with('.'))
}

/// Reads `reader` to its end, refusing more than [`MAX_FILE_BYTES`]: at most one byte over
/// the limit is ever read.
pub fn read_limited(reader: impl std::io::Read) -> std::io::Result<Result<Vec<u8>, Refusal>> {
    let mut out = Vec::new();
    reader.take(MAX_FILE_BYTES + 1).read_to_end(&mut out)?;
    Ok(check_size(out.len() as u64).map(|()| out))
}

/// The two things an adapter does for [`read_by_rules`].
pub trait Tree {
    /// What is at `path` (a relative path without `.`, `..` or hidden components), without
    /// opening it; `None` when nothing is, or when a directory on the way is not a real
    /// directory of the repo (a symlink, a submodule).
    fn entry(&self, path: &str) -> Result<Option<Entry>, SourceError>;
    /// The bytes of the regular file at `path`, refused (never read in full) over
    /// [`MAX_FILE_BYTES`], and refused if it is no longer a regular file.
    fn read_file(&self, path: &str) -> Result<Result<Vec<u8>, Refusal>, SourceError>;
}

/// Reads `path` from a tree by the rules: regular files, symlinks inside the repo to regular
/// files, within the size limit.
pub fn read_by_rules(tree: &impl Tree, path: &str) -> Result<Vec<u8>, SourceError> {
    let refused = |refusal| SourceError::Refused {
        path: path.to_string(),
        refusal,
    };
    let not_found = || SourceError::NotFound {
        path: path.to_string(),
    };
    if !listable(path) {
        return Err(not_found());
    }
    let entry = tree.entry(path)?.ok_or_else(not_found)?;
    match rule(path, &entry).map_err(refused)? {
        Decision::Read => tree.read_file(path)?.map_err(refused),
        Decision::Follow(resolved) => {
            let target = match &entry {
                Entry::Symlink(target) => String::from_utf8_lossy(target).into_owned(),
                _ => resolved.clone(),
            };
            target_rule(&target, tree.entry(&resolved)?.as_ref()).map_err(refused)?;
            tree.read_file(&resolved)?
                .map_err(|r| refused(r.via_link(&target)))
        }
    }
}

/// A directory on disk (a working tree, or `config-repo-example/`). Hidden entries such as
/// `.git` are skipped; a subdirectory holding `.git` is a submodule (listed, not entered).
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

    fn io(path: &str, source: std::io::Error) -> SourceError {
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
    }
}

/// `None` when there is nothing at `path` (or a directory on the way is not one).
fn lstat(path: &Path) -> std::io::Result<Option<std::fs::Metadata>> {
    match std::fs::symlink_metadata(path) {
        Ok(m) => Ok(Some(m)),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

fn special(kind: std::fs::FileType) -> Special {
    use std::os::unix::fs::FileTypeExt as _;
    if kind.is_fifo() {
        Special::Fifo
    } else if kind.is_socket() {
        Special::Socket
    } else if kind.is_char_device() {
        Special::CharDevice
    } else if kind.is_block_device() {
        Special::BlockDevice
    } else {
        Special::Unknown
    }
}

impl Tree for DirSource {
    fn entry(&self, path: &str) -> Result<Option<Entry>, SourceError> {
        let parts: Vec<&str> = path.split('/').collect();
        let Some((name, dirs)) = parts.split_last() else {
            return Ok(None);
        };
        let mut at = self.root.clone();
        // Every directory on the way must be a real directory of the repo: not a symlink
        // (which could lead anywhere) and not a submodule, as in a git tree.
        for part in dirs {
            at.push(part);
            match lstat(&at).map_err(|e| DirSource::io(path, e))? {
                Some(m) if m.file_type().is_dir() => {}
                _ => return Ok(None),
            }
            if lstat(&at.join(".git"))
                .map_err(|e| DirSource::io(path, e))?
                .is_some()
            {
                return Ok(None);
            }
        }
        at.push(name);
        let Some(meta) = lstat(&at).map_err(|e| DirSource::io(path, e))? else {
            return Ok(None);
        };
        let kind = meta.file_type();
        Ok(Some(if kind.is_file() {
            Entry::File
        } else if kind.is_symlink() {
            use std::os::unix::ffi::OsStrExt as _;
            let target = std::fs::read_link(&at).map_err(|e| DirSource::io(path, e))?;
            Entry::Symlink(target.as_os_str().as_bytes().to_vec())
        } else if kind.is_dir() {
            if lstat(&at.join(".git"))
                .map_err(|e| DirSource::io(path, e))?
                .is_some()
            {
                Entry::Submodule
            } else {
                Entry::Dir
            }
        } else {
            Entry::Special(special(kind))
        }))
    }

    fn read_file(&self, path: &str) -> Result<Result<Vec<u8>, Refusal>, SourceError> {
        use std::os::unix::fs::OpenOptionsExt as _;
        // O_NOFOLLOW: a symlink swapped in after the check is not followed. O_NONBLOCK: a
        // FIFO swapped in does not block the open; fstat below refuses it.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(self.root.join(path))
            .map_err(|e| DirSource::io(path, e))?;
        let meta = file.metadata().map_err(|e| DirSource::io(path, e))?;
        let kind = meta.file_type();
        if kind.is_dir() {
            return Ok(Err(Refusal::Dir));
        }
        if !kind.is_file() {
            return Ok(Err(Refusal::Special(special(kind))));
        }
        if let Err(refusal) = check_size(meta.len()) {
            return Ok(Err(refusal));
        }
        read_limited(file).map_err(|e| DirSource::io(path, e))
    }
}

impl ConfigSource for DirSource {
    fn files(&self) -> Result<Vec<String>, SourceError> {
        let mut out = Vec::new();
        let mut stack = vec![(self.root.clone(), String::new())];
        while let Some((dir, rel)) = stack.pop() {
            let entries = std::fs::read_dir(&dir)
                .and_then(|entries| entries.collect::<std::io::Result<Vec<_>>>())
                .map_err(|source| SourceError::Io {
                    path: if rel.is_empty() {
                        dir.display().to_string()
                    } else {
                        rel.clone()
                    },
                    source,
                })?;
            // A submodule (or a repository nested in the working tree) is not this repo's
            // files: git stores a commit id there, not the files.
            if !rel.is_empty() && entries.iter().any(|e| e.file_name() == ".git") {
                out.push(rel);
                continue;
            }
            for entry in entries {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') {
                    continue;
                }
                let path = if rel.is_empty() {
                    name
                } else {
                    format!("{rel}/{name}")
                };
                // The entry itself, never what a symlink points to.
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
        read_by_rules(self, path)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn link(path: &str, target: &str) -> Result<Decision, Refusal> {
        rule(path, &Entry::Symlink(target.as_bytes().to_vec()))
    }

    fn why(r: Result<Decision, Refusal>) -> LinkRefusal {
        match r {
            Err(Refusal::Link { why, .. }) => why,
            other => panic!("expected a link refusal, got {other:?}"),
        }
    }

    #[test]
    fn regular_files_are_read_and_nothing_else() {
        assert_eq!(rule("a.yaml", &Entry::File), Ok(Decision::Read));
        assert_eq!(rule("a", &Entry::Dir), Err(Refusal::Dir));
        assert_eq!(rule("a", &Entry::Submodule), Err(Refusal::Submodule));
        for kind in [
            Special::Fifo,
            Special::Socket,
            Special::CharDevice,
            Special::BlockDevice,
            Special::Unknown,
        ] {
            assert_eq!(
                rule("a", &Entry::Special(kind)),
                Err(Refusal::Special(kind))
            );
        }
        assert_eq!(
            Refusal::Special(Special::Fifo).to_string(),
            "is a FIFO (named pipe); only regular files are read, and it was not opened"
        );
    }

    #[test]
    fn links_resolve_against_their_directory_inside_the_repo() {
        assert_eq!(
            link("services/a/2.0/openapi.yaml", "../1.0/openapi.yaml"),
            Ok(Decision::Follow("services/a/1.0/openapi.yaml".into()))
        );
        assert_eq!(
            link("accounts/x.yaml", "./y.yaml"),
            Ok(Decision::Follow("accounts/y.yaml".into()))
        );
        assert_eq!(
            link("accounts/x.yaml", "../base//gateway.yaml"),
            Ok(Decision::Follow("base/gateway.yaml".into()))
        );
        assert_eq!(
            link("x.yaml", "a/../b.yaml"),
            Ok(Decision::Follow("b.yaml".into()))
        );
    }

    #[test]
    fn links_out_of_the_repo_are_refused_with_the_reason() {
        assert_eq!(
            why(link("accounts/x.yaml", "/dev/zero")),
            LinkRefusal::Absolute
        );
        assert_eq!(
            why(link("accounts/x.yaml", "../../etc/passwd")),
            LinkRefusal::Escapes
        );
        assert_eq!(
            why(link("accounts/x.yaml", "../a/../../x")),
            LinkRefusal::Escapes
        );
        assert_eq!(
            why(link("accounts/x.yaml", "../.git/config")),
            LinkRefusal::Hidden
        );
        assert_eq!(why(link("accounts/x.yaml", ".y.yaml")), LinkRefusal::Hidden);
        assert_eq!(why(link("accounts/x.yaml", "")), LinkRefusal::Empty);
        assert_eq!(why(link("accounts/x.yaml", "..")), LinkRefusal::ToDir);
        assert_eq!(
            why(link("a.yaml", &"x/".repeat(3000))),
            LinkRefusal::TooLong
        );
        assert_eq!(
            link("accounts/x.yaml", "/dev/zero")
                .unwrap_err()
                .to_string(),
            "symlink to \"/dev/zero\" is not followed: an absolute target is outside the repo"
        );
    }

    #[test]
    fn a_link_target_must_be_a_regular_file() {
        assert_eq!(target_rule("t", Some(&Entry::File)), Ok(()));
        let cases = [
            (None, LinkRefusal::Missing),
            (Some(Entry::Symlink(b"u".to_vec())), LinkRefusal::ToLink),
            (Some(Entry::Dir), LinkRefusal::ToDir),
            (Some(Entry::Submodule), LinkRefusal::ToSubmodule),
            (
                Some(Entry::Special(Special::CharDevice)),
                LinkRefusal::ToSpecial(Special::CharDevice),
            ),
        ];
        for (entry, expected) in cases {
            assert_eq!(
                target_rule("t", entry.as_ref()),
                Err(Refusal::Link {
                    target: "t".into(),
                    why: expected
                })
            );
        }
    }

    #[test]
    fn the_size_limit_is_enforced_while_reading_and_named() {
        assert_eq!(check_size(MAX_FILE_BYTES), Ok(()));
        assert_eq!(check_size(MAX_FILE_BYTES + 1), Err(Refusal::TooLarge));
        assert_eq!(
            TOO_LARGE,
            format!("is larger than the per-file limit of 32 MiB ({MAX_FILE_BYTES} bytes)")
        );
        let at_limit = std::io::repeat(b'a').take(MAX_FILE_BYTES);
        assert_eq!(
            read_limited(at_limit).unwrap().map(|v| v.len() as u64),
            Ok(MAX_FILE_BYTES)
        );
        // An endless reader (what /dev/zero is) stops one byte past the limit.
        assert_eq!(
            read_limited(std::io::repeat(0)).unwrap(),
            Err(Refusal::TooLarge)
        );
    }
}
