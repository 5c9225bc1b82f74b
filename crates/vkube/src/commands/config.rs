//! `vkube config`: validate a vcluster.yaml, print the defaults, the JSON Schema or the host RBAC.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use vkube_config::Config;

/// `vkube config ...`
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Check a vcluster.yaml; prints every problem with its field path and exits 1 if there is any.
    Validate {
        /// The file to check (`-` for standard input).
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
    },
    /// Print the fully defaulted configuration as YAML.
    Defaults,
    /// Print the JSON Schema of vcluster.yaml (for editors and CI checks).
    Schema,
    /// Print the Role and ClusterRole the syncer needs on the host for a configuration.
    Rbac {
        /// The configuration (`-` for standard input); the defaults when omitted.
        #[arg(short = 'f', long = "file")]
        file: Option<PathBuf>,
    },
}

fn read(path: &Path) -> anyhow::Result<String> {
    if path == Path::new("-") {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text).context("reading standard input")?;
        Ok(text)
    } else {
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
    }
}

/// Loads and validates a config file, turning problems into one error listing them all.
pub fn load(path: &Path) -> anyhow::Result<Config> {
    let text = read(path)?;
    Config::from_yaml(&text).map_err(|problems| anyhow::anyhow!("{}: {problems}", path.display()))
}

/// Writes to stdout; a reader that went away (`| head`) is not an error.
fn emit(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

/// Runs one `vkube config` command.
pub fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Validate { file } => {
            let text = read(&file)?;
            match Config::from_yaml(&text) {
                Ok(_) => emit(&format!("{}: valid\n", file.display())),
                Err(problems) => {
                    let lines: String = problems.0.iter().map(|p| format!("{p}\n")).collect();
                    emit(&lines)?;
                    bail!("{}: {} problem(s)", file.display(), problems.0.len())
                }
            }
        }
        Command::Defaults => emit(&Config::default().to_yaml()),
        Command::Schema => emit(&format!("{}\n", serde_json::to_string_pretty(&vkube_config::json_schema())?)),
        Command::Rbac { file } => {
            let config = match file {
                Some(file) => load(&file)?,
                None => Config::default(),
            };
            let mut text = String::new();
            for manifest in vkube_config::rbac::manifests(&config) {
                text.push_str("---\n");
                text.push_str(&serde_saphyr::to_string(&manifest)?);
            }
            emit(&text)
        }
    }
}
