//! Store integrity: verification on entry, corruption on disk, crash leftovers, gc guards.

mod common;

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use common::*;
use vwnet_chunker::store::PutError;
use vwnet_chunker::{IngestOptions, Store};
use vwnet_protocol::ids::ChunkHash;

fn packs(store_dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(store_dir.join("packs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

#[test]
fn put_chunk_rejects_a_hash_mismatch_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let good = ChunkHash::of(b"hello");
    let err = store.put_chunk(good, b"hellO").unwrap_err();
    assert!(matches!(err, PutError::HashMismatch { .. }), "{err}");
    assert!(!store.has_chunk(&good).unwrap());
    assert!(matches!(
        store.put_chunk(ChunkHash::of(b""), b""),
        Err(PutError::BadLength(0))
    ));
    assert_eq!(store.stats().unwrap().chunks, 0);

    assert!(store.put_chunk(good, b"hello").unwrap());
    assert!(
        !store.put_chunk(good, b"hello").unwrap(),
        "second put is a no-op"
    );
    assert_eq!(
        store.read_chunk(&good).unwrap().as_deref(),
        Some(&b"hello"[..])
    );
    assert!(store.read_chunk(&ChunkHash::of(b"nope")).unwrap().is_none());
}

#[test]
fn corrupt_chunk_is_quarantined_reported_and_healed_by_re_adding() {
    let dir = tempfile::tempdir().unwrap();
    let sdir = dir.path().join("store");
    let store = Store::open(&sdir).unwrap();
    let img = write(dir.path(), "a.img", &random_bytes(5, 8 * MIB));
    let r = ingest(&store, &img);
    let manifest = store.manifest(&r.image).unwrap();
    let first = manifest.chunks()[0].hash;

    // Flip one byte of the first chunk on disk.
    let pack = &packs(&sdir)[0];
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(pack)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, 100).unwrap();
    f.write_all_at(&[b[0] ^ 0xff], 100).unwrap();
    drop(f);

    let report = store.verify(None, &mut |_, _| {}).unwrap();
    assert_eq!(report.corrupt.len(), 1);
    assert_eq!(report.corrupt[0].hash, first);
    assert_eq!(report.corrupt[0].images, vec![r.image]);
    let moved = report.corrupt[0].quarantined_as.clone().unwrap();
    assert!(moved.starts_with(sdir.join("quarantine")) && moved.exists());
    assert!(!report.is_clean());
    assert!(!store.image(&r.image).unwrap().complete);
    assert_eq!(store.missing(&manifest).unwrap(), vec![first]);
    assert_eq!(store.stats().unwrap().quarantined, 1);
    let out = dir.path().join("out.img");
    assert!(store.export(&r.image, &out, &mut |_, _| {}).is_err());
    assert!(!out.exists(), "a failed export writes nothing");

    // Re-adding the original heals the image.
    let again = ingest(&store, &img);
    assert_eq!((again.image, again.new_chunks), (r.image, 1));
    assert!(store.image(&r.image).unwrap().complete);
    assert!(store.verify(None, &mut |_, _| {}).unwrap().is_clean());
    assert_round_trip(&store, &r, &img, &out);
}

#[test]
fn corruption_found_by_a_read_is_quarantined_too() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let data = random_bytes(6, 1000);
    let h = ChunkHash::of(&data);
    store.put_chunk(h, &data).unwrap();
    let f = OpenOptions::new()
        .write(true)
        .open(&packs(dir.path())[0])
        .unwrap();
    f.write_all_at(b"X", 10).unwrap();
    assert!(store.read_chunk(&h).is_err());
    assert!(
        !store.has_chunk(&h).unwrap(),
        "a corrupt chunk becomes missing"
    );
}

#[test]
fn reopening_discards_uncommitted_pack_data() {
    let dir = tempfile::tempdir().unwrap();
    let data = random_bytes(7, 4 * MIB);
    let img = write(dir.path(), "a.img", &data);
    let sdir = dir.path().join("store");
    let (id, pack) = {
        let store = Store::open(&sdir).unwrap();
        let r = ingest(&store, &img);
        // What a writer killed mid-way leaves: a written-but-uncommitted chunk in a pack file.
        let mut w = store.writer();
        w.put_chunk(ChunkHash::of(b"uncommitted"), b"uncommitted")
            .unwrap();
        drop(w);
        assert_eq!(packs(&sdir).len(), 2);
        (r.image, packs(&sdir)[0].clone())
    };
    let committed_len = fs::metadata(&pack).unwrap().len();
    // Garbage past the committed end of a pack, an orphan pack and a scratch file.
    OpenOptions::new()
        .append(true)
        .open(&pack)
        .unwrap()
        .write_all(b"torn tail")
        .unwrap();
    fs::write(sdir.join("packs").join("00000000000000ff.pack"), b"orphan").unwrap();
    fs::write(sdir.join("tmp").join("leftover"), b"x").unwrap();

    let store = Store::open(&sdir).unwrap();
    assert_eq!(fs::metadata(&pack).unwrap().len(), committed_len);
    let names: Vec<_> = packs(&sdir)
        .iter()
        .map(|p| p.file_name().unwrap().to_owned())
        .collect();
    assert_eq!(
        names.len(),
        1,
        "orphan and uncommitted packs are gone: {names:?}"
    );
    assert!(fs::read_dir(sdir.join("tmp")).unwrap().next().is_none());
    assert!(!store.has_chunk(&ChunkHash::of(b"uncommitted")).unwrap());
    assert!(store.verify(None, &mut |_, _| {}).unwrap().is_clean());
    let out = dir.path().join("out.img");
    store.export(&id, &out, &mut |_, _| {}).unwrap();
    assert_eq!(fs::read(&out).unwrap(), data);
}

