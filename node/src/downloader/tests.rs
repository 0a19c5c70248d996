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
fn endgame_duplicates_late_requests_then_cancels_loser() {
    let window = Duration::from_millis(300);
    let config = config().pipeline_window(window).build().unwrap();
    let mut d = Downloader::new(config, table(4, 1024), []).unwrap();
    d.add_peer(Duration::ZERO, 1, Holds::Everything).unwrap();
    let reqs = requests(&drain(&mut d, Duration::ZERO));
    assert_eq!(reqs.len(), 1);
    // Everything is in flight, but the request is not late: no duplicate yet.
    d.add_peer(MS, 2, Holds::Everything).unwrap();
    assert!(requests(&drain(&mut d, MS)).is_empty());
    assert_eq!(d.stats().endgame_requests, 0);
    // Peer 1 has no measured rate: late after one pipeline window.
    assert_eq!(d.next_deadline(), Some(window));
    d.tick(window);
    let dup = requests(&drain(&mut d, window));
    assert_eq!(dup.len(), 1);
    assert_eq!(dup[0].2, reqs[0].2);
    assert_eq!(d.chunk_state(ChunkIdx(0)), Some(ChunkState::InFlight(2)));
    let t = window + MS;
    d.on_response(t, &2, dup[0].1, ok(&dup[0].2));
    let acts = drain(&mut d, t);
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
    d.on_response(t + MS, &1, reqs[0].1, ok(&reqs[0].2));
    assert_eq!(d.stats().duplicate_bytes, 4 * 1024);
    assert_eq!(d.in_flight(&1), Some((0, 0)));
}

