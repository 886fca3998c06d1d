//! `wasmfn artifact pack|unpack`: the ConfigMap store's packed form, by hand. `pack` writes the
//! directory a projected volume of the artifact's ConfigMaps gives a pod (manifest + parts);
//! `unpack` reads such a directory back, verifying every digest.

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::{Args, Subcommand};
use wasmfn_artifact::{ArtifactManifest, DEFAULT_PART_BYTES, MANIFEST_FILE, WASM_MEDIA_TYPE};

use crate::options::parse_size;

#[derive(Debug, Subcommand)]
pub(crate) enum ArtifactCommand {
    /// Pack a module into a directory: artifact.json plus gzip parts of at most --part-bytes.
    Pack(PackArgs),
    /// Unpack (and verify) a packed directory or its artifact.json into a module file.
    Unpack(UnpackArgs),
}

#[derive(Debug, Args)]
pub(crate) struct PackArgs {
    /// The module (or script) to pack.
    module: PathBuf,
    /// Directory to write (created; existing files of the same names are replaced).
    #[arg(short, long)]
    output: PathBuf,
    /// Largest part, compressed (e.g. 900Ki, the default).
    #[arg(long, value_parser = parse_size)]
    part_bytes: Option<u64>,
    /// Media type recorded in the manifest.
    #[arg(long, default_value = WASM_MEDIA_TYPE)]
    media_type: String,
}

#[derive(Debug, Args)]
pub(crate) struct UnpackArgs {
    /// The packed directory, or its artifact.json.
    artifact: PathBuf,
    /// Module file to write.
    #[arg(short, long)]
    output: PathBuf,
}

pub(crate) fn artifact(command: ArtifactCommand) -> Result<i32> {
    match command {
        ArtifactCommand::Pack(args) => pack(args),
        ArtifactCommand::Unpack(args) => unpack(args),
    }
}

fn pack(args: PackArgs) -> Result<i32> {
    let module = std::fs::read(&args.module)
        .with_context(|| format!("reading {}", args.module.display()))?;
    let part_bytes = args.part_bytes.map_or(DEFAULT_PART_BYTES, |n| {
        usize::try_from(n).unwrap_or(usize::MAX)
    });
    let packed = wasmfn_artifact::pack(&module, &args.media_type, part_bytes);
    packed.write_dir(&args.output)?;
    eprintln!(
        "wasmfn: packed {} into {}/{MANIFEST_FILE} + {}",
        args.module.display(),
        args.output.display(),
        summary(&packed.manifest)
    );
    Ok(0)
}

fn unpack(args: UnpackArgs) -> Result<i32> {
    let (manifest, module) = wasmfn_artifact::read(&args.artifact)
        .with_context(|| format!("reading the artifact {}", args.artifact.display()))?;
    std::fs::write(&args.output, module)
        .with_context(|| format!("writing {}", args.output.display()))?;
    eprintln!(
        "wasmfn: unpacked {} ({}) to {}",
        args.artifact.display(),
        summary(&manifest),
        args.output.display()
    );
    Ok(0)
}

fn summary(manifest: &ArtifactManifest) -> String {
    format!(
        "{} part(s), {} bytes stored, module {} bytes {}",
        manifest.parts.len(),
        manifest.compressed_size,
        manifest.size,
        manifest.digest
    )
}
