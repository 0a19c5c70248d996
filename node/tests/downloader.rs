//! Scenario tests: real downloaders driven through the deterministic network model in
//! `downloader_support`, which checks the in-flight limits after every action.

mod downloader_support;

use std::time::Duration;

use downloader_support::{Behaviour, Net, Node, table};
use vwnet_node::downloader::{ChunkIdx, ChunkState, Config};

const KIB: u32 = 1024;
const SEC: Duration = Duration::from_secs(1);

fn config() -> Config {
    Config::builder()
        .max_request_bytes(64 * 1024)
        .max_request_chunks(8)
        .max_requests_per_peer(2)
        .max_bytes_per_peer(128 * 1024)
        .max_bytes_in_flight(512 * 1024)
        .request_timeout(SEC)
        .backoff(SEC, 60 * SEC)
        .ban_duration(600 * SEC)
        .build()
        .expect("valid config")
}

fn puller(n: usize) -> Node {
    Node::server(n, Behaviour::Honest, 5, 50_000_000)
}

fn all(n: usize) -> impl Iterator<Item = ChunkIdx> {
    (0..n as u32).map(ChunkIdx)
}

#[test]
fn completes_despite_corrupt_blackhole_and_leaving_peers() {
    // Long enough (several seconds) for the blackhole's requests to time out.
    let n = 600;
    let cat = table(&vec![16 * KIB; n]);
    let nodes = vec![
        puller(n),
        Node::server(n, Behaviour::Honest, 10, 500_000),
        Node::server(n, Behaviour::Corrupt, 1, 100_000_000),
        Node::server(n, Behaviour::Blackhole, 1, 100_000_000),
        Node::server(
            n,
            Behaviour::LeavesAt(Duration::from_millis(300)),
            2,
            5_000_000,
        ),
        Node::server(n, Behaviour::Honest, 3, 5_000_000)
            .holding((0..n).map(|c| c % 2 == 0).collect()),
    ];
    let mut net = Net::new(cat, config(), nodes);
    net.start_pull(0, &[1, 2, 3, 4, 5], &[]);
    net.schedule_departures();
    net.run(3600 * SEC);
    let me = &net.nodes[0];
    assert!(me.completed_at.is_some(), "did not complete");
    let dl = net.dl(0);
    assert!(all(n).all(|c| dl.chunk_state(c) == Some(ChunkState::Done)));
    assert_eq!(me.banned, vec![2]);
    let stats = dl.stats();
    assert!(stats.chunks_rejected > 0);
    assert!(stats.timeouts > 0);
    assert_eq!(stats.bytes_done, n as u64 * 16 * 1024);
    let per_peer = dl.peer_stats();
    assert_eq!(
        per_peer[1].1.bytes_received, 0,
        "nothing accepted from the corrupt peer"
    );
    assert_eq!(
        per_peer[2].1.bytes_received, 0,
        "the blackhole never answered"
    );
    assert!(
        per_peer[3].1.bytes_received > 0,
        "the leaver served before leaving"
    );
    assert!(per_peer[4].1.bytes_received > 0);
    assert_eq!(dl.peer_count(), 3, "corrupt and leaving peers are gone");
}

#[test]
fn corrupt_chunk_is_refetched_elsewhere_and_peer_banned() {
    let n = 16;
    let cat = table(&vec![16 * KIB; n]);
    // The corrupt peer is much faster, so it gets asked first.
    let nodes = vec![
        puller(n),
        Node::server(n, Behaviour::Corrupt, 1, 1_000_000_000),
        Node::server(n, Behaviour::Honest, 20, 1_000_000),
    ];
    let mut net = Net::new(cat, config(), nodes);
    net.start_pull(0, &[1, 2], &[]);
    net.run(3600 * SEC);
    let asked_of_1: Vec<_> = net.log.iter().filter(|l| l.2 == 1).collect();
    assert_eq!(
        asked_of_1.len(),
        2,
        "both slots at the corrupt peer were used once"
    );
    assert!(net.nodes[0].completed_at.is_some());
    assert_eq!(net.nodes[0].banned, vec![1]);
    assert!(net.dl(0).banned_until(&1, net.now).is_some());
    assert_eq!(
        net.dl(0).peer_stats()[1].1.bytes_received,
        n as u64 * 16 * 1024
    );
}