/// Lateness follows the peer's measured rate: a request is duplicated once it has been out
/// `LATE_FACTOR` times what the rate predicts, not before.
#[test]
fn a_request_is_late_at_twice_its_expected_time() {
    let config = config().max_requests_per_peer(1).build().unwrap();
    let mut d = Downloader::new(config, table(8, 1024), []).unwrap();
    d.add_peer(Duration::ZERO, 1, Holds::Everything).unwrap();
    let first = requests(&drain(&mut d, Duration::ZERO));
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].2.len(), 4);
    // 4 KiB in 100 ms: 40,960 B/s. The next 4 KiB should take 100 ms: late after 200 ms.
    let t0 = 100 * MS;
    d.on_response(t0, &1, first[0].1, ok(&first[0].2));
    let second = requests(&drain(&mut d, t0));
    assert_eq!(second.len(), 1);
    d.add_peer(t0 + MS, 2, Holds::Everything).unwrap();
    assert!(requests(&drain(&mut d, t0 + MS)).is_empty());
    let late = d.next_deadline().unwrap();
    let expected = LATE_FACTOR * 4096.0 / 40_960.0;
    assert!(
        ((late - t0).as_secs_f64() - expected).abs() < 1e-6,
        "{late:?}"
    );
    assert!(requests(&drain(&mut d, late - MS)).is_empty());
    d.tick(late);
    let dup = requests(&drain(&mut d, late));
    assert_eq!(dup.len(), 1);
    assert_eq!((dup[0].0, &dup[0].2), (2, &second[0].2));
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
/// at the pipeline window's worth of its measured rate.
#[test]
fn requests_are_sized_to_a_slow_peers_rate() {
    let config = config().pipeline_window(500 * MS).build().unwrap();
    let mut d = Downloader::new(config, table(100, 1024), []).unwrap();
    d.add_peer(Duration::ZERO, 1, Holds::Everything).unwrap();
    let reqs = requests(&drain(&mut d, Duration::ZERO));
    assert_eq!(reqs.len(), 2);
    assert!(reqs.iter().all(|r| r.2.len() == 4));
    // 4 KiB per ~second: about 4 KiB/s, so a 0.5 s window is ~2 KiB.
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

/// Responses interleaved on one connection finish together: the second, a millisecond after
/// the first, must not read as bytes per millisecond and open the peer's cap wide (which
/// queued tens of MiB per puller at a shared seed and starved its connections into timeouts).
#[test]
fn responses_finishing_together_do_not_inflate_the_rate() {
    let config = config()
        .max_requests_per_peer(8)
        .max_bytes_per_peer(64 * 1024)
        .pipeline_window(Duration::from_secs(1))
        .build()
        .unwrap();
    let mut d = Downloader::new(config, table(400, 1024), []).unwrap();
    d.add_peer(Duration::ZERO, 1, Holds::Everything).unwrap();
    let first = requests(&drain(&mut d, Duration::ZERO));
    assert_eq!(first.len(), 2);
    // Both 4 KiB responses shared the link for 900 ms: about 9 KiB/s in truth.
    let t = 900 * MS;
    d.on_response(t, &1, first[0].1, ok(&first[0].2));
    drain(&mut d, t);
    d.on_response(t + MS, &1, first[1].1, ok(&first[1].2));
    drain(&mut d, t + MS);
    let (_, bytes) = d.in_flight(&1).unwrap();
    assert!(
        bytes <= 10 * 1024,
        "{bytes} bytes in flight: the rate was read from a 1 ms gap"
    );
}

// ----- sites ---------------------------------------------------------------------------------

/// Serves every request at once and in full, reporting the chunks each peer was asked for.
fn serve_all(d: &mut Downloader<u32>, now: Duration) -> Vec<(u32, Vec<ChunkIdx>)> {
    let mut asked = Vec::new();
    loop {
        let reqs = requests(&drain(d, now));
        if reqs.is_empty() {
            return asked;
        }
        for (peer, id, chunks) in reqs {
            d.on_response(now, &peer, id, ok(&chunks));
            asked.push((peer, chunks));
        }
    }
}

fn chunks_of(asked: &[(u32, Vec<ChunkIdx>)], peer: u32) -> Vec<u32> {
    let mut v: Vec<u32> = asked
        .iter()
        .filter(|(p, _)| *p == peer)
        .flat_map(|(_, c)| c.iter().map(|c| c.0))
        .collect();
    v.sort_unstable();
    v
}

#[test]
fn chunks_a_local_peer_holds_are_not_fetched_remotely() {
    let mut d = Downloader::new(config().build().unwrap(), table(64, 1024), []).unwrap();
    d.add_peer(Duration::ZERO, 1, Holds::Nothing).unwrap();
    d.peer_has(Duration::ZERO, &1, (0..40).map(ChunkIdx));
    d.add_peer(Duration::ZERO, 9, Holds::Everything).unwrap();
    assert!(d.set_peer_locality(Duration::ZERO, &9, Locality::Remote));
    assert!(!d.set_peer_locality(Duration::ZERO, &7, Locality::Remote));
    assert_eq!(d.peer_locality(&9), Some(Locality::Remote));
    assert_eq!(d.peer_locality(&1), Some(Locality::Local));
    let asked = serve_all(&mut d, MS);
    assert!(d.is_complete());
    assert_eq!(chunks_of(&asked, 1), (0..40).collect::<Vec<_>>());
    assert_eq!(chunks_of(&asked, 9), (40..64).collect::<Vec<_>>());
}

/// Without labels every peer is local: the same requests as a site-blind downloader.
#[test]
fn unlabelled_peers_keep_the_site_blind_schedule() {
    let run = |label: bool| {
        let mut d = Downloader::new(config().build().unwrap(), table(64, 1024), []).unwrap();
        d.set_own_id(&0);
        d.add_peer(Duration::ZERO, 1, Holds::Nothing).unwrap();
        d.peer_has(Duration::ZERO, &1, (0..40).map(ChunkIdx));
        d.add_peer(Duration::ZERO, 9, Holds::Everything).unwrap();
        if label {
            d.set_peer_locality(Duration::ZERO, &9, Locality::Local);
        }
        serve_all(&mut d, MS)
    };
    let blind = run(false);
    assert_eq!(blind, run(true));
    assert!(!chunks_of(&blind, 9).is_empty());
}

/// Two same-site pullers and a remote seed: this downloader fetches across sites only the
/// units it owns while the other puller makes progress, and takes over the rest once that one
/// has been silent for `site_patience`.
#[test]
fn remote_only_chunks_are_split_among_the_sites_pullers() {
    let patience = Duration::from_secs(5);
    let config = config().site_patience(patience).build().unwrap();
    let n = 256;
    let mut d = Downloader::new(config, table(n, 1024), []).unwrap();
    d.set_own_id(&0);
    d.add_peer(Duration::ZERO, 1, Holds::Nothing).unwrap();
    d.add_peer(Duration::ZERO, 9, Holds::Everything).unwrap();
    d.set_peer_locality(Duration::ZERO, &9, Locality::Remote);
    let mine = owned_chunks(n, stable_hash(&0u32), &[stable_hash(&1u32)]);
    let owned: Vec<u32> = (0..n).filter(|&c| bits_has(&mine, c)).collect();
    assert!(
        !owned.is_empty() && owned.len() < n as usize,
        "{}",
        owned.len()
    );

    let asked = serve_all(&mut d, MS);
    assert_eq!(chunks_of(&asked, 9), owned);
    // Waiting for the other puller is not a stall, and a timer wakes us when it may have died.
    assert!(drain(&mut d, MS).is_empty());
    assert_eq!(d.next_deadline(), Some(patience));

    // It announces what it fetched: we take that from it, not from the remote seed.
    let theirs: Vec<u32> = (0..n).filter(|c| !owned.contains(c)).collect();
    let half = &theirs[..theirs.len() / 2];
    let t = Duration::from_secs(2);
    d.peer_has(t, &1, half.iter().map(|&c| ChunkIdx(c)));
    let asked = serve_all(&mut d, t);
    assert_eq!(chunks_of(&asked, 1), half.to_vec());
    assert!(chunks_of(&asked, 9).is_empty());
    // The first timer finds it still making progress.
    assert_eq!(d.next_deadline(), Some(patience));
    assert!(drain(&mut d, patience).is_empty());
    assert_eq!(d.next_deadline(), Some(t + patience));

    // Then it goes quiet: after `patience` the rest comes from the seed.
    let later = t + patience;
    let asked = serve_all(&mut d, later);
    assert_eq!(chunks_of(&asked, 9), theirs[theirs.len() / 2..].to_vec());
    assert!(d.is_complete());
}

/// A busy local seed that leaves and comes back during its pause is a local source again at
/// once: the pause belonged to the peer that left.
#[test]
fn a_busy_seed_that_rejoins_during_its_pause_is_local_again() {
    let mut d = Downloader::new(config().build().unwrap(), table(8, 1024), []).unwrap();
    d.set_own_id(&0);
    d.add_peer(Duration::ZERO, 1, Holds::Everything).unwrap();
    d.add_peer(Duration::ZERO, 9, Holds::Everything).unwrap();
    d.set_peer_locality(Duration::ZERO, &9, Locality::Remote);
    for (peer, id, _) in requests(&drain(&mut d, Duration::ZERO)) {
        d.on_failure(MS, &peer, id, Failure::Busy);
    }
    assert!(d.remove_peer(2 * MS, &1));
    d.add_peer(2 * MS, 1, Holds::Everything).unwrap();
    let asked = serve_all(&mut d, 3 * MS);
    assert!(asked.iter().all(|(p, _)| *p == 1), "{asked:?}");
    assert!(d.is_complete());
}

/// A roster names the site's members, peers or not: remote-only chunks are split over all
/// of them, and clearing it goes back to the members among the peers.
#[test]
fn a_site_roster_splits_remote_only_chunks_among_members_that_are_not_peers() {
    let n = 256;
    let mut d = Downloader::new(config().build().unwrap(), table(n, 1024), []).unwrap();
    d.set_own_id(&0);
    d.add_peer(Duration::ZERO, 1, Holds::Nothing).unwrap();
    d.add_peer(Duration::ZERO, 9, Holds::Everything).unwrap();
    d.set_peer_locality(Duration::ZERO, &9, Locality::Remote);
    let roster: Vec<u64> = (0..4u32).map(|i| site_key(&i)).collect();
    d.set_site_roster(Some(roster.clone().into()));
    let mine = owned_chunks(n, site_key(&0u32), &roster);
    let owned: Vec<u32> = (0..n).filter(|&c| bits_has(&mine, c)).collect();
    let with_peers_only = owned_chunks(n, site_key(&0u32), &[site_key(&1u32)]);
    assert!(!owned.is_empty(), "no unit of 16 for us among 4 members");
    assert!(owned.len() < (0..n).filter(|&c| bits_has(&with_peers_only, c)).count());

    let asked = serve_all(&mut d, MS);
    assert_eq!(chunks_of(&asked, 9), owned);
    // Without the roster the only member is peer 1: we own more.
    d.set_site_roster(None);
    let asked = serve_all(&mut d, 2 * MS);
    let more: Vec<u32> = (0..n)
        .filter(|&c| bits_has(&with_peers_only, c) && !owned.contains(&c))
        .collect();
    assert_eq!(chunks_of(&asked, 9), more);
}

/// A local peer whose requests keep failing stops counting as a holder: a dead neighbour's
/// bitmap does not keep its chunks from being fetched across sites for long.
#[test]
fn failing_local_holder_lets_its_chunks_come_from_the_remote_site() {
    let patience = Duration::from_secs(5);
    let config = config().site_patience(patience).build().unwrap();
    let mut d = Downloader::new(config, table(8, 1024), []).unwrap();
    d.add_peer(Duration::ZERO, 1, Holds::Everything).unwrap();
    d.add_peer(Duration::ZERO, 9, Holds::Everything).unwrap();
    d.set_peer_locality(Duration::ZERO, &9, Locality::Remote);
    let reqs = requests(&drain(&mut d, Duration::ZERO));
    assert!(reqs.iter().all(|r| r.0 == 1), "{reqs:?}");
    for (peer, id, _) in &reqs {
        d.on_failure(MS, peer, *id, Failure::Other);
    }
    // One failure may be a busy peer: wait for its back-off (1 s) and ask it again.
    assert!(drain(&mut d, MS).is_empty());
    let t = Duration::from_secs(1) + MS;
    let retry = requests(&drain(&mut d, t));
    assert_eq!(retry.len(), 1, "{retry:?}");
    assert_eq!(retry[0].0, 1);
    // It fails again, but a busy or starved neighbour does that too: wait for `patience`
    // without a delivery from it before going across sites.
    d.on_failure(t, &1, retry[0].1, Failure::Other);
    assert!(requests(&drain(&mut d, t)).is_empty());
    let reqs = requests(&drain(&mut d, patience - MS));
    assert!(reqs.iter().all(|r| r.0 == 1), "{reqs:?}");
    let reqs = requests(&drain(&mut d, patience));
    assert!(reqs.iter().any(|r| r.0 == 9), "{reqs:?}");
    assert!(reqs.iter().all(|r| r.0 == 9), "{reqs:?}");
}

/// A local seed that refuses for want of upload slots stops counting as a local source for its
/// pause: the units this downloader owns come across sites meanwhile, the others wait for the
/// seed (or for their owner), and the seed is asked again once the pause is over.
#[test]
fn busy_local_seed_lets_owned_chunks_come_from_the_remote_site() {
    let n = 256;
    let mut d = Downloader::new(config().build().unwrap(), table(n, 1024), []).unwrap();
    d.set_own_id(&0);
    d.add_peer(Duration::ZERO, 1, Holds::Everything).unwrap();
    d.add_peer(Duration::ZERO, 2, Holds::Nothing).unwrap();
    d.add_peer(Duration::ZERO, 9, Holds::Everything).unwrap();
    d.set_peer_locality(Duration::ZERO, &9, Locality::Remote);
    let mine = owned_chunks(n, stable_hash(&0u32), &[stable_hash(&2u32)]);
    let owned: Vec<u32> = (0..n).filter(|&c| bits_has(&mine, c)).collect();
    assert!(!owned.is_empty() && owned.len() < n as usize);

    let first = requests(&drain(&mut d, Duration::ZERO));
    assert!(
        !first.is_empty() && first.iter().all(|r| r.0 == 1),
        "{first:?}"
    );
    for (peer, id, _) in &first {
        d.on_failure(MS, peer, *id, Failure::Busy);
    }
    // During the pause only owned chunks cross, and only from the remote peer.
    let asked = serve_all(&mut d, 2 * MS);
    assert!(asked.iter().all(|(p, _)| *p == 9), "{asked:?}");
    assert_eq!(chunks_of(&asked, 9), owned);
    // The pause is over: the rest comes from the local seed.
    let asked = serve_all(&mut d, Duration::from_secs(1) + MS);
    assert!(asked.iter().all(|(p, _)| *p == 1), "{asked:?}");
    assert_eq!(chunks_of(&asked, 1).len(), n as usize - owned.len());
    assert!(d.is_complete());
}

/// The endgame duplicates a late request on another local peer, never across sites while a
/// local peer is there.
#[test]
fn endgame_duplicates_stay_on_the_site() {
    let window = Duration::from_millis(300);
    let config = config().pipeline_window(window).build().unwrap();
    let mut d = Downloader::new(config, table(4, 1024), []).unwrap();
    d.add_peer(Duration::ZERO, 9, Holds::Everything).unwrap();
    d.set_peer_locality(Duration::ZERO, &9, Locality::Remote);
    d.add_peer(Duration::ZERO, 1, Holds::Nothing).unwrap();
    d.peer_has(Duration::ZERO, &1, [ChunkIdx(0), ChunkIdx(1)]);
    let reqs = requests(&drain(&mut d, Duration::ZERO));
    assert_eq!(
        chunks_of(
            &reqs.iter().map(|r| (r.0, r.2.clone())).collect::<Vec<_>>(),
            9
        ),
        [2, 3]
    );
    // Everything is in flight; another full local peer gets the duplicates, the remote seed none.
    d.add_peer(MS, 2, Holds::Everything).unwrap();
    assert!(
        requests(&drain(&mut d, MS)).is_empty(),
        "nothing is late yet"
    );
    d.tick(window);
    let dup = requests(&drain(&mut d, window));
    assert!(!dup.is_empty() && dup.iter().all(|r| r.0 == 2), "{dup:?}");
    assert!(d.stats().endgame_requests >= 1);
}

/// A small two-site swarm, sans IO: a seed and three pullers on site a, four pullers on site b,
/// one FIFO pipe between the sites, provider announcements every 500 ms. Each chunk should
/// cross the inter-site link about once, and never towards the seed's site.
#[test]
fn two_sites_cross_the_wan_about_once_per_chunk() {
    let (blind_wan, _) = two_site_swarm(false);
    let (wan, per_chunk) = two_site_swarm(true);
    let n = per_chunk.len() as u64;
    assert!(
        blind_wan >= 2 * n,
        "site-blind crossed {blind_wan} times for {n} chunks"
    );
    let twice = per_chunk.iter().filter(|&&k| k > 1).count();
    eprintln!("site-blind: {blind_wan} crossings; site-aware: {wan}, {twice} chunks twice");
    assert!(wan * 10 <= n * 12, "{wan} crossings for {n} chunks");
    assert!(
        per_chunk.iter().all(|&k| k >= 1),
        "a chunk reached site b without crossing"
    );
    let twice = per_chunk.iter().filter(|&&k| k > 1).count() as u64;
    assert!(
        twice * 10 <= n,
        "{twice} of {n} chunks crossed more than once"
    );
}

/// Runs the swarm of [`two_sites_cross_the_wan_about_once_per_chunk`]; returns the chunk
/// crossings of the inter-site link in all, and per chunk towards site b.
fn two_site_swarm(site_aware: bool) -> (u64, Vec<u32>) {
    const SEED: u32 = 0;
    const HOSTS: u32 = 8;
    const LEN: u32 = 16 * 1024;
    let n = 512u32;
    let site = |h: u32| h >= 4; // site b: hosts 4..8; site a: the seed and hosts 1..4
    let cat = table(n, LEN);
    let config = Config::builder()
        .max_request_bytes(256 * 1024)
        .max_request_chunks(16)
        .max_requests_per_peer(4)
        .max_bytes_per_peer(1 << 20)
        .max_bytes_in_flight(8 << 20)
        .request_timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let mut dls: Vec<Option<Downloader<u32>>> = vec![None];
    for h in 1..HOSTS {
        let mut d =
            Downloader::new(config.clone().with_seed(u64::from(h)), cat.clone(), []).unwrap();
        d.set_own_id(&h);
        for p in 0..HOSTS {
            if p == h {
                continue;
            }
            let holds = if p == SEED {
                Holds::Everything
            } else {
                Holds::Nothing
            };
            d.add_peer(Duration::ZERO, p, holds).unwrap();
            if site_aware && site(p) != site(h) {
                d.set_peer_locality(Duration::ZERO, &p, Locality::Remote);
            }
        }
        dls.push(Some(d));
    }
    // In flight: (done at, from, to, request, chunks).
    let mut flights: Vec<(Duration, u32, u32, RequestId, Vec<ChunkIdx>)> = Vec::new();
    let mut wan_free = [Duration::ZERO; 2];
    let mut down_free = vec![Duration::ZERO; HOSTS as usize];
    let mut unannounced: Vec<Vec<ChunkIdx>> = vec![Vec::new(); HOSTS as usize];
    let mut per_chunk = vec![0u32; n as usize];
    let mut wan = 0u64;
    let step = Duration::from_millis(10);
    let mut now = Duration::ZERO;
    while dls.iter().flatten().any(|d| !d.is_complete()) {
        assert!(now < Duration::from_secs(600), "the swarm did not finish");
        // Deliveries due by now.
        let (due, rest): (Vec<_>, Vec<_>) = flights.into_iter().partition(|f| f.0 <= now);
        flights = rest;
        for (_, from, to, id, chunks) in due {
            if site(from) != site(to) {
                wan += chunks.len() as u64;
                if site(to) {
                    for c in &chunks {
                        per_chunk[c.as_usize()] += 1;
                    }
                }
            }
            let Some(d) = dls[to as usize].as_mut() else {
                continue;
            };
            for &c in &chunks {
                if d.chunk_state(c) != Some(ChunkState::Done) {
                    unannounced[to as usize].push(c);
                }
            }
            d.on_response(now, &from, id, ok(&chunks));
        }
        // Provider announcements every 500 ms.
        if now.as_millis().is_multiple_of(500) {
            for h in 1..HOSTS {
                let news = std::mem::take(&mut unannounced[h as usize]);
                for (o, d) in dls.iter_mut().enumerate() {
                    if let Some(d) = d.as_mut().filter(|_| o as u32 != h) {
                        d.peer_has(now, &h, news.iter().copied());
                    }
                }
            }
        }
        for h in 1..HOSTS {
            let Some(d) = dls[h as usize].as_mut() else {
                continue;
            };
            while let Some(a) = d.poll(now) {
                match a {
                    Action::Request {
                        peer,
                        id,
                        chunks,
                        bytes,
                        ..
                    } => {
                        // 4 MB/s between the sites (one pipe per direction), 40 MB/s into each
                        // host, 20 ms and 1 ms of latency.
                        let cross = site(peer) != site(h);
                        let (lat, rate, free) = if cross {
                            (20, 4e6, &mut wan_free[usize::from(site(h))])
                        } else {
                            (1, 40e6, &mut down_free[h as usize])
                        };
                        let start = (*free).max(now + Duration::from_millis(lat));
                        let end = start + Duration::from_secs_f64(bytes as f64 / rate);
                        *free = end;
                        flights.push((end, peer, h, id, chunks));
                    }
                    Action::Cancel { id, .. } => flights.retain(|f| f.3 != id),
                    _ => {}
                }
            }
        }
        now += step;
    }
    for d in dls.iter().flatten() {
        d.check();
    }
    (wan, per_chunk)
}

/// A busy refusal re-queues the chunks and pauses the peer for the back-off base, every time:
/// it is not a strike, so a seed that stays busy is asked again each second, not ever later.
#[test]
fn busy_refusals_pause_the_peer_without_escalating() {
    let mut d = Downloader::new(config().build().unwrap(), table(8, 1024), []).unwrap();
    d.add_peer(Duration::ZERO, 1, Holds::Everything).unwrap();
    let first = requests(&drain(&mut d, Duration::ZERO));
    assert!(!first.is_empty());
    let mut t = Duration::ZERO;
    for round in 0..3 {
        let reqs = if round == 0 {
            first.clone()
        } else {
            requests(&drain(&mut d, t))
        };
        assert_eq!(reqs.len(), first.len(), "round {round}: {reqs:?}");
        for (peer, id, _) in &reqs {
            d.on_failure(t + MS, peer, *id, Failure::Busy);
        }
        // Paused for exactly the back-off base (1 s), however often it was busy.
        assert!(requests(&drain(&mut d, t + Duration::from_secs(1))).is_empty());
        t += Duration::from_secs(1) + MS;
    }
    let stats = d.stats();
    assert_eq!(stats.busy, 3 * first.len() as u64);
    assert_eq!((stats.failures, stats.timeouts), (0, 0));
    // The chunks were re-queued: serving the next round completes the download.
    let asked = serve_all(&mut d, t);
    assert_eq!(chunks_of(&asked, 1).len(), 8);
    assert!(d.is_complete());
}
