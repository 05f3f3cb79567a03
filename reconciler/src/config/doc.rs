//! A manifest as loaded ([`Doc`]): its typed spec and the spanned tree it was decoded from,
//! so a check of any field can point at its line ([`spec_span`]); an [`Account`] is an
//! account manifest with its `${account.*}` values. What [`super::repo`] loads and the
//! checks of [`super::waves`] read.

use crate::config::diagnostics::Span;
use crate::config::manifest::{AccountSpec, Metadata};
use crate::config::template::Vars;
use crate::config::yaml::Node;

/// A parsed manifest: its typed form and its spec as a spanned tree.
#[derive(Debug, Clone)]
pub struct Doc<S> {
    pub path: String,
    /// Where `metadata.name` is written.
    pub name_span: Span,
    pub metadata: Metadata,
    pub spec: S,
    pub spec_node: Node,
}

#[derive(Debug, Clone)]
pub struct Account {
    pub name: String,
    pub doc: Doc<AccountSpec>,
}

impl Account {
    /// The `${account.*}` values of this account.
    pub fn vars(&self) -> Vars {
        let spec = &self.doc.spec;
        Vars::for_account(
            &self.name,
            &spec.account_id.0,
            &spec.region,
            &spec.stage,
            &spec.tenant,
            &self.doc.metadata.labels,
        )
    }
}

/// The span of `spec.<key>` of a manifest (or the spec itself).
pub fn spec_span<S>(doc: &Doc<S>, key: &str) -> Span {
    doc.spec_node
        .get(key)
        .map(|n| n.span.clone())
        .unwrap_or_else(|| doc.spec_node.span.clone())
}
