//! Developer tasks: `cargo xtask codegen` regenerates the Kafka codec in `crates/wire`: the
//! messages (`messages/`) and the records of Kafka's own logs (`kafka_records/`).

mod codegen;

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    match args.first().map(String::as_str) {
        Some("codegen") => {
            let specs = args
                .get(1)
                .map(PathBuf::from)
                .unwrap_or_else(|| root.join("../shared/kafka-message-specs"));
            let record_specs = args
                .get(2)
                .map(PathBuf::from)
                .unwrap_or_else(|| root.join("../shared/kafka-record-specs"));
            write_tree(&root.join("crates/wire/src/messages"), &codegen::generate(&specs)?)?;
            write_tree(
                &root.join("crates/wire/src/kafka_records"),
                &codegen::generate_records(&record_specs)?,
            )?;
            Ok(())
        }
        _ => bail!("usage: cargo xtask codegen [MESSAGE_SPEC_DIR [RECORD_SPEC_DIR]]"),
    }
}

/// Replaces the generated tree `out` with `files` (paths relative to it).
fn write_tree(out: &Path, files: &[(String, String)]) -> Result<()> {
    if out.exists() {
        std::fs::remove_dir_all(out).context("clearing old generated code")?;
    }
    for (name, text) in files {
        let path = out.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, text)?;
    }
    println!("wrote {} files to {}", files.len(), out.display());
    Ok(())
}
