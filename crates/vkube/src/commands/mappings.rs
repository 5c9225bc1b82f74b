//! `vkube mappings`: what a virtual cluster's mapping store holds (every virtual ↔ host name
//! pair its syncer made and which objects each pod uses), read from its store file; safe while
//! the cluster runs.

use std::path::{Path, PathBuf};

use anyhow::Context;
use vkube_syncer::mappings::{Mapping, PREFIX};

/// Flags of `vkube mappings`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The virtual cluster's directory (`vkube serve --dir`), or the directory of `vkube up`.
    #[arg(long, default_value = ".vkube")]
    pub dir: PathBuf,
    /// The virtual cluster's name (selects `DIR/NAME` for a `vkube up` directory).
    #[arg(long, default_value = "vc1")]
    pub name: String,
    /// Print the stored JSON documents, one per line, instead of a summary.
    #[arg(long)]
    pub json: bool,
}

/// The store file of the virtual cluster in `dir`.
fn store_file(dir: &Path, name: &str) -> anyhow::Result<PathBuf> {
    for candidate in [dir.join("store.db"), dir.join(name).join("store.db")] {
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    anyhow::bail!(
        "--dir {}: no virtual cluster store here (looked for store.db and {name}/store.db); pass the directory given to `vkube serve --dir` or `vkube up --dir`",
        dir.display()
    )
}

/// Prints the mappings.
pub fn run(args: Args) -> anyhow::Result<()> {
    let path = store_file(&args.dir, &args.name)?;
    let stored = vkube_store::read_prefix(&path, PREFIX).with_context(|| format!("reading {}", path.display()))?;
    let mut out = String::new();
    for kv in &stored {
        if args.json {
            out.push_str(&String::from_utf8_lossy(&kv.value));
            out.push('\n');
            continue;
        }
        match serde_json::from_slice::<Mapping>(&kv.value) {
            Ok(mapping) => out.push_str(&format!("{mapping}\n")),
            Err(error) => out.push_str(&format!("{} (unreadable: {error})\n", kv.key)),
        }
    }
    if !args.json {
        out.push_str(&format!("{} mappings\n", stored.len()));
    }
    use std::io::Write as _;
    let _ = std::io::stdout().write_all(out.as_bytes());
    Ok(())
}
