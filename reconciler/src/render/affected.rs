//! Which accounts a change can affect: the paths that differ between two commits, set
//! against what each account's render can read ([`input_paths`]) on either side. Pure:
//! both repos are already loaded; no account is rendered to find out.
//!
//! An account is affected when a changed path is one of its inputs at the base (it read the
//! file before) or at the head (it reads it now). That covers an account file added, deleted
//! or edited, an overlay it selects gaining or losing a file, a pinned service's spec, and
//! the base, which every account reads. `fleet.yaml` feeds no bundle (it says where bundles
//! go, not what is in them), and files fleetgate does not read (`README.md`) feed nothing.

use std::collections::{BTreeMap, BTreeSet};

use crate::config::doc::Account;
use crate::config::manifest::{GATEWAY_FILE, IDP_FILE};
use crate::config::repo::Repo;

/// The outcome: which accounts to render, and why the count is what it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Affected {
    /// Accounts (by name, at base or head) whose bundle the change can alter.
    pub accounts: BTreeSet<String>,
    /// A changed path every account reads (the base manifests): all accounts are affected.
    pub everything: bool,
}

/// Accounts of `base` or `head` that the `changed` paths can affect.
pub fn affected(base: &Repo, head: &Repo, changed: &BTreeSet<String>) -> Affected {
    let all = || -> BTreeSet<String> {
        base.accounts
            .keys()
            .chain(head.accounts.keys())
            .cloned()
            .collect()
    };
    if changed.iter().any(|p| p.starts_with("base/")) {
        return Affected {
            accounts: all(),
            everything: true,
        };
    }
    let mut accounts = BTreeSet::new();
    for repo in [base, head] {
        // name -> inputs, once per account per side; then each path is checked against all.
        let inputs: BTreeMap<&str, BTreeSet<String>> = repo
            .accounts
            .iter()
            .map(|(name, account)| (name.as_str(), input_paths(repo, account)))
            .collect();
        for (name, inputs) in &inputs {
            if changed.iter().any(|p| depends_on(inputs, p)) {
                accounts.insert((*name).to_string());
            }
        }
    }
    // An account file the loader could not read at one side (a syntax error) has no account
    // there, yet it is that account's file: keep it by path.
    for path in changed {
        if let Some(name) = path
            .strip_prefix("accounts/")
            .and_then(|f| f.strip_suffix(".yaml"))
            && (base.accounts.contains_key(name) || head.accounts.contains_key(name))
        {
            accounts.insert(name.to_string());
        }
    }
    let everything = !accounts.is_empty() && accounts == all();
    Affected {
        accounts,
        everything,
    }
}

/// Every repo path an account's render can read, worked out from the manifests alone
/// (without rendering): the account's file, the base, the directories of the overlays it
/// selects, and the directory of every service version it or those overlays pin (also a pin
/// an overlay later un-pins: more is safe, less is not). A plan uses this on both sides of a
/// change to decide which accounts to render.
pub fn input_paths(repo: &Repo, account: &Account) -> BTreeSet<String> {
    let doc = &account.doc;
    let mut inputs = BTreeSet::from([
        doc.path.clone(),
        GATEWAY_FILE.to_string(),
        IDP_FILE.to_string(),
    ]);
    let mut pin = |service: &str, version: &str| {
        inputs.insert(format!("services/{service}/{version}/"));
        if let Some(sv) = repo
            .services
            .get(&(service.to_string(), version.to_string()))
        {
            inputs.insert(sv.path.clone());
        }
    };
    for name in &doc.spec.overlays {
        for file in repo.overlays.get(name).iter().flat_map(|o| &o.files) {
            for (service, version) in &file.spec.services {
                if let Some(v) = version {
                    pin(service, v);
                }
            }
        }
    }
    for (service, version) in &doc.spec.services {
        if let Some(v) = version {
            pin(service, v);
        }
    }
    for name in &doc.spec.overlays {
        inputs.insert(format!("overlays/{name}/"));
        for file in repo.overlays.get(name).iter().flat_map(|o| &o.files) {
            inputs.insert(file.path.clone());
        }
    }
    inputs
}