#[test]
fn timeouts_back_off_exponentially_and_probation_allows_one_request() {
    let n = 64;
    let cat = table(&vec![16 * KIB; n]);
    // Only the blackhole is connected for a while: no other way to make progress.
    let nodes = vec![puller(n), Node::server(n, Behaviour::Blackhole, 1, 1)];
    let mut net = Net::new(cat, config(), nodes);
    net.start_pull(0, &[1], &[]);
    net.run(40 * SEC);
    let times: Vec<Duration> = net.log.iter().map(|l| l.0).collect();
    // Two requests at once, then one at a time after each back-off: 1 s timeout plus 1, 2, 4,
    // 8, 16 s of back-off.
    let secs: Vec<u64> = times.iter().map(|t| t.as_secs()).collect();
    assert_eq!(secs, vec![0, 0, 2, 5, 10, 19, 36], "{times:?}");
    assert!(net.dl(0).stats().timeouts >= 6);
    assert!(net.nodes[0].completed_at.is_none());
}

#[test]
fn endgame_duplicates_to_an_idle_peer_and_cancels_the_loser() {
    let n = 8;
    let cat = table(&vec![16 * KIB; n]);
    // The slow peer answers after seconds; the fast one in milliseconds. Neither has a
    // measured rate when the endgame starts, so a request is late after one pipeline window.
    let config = Config::builder()
        .max_request_bytes(64 * 1024)
        .max_request_chunks(4)
        .max_requests_per_peer(1)
        .max_bytes_per_peer(64 * 1024)
        .request_timeout(10 * SEC)
        .build()
        .expect("config");
    let nodes = vec![
        puller(n),
        Node::server(n, Behaviour::Honest, 3000, 100_000_000),
        Node::server(n, Behaviour::Honest, 1, 100_000_000),
    ];
    let window = config.pipeline_window();
    let mut net = Net::new(cat, config, nodes);
    net.start_pull(0, &[1, 2], &[]);
    net.run(3600 * SEC);
    let me = &net.nodes[0];
    let done = me.completed_at.expect("complete");
    assert!(
        done > window && done < window + Duration::from_millis(100),
        "finished at {done:?}: the slow peer's request should be duplicated once late, at {window:?}"
    );
    let stats = net.dl(0).stats();
    assert!(stats.endgame_requests >= 1);
    assert!(stats.cancels >= 1 && me.cancels >= 1);
    assert_eq!(net.dl(0).total_in_flight(), (0, 0));
}

#[test]
fn rarest_chunk_is_requested_before_common_ones() {
    let n = 100;
    let cat = table(&vec![16 * KIB; n]);
    let lacks = |skip: usize| (0..n).map(move |c| c != skip).collect::<Vec<bool>>();
    let nodes = vec![
        puller(n),
        Node::server(n, Behaviour::Honest, 5, 10_000_000),
        Node::server(n, Behaviour::Honest, 5, 10_000_000).holding(lacks(77)),
        Node::server(n, Behaviour::Honest, 5, 10_000_000).holding(lacks(77)),
        Node::server(n, Behaviour::Honest, 5, 10_000_000).holding(lacks(31)),
    ];
    let mut net = Net::new(cat, config(), nodes);
    net.start_pull(0, &[1, 2, 3, 4], &[]);
    net.run(3600 * SEC);
    // 77 has two holders (1 and 4), 31 three, every other chunk four: the first request goes
    // to peer 1 and carries 77 and then 31 before any chunk that everyone holds.
    let first = &net.log[0];
    assert_eq!(first.2, 1);
    assert!(
        first.4.contains(&ChunkIdx(77)) && first.4.contains(&ChunkIdx(31)),
        "{first:?}"
    );
    assert!(net.nodes[0].completed_at.is_some());
}

