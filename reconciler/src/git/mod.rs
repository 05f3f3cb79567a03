//! The config repo in git: manifests read at any commit, branch or tag straight from the
//! object database (no checkout, no working tree), through the same [`ConfigSource`] trait
//! render reads everything through.
//!
//! A local path is opened where it is (a working clone or a bare repository). A URL
//! (`file://...`, or a remote path) is cloned once as a bare repository into a cache
//! directory and fetched on every open, so `origin/main` means what the remote says now.

pub mod history;
pub mod tracking;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use git2::{ObjectType, Oid, Repository, TreeWalkMode, TreeWalkResult};
use sha2::{Digest as _, Sha256};

use crate::config::source::{
    ConfigSource, Entry, Refusal, SourceError, Tree, check_size, read_by_rules,
};

#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("{location} is not a git repository: {message}")]
    Open { location: String, message: String },
    #[error("cannot fetch {url}: {message}")]
    Fetch { url: String, message: String },
    #[error("unknown revision {rev:?} in {location}: {message}")]
    Rev {
        rev: String,
        location: String,
        message: String,
    },
    #[error("cannot diff {base}..{head}: {message}")]
    Diff {
        base: String,
        head: String,
        message: String,
    },
}

/// A config repository, opened for reading.
pub struct GitRepo {
    repo: Repository,
    /// What the user gave (path or URL), for messages.
    location: String,
}

impl std::fmt::Debug for GitRepo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitRepo")
            .field("location", &self.location)
            .finish()
    }
}

/// A resolved commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    pub id: Oid,
    /// The revision as the user wrote it (`HEAD~1`, `origin/main`, a sha).
    pub rev: String,
}

impl Commit {
    pub fn short(&self) -> String {
        self.id.to_string()[..12].to_string()
    }
}

/// Whether `location` names a remote to clone rather than a local path.
fn is_url(location: &str) -> bool {
    location.contains("://") || (location.contains('@') && location.contains(':'))
}

impl GitRepo {
    /// Opens a local repository, or clones/fetches a remote one into `cache_dir`.
    pub fn open(location: &str, cache_dir: &Path) -> Result<GitRepo, GitError> {
        if !is_url(location) {
            let repo = Repository::open(location).map_err(|e| GitError::Open {
                location: location.to_string(),
                message: e.message().to_string(),
            })?;
            return Ok(GitRepo {
                repo,
                location: location.to_string(),
            });
        }
        let dir = cache_path(cache_dir, location);
        let repo = match Repository::open_bare(&dir) {
            Ok(repo) => repo,
            Err(_) => {
                std::fs::create_dir_all(&dir).map_err(|e| GitError::Open {
                    location: dir.display().to_string(),
                    message: e.to_string(),
                })?;
                let repo = Repository::init_bare(&dir).map_err(|e| GitError::Open {
                    location: dir.display().to_string(),
                    message: e.message().to_string(),
                })?;
                repo.remote("origin", location)
                    .map_err(|e| GitError::Fetch {
                        url: location.to_string(),
                        message: e.message().to_string(),
                    })?;
                repo
            }
        };
        {
            let mut remote = repo.find_remote("origin").map_err(|e| GitError::Fetch {
                url: location.to_string(),
                message: e.message().to_string(),
            })?;
            // Branches as remote-tracking refs (origin/main), tags as tags; pruned, so a
            // deleted branch does not linger in the cache.
            let mut options = git2::FetchOptions::new();
            options.prune(git2::FetchPrune::On);
            options.remote_callbacks(credentials());
            remote
                .fetch(
                    &[
                        "+refs/heads/*:refs/remotes/origin/*",
                        "+refs/tags/*:refs/tags/*",
                    ],
                    Some(&mut options),
                    None,
                )
                .map_err(|e| GitError::Fetch {
                    url: location.to_string(),
                    // libgit2 built without TLS says "unsupported URL protocol" (ssh) or "there
                    // is no TLS stream available" (https).
                    message: if (e.class() == git2::ErrorClass::Net
                        && e.message().contains("unsupported URL protocol"))
                        || e.message().contains("no TLS stream available")
                    {
                        format!(
                            "{}: build fleetgate with `--features https` or `--features ssh`, or clone with git and pass the clone's path",
                            e.message()
                        )
                    } else {
                        e.message().to_string()
                    },
                })?;
        }
        // HEAD of a bare cache points nowhere useful; resolve it to the remote's default.
        if let Ok(reference) = repo.find_reference("refs/remotes/origin/HEAD")
            && let Ok(Some(target)) = reference.symbolic_target()
        {
            let _ = repo.set_head(target);
        } else {
            for branch in ["refs/remotes/origin/main", "refs/remotes/origin/master"] {
                if repo.find_reference(branch).is_ok() {
                    let _ = repo.set_head(branch);
                    break;
                }
            }
        }
        Ok(GitRepo {
            repo,
            location: location.to_string(),
        })
    }

