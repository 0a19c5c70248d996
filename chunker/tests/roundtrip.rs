//! Round trips and dedup: what goes in comes out byte-identical, and versions share chunks.

mod common;

use std::fs;
use std::io::{Seek, SeekFrom, Write};

use common::*;
use vwnet_chunker::{IngestOptions, Store};

#[test]
fn random_image_round_trips_and_re_adding_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("store")).unwrap();
    let img = write(dir.path(), "random.img", &random_bytes(1, 24 * MIB + 12345));
    let r = ingest(&store, &img);
    assert_eq!(r.size, 24 * MIB as u64 + 12345);
    assert_eq!(r.new_bytes, r.size, "random data has no duplicate chunks");
    assert!(r.complete);
    assert_round_trip(&store, &r, &img, &dir.path().join("out.img"));

    let again = ingest(&store, &img);
    assert_eq!(again.image, r.image);
    assert_eq!((again.new_bytes, again.existing_bytes), (0, r.size));

    // The same bytes through stdin give the same image id.
    let from_stream = store
        .ingest_reader(
            fs::File::open(&img).unwrap(),
            &IngestOptions::default(),
            &mut |_, _| {},
        )
        .unwrap();
    assert_eq!(from_stream.image, r.image);
}

#[test]
fn sparse_image_round_trips_with_holes() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("store")).unwrap();
    let img = dir.path().join("sparse.img");
    {
        let mut f = fs::File::create(&img).unwrap();
        f.set_len(64 * MIB as u64).unwrap();
        for (i, at) in [0u64, 20, 41].into_iter().enumerate() {
            f.seek(SeekFrom::Start(at * MIB as u64)).unwrap();
            f.write_all(&random_bytes(10 + i as u64, MIB)).unwrap();
        }
    }
    let r = ingest(&store, &img);
    assert!(
        r.zero_bytes > 55 * MIB as u64,
        "zero bytes {}",
        r.zero_bytes
    );
    let out = dir.path().join("out.img");
    assert_round_trip(&store, &r, &img, &out);
    // 3 MiB of data plus at most one partially-zero chunk (≤ 256 KiB) on each side of each run.
    let alloc = allocated(&out);
    assert!(
        alloc <= 3 * MIB as u64 + 6 * 256 * 1024,
        "export allocates {alloc} bytes"
    );
}

#[test]
fn empty_image_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("store")).unwrap();
    let img = write(dir.path(), "empty.img", b"");
    let r = ingest(&store, &img);
    assert_eq!((r.size, r.chunks), (0, 0));
    assert_round_trip(&store, &r, &img, &dir.path().join("out.img"));
}

#[test]
fn ext4_versions_round_trip_and_dedup() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("store")).unwrap();
    let v1 = ext4_image(
        dir.path(),
        "v1",
        &["/usr/share/perl", "/usr/share/zoneinfo"],
        64,
    );
    // v2: v1 plus ~3 MiB of new files, written into the file system like an upgrade would.
    let mut added: Vec<_> = fs::read_dir("/usr/share/i18n/charmaps")
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    added.sort();
    let v2 = dir.path().join("v2.ext4");
    ext4_add_files(&v1, &v2, &added);
    let r1 = ingest(&store, &v1);
    let r2 = ingest(&store, &v2);
    assert_round_trip(&store, &r1, &v1, &dir.path().join("out1.img"));
    assert_round_trip(&store, &r2, &v2, &dir.path().join("out2.img"));
    let (d1, d2) = (r1.size - r1.zero_bytes, r2.size - r2.zero_bytes);
    eprintln!(
        "ext4 v1: {d1} data bytes; v2: {d2} data bytes, {} new, {} shared",
        r2.new_bytes, r2.existing_bytes
    );
    // Everything of v1 that v2 kept is reused: new bytes are about the added data, not the image.
    assert!(
        r2.new_bytes < (d2 - d1) * 2 + 2 * MIB as u64,
        "v2 stored {} new bytes",
        r2.new_bytes
    );
    let d = store.diff(&r1.image, &r2.image).unwrap();
    assert_eq!(d.only_b_bytes + d.shared_bytes, r2.size);
    assert!(d.shared_bytes > r2.size * 9 / 10);
}

#[test]
fn one_percent_in_place_change_stores_at_most_three_percent() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("store")).unwrap();
    let size = 64 * MIB;
    let mut data = random_bytes(2, size);
    let a = write(dir.path(), "a.img", &data);
    ingest(&store, &a);
    // 1% of the bytes, rewritten in place in four runs (like files rewritten inside a disk).
    let run = size / 100 / 4;
    for (i, at) in [3 * MIB, 17 * MIB + 4321, 40 * MIB, 61 * MIB]
        .into_iter()
        .enumerate()
    {
        data[at..at + run].copy_from_slice(&random_bytes(100 + i as u64, run));
    }
    let b = write(dir.path(), "b.img", &data);
    let r = ingest(&store, &b);
    let pct = r.new_bytes as f64 * 100.0 / size as f64;
    eprintln!(
        "1% in-place change stored {} new bytes ({pct:.2}%)",
        r.new_bytes
    );
    assert!(pct <= 3.0, "stored {pct:.2}% new bytes");
    assert_round_trip(&store, &r, &b, &dir.path().join("out.img"));
}

#[test]
fn insertion_at_100_mib_stores_at_most_three_new_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("store")).unwrap();
    let mut data = random_bytes(3, 104 * MIB);
    let a = write(dir.path(), "a.img", &data);
    ingest(&store, &a);
    let at = 100 * MIB;
    data.splice(at..at, random_bytes(4, 1024));
    let b = write(dir.path(), "b.img", &data);
    let r = ingest(&store, &b);
    eprintln!(
        "1 KiB insertion stored {} new chunks ({} bytes)",
        r.new_chunks, r.new_bytes
    );
    assert!(r.new_chunks <= 3, "{} new chunks", r.new_chunks);
    assert_round_trip(&store, &r, &b, &dir.path().join("out.img"));
}