#[test]
fn two_pullers_swarm_and_upload_to_each_other() {
    let n = 256;
    let cat = table(&vec![16 * KIB; n]);
    // A slow seed; fast pullers.
    let nodes = vec![
        Node::server(n, Behaviour::Honest, 5, 1_000_000),
        puller(n),
        puller(n),
    ];
    let mut net = Net::new(cat, config(), nodes);
    net.start_pull(1, &[0, 2], &[]);
    net.start_pull(2, &[0, 1], &[]);
    net.run(3600 * SEC);
    let total = n as u64 * 16 * 1024;
    for id in [1, 2] {
        assert!(
            net.nodes[id].completed_at.is_some(),
            "puller {id} did not complete"
        );
        let share = net.nodes[id].uploaded as f64 / total as f64;
        assert!(
            share >= 0.25,
            "puller {id} uploaded only {share:.2} of the image"
        );
    }
    assert!(
        net.nodes[0].uploaded < total * 3 / 2,
        "the seed served nearly everything twice"
    );
    // Different seeds start on different runs.
    assert_ne!(net.first_asked[&1][0], net.first_asked[&2][0]);
}

#[test]
fn chunks_no_peer_has_are_reported_exactly() {
    let n = 50;
    let cat = table(&vec![16 * KIB; n]);
    let nodes = vec![
        puller(n),
        Node::server(n, Behaviour::Honest, 5, 10_000_000).holding((0..n).map(|c| c < 30).collect()),
        // Claims everything, lacks 40..50 and answers "missing".
        Node::server(n, Behaviour::Honest, 5, 10_000_000)
            .holding((0..n).map(|c| c < 40).collect())
            .claiming_all(),
    ];
    let mut net = Net::new(cat, config(), nodes);
    net.start_pull(0, &[1, 2], &[ChunkIdx(45)]);
    net.run(3600 * SEC);
    let me = &net.nodes[0];
    assert!(me.completed_at.is_none());
    let expected: Vec<ChunkIdx> = (40..50).filter(|&c| c != 45).map(ChunkIdx).collect();
    assert_eq!(me.stalled.as_deref(), Some(&expected[..]));
    assert_eq!(net.dl(0).unavailable(), expected);
    assert!(net.dl(0).stats().chunks_missing >= 9);
}

#[test]
fn tight_global_limit_with_many_peers() {
    let n = 300;
    let cat = table(
        &(0..n)
            .map(|i| 1 + (i as u32 * 7919) % (16 * KIB))
            .collect::<Vec<_>>(),
    );
    let config = Config::builder()
        .max_request_bytes(16 * 1024)
        .max_request_chunks(8)
        .max_requests_per_peer(3)
        .max_bytes_per_peer(32 * 1024)
        .max_bytes_in_flight(64 * 1024)
        .build()
        .expect("config");
    let mut nodes = vec![puller(n)];
    for i in 0..12 {
        nodes.push(
            Node::server(n, Behaviour::Honest, 1 + i, 3_000_000 + i * 100_000)
                .holding((0..n).map(|c| !(c as u64 + i).is_multiple_of(3)).collect()),
        );
    }
    let mut net = Net::new(cat, config, nodes);
    net.start_pull(0, &(1..13).collect::<Vec<_>>(), &[]);
    net.run(3600 * SEC);
    assert!(net.nodes[0].completed_at.is_some());
    assert!(net.steps > 40);
}

#[test]
fn a_peer_that_answers_nothing_is_backed_off_not_spun_on() {
    let n = 64;
    let cat = table(&vec![16 * KIB; n]);
    let nodes = vec![
        puller(n),
        Node::server(n, Behaviour::Empty, 1, 1_000_000_000),
        Node::server(n, Behaviour::Honest, 5, 100_000),
    ];
    let mut net = Net::new(cat, config(), nodes);
    net.start_pull(0, &[1, 2], &[]);
    net.run(3600 * SEC);
    let done = net.nodes[0].completed_at.expect("complete");
    // About 10 s of pulling from the slow honest peer; the empty one is retried only after
    // back-offs of 1, 2, 4 and 8 s.
    assert!(done > 5 * SEC, "{done:?}");
    let asked_empty = net.log.iter().filter(|l| l.2 == 1).count();
    assert!(asked_empty <= 8, "asked the empty peer {asked_empty} times");
    assert!(net.dl(0).stats().failures >= 1);
}