    /// How a branch of the config repo is named here: `origin/<branch>` in the cache of a
    /// remote (fetched on open), the branch itself in a local repository.
    pub fn branch_rev(&self, branch: &str) -> String {
        if is_url(&self.location) && !branch.starts_with("origin/") {
            format!("origin/{branch}")
        } else {
            branch.to_string()
        }
    }

    /// The path or URL it was opened from.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// Resolves a revision the way git does (`HEAD~1`, `origin/main`, a tag, a sha).
    pub fn resolve(&self, rev: &str) -> Result<Commit, GitError> {
        let err = |message: String| GitError::Rev {
            rev: rev.to_string(),
            location: self.location.clone(),
            message,
        };
        let object = match self.repo.revparse_single(rev) {
            Ok(object) => object,
            // A remote's cache holds its branches as origin/<branch>, so `main` (or `main~1`)
            // means origin/main there, as it does in a clone for git's own commands.
            Err(e) => match (is_url(&self.location) && !rev.starts_with("origin/"))
                .then(|| self.repo.revparse_single(&format!("origin/{rev}")).ok())
                .flatten()
            {
                Some(object) => object,
                None => return Err(err(e.message().to_string())),
            },
        };
        let commit = object
            .peel_to_commit()
            .map_err(|e| err(format!("does not name a commit: {}", e.message())))?;
        Ok(Commit {
            id: commit.id(),
            rev: rev.to_string(),
        })
    }

    /// A commit's subject line, when the repo has that commit.
    pub fn summary(&self, commit: &str) -> Option<String> {
        let oid = Oid::from_str(commit).ok()?;
        let c = self.repo.find_commit(oid).ok()?;
        c.summary().ok().flatten().map(str::to_string)
    }

    /// Whether `commit` comes after `ancestor` in history (and is not it).
    pub fn is_descendant(&self, commit: &str, ancestor: &str) -> bool {
        match (Oid::from_str(commit), Oid::from_str(ancestor)) {
            (Ok(c), Ok(a)) => c != a && self.repo.graph_descendant_of(c, a).unwrap_or(false),
            _ => false,
        }
    }

