//! Compares the two chunk-body layouts the store could use, on the chunks of one image file:
//! one file per chunk (sharded by hash prefix, temp + rename, one `syncfs` at the end) versus
//! appending to a pack file (one fsync at the end). Numbers go into `chunker/DESIGN.md`.
//!
//! `cargo run --release -p vwnet-chunker --example layout_bench -- IMAGE SCRATCH_DIR`
#![allow(clippy::print_stdout)]

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use vwnet_chunker::chunking::{ChunkerConfig, chunk_file};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(image), Some(scratch)) = (args.get(1), args.get(2)) else {
        return Err("usage: layout_bench IMAGE SCRATCH_DIR".into());
    };
    let scratch = Path::new(scratch);
    let cfg = ChunkerConfig::default();
    let file = File::open(image)?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());

    // Files: <scratch>/files/<2 hex>/<64 hex>, written via a temp name and renamed.
    let files_dir = scratch.join("files");
    fs::create_dir_all(&files_dir)?;
    let t = Instant::now();
    let mut n = 0u64;
    let mut bytes = 0u64;
    chunk_file(&file, &cfg, threads, |c| -> std::io::Result<()> {
        if c.is_zero {
            return Ok(());
        }
        let name = c.hash.to_string();
        let shard = files_dir.join(&name[..2]);
        fs::create_dir_all(&shard)?;
        let tmp = shard.join(format!("{name}.tmp"));
        fs::write(&tmp, c.data)?;
        fs::rename(&tmp, shard.join(&name))?;
        n += 1;
        bytes += c.data.len() as u64;
        Ok(())
    })?;
    let written = t.elapsed();
    let st = Command::new("sync").arg("-f").arg(&files_dir).status()?;
    if !st.success() {
        return Err("sync -f failed".into());
    }
    let files_total = t.elapsed();

    // Pack: one append-only file, one fsync.
    let pack_path = scratch.join("bench.pack");
    let mut pack = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&pack_path)?;
    let t = Instant::now();
    chunk_file(&file, &cfg, threads, |c| -> std::io::Result<()> {
        if !c.is_zero {
            pack.write_all(c.data)?;
        }
        Ok(())
    })?;
    let pack_written = t.elapsed();
    pack.sync_data()?;
    let pack_total = t.elapsed();

    let mb = bytes as f64 / 1e6;
    println!("chunks: {n}, bytes: {bytes}");
    println!(
        "files (shard/temp+rename, syncfs): write {:.2}s, total {:.2}s = {:.0} MB/s",
        written.as_secs_f64(),
        files_total.as_secs_f64(),
        mb / files_total.as_secs_f64()
    );
    println!(
        "pack (append, one fsync):          write {:.2}s, total {:.2}s = {:.0} MB/s",
        pack_written.as_secs_f64(),
        pack_total.as_secs_f64(),
        mb / pack_total.as_secs_f64()
    );
    let t = Instant::now();
    fs::remove_dir_all(&files_dir)?;
    println!(
        "deleting the chunk files: {:.2}s",
        t.elapsed().as_secs_f64()
    );
    fs::remove_file(&pack_path)?;
    Ok(())
}
