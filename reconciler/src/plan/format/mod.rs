//! A plan as text (terminals), markdown (PR comments) and JSON (machines, artifacts).
//! Warnings come first in every format. Nothing here sees a sensitive value: the plan was
//! made from redacted bundles.
//!
//! Most strings in a plan come from the pull request under review: names, descriptions, URLs,
//! wave names, revision names, target errors. They are data, never markup: every one goes
//! through the escaping helper of the place it is written to ([`text::term`] in text; [`markdown::md_text`],
//! [`markdown::md_html`], [`markdown::md_code`], [`markdown::md_fence`] and
//! [`markdown::md_link_dest`] in markdown), so no string can
//! change the comment's structure, hide part of it, add links, images or HTML, mention
//! people, or rewrite a terminal.

pub mod common;
pub mod invalid;
pub mod markdown;
pub mod text;

pub use common::{json, write_json};
pub use invalid::{InvalidHead, InvalidJson, invalid_json, invalid_markdown};
pub use markdown::{MARKDOWN_LIMIT, MARKDOWN_MARKER, markdown};
pub use text::text;

#[cfg(test)]
mod tests;
