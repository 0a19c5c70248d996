//! Writes the generated test images into a directory, for benchmarks and manual runs.
//!
//! ```text
//! cargo run --release -p vwnet-tests --example mkimages -- DIR [test|bench]
//! ```
//!
//! Writes `ext4-<scale>-v1.img` and `ext4-<scale>-v2.img` (packages listed in `*.packages`),
//! `random.img` (seed 1), its copies `random-1pct-{4k,64k,1m}.img` (1% rewritten in runs of
//! that size), `random-insert.img` (1 KiB inserted at 100 MiB, or at the middle when smaller),
//! and qcow2 conversions of the ext4 images when `qemu-img` is installed.

use std::error::Error;
use std::time::Instant;

use vwnet_tests::images::{Ext4Scale, TestImages};

fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().ok_or("usage: mkimages DIR [test|bench]")?;
    let scale = match args.next().as_deref() {
        None | Some("test") => Ext4Scale::Test,
        Some("bench") => Ext4Scale::Bench,
        Some(other) => return Err(format!("unknown scale {other:?}").into()),
    };
    let images = TestImages::in_dir(&dir)?;
    let started = Instant::now();
    let Some(pair) = images.ext4_pair(scale)? else {
        return Err("mkfs.ext4 is missing".into());
    };
    std::fs::write(
        pair.v1.with_extension("packages"),
        pair.v1_packages.join("\n") + "\n",
    )?;
    std::fs::write(
        pair.v2.with_extension("packages"),
        pair.v2_packages.join("\n") + "\n",
    )?;
    println!(
        "{}\n{}\t({:.1}s)",
        pair.v1.display(),
        pair.v2.display(),
        started.elapsed().as_secs_f64()
    );
    for image in [&pair.v1, &pair.v2] {
        let name = format!(
            "{}.qcow2",
            image.file_stem().and_then(|s| s.to_str()).unwrap_or("ext4")
        );
        if let Some(q) = images.qcow2(image, &name)? {
            println!("{}", q.display());
        }
    }
    let len = std::fs::metadata(&pair.v1)?.len();
    let random = images.random("random.img", len, 1)?;
    println!("{}", random.display());
    for (label, run) in [("4k", 4u64 << 10), ("64k", 64 << 10), ("1m", 1 << 20)] {
        let p =
            images.modified_in_place(&random, &format!("random-1pct-{label}.img"), 0.01, run, 2)?;
        println!("{}", p.display());
    }
    let at = (100u64 << 20).min(len / 2);
    println!(
        "{}",
        images
            .with_insertion(&random, "random-insert.img", at, 1024, 3)?
            .display()
    );
    Ok(())
}