/// Whether a change to `path` can change a render with these inputs (a directory input, one
/// ending in `/`, covers everything under it).
pub fn depends_on(inputs: &BTreeSet<String>, path: &str) -> bool {
    inputs.contains(path)
        || inputs
            .iter()
            .any(|i| i.ends_with('/') && path.starts_with(i.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemSource;
    use crate::config::example_fleet::example_repo;

    fn changed(paths: &[&str]) -> BTreeSet<String> {
        paths.iter().map(|p| p.to_string()).collect()
    }

    fn names(a: &Affected) -> Vec<&str> {
        a.accounts.iter().map(String::as_str).collect()
    }

    fn with(edits: &[(&str, Option<&str>)]) -> Repo {
        let mut src: MemSource = example_repo();
        for (path, content) in edits {
            match content {
                Some(c) => src.insert(path, c),
                None => {
                    src.files.remove(*path);
                }
            }
        }
        Repo::load(&src)
    }

    #[test]
    fn one_account_file_affects_that_account_only() {
        let repo = Repo::load(&example_repo());
        let a = affected(&repo, &repo, &changed(&["accounts/acme-prod.yaml"]));
        assert_eq!(names(&a), ["acme-prod"]);
        assert!(!a.everything);
    }

    #[test]
    fn the_base_affects_everyone_and_docs_affect_no_one() {
        let repo = Repo::load(&example_repo());
        let a = affected(&repo, &repo, &changed(&["base/idp.yaml"]));
        assert!(a.everything);
        assert_eq!(a.accounts.len(), repo.accounts.len());
        let a = affected(&repo, &repo, &changed(&["README.md", "fleet.yaml"]));
        assert!(a.accounts.is_empty(), "{a:?}");
    }

    #[test]
    fn overlays_and_pins_reach_the_accounts_that_use_them() {
        let repo = Repo::load(&example_repo());
        let uses = |pred: &dyn Fn(&Account) -> bool| -> Vec<&str> {
            repo.accounts
                .iter()
                .filter(|(_, a)| pred(a))
                .map(|(n, _)| n.as_str())
                .collect()
        };
        let a = affected(&repo, &repo, &changed(&["overlays/eu/new-file.yaml"]));
        assert_eq!(
            names(&a),
            uses(&|a| a.doc.spec.overlays.iter().any(|o| o == "eu"))
        );
        assert!(!a.accounts.is_empty());
        // A service version nobody pins affects nobody; a pinned one, its users.
        let a = affected(
            &repo,
            &repo,
            &changed(&["services/orders/9.9.9/openapi.yaml"]),
        );
        assert!(a.accounts.is_empty());
        // orders 2.0.0 is pinned by the enterprise overlay, not in the base.
        let a = affected(
            &repo,
            &repo,
            &changed(&["services/orders/2.0.0/openapi.yaml"]),
        );
        assert_eq!(
            names(&a),
            uses(&|a| input_paths(&repo, a).contains("services/orders/2.0.0/"))
        );
        assert!(!a.accounts.is_empty() && a.accounts.len() < repo.accounts.len());
    }

    #[test]
    fn added_and_deleted_accounts_count_on_the_side_that_has_them() {
        let base = Repo::load(&example_repo());
        let text =
            String::from_utf8(example_repo().files["accounts/acme-prod.yaml"].clone()).unwrap();
        let head = with(&[
            ("accounts/acme-prod.yaml", None),
            (
                "accounts/newco-prod.yaml",
                Some(&text.replace("acme-prod", "newco-prod").replace(
                    &base.accounts["acme-prod"].doc.spec.account_id.0,
                    "999999999999",
                )),
            ),
        ]);
        let a = affected(
            &base,
            &head,
            &changed(&["accounts/acme-prod.yaml", "accounts/newco-prod.yaml"]),
        );
        assert_eq!(names(&a), ["acme-prod", "newco-prod"]);
    }

    #[test]
    fn an_account_that_stops_selecting_an_overlay_is_affected_through_the_base() {
        // At base globex-canary selects `eu`; at head it selects nothing. The overlay's file
        // reaches it through the base side only.
        let base = Repo::load(&example_repo());
        let text =
            String::from_utf8(example_repo().files["accounts/globex-canary.yaml"].clone()).unwrap();
        assert!(text.contains("overlays: [eu]"));
        let head = with(&[(
            "accounts/globex-canary.yaml",
            Some(&text.replace("overlays: [eu]", "overlays: []")),
        )]);
        assert!(head.diagnostics.is_empty(), "{:?}", head.diagnostics);
        let a = affected(&base, &head, &changed(&["overlays/eu/region.yaml"]));
        assert!(a.accounts.contains("globex-canary"), "{a:?}");
        let a = affected(&head, &head, &changed(&["overlays/eu/region.yaml"]));
        assert!(!a.accounts.contains("globex-canary"), "{a:?}");
    }
}
