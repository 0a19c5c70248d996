//! Unit tests that look at the downloader's internals after each step.

use super::*;
use vwnet_protocol::ids::ChunkHash;

const MS: Duration = Duration::from_millis(1);

fn table(n: u32, len: u32) -> Arc<ChunkTable> {
    let chunks = (0..n).map(|i| {
        let mut b = [0u8; 32];
        b[..4].copy_from_slice(&i.to_le_bytes());
        (ChunkHash::from_bytes(b), len)
    });
    Arc::new(ChunkTable::new(chunks).unwrap())
}

fn config() -> ConfigBuilder {
    Config::builder()
        .max_request_bytes(4 * 1024)
        .max_request_chunks(4)
        .max_requests_per_peer(2)
        .max_bytes_per_peer(8 * 1024)
        .max_bytes_in_flight(64 * 1024)
        .request_timeout(Duration::from_secs(1))
        .backoff(Duration::from_secs(1), Duration::from_secs(8))
}

fn drain(d: &mut Downloader<u32>, now: Duration) -> Vec<Action<u32>> {
    let mut out = Vec::new();
    while let Some(a) = d.poll(now) {
        d.check();
        out.push(a);
    }
    d.check();
    out
}

fn requests(actions: &[Action<u32>]) -> Vec<(u32, RequestId, Vec<ChunkIdx>)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Request {
                peer, id, chunks, ..
            } => Some((*peer, *id, chunks.clone())),
            _ => None,
        })
        .collect()
}

fn ok(chunks: &[ChunkIdx]) -> Vec<(ChunkIdx, ChunkOutcome)> {
    chunks
        .iter()
        .map(|&c| (c, ChunkOutcome::Verified))
        .collect()
}

#[test]
fn local_chunks_are_not_requested_and_empty_download_completes() {
    let cat = table(8, 1024);
    let mut d =
        Downloader::new(config().build().unwrap(), cat.clone(), (0..8).map(ChunkIdx)).unwrap();
    assert_eq!(drain(&mut d, Duration::ZERO), vec![Action::Complete]);
    assert_eq!(d.stats().bytes_local, 8 * 1024);

    let mut d =
        Downloader::new(config().build().unwrap(), cat, [ChunkIdx(0), ChunkIdx(5)]).unwrap();
    d.add_peer(Duration::ZERO, 1, Holds::Everything).unwrap();
    let reqs = requests(&drain(&mut d, Duration::ZERO));
    let asked: Vec<u32> = reqs.iter().flat_map(|r| r.2.iter().map(|c| c.0)).collect();
    assert!(!asked.contains(&0) && !asked.contains(&5));
}

#[test]
fn limits_and_batches_hold() {
    let mut d = Downloader::new(config().build().unwrap(), table(100, 1024), []).unwrap();
    d.add_peer(Duration::ZERO, 1, Holds::Everything).unwrap();
    let reqs = requests(&drain(&mut d, Duration::ZERO));
    // Two requests of four 1 KiB chunks: the per-peer request limit binds.
    assert_eq!(reqs.len(), 2);
    assert!(reqs.iter().all(|r| r.2.len() == 4));
    assert_eq!(d.in_flight(&1), Some((2, 8 * 1024)));
    // Runs of consecutive chunks are kept together.
    for r in &reqs {
        assert!(r.2.windows(2).all(|w| w[1].0 == w[0].0 + 1), "{:?}", r.2);
    }
}

#[test]
fn rarest_chunk_goes_first() {
    let mut d = Downloader::new(config().build().unwrap(), table(40, 1024), []).unwrap();
    d.add_peer(Duration::ZERO, 1, Holds::Nothing).unwrap();
    d.add_peer(Duration::ZERO, 2, Holds::Nothing).unwrap();
    d.peer_has(Duration::ZERO, &1, (0..40).map(ChunkIdx));
    d.peer_has(
        Duration::ZERO,
        &2,
        (0..40).filter(|&c| c != 17).map(ChunkIdx),
    );
    let reqs = requests(&drain(&mut d, Duration::ZERO));
    let first_to_1 = reqs.iter().find(|r| r.0 == 1).unwrap();
    assert_eq!(first_to_1.2[0], ChunkIdx(17), "{reqs:?}");
}

#[test]
fn missing_marks_peer_and_requeues() {
    let mut d = Downloader::new(config().build().unwrap(), table(4, 1024), []).unwrap();
    d.add_peer(Duration::ZERO, 1, Holds::Everything).unwrap();
    let reqs = requests(&drain(&mut d, Duration::ZERO));
    assert_eq!(reqs.len(), 1);
    let (_, id, chunks) = &reqs[0];
    let mut outcomes = ok(chunks);
    outcomes[2].1 = ChunkOutcome::Missing;
    let lost = outcomes[2].0;
    d.on_response(MS, &1, *id, outcomes);
    d.check();
    assert_eq!(d.holders(lost), 0);
    let acts = drain(&mut d, MS);
    assert_eq!(
        acts,
        vec![Action::Stalled {
            unavailable: vec![lost]
        }]
    );
    d.add_peer(MS, 2, Holds::Everything).unwrap();
    let reqs = requests(&drain(&mut d, MS));
    assert_eq!(reqs, vec![(2, reqs[0].1, vec![lost])]);
    d.on_response(2 * MS, &2, reqs[0].1, ok(&[lost]));
    assert_eq!(drain(&mut d, 2 * MS), vec![Action::Complete]);
}

