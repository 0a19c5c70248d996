//! `vwnet key`: create and show this home's ed25519 signing key.

use anyhow::Context as _;
use clap::Subcommand;
use serde::Serialize;
use vwnet_protocol::identity::Identity;

use crate::context::Context;
use crate::fsutil;

/// Key subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum KeyCommand {
    /// Create a new signing key in the home directory.
    New {
        /// Replace an existing key (everything it signed stays verifiable by its public key).
        #[arg(long)]
        force: bool,
    },
    /// Show the public identity of this home's key.
    Show,
}

/// What `key new` and `key show` print.
#[derive(Serialize)]
struct KeyInfo {
    identity: String,
    short: String,
    file: String,
}

/// Runs a key subcommand.
pub(crate) fn run(cmd: KeyCommand, ctx: &Context) -> anyhow::Result<()> {
    let identity = match cmd {
        KeyCommand::New { force } => {
            let path = ctx.key_path();
            fsutil::check_overwrite(&path, force)?;
            ctx.ensure_home()?;
            let identity = Identity::generate();
            fsutil::write_atomic(&path, identity.to_key_file().as_bytes(), 0o600)?;
            identity
        }
        KeyCommand::Show => ctx.load_identity()?,
    };
    let public = identity.public();
    let info = KeyInfo {
        identity: public.to_string(),
        short: public.short(),
        file: ctx.key_path().display().to_string(),
    };
    ctx.report(&info, |i| format!("{}\n(key file: {})", i.identity, i.file))
}

/// Reads the key file at `path`.
pub(crate) fn read_identity(path: &std::path::Path) -> anyhow::Result<Identity> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "{}: cannot read the key (create one with `vwnet key new`)",
            path.display()
        )
    })?;
    Identity::from_key_file(&text).with_context(|| path.display().to_string())
}