    /// The repo's files at a commit.
    pub fn snapshot(&self, commit: &Commit) -> Result<GitSource<'_>, GitError> {
        let tree = self
            .repo
            .find_commit(commit.id)
            .and_then(|c| c.tree())
            .map_err(|e| GitError::Rev {
                rev: commit.rev.clone(),
                location: self.location.clone(),
                message: e.message().to_string(),
            })?;
        // One walk of the tree records every entry's id and kind: reading a file is then one
        // object lookup, not a path walk that re-reads (and re-hashes) every directory on the
        // way, which for `accounts/` with 1,000 entries made reading a snapshot quadratic.
        // Hidden entries (and everything under a hidden directory) are not part of the repo.
        let mut entries = BTreeMap::new();
        tree.walk(TreeWalkMode::PreOrder, |dir, entry| {
            let Ok(name) = entry.name() else {
                return TreeWalkResult::Skip;
            };
            if name.starts_with('.') {
                return TreeWalkResult::Skip;
            }
            let kind = match entry.kind() {
                Some(ObjectType::Tree) => GitEntry::Dir,
                Some(ObjectType::Commit) => GitEntry::Submodule,
                Some(ObjectType::Blob) if entry.filemode() == LINK_MODE => GitEntry::Symlink,
                Some(ObjectType::Blob) => GitEntry::File,
                _ => return TreeWalkResult::Skip,
            };
            entries.insert(format!("{dir}{name}"), (entry.id(), kind));
            TreeWalkResult::Ok
        })
        .map_err(|e| GitError::Rev {
            rev: commit.rev.clone(),
            location: self.location.clone(),
            message: format!("cannot list files: {}", e.message()),
        })?;
        Ok(GitSource {
            repo: &self.repo,
            tree: tree.id(),
            entries,
            rev: commit.rev.clone(),
        })
    }

    /// The branch's last `depth` commits, newest first (`head` itself first), following
    /// first parents: the commits a merge brought in are its own history, not the branch's.
    pub fn first_parents(&self, head: &Commit, depth: usize) -> Result<Vec<Commit>, GitError> {
        let err = |message: String| GitError::Rev {
            rev: head.rev.clone(),
            location: self.location.clone(),
            message,
        };
        let mut out = Vec::new();
        let mut next = Some(
            self.repo
                .find_commit(head.id)
                .map_err(|e| err(e.message().to_string()))?,
        );
        while let Some(c) = next.take() {
            if out.len() >= depth {
                break;
            }
            out.push(Commit {
                id: c.id(),
                rev: if out.is_empty() {
                    head.rev.clone()
                } else {
                    format!("{}~{}", head.rev, out.len())
                },
            });
            next = c.parent(0).ok();
        }
        Ok(out)
    }

    /// Paths that differ between two commits (added, deleted, modified, both sides of a rename).
    pub fn changed_paths(
        &self,
        base: &Commit,
        head: &Commit,
    ) -> Result<BTreeSet<String>, GitError> {
        let err = |message: String| GitError::Diff {
            base: base.rev.clone(),
            head: head.rev.clone(),
            message,
        };
        let tree = |c: &Commit| {
            self.repo
                .find_commit(c.id)
                .and_then(|c| c.tree())
                .map_err(|e| err(e.message().to_string()))
        };
        let (base_tree, head_tree) = (tree(base)?, tree(head)?);
        let diff = self
            .repo
            .diff_tree_to_tree(Some(&base_tree), Some(&head_tree), None)
            .map_err(|e| err(e.message().to_string()))?;
        let mut paths = BTreeSet::new();
        for delta in diff.deltas() {
            for file in [delta.old_file(), delta.new_file()] {
                if let Some(path) = file.path().and_then(|p| p.to_str()) {
                    paths.insert(path.to_string());
                }
            }
        }
        Ok(paths)
    }
}

/// Credentials for https (git's credential helpers) and ssh (the ssh agent), tried once
/// each: libgit2 asks again after a refusal, and asking forever would hang.
fn credentials() -> git2::RemoteCallbacks<'static> {
    let mut callbacks = git2::RemoteCallbacks::new();
    let mut tried = git2::CredentialType::empty();
    callbacks.credentials(move |url, username, allowed| {
        let fresh = allowed - tried;
        if fresh.contains(git2::CredentialType::SSH_KEY) {
            tried |= git2::CredentialType::SSH_KEY;
            return git2::Cred::ssh_key_from_agent(username.unwrap_or("git"));
        }
        if fresh.contains(git2::CredentialType::USER_PASS_PLAINTEXT) {
            tried |= git2::CredentialType::USER_PASS_PLAINTEXT;
            let config = git2::Config::open_default()?;
            return git2::Cred::credential_helper(&config, url, username);
        }
        if fresh.contains(git2::CredentialType::DEFAULT) {
            tried |= git2::CredentialType::DEFAULT;
            return git2::Cred::default();
        }
        Err(git2::Error::from_str(
            "no credentials accepted (tried the ssh agent and git's credential helpers)",
        ))
    });
    callbacks
}

/// Where a remote is cached: one bare repository per URL.
fn cache_path(cache_dir: &Path, url: &str) -> PathBuf {
    let hash = hex::encode(Sha256::digest(url.as_bytes()));
    let name: String = url
        .rsplit(['/', ':'])
        .find(|s| !s.is_empty())
        .unwrap_or("repo")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    cache_dir.join(format!("{name}-{}.git", &hash[..12]))
}

