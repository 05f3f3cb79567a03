//! Which remote branch a local checkout stands for, fetched now. A rollback's hold must name
//! the head the watch daemon sees (the remote's), not a stale local one: a hold recorded at
//! a commit the branch has already moved past is over at once.

use git2::BranchType;

use crate::git::{Commit, GitError, GitRepo, credentials, is_url};

/// A remote branch as it is now, and where the named revision stands against it.
#[derive(Debug, Clone)]
pub struct Tracked {
    /// `origin/main`.
    pub remote_branch: String,
    /// Its tip, just fetched.
    pub tip: Commit,
    /// The named revision, resolved after the fetch.
    pub local: Commit,
    /// Commits of the remote branch the named revision lacks.
    pub behind: usize,
}

impl GitRepo {
    /// For `rev` naming the checkout (`HEAD`) or a local branch with an upstream, or a
    /// remote-tracking branch (`origin/main`): fetches that branch from its remote and says
    /// where `rev` stands against its tip. `None` for anything else (a sha, a tag, a branch
    /// with no upstream) and for a remote's cache, which is fetched when opened.
    pub fn tracked(&self, rev: &str) -> Result<Option<Tracked>, GitError> {
        if is_url(&self.location) {
            return Ok(None);
        }
        let Some((remote, branch)) = self.upstream_of(rev) else {
            return Ok(None);
        };
        let fetch_error = |message: String| GitError::Fetch {
            url: remote.clone(),
            message,
        };
        let mut handle = self
            .repo
            .find_remote(&remote)
            .map_err(|e| fetch_error(e.message().to_string()))?;
        let mut options = git2::FetchOptions::new();
        options.remote_callbacks(credentials());
        handle
            .fetch(
                &[format!(
                    "+refs/heads/{branch}:refs/remotes/{remote}/{branch}"
                )],
                Some(&mut options),
                None,
            )
            .map_err(|e| fetch_error(e.message().to_string()))?;
        let remote_branch = format!("{remote}/{branch}");
        let tip = self.resolve(&remote_branch)?;
        let local = self.resolve(rev)?;
        let (_, behind) = self
            .repo
            .graph_ahead_behind(local.id, tip.id)
            .map_err(|e| GitError::Diff {
                base: rev.to_string(),
                head: remote_branch.clone(),
                message: e.message().to_string(),
            })?;
        Ok(Some(Tracked {
            remote_branch,
            tip,
            local,
            behind,
        }))
    }

    /// The remote and branch `rev` follows: a local branch's (or the checkout's) upstream, or
    /// a remote-tracking branch itself.
    fn upstream_of(&self, rev: &str) -> Option<(String, String)> {
        let local = if rev == "HEAD" {
            let head = self.repo.head().ok()?;
            if !head.is_branch() {
                return None;
            }
            head.name().ok()?.to_string()
        } else if let Ok(b) = self.repo.find_branch(rev, BranchType::Local) {
            b.get().name().ok()?.to_string()
        } else {
            let b = self.repo.find_branch(rev, BranchType::Remote).ok()?;
            let name = b.name().ok()??;
            let (remote, branch) = name.split_once('/')?;
            return Some((remote.to_string(), branch.to_string()));
        };
        let remote = self.repo.branch_upstream_remote(&local).ok()?;
        let merge = self.repo.branch_upstream_merge(&local).ok()?;
        let branch = merge
            .as_str()
            .ok()?
            .strip_prefix("refs/heads/")?
            .to_string();
        Some((remote.as_str().ok()?.to_string(), branch))
    }
}