#[test]
fn timeout_backs_off_exponentially() {
    let mut d = Downloader::new(config().build().unwrap(), table(4, 1024), []).unwrap();
    d.add_peer(Duration::ZERO, 1, Holds::Everything).unwrap();
    let reqs = requests(&drain(&mut d, Duration::ZERO));
    assert_eq!(d.next_deadline(), Some(Duration::from_secs(1)));
    let t1 = Duration::from_secs(1);
    let acts = drain(&mut d, t1);
    assert_eq!(
        acts,
        vec![Action::Cancel {
            peer: 1,
            id: reqs[0].1
        }]
    );
    // Backing off for 1 s: nothing until 2 s.
    assert_eq!(d.next_deadline(), Some(2 * t1));
    let acts = requests(&drain(&mut d, 2 * t1));
    assert_eq!(acts.len(), 1);
    // Second timeout: 2 s of back-off.
    let t = 2 * t1 + 500 * MS;
    d.on_failure(t, &1, acts[0].1, Failure::Timeout);
    assert!(drain(&mut d, t).is_empty());
    assert_eq!(d.next_deadline(), Some(t + 2 * t1));
    assert_eq!(d.stats().timeouts, 2);
}

#[test]
fn corrupt_bans_and_refetches() {
    let mut d = Downloader::new(config().build().unwrap(), table(4, 1024), []).unwrap();
    d.add_peer(Duration::ZERO, 1, Holds::Everything).unwrap();
    let reqs = requests(&drain(&mut d, Duration::ZERO));
    let (_, id, chunks) = &reqs[0];
    let mut outcomes = ok(chunks);
    outcomes[0].1 = ChunkOutcome::Corrupt;
    d.on_response(MS, &1, *id, outcomes);
    let until = MS + d.config().ban_duration();
    let acts = drain(&mut d, MS);
    assert_eq!(acts[0], Action::Ban { peer: 1, until });
    assert_eq!(
        d.add_peer(MS, 1, Holds::Everything),
        Err(AddPeerError::Banned { until })
    );
    d.add_peer(MS, 2, Holds::Everything).unwrap();
    let reqs = requests(&drain(&mut d, MS));
    assert_eq!(reqs[0].2, vec![chunks[0]]);
    assert_eq!(d.stats().chunks_rejected, 1);
    assert_eq!(d.stats().chunks_done, 3);
    // The ban expires.
    d.add_peer(until, 1, Holds::Everything).unwrap();
}

#[test]
fn endgame_duplicates_then_cancels_loser() {
    let mut d = Downloader::new(config().build().unwrap(), table(4, 1024), []).unwrap();
    d.add_peer(Duration::ZERO, 1, Holds::Everything).unwrap();
    let reqs = requests(&drain(&mut d, Duration::ZERO));
    assert_eq!(reqs.len(), 1);
    d.add_peer(MS, 2, Holds::Everything).unwrap();
    let dup = requests(&drain(&mut d, MS));
    assert_eq!(dup.len(), 1);
    assert_eq!(dup[0].2, reqs[0].2);
    assert_eq!(d.chunk_state(ChunkIdx(0)), Some(ChunkState::InFlight(2)));
    d.on_response(2 * MS, &2, dup[0].1, ok(&dup[0].2));
    let acts = drain(&mut d, 2 * MS);
    assert_eq!(
        acts,
        vec![
            Action::Cancel {
                peer: 1,
                id: reqs[0].1
            },
            Action::Complete
        ]
    );
    // The loser's late answer counts as waste.
    d.on_response(3 * MS, &1, reqs[0].1, ok(&reqs[0].2));
    assert_eq!(d.stats().duplicate_bytes, 4 * 1024);
    assert_eq!(d.in_flight(&1), Some((0, 0)));
}

#[test]
fn leaving_peer_requeues_and_upgrade_counts() {
    let mut d = Downloader::new(config().build().unwrap(), table(10, 1024), []).unwrap();
    d.add_peer(Duration::ZERO, 1, Holds::Nothing).unwrap();
    d.peer_has(Duration::ZERO, &1, [ChunkIdx(3), ChunkIdx(4)]);
    d.add_peer(Duration::ZERO, 1, Holds::Everything).unwrap();
    d.check();
    assert_eq!(d.holders(ChunkIdx(9)), 1);
    let _ = drain(&mut d, Duration::ZERO);
    assert!(d.remove_peer(MS, &1));
    d.check();
    assert_eq!(d.total_in_flight(), (0, 0));
    assert_eq!(drain(&mut d, MS).len(), 1);
    assert_eq!(d.unavailable().len(), 10);
}

