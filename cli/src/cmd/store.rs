//! `vwnet store`: maintenance of the local chunk store.

use anyhow::{Context as _, bail};
use clap::Subcommand;
use vwnet_node::catalog::Catalog;
use vwnet_node::control::client::{ConnectError, ControlClient};
use vwnet_node::control::{Request, Response};
use vwnet_node::lifetime::{GcSummary, Pins, collect};
use vwnet_protocol::time::Timestamp;

use crate::cmd::image::{human_bytes, open_store};
use crate::cmd::node::call;
use crate::context::Context;

/// Store subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum StoreCommand {
    /// Delete chunks that no pinned image uses and reclaim their space; images of expired,
    /// unpinned workspaces are released first (through the running node, if there is one).
    Gc,
    /// Show counts of images, chunks and bytes.
    Stats,
}

/// One line of a node-aware gc.
fn gc_text(s: &GcSummary) -> String {
    format!(
        "deleted {} chunks ({}), kept {}; reclaimed {}; {} expired workspace(s) released {} image(s); {} image(s) pinned again",
        s.deleted_chunks,
        human_bytes(s.deleted_bytes),
        s.kept_chunks,
        human_bytes(s.reclaimed_bytes),
        s.expired_workspaces.len(),
        s.released_images.len(),
        s.repinned_images.len()
    )
}

/// Whether a node is running with this home (its control socket answers).
fn node_running(ctx: &Context) -> anyhow::Result<bool> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let socket = ctx.home.join(vwnet_node::config::CONTROL_SOCKET);
    match runtime.block_on(ControlClient::connect(&socket)) {
        Ok(_) => Ok(true),
        Err(ConnectError::NotRunning { .. }) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Runs a store subcommand.
pub(crate) fn run(cmd: StoreCommand, ctx: &Context) -> anyhow::Result<()> {
    // A running node holds the store open and alone knows the live set: gc goes through it.
    if matches!(cmd, StoreCommand::Gc) && node_running(ctx)? {
        return match call(ctx, Request::Gc, |_| {})? {
            Response::Collected(s) => ctx.report(&s, gc_text),
            other => bail!("unexpected answer from the node: {other:?}"),
        };
    }
    let store = open_store(ctx)?;
    let db = ctx.home.join(vwnet_node::config::NODE_DB);
    if matches!(cmd, StoreCommand::Gc) && db.exists() {
        // No node running, but one has run here: apply its catalog's live set ourselves.
        let catalog = Catalog::open(&db).with_context(|| db.display().to_string())?;
        let pins = Pins::load(&ctx.home)?;
        let s = collect(&store, &catalog, &pins.all(), Timestamp::now())?;
        return ctx.report(&s, gc_text);
    }
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
