//! The commands that work on a config repo directory alone: `validate`, `render`,
//! `example-fleet`, `schemas`.

use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context as _, Result, bail};

use crate::cli::args::{ExampleFleetArgs, Format, RenderArgs, SchemasArgs, ValidateArgs};
use crate::cli::output;
use crate::config::diagnostics::Diagnostics;
use crate::config::example_fleet::{self, FleetParams};
use crate::{DirSource, Repo};

fn open_repo(path: &Path) -> Result<Repo> {
    if !path.is_dir() {
        bail!("{} is not a directory", path.display());
    }
    Ok(Repo::load(&DirSource::new(path)))
}

pub fn validate(args: &ValidateArgs) -> Result<ExitCode> {
    let repo = open_repo(&args.repo)?;
    let format = args.format;
    let result = crate::validate(&repo);
    match format {
        Format::Json => {
            let mut doc = Diagnostics::to_json(&result.diagnostics);
            doc["accounts"] = serde_json::json!(result.rendered.len());
            let _ = writeln!(std::io::stdout(), "{}", serde_json::to_string_pretty(&doc)?);
        }
        Format::Text if result.diagnostics.is_empty() => {
            let _ = writeln!(
                std::io::stdout(),
                "valid: {} accounts, {} overlays, {} service versions",
                result.rendered.len(),
                repo.overlays.len(),
                repo.services.len()
            );
        }
        Format::Text => output::print_diagnostics(&result.diagnostics),
    }
    Ok(if result.diagnostics.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

pub fn render(args: &RenderArgs) -> Result<ExitCode> {
    let repo = open_repo(&args.repo)?;
    let (only, out) = (&args.accounts, args.out.as_deref());
    // A repo with problems renders nothing: a bundle from a half-valid repo is not what
    // anyone reviewed.
    let mut problems = Diagnostics::new();
    problems.extend(repo.diagnostics.iter().cloned());
    let names: Vec<String> = if only.is_empty() {
        repo.account_names().map(str::to_string).collect()
    } else {
        only.to_vec()
    };
    let mut rendered = Vec::with_capacity(names.len());
    for name in &names {
        match crate::render(&repo, name) {
            // Keep the bytes to write, not the whole bundle.
            Ok(r) => rendered.push((r.account, r.digest, r.canonical)),
            Err(errs) => problems.extend(errs),
        }
    }
    if !problems.is_empty() {
        output::print_diagnostics(&problems.into_sorted());
        return Ok(ExitCode::FAILURE);
    }
    if let Some(dir) = out {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        for (account, _, canonical) in &rendered {
            let dest = dir.join(format!("{account}.json"));
            let tmp = dir.join(format!(".{account}.json.tmp"));
            std::fs::write(&tmp, canonical)
                .with_context(|| format!("cannot write {}", tmp.display()))?;
            std::fs::rename(&tmp, &dest)
                .with_context(|| format!("cannot write {}", dest.display()))?;
        }
    }
    let mut stdout = std::io::stdout().lock();
    for (account, digest, _) in &rendered {
        let _ = writeln!(stdout, "{account} {digest}");
    }
    Ok(ExitCode::SUCCESS)
}

pub fn example_fleet(args: &ExampleFleetArgs) -> Result<ExitCode> {
    let (accounts, out) = (args.accounts, &args.out);
    let src = example_fleet::generate(&FleetParams {
        accounts,
        seed: args.seed,
    });
    example_fleet::write_to(&src, out)
        .with_context(|| format!("cannot write {}", out.display()))?;
    let _ = writeln!(
        std::io::stdout(),
        "wrote a fleet of {accounts} accounts to {}",
        out.display()
    );
    Ok(ExitCode::SUCCESS)
}

pub fn schemas(args: &SchemasArgs) -> Result<ExitCode> {
    let out = &args.out;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    for (name, schema) in crate::schema::all() {
        let path = out.join(name);
        std::fs::write(&path, crate::schema::to_file_text(&schema))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}