#[test]
fn a_second_process_cannot_open_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let _a = Store::open(dir.path()).unwrap();
    // redb's file lock is per process handle; a second open in this process must fail too.
    assert!(Store::open(dir.path()).is_err());
}

#[test]
fn gc_keeps_pinned_and_in_flight_chunks_and_deletes_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let sdir = dir.path().join("store");
    let store = Store::open(&sdir).unwrap();
    let a = write(dir.path(), "a.img", &random_bytes(8, 3 * MIB));
    let b = write(dir.path(), "b.img", &random_bytes(9, 3 * MIB));
    let ra = ingest(&store, &a);
    let rb = ingest(&store, &b);
    store.set_pinned(&rb.image, false).unwrap();

    // An in-flight pull: one chunk committed but not yet part of any image, one chunk it relies
    // on that only the unpinned image has.
    let mut pull = store.writer();
    let fresh = random_bytes(10, 5000);
    pull.put_chunk(ChunkHash::of(&fresh), &fresh).unwrap();
    pull.commit().unwrap();
    let b_manifest = store.manifest(&rb.image).unwrap();
    let b_first = b_manifest.chunks()[0];
    let b_bytes = store.read_chunk(&b_first.hash).unwrap().unwrap();
    assert!(
        !pull.put_chunk(b_first.hash, &b_bytes).unwrap(),
        "already present"
    );

    let before = store.stats().unwrap();
    let r = store.gc().unwrap();
    assert_eq!(
        r.deleted_chunks,
        rb.chunks - 1,
        "b's chunks except the one the pull uses"
    );
    assert_eq!(r.now_incomplete, vec![rb.image]);
    assert!(store.has_chunk(&ChunkHash::of(&fresh)).unwrap());
    assert!(store.has_chunk(&b_first.hash).unwrap());
    assert!(
        store
            .missing(&store.manifest(&ra.image).unwrap())
            .unwrap()
            .is_empty()
    );
    assert!(!store.image(&rb.image).unwrap().complete);

    drop(pull);
    let r2 = store.gc().unwrap();
    assert_eq!(r2.deleted_chunks, 2);
    let after = store.stats().unwrap();
    assert_eq!(after.chunks, ra.chunks);
    assert!(
        after.pack_bytes < before.pack_bytes,
        "space reclaimed: {before:?} -> {after:?}"
    );
    assert_eq!(
        after.pack_bytes, after.chunk_bytes,
        "dead bytes rewritten away"
    );
    assert_round_trip(&store, &ra, &a, &dir.path().join("out.img"));
}

#[test]
fn concurrent_ingests_and_gc_leave_every_image_complete() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("store")).unwrap();
    let shared = random_bytes(11, 2 * MIB);
    let imgs: Vec<PathBuf> = (0..3u64)
        .map(|i| {
            let mut d = shared.clone();
            d.extend(random_bytes(20 + i, MIB));
            write(dir.path(), &format!("{i}.img"), &d)
        })
        .collect();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let reports = std::thread::scope(|s| {
        let gc = s.spawn(|| {
            let mut runs = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                store.gc().unwrap();
                runs += 1;
            }
            runs
        });
        let handles: Vec<_> = imgs
            .iter()
            .map(|p| {
                let store = store.clone();
                s.spawn(move || {
                    let opts = IngestOptions {
                        threads: 1,
                        ..IngestOptions::default()
                    };
                    store.ingest_file(p, &opts, &mut |_, _| {}).unwrap()
                })
            })
            .collect();
        let reports: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(gc.join().unwrap() > 0);
        reports
    });
    for (r, p) in reports.iter().zip(&imgs) {
        assert!(r.complete);
        assert_round_trip(&store, r, p, &dir.path().join("out.img"));
    }
    assert!(store.verify(None, &mut |_, _| {}).unwrap().is_clean());
}

#[test]
fn store_is_send_sync_and_writers_are_send() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<Store>();
    send::<vwnet_chunker::store::ChunkWriter>();
}
