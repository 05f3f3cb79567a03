//! The seam between the operations and git: what they ask of a config repo's history
//! ([`History`]). [`GitRepo`] answers from a real repository; [`MemHistory`] from commits
//! held in memory, so drift, rollback and plan logic run in unit tests without a repository
//! or a process.

use std::collections::{BTreeMap, BTreeSet};

use git2::Oid;

use crate::config::source::{ConfigSource, MemSource};
use crate::git::{Commit, GitError, GitRepo};

/// A config repo's history, as the operations read it.
pub trait History {
    /// For messages and plans: the path or URL given.
    fn location(&self) -> &str;
    /// A revision (branch, tag, sha, `HEAD~1`, `origin/main`) to its commit.
    fn resolve(&self, rev: &str) -> Result<Commit, GitError>;
    /// A commit's subject line, when the repo has the commit.
    fn summary(&self, commit: &str) -> Option<String>;
    /// Whether `commit` is `ancestor` or descends from it.
    fn is_descendant(&self, commit: &str, ancestor: &str) -> bool;
    /// The files of a commit, read by the same rules as a working tree.
    fn snapshot(&self, commit: &Commit) -> Result<Box<dyn ConfigSource + '_>, GitError>;
    /// A commit's files under `dir` (e.g. `accounts/`), sorted.
    fn files_under(&self, commit: &Commit, dir: &str) -> Result<Vec<String>, GitError>;
    /// `head` and its first parents, newest first, at most `depth`.
    fn first_parents(&self, head: &Commit, depth: usize) -> Result<Vec<Commit>, GitError>;
    /// Paths that differ between two commits.
    fn changed_paths(&self, base: &Commit, head: &Commit) -> Result<BTreeSet<String>, GitError>;
}

impl History for GitRepo {
    fn location(&self) -> &str {
        GitRepo::location(self)
    }

    fn resolve(&self, rev: &str) -> Result<Commit, GitError> {
        GitRepo::resolve(self, rev)
    }

    fn summary(&self, commit: &str) -> Option<String> {
        GitRepo::summary(self, commit)
    }

    fn is_descendant(&self, commit: &str, ancestor: &str) -> bool {
        GitRepo::is_descendant(self, commit, ancestor)
    }

    fn snapshot(&self, commit: &Commit) -> Result<Box<dyn ConfigSource + '_>, GitError> {
        Ok(Box::new(GitRepo::snapshot(self, commit)?))
    }

    fn files_under(&self, commit: &Commit, dir: &str) -> Result<Vec<String>, GitError> {
        let snapshot = GitRepo::snapshot(self, commit)?;
        Ok(snapshot.files_under(dir).map(str::to_string).collect())
    }

    fn first_parents(&self, head: &Commit, depth: usize) -> Result<Vec<Commit>, GitError> {
        GitRepo::first_parents(self, head, depth)
    }

    fn changed_paths(&self, base: &Commit, head: &Commit) -> Result<BTreeSet<String>, GitError> {
        GitRepo::changed_paths(self, base, head)
    }
}

/// A linear history held in memory: commit `i` has the id `i+1` (as 40 hex digits) and
/// commit `i-1` as its parent. `rev` resolves commit ids, `HEAD` (the newest) and `HEAD~n`.
#[derive(Debug, Default)]
pub struct MemHistory {
    commits: Vec<(String, MemSource)>,
}

impl MemHistory {
    /// Adds a commit on top; returns it.
    pub fn commit(&mut self, subject: &str, files: MemSource) -> Commit {
        self.commits.push((subject.to_string(), files));
        self.at(self.commits.len() - 1, &format!("{}", self.commits.len()))
    }

    fn id(i: usize) -> Oid {
        // An id of 40 hex digits always parses.
        Oid::from_str(&format!("{:040x}", i + 1)).unwrap_or(Oid::ZERO_SHA1)
    }

    fn at(&self, i: usize, rev: &str) -> Commit {
        Commit {
            id: MemHistory::id(i),
            rev: rev.to_string(),
        }
    }

    fn index(&self, commit: &str) -> Option<usize> {
        (0..self.commits.len()).find(|&i| MemHistory::id(i).to_string() == commit)
    }

    fn files(&self, commit: &Commit) -> Result<&MemSource, GitError> {
        self.index(&commit.id.to_string())
            .map(|i| &self.commits[i].1)
            .ok_or_else(|| GitError::Rev {
                rev: commit.rev.clone(),
                location: "memory".into(),
                message: "no such commit".into(),
            })
    }
}

impl History for MemHistory {
    fn location(&self) -> &str {
        "memory"
    }

    fn resolve(&self, rev: &str) -> Result<Commit, GitError> {
        let newest = self.commits.len().checked_sub(1);
        let back = match rev {
            "HEAD" => Some(0),
            _ => rev
                .strip_prefix("HEAD~")
                .and_then(|n| n.parse::<usize>().ok()),
        };
        let found = match back {
            Some(n) => newest.and_then(|i| i.checked_sub(n)),
            None => self.index(rev),
        };
        found.map(|i| self.at(i, rev)).ok_or_else(|| GitError::Rev {
            rev: rev.to_string(),
            location: "memory".into(),
            message: "no such revision".into(),
        })
    }

    fn summary(&self, commit: &str) -> Option<String> {
        self.index(commit).map(|i| self.commits[i].0.clone())
    }

    fn is_descendant(&self, commit: &str, ancestor: &str) -> bool {
        matches!((self.index(commit), self.index(ancestor)), (Some(c), Some(a)) if c >= a)
    }

    fn snapshot(&self, commit: &Commit) -> Result<Box<dyn ConfigSource + '_>, GitError> {
        Ok(Box::new(self.files(commit)?.clone()))
    }

    fn files_under(&self, commit: &Commit, dir: &str) -> Result<Vec<String>, GitError> {
        Ok(self
            .files(commit)?
            .files
            .keys()
            .filter(|p| p.starts_with(dir))
            .cloned()
            .collect())
    }

    fn first_parents(&self, head: &Commit, depth: usize) -> Result<Vec<Commit>, GitError> {
        let top = self
            .index(&head.id.to_string())
            .ok_or_else(|| GitError::Rev {
                rev: head.rev.clone(),
                location: "memory".into(),
                message: "no such commit".into(),
            })?;
        Ok((0..=top)
            .rev()
            .take(depth)
            .map(|i| self.at(i, &MemHistory::id(i).to_string()))
            .collect())
    }

    fn changed_paths(&self, base: &Commit, head: &Commit) -> Result<BTreeSet<String>, GitError> {
        let (a, b) = (&self.files(base)?.files, &self.files(head)?.files);
        let all: BTreeMap<&String, ()> = a.keys().chain(b.keys()).map(|k| (k, ())).collect();
        Ok(all
            .into_keys()
            .filter(|k| a.get(*k) != b.get(*k))
            .cloned()
            .collect())
    }
}
