//! What every command gets: the resolved home directory and the output mode.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::Serialize;

use crate::args::Cli;

/// Resolved global options, validated once in `main`.
#[derive(Debug)]
pub(crate) struct Context {
    /// The node's data directory (it may not exist yet).
    pub(crate) home: PathBuf,
    /// Whether to print JSON instead of text.
    pub(crate) json: bool,
}

impl Context {
    /// Resolves `--home`/`VWNET_HOME`, falling back to `~/.vwnet`.
    pub(crate) fn from_args(args: &Cli) -> anyhow::Result<Self> {
        let home = match &args.home {
            Some(home) => home.clone(),
            None => std::env::var_os("HOME")
                .map(|h| Path::new(&h).join(".vwnet"))
                .context("no --home given and $HOME is not set")?,
        };
        Ok(Self {
            home,
            json: args.json,
        })
    }

    /// Creates the home directory (mode 0700) if it does not exist yet, and returns it.
    pub(crate) fn ensure_home(&self) -> anyhow::Result<&Path> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.home)
            .with_context(|| format!("{}: cannot create home directory", self.home.display()))?;
        Ok(&self.home)
    }

    /// Where this home keeps the user's signing key.
    pub(crate) fn key_path(&self) -> PathBuf {
        self.home.join("identity.key")
    }

    /// Loads the user's signing key from the home directory.
    pub(crate) fn load_identity(&self) -> anyhow::Result<vwnet_protocol::identity::Identity> {
        crate::cmd::key::read_identity(&self.key_path())
    }

    /// Prints a command's result: `value` as one JSON document with `--json`, else `human(value)`.
    pub(crate) fn report<T: Serialize>(
        &self,
        value: &T,
        human: impl FnOnce(&T) -> String,
    ) -> anyhow::Result<()> {
        if self.json {
            println!("{}", serde_json::to_string_pretty(value)?);
        } else {
            let text = human(value);
            if !text.is_empty() {
                println!("{}", text.trim_end());
            }
        }
        Ok(())
    }
}
