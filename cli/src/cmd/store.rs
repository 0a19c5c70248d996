//! `vwnet store`: maintenance of the local chunk store.

use clap::Subcommand;

use crate::cmd::image::{human_bytes, open_store};
use crate::context::Context;

/// Store subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum StoreCommand {
    /// Delete chunks that no pinned image uses and reclaim their space.
    Gc,
    /// Show counts of images, chunks and bytes.
    Stats,
}

/// Runs a store subcommand.
pub(crate) fn run(cmd: StoreCommand, ctx: &Context) -> anyhow::Result<()> {
    let store = open_store(ctx)?;
    match cmd {
        StoreCommand::Gc => {
            let r = store.gc()?;
            ctx.report(&r, |r| {
                format!(
                    "deleted {} chunks ({}), kept {}; packs deleted {}, rewritten {}; reclaimed {}",
                    r.deleted_chunks,
                    human_bytes(r.deleted_bytes),
                    r.kept_chunks,
                    r.packs_deleted,
                    r.packs_rewritten,
                    human_bytes(r.reclaimed_bytes)
                )
            })
        }
        StoreCommand::Stats => {
            let s = store.stats()?;
            ctx.report(&s, |s| {
                format!(
                    "images: {} ({} complete, {} pinned), {} logical\nchunks: {} ({})\npacks: {} ({})\nquarantined: {}",
                    s.images,
                    s.complete_images,
                    s.pinned_images,
                    human_bytes(s.logical_bytes),
                    s.chunks,
                    human_bytes(s.chunk_bytes),
                    s.pack_files,
                    human_bytes(s.pack_bytes),
                    s.quarantined
                )
            })
        }
    }
}