/// A tree entry's mode for a symlink (its blob holds the target path).
const LINK_MODE: i32 = 0o120000;

/// What a tree entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GitEntry {
    File,
    Symlink,
    Dir,
    Submodule,
}

/// A commit's tree as a config repo snapshot, read by the same rules as a working tree
/// ([`crate::config::source::read_by_rules`]): a symlink entry is followed within the tree only to a
/// regular file inside the repo, a submodule is refused, and a blob's size is checked in its
/// object header before the blob is read.
pub struct GitSource<'r> {
    repo: &'r Repository,
    tree: Oid,
    /// Path -> id and kind, for every entry (dot-files and dot-directories left out).
    entries: BTreeMap<String, (Oid, GitEntry)>,
    rev: String,
}

impl GitSource<'_> {
    /// The snapshot's files under `dir` (e.g. `accounts/`), sorted.
    pub fn files_under<'s>(&'s self, dir: &'s str) -> impl Iterator<Item = &'s str> + 's {
        self.entries
            .range(dir.to_string()..)
            .take_while(move |(path, _)| path.starts_with(dir))
            .filter(|(_, (_, kind))| *kind != GitEntry::Dir)
            .map(|(path, _)| path.as_str())
    }

    fn error(&self, path: &str, e: &git2::Error) -> SourceError {
        SourceError::Other(format!("{path} (at {}): {}", self.rev, e.message()))
    }

    /// A blob's size from its object header, without reading the blob.
    fn size(&self, path: &str, id: Oid) -> Result<u64, SourceError> {
        let odb = self.repo.odb().map_err(|e| self.error(path, &e))?;
        let (size, _) = odb.read_header(id).map_err(|e| self.error(path, &e))?;
        Ok(size as u64)
    }

    fn blob(&self, path: &str, id: Oid) -> Result<Vec<u8>, SourceError> {
        let blob = self.repo.find_blob(id).map_err(|e| self.error(path, &e))?;
        Ok(blob.content().to_vec())
    }
}

impl Tree for GitSource<'_> {
    fn entry(&self, path: &str) -> Result<Option<Entry>, SourceError> {
        let Some(&(id, kind)) = self.entries.get(path) else {
            return Ok(None);
        };
        Ok(Some(match kind {
            GitEntry::File => Entry::File,
            GitEntry::Dir => Entry::Dir,
            GitEntry::Submodule => Entry::Submodule,
            GitEntry::Symlink => {
                // The target path is the blob; one too large to be a path is not read whole.
                if let Err(refusal) = check_size(self.size(path, id)?) {
                    return Err(SourceError::Refused {
                        path: path.to_string(),
                        refusal,
                    });
                }
                Entry::Symlink(self.blob(path, id)?)
            }
        }))
    }

    fn read_file(&self, path: &str) -> Result<Result<Vec<u8>, Refusal>, SourceError> {
        let Some(&(id, GitEntry::File)) = self.entries.get(path) else {
            return Err(SourceError::NotFound {
                path: format!("{path} (at {})", self.rev),
            });
        };
        if let Err(refusal) = check_size(self.size(path, id)?) {
            return Ok(Err(refusal));
        }
        Ok(Ok(self.blob(path, id)?))
    }
}

impl std::fmt::Debug for GitSource<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitSource")
            .field("rev", &self.rev)
            .field("tree", &self.tree)
            .finish()
    }
}

impl ConfigSource for GitSource<'_> {
    fn files(&self) -> Result<Vec<String>, SourceError> {
        Ok(self
            .entries
            .iter()
            .filter(|(_, (_, kind))| *kind != GitEntry::Dir)
            .map(|(path, _)| path.clone())
            .collect())
    }

    fn read(&self, path: &str) -> Result<Vec<u8>, SourceError> {
        read_by_rules(self, path).map_err(|e| match e {
            SourceError::NotFound { path } => SourceError::NotFound {
                path: format!("{path} (at {})", self.rev),
            },
            other => other,
        })
    }
}
