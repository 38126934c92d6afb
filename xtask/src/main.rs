//! Developer tasks: `cargo xtask codegen` regenerates the Kafka codec in `crates/wire`.

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
            let out = root.join("crates/wire/src/messages");
            let files = codegen::generate(&specs)?;
            if out.exists() {
                std::fs::remove_dir_all(&out).context("clearing old generated code")?;
            }
            std::fs::create_dir_all(&out)?;
            for (name, text) in &files {
                std::fs::write(out.join(name), text)?;
            }
            println!("wrote {} files to {}", files.len(), out.display());
            Ok(())
        }
        _ => bail!("usage: cargo xtask codegen [SPEC_DIR]"),
    }
}
