//! Embeds config-repo-example/ into the binary, so `fleetgate example-fleet` (and the local
//! loop) work from an installed binary, not only from a checkout.

// Debug formatting of a str is exactly a Rust string literal, which is what is generated here.
#![allow(clippy::use_debug)]

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets this"));
    let example = manifest_dir.join("../config-repo-example");
    println!("cargo:rerun-if-changed={}", example.display());
    let mut files = Vec::new();
    collect(&example, &example, &mut files);
    files.sort();
    let mut out = String::from(
        "/// (path in the example repo, contents)\npub static FILES: &[(&str, &str)] = &[\n",
    );
    for (rel, abs) in &files {
        println!("cargo:rerun-if-changed={}", abs.display());
        writeln!(
            out,
            "    ({rel:?}, include_str!({:?})),",
            abs.display().to_string()
        )
        .expect("writing to a String");
    }
    out.push_str("];\n");
    let dest =
        PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets this")).join("example_files.rs");
    std::fs::write(dest, out).expect("OUT_DIR is writable");
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<(String, PathBuf)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        if path.is_dir() {
            println!("cargo:rerun-if-changed={}", path.display());
            collect(root, &path, out);
        } else {
            let rel = path
                .strip_prefix(root)
                .expect("under root")
                .to_string_lossy()
                .replace('\\', "/");
            out.push((rel, path.canonicalize().unwrap_or(path)));
        }
    }
}
