//! `dac build`: YAML and Sigma rules as rule components.

use crate::args::environment_help;
use crate::builder::{self, MappingFile};
use std::path::{Path, PathBuf};

/// Builds YAML and Sigma rules into rule components.
///
/// Each rule is first checked as dac-run loads it: a broken rule is reported
/// as FILE:LINE: WHERE: WHAT and nothing is written. It is then written, as
/// data, into a copy of dac's prebuilt matcher component. The result is an
/// ordinary rule component, run in the sandbox like a Rust rule by dac-run,
/// dac watch and dac test: its metadata (name, uuid, version, severity,
/// description, tags) is the rule's, its prefilter is derived from the
/// rule's literals, and it alerts exactly as the rule file does.
///
/// Do not deploy a rule both as NAME.yaml and as the NAME.wasm built from
/// it: the two share a uuid and the second is refused.
#[derive(Debug, clap::Args)]
#[command(
    after_help = concat!(
        "Output:\n  one rule file      -o FILE (default: NAME.wasm in the current directory; an existing directory: DIR/NAME.wasm)\n  several, or a DIR  -o DIR  (default: the current directory; created if missing), one NAME.wasm per rule\n  Files are written aside and renamed in, so dac watch never reads half a component.\n\nExample:\n  dac build rules/shadow.yaml -o shadow.wasm\n  dac run shadow.wasm --replay logs.json\n\nLimits: a rule's text (with its --sigma-mapping) may take up to 128 KiB.\nExit status: 0 built; 2 a rule did not build (nothing was written), or a usage error.\n\n",
        environment_help!()
    )
)]
pub struct BuildArgs {
    /// Rule files (.yml/.yaml: the seed's YAML or Sigma) or directories of
    /// them (their .yml/.yaml files, not recursively).
    #[arg(value_name = "RULE", required = true)]
    rules: Vec<PathBuf>,

    /// The component to write (one rule file), or the directory to write
    /// one NAME.wasm per rule into.
    #[arg(short, long, value_name = "PATH")]
    output: Option<PathBuf>,

    /// How Sigma rules' fields map to event fields: a TOML file, as for
    /// dac-run and dac watch; it is built into each Sigma rule's component.
    /// Default: SigmaHQ's Linux process_creation fields onto dac's exec
    /// event.
    #[arg(long, value_name = "FILE")]
    sigma_mapping: Option<PathBuf>,
}

pub fn run(args: BuildArgs) -> Result<(), String> {
    builder::template().map_err(|err| err.to_string())?;
    let mut files = Vec::new();
    let mut single = args.rules.len() == 1;
    for path in &args.rules {
        if path.is_dir() {
            single = false;
            let mut found: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|err| format!("{}: {err}", path.display()))?
                .filter_map(|entry| entry.ok().map(|e| e.path()))
                .filter(|p| dac_detect::is_rule_file(p) && p.is_file())
                .collect();
            if found.is_empty() {
                return Err(format!("{}: no .yml or .yaml rule files in this directory", path.display()));
            }
            found.sort();
            files.extend(found);
        } else if !path.exists() {
            return Err(format!("{}: no such file or directory", path.display()));
        } else if !dac_detect::is_rule_file(path) {
            return Err(format!("{}: not a YAML or Sigma rule file (.yml, .yaml)", path.display()));
        } else {
            files.push(path.clone());
        }
    }
    let file_name = |rule: &Path| {
        let stem = rule.file_stem().map_or_else(|| "rule".into(), |s| s.to_string_lossy().into_owned());
        format!("{stem}.wasm")
    };
    let outputs: Vec<PathBuf> = match (&args.output, single) {
        // `-o out/` names a directory even before it exists.
        (Some(out), true) if !out.is_dir() && !out.as_os_str().to_string_lossy().ends_with('/') => vec![out.clone()],
        (out, _) => {
            let dir = out.clone().unwrap_or_else(|| PathBuf::from("."));
            if dir.exists() && !dir.is_dir() {
                return Err(format!("-o {}: not a directory (several rules are built into one)", dir.display()));
            }
            files.iter().map(|f| dir.join(file_name(f))).collect()
        }
    };
    for (i, out) in outputs.iter().enumerate() {
        if let Some(j) = outputs[..i].iter().position(|o| o == out) {
            return Err(format!(
                "{} and {} would both be built into {}",
                files[j].display(),
                files[i].display(),
                out.display()
            ));
        }
    }
    let mapping = match &args.sigma_mapping {
        Some(path) => Some(MappingFile::read(path).map_err(|err| format!("--sigma-mapping {err}"))?),
        None => None,
    };

    let mut built: Vec<(&PathBuf, builder::Built)> = Vec::new();
    let mut errors = Vec::new();
    for file in &files {
        let result = std::fs::read(file)
            .map_err(|err| format!("{}: {err}", file.display()))
            .and_then(|bytes| builder::build(file, &bytes, mapping.as_ref()).map_err(|err| err.to_string()));
        match result {
            Ok(rule) => {
                if let Some((other, _)) = built.iter().find(|(_, b)| b.uuid == rule.uuid) {
                    errors.push(format!("{} and {} both declare uuid {}", other.display(), file.display(), rule.uuid));
                }
                built.push((file, rule));
            }
            Err(message) => errors.push(message),
        }
    }
    if !errors.is_empty() {
        let list: Vec<String> = errors.iter().map(|e| format!("  {e}")).collect();
        return Err(format!("{} rule file(s) did not build; nothing was written:\n{}", errors.len(), list.join("\n")));
    }
    for ((file, rule), out) in built.iter().zip(&outputs) {
        for note in &rule.notes {
            eprintln!("dac build: note: {note}");
        }
        write_aside(out, &rule.component).map_err(|err| format!("{}: {err}", out.display()))?;
        eprintln!(
            "built {} from {} ({}, uuid {}, {} KiB)",
            out.display(),
            file.display(),
            rule.name,
            rule.uuid,
            rule.component.len().div_ceil(1024)
        );
    }
    Ok(())
}

/// Writes `bytes` to a temporary file beside `path` and renames it in.
fn write_aside(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir)?;
    let mut file = tempfile::Builder::new().prefix(".dac-build-").suffix(".tmp").tempfile_in(&dir)?;
    std::io::Write::write_all(&mut file, bytes)?;
    // A temporary file is private (0600); a rule is not a secret.
    #[cfg(unix)]
    std::fs::set_permissions(file.path(), std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
    file.persist(path).map_err(|err| err.error)?;
    Ok(())
}