#[test]
fn too_large_chunk_is_refused() {
    let err = Downloader::<u32>::new(config().build().unwrap(), table(2, 8192), []).unwrap_err();
    assert!(matches!(
        err,
        NewDownloaderError::ChunkTooLarge { len: 8192, .. }
    ));
    let err =
        Downloader::<u32>::new(config().build().unwrap(), table(2, 10), [ChunkIdx(2)]).unwrap_err();
    assert_eq!(err, NewDownloaderError::LocalOutOfRange(ChunkIdx(2)));
}

#[test]
fn empty_answer_backs_off_instead_of_spinning() {
    let mut d = Downloader::new(config().build().unwrap(), table(4, 1024), []).unwrap();
    d.add_peer(Duration::ZERO, 1, Holds::Everything).unwrap();
    let reqs = requests(&drain(&mut d, Duration::ZERO));
    d.on_response(MS, &1, reqs[0].1, []);
    assert!(drain(&mut d, MS).is_empty());
    assert_eq!(d.next_deadline(), Some(MS + Duration::from_secs(1)));
    assert_eq!(d.stats().failures, 1);
    assert_eq!(d.chunk_state(reqs[0].2[0]), Some(ChunkState::Queued));
}

/// Regression (#4): a peer that serves its requests one after the other (say, behind an upload
/// rate limit) timed out on the later ones although it was delivering all along.
#[test]
fn rate_limited_peer_that_keeps_delivering_does_not_time_out() {
    let mut d = Downloader::new(config().build().unwrap(), table(100, 1024), []).unwrap();
    d.add_peer(Duration::ZERO, 1, Holds::Everything).unwrap();
    let reqs = requests(&drain(&mut d, Duration::ZERO));
    assert_eq!(reqs.len(), 2);
    // The first answer arrives just before the 1 s deadline; the second request waited behind
    // it, so its own deadline moves to a full timeout after this delivery.
    let t = 900 * MS;
    d.on_response(t, &1, reqs[0].1, ok(&reqs[0].2));
    let acts = drain(&mut d, 1500 * MS);
    assert!(
        !acts.iter().any(|a| matches!(a, Action::Cancel { .. })),
        "{acts:?}"
    );
    d.on_response(1800 * MS, &1, reqs[1].1, ok(&reqs[1].2));
    assert_eq!(d.stats().timeouts, 0);
    assert_eq!(d.stats().chunks_done, 8);
    // A peer that falls silent still times out a full timeout after its last delivery.
    let later = requests(&drain(&mut d, 1800 * MS));
    assert!(!later.is_empty());
    let acts = drain(&mut d, 1800 * MS + Duration::from_secs(1));
    assert!(
        acts.iter().any(|a| matches!(a, Action::Cancel { .. })),
        "{acts:?}"
    );
    assert!(d.stats().timeouts >= 1);
}

/// A slow peer gets requests it can answer well within the timeout: bytes in flight are capped
/// at half a timeout's worth of its measured rate.
#[test]
fn requests_are_sized_to_a_slow_peers_rate() {
    let mut d = Downloader::new(config().build().unwrap(), table(100, 1024), []).unwrap();
    d.add_peer(Duration::ZERO, 1, Holds::Everything).unwrap();
    let reqs = requests(&drain(&mut d, Duration::ZERO));
    assert_eq!(reqs.len(), 2);
    assert!(reqs.iter().all(|r| r.2.len() == 4));
    // 4 KiB per ~second: about 4 KiB/s, so half a 1 s timeout is ~2 KiB.
    d.on_response(990 * MS, &1, reqs[0].1, ok(&reqs[0].2));
    assert!(
        requests(&drain(&mut d, 990 * MS)).is_empty(),
        "4 KiB still in flight"
    );
    d.on_response(1980 * MS, &1, reqs[1].1, ok(&reqs[1].2));
    let next = requests(&drain(&mut d, 1980 * MS));
    assert_eq!(next.len(), 2, "{next:?}");
    assert!(next.iter().all(|r| r.2.len() == 1), "{next:?}");
    assert_eq!(d.in_flight(&1), Some((2, 2048)));
    // A fast peer is not held back: it gets full requests again.
    d.add_peer(1980 * MS, 2, Holds::Everything).unwrap();
    let fast = requests(&drain(&mut d, 1980 * MS));
    assert_eq!(fast.len(), 2);
    d.on_response(1981 * MS, &2, fast[0].1, ok(&fast[0].2));
    d.on_response(1981 * MS, &2, fast[1].1, ok(&fast[1].2));
    let again = requests(&drain(&mut d, 1981 * MS));
    assert!(
        again.iter().any(|r| r.0 == 2 && r.2.len() == 4),
        "{again:?}"
    );
}
