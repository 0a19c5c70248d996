//! The generated test images are realistic and reproducible, and chunking dedups them as the
//! issue's targets demand (insertion shift, in-place change, versions of one ext4 image).

use std::collections::HashSet;
use std::fs::File;
use std::io;
use std::path::Path;
use std::process::Command;

use vwnet_chunker::chunking::{ChunkerConfig, chunk_file};
use vwnet_protocol::ids::ChunkHash;
use vwnet_tests::images::{Ext4Scale, TestImages, have_tool, same_bytes};

/// (hash, length) of every chunk of a file, in order.
fn chunks(path: &Path) -> Vec<(ChunkHash, usize)> {
    let file = File::open(path).expect("open image");
    let mut out = Vec::new();
    chunk_file(&file, &ChunkerConfig::default(), 2, |c| {
        out.push((c.hash, c.data.len()));
        Ok::<(), io::Error>(())
    })
    .expect("chunk image");
    out
}

/// Chunks of `new` not present in `old`: (count, bytes).
fn new_chunks(old: &Path, new: &Path) -> (usize, usize) {
    let known: HashSet<ChunkHash> = chunks(old).into_iter().map(|c| c.0).collect();
    let mut seen = HashSet::new();
    let fresh: Vec<_> = chunks(new)
        .into_iter()
        .filter(|c| !known.contains(&c.0) && seen.insert(c.0))
        .collect();
    (fresh.len(), fresh.iter().map(|c| c.1).sum())
}

#[test]
fn insertion_of_1_kib_adds_at_most_3_chunks() -> io::Result<()> {
    let images = TestImages::new()?;
    let base = images.random("base.img", 32 << 20, 1)?;
    let shifted = images.with_insertion(&base, "shifted.img", 10 << 20, 1024, 2)?;
    let (count, bytes) = new_chunks(&base, &shifted);
    assert!(
        count <= 3,
        "{count} new chunks ({bytes} bytes) after a 1 KiB insertion"
    );
    Ok(())
}

#[test]
fn one_percent_changed_in_place_adds_at_most_3_percent() -> io::Result<()> {
    let images = TestImages::new()?;
    let len = 64u64 << 20;
    let base = images.random("base.img", len, 3)?;
    // 1% of the image in 256 KiB runs: a guest rewriting a few files. Runs much shorter than the
    // average chunk cannot meet the target (see BENCHMARKS.md).
    let changed = images.modified_in_place(&base, "changed.img", 0.01, 256 << 10, 4)?;
    assert!(!same_bytes(&base, &changed)?);
    let (_, bytes) = new_chunks(&base, &changed);
    assert!(
        (bytes as u64) <= len * 3 / 100,
        "{bytes} new bytes of {len}"
    );
    Ok(())
}

#[test]
fn ext4_versions_are_reproducible_valid_and_share_chunks() -> io::Result<()> {
    let images = TestImages::new()?;
    let Some(pair) = images.ext4_pair(Ext4Scale::Test)? else {
        return Ok(());
    };
    assert!(pair.v1_packages.len() > 5, "{:?}", pair.v1_packages);
    assert_ne!(pair.v1_packages, pair.v2_packages);
    for image in [&pair.v1, &pair.v2] {
        assert_eq!(std::fs::metadata(image)?.len(), 48 << 20);
        let fsck = Command::new("e2fsck")
            .args(["-f", "-n"])
            .arg(image)
            .output()?;
        assert!(
            fsck.status.success(),
            "e2fsck: {}",
            String::from_utf8_lossy(&fsck.stdout)
        );
    }
    // The same machine builds the same bytes again.
    let again = TestImages::new()?;
    let Some(pair2) = again.ext4_pair(Ext4Scale::Test)? else {
        return Ok(());
    };
    assert!(same_bytes(&pair.v1, &pair2.v1)?, "v1 is not reproducible");
    assert!(same_bytes(&pair.v2, &pair2.v2)?, "v2 is not reproducible");

    // v2 reuses most of v1's files, laid out elsewhere: chunks must still be shared.
    let (_, fresh) = new_chunks(&pair.v1, &pair.v2);
    let total: usize = chunks(&pair.v2).iter().map(|c| c.1).sum();
    assert!(
        fresh * 2 < total,
        "v2 shares too little with v1: {fresh} new of {total} bytes"
    );
    Ok(())
}

#[test]
fn qcow2_conversion_keeps_the_bytes() -> io::Result<()> {
    if !have_tool("qemu-img") {
        eprintln!("skipping: qemu-img is not installed");
        return Ok(());
    }
    let images = TestImages::new()?;
    let raw = images.sparse("disk.img", 200 << 20, 5)?;
    let Some(qcow) = images.qcow2(&raw, "disk.qcow2")? else {
        return Ok(());
    };
    let back = images.dir().join("back.img");
    let status = Command::new("qemu-img")
        .args(["convert", "-q", "-O", "raw"])
        .arg(&qcow)
        .arg(&back)
        .status()?;
    assert!(status.success());
    assert!(same_bytes(&raw, &back)?);
    Ok(())
}
