//! Property test: over random peer sets, holdings, behaviours, latencies and hence response
//! orders, a download always either completes or stalls reporting exactly the chunks that no
//! remaining peer holds — and the in-flight limits hold at every step (checked by the model).
//! Half the cases label some peers as on another site, which must not change that outcome.

mod downloader_support;

use std::time::Duration;

use downloader_support::{Behaviour, Net, Node, table};
use proptest::prelude::*;
use vwnet_node::downloader::{ChunkIdx, ChunkState, Config, Locality};

#[derive(Debug, Clone)]
struct PeerSpec {
    behaviour: u8,
    latency_ms: u64,
    rate: u64,
    holds_all: bool,
    claims_all: bool,
    holds: Vec<bool>,
    leave_ms: u64,
    remote: bool,
}

fn peer_spec(n: usize) -> impl Strategy<Value = PeerSpec> {
    (
        0u8..10,
        1u64..40,
        prop_oneof![Just(50_000u64), 200_000u64..20_000_000],
        any::<bool>(),
        any::<bool>(),
        proptest::collection::vec(any::<bool>(), n),
        1u64..3000,
        any::<bool>(),
    )
        .prop_map(
            |(behaviour, latency_ms, rate, holds_all, claims_all, holds, leave_ms, remote)| {
                PeerSpec {
                    behaviour,
                    latency_ms,
                    rate,
                    holds_all,
                    claims_all,
                    holds,
                    leave_ms,
                    remote,
                }
            },
        )
}

type Scenario = (
    Vec<u32>,
    Vec<bool>,
    Vec<PeerSpec>,
    (u8, u32, u32),
    bool,
    bool,
);

fn scenario() -> impl Strategy<Value = Scenario> {
    // Above 256 chunks, partial peers also take the bitset-intersection path of a pick.
    prop_oneof![4 => 1usize..120, 1 => 300usize..700].prop_flat_map(|n| {
        (
            proptest::collection::vec(1u32..=16 * 1024, n),
            proptest::collection::vec(proptest::bool::weighted(0.1), n),
            proptest::collection::vec(peer_spec(n), 0..6),
            (1u8..=3, 1u32..=4, 1u32..=16),
            any::<bool>(),
            any::<bool>(),
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn completes_or_reports_exactly_the_unavailable_chunks(
        (lens, local, peers, (copies, per_peer, chunks_per_req), second, sited) in scenario()
    ) {
        let n = lens.len();
        let config = Config::builder()
            .max_request_bytes(32 * 1024)
            .max_request_chunks(chunks_per_req as usize)
            .max_requests_per_peer(per_peer)
            .max_bytes_per_peer(64 * 1024)
            .max_bytes_in_flight(128 * 1024)
            .request_timeout(Duration::from_secs(1))
            .backoff(Duration::from_millis(100), Duration::from_secs(2))
            .endgame_copies(copies)
            .build()
            .expect("config");
        let puller = || Node::server(n, Behaviour::Honest, 1, 1_000_000).holding(vec![false; n]);
        let mut nodes = vec![puller()];
        for p in &peers {
            let behaviour = match p.behaviour {
                0 => Behaviour::Corrupt,
                1 => Behaviour::LeavesAt(Duration::from_millis(p.leave_ms)),
                _ => Behaviour::Honest,
            };
            let mut node = Node::server(n, behaviour, p.latency_ms, p.rate);
            if !p.holds_all {
                node = node.holding(p.holds.clone());
                if p.claims_all {
                    node = node.claiming_all();
                }
            }
            nodes.push(node);
        }
        let servers: Vec<u32> = (1..=peers.len() as u32).collect();
        let b = nodes.len() as u32;
        if second {
            nodes.push(puller());
        }
        let local: Vec<ChunkIdx> =
            (0..n).filter(|&c| local[c]).map(|c| ChunkIdx(c as u32)).collect();
        let mut net = Net::new(table(&lens), config, nodes);
        let mut a_peers = servers.clone();
        if second {
            a_peers.push(b);
            let mut b_peers = servers.clone();
            b_peers.push(0);
            net.start_pull(0, &a_peers, &local);
            net.start_pull(b, &b_peers, &[]);
        } else {
            net.start_pull(0, &a_peers, &local);
        }
        if sited {
            // The pullers share a site; labelled servers sit on another one.
            let now = Duration::ZERO;
            let pullers: Vec<u32> = if second { vec![0, b] } else { vec![0] };
            for &me in &pullers {
                let dl = net.dl_mut(me);
                dl.set_own_id(&me);
                for (i, p) in peers.iter().enumerate() {
                    if p.remote {
                        dl.set_peer_locality(now, &(i as u32 + 1), Locality::Remote);
                    }
                }
            }
        }
        net.schedule_departures();
        // Backoff is capped at 2 s and nobody blackholes, so an hour of virtual time is ample.
        net.run(Duration::from_secs(3600));

        check_puller(&net, 0, &lens, &local, &peers)?;
        if second {
            check_puller(&net, b, &lens, &[], &peers)?;
        }
    }
}

fn check_puller(
    net: &Net,
    me_id: u32,
    lens: &[u32],
    local: &[ChunkIdx],
    peers: &[PeerSpec],
) -> Result<(), TestCaseError> {
    let n = lens.len();
    let dl = net.dl(me_id);
    let wanted: Vec<ChunkIdx> = (0..n as u32)
        .map(ChunkIdx)
        .filter(|c| !local.contains(c))
        .collect();
    let honest = net.honest_holders_cover(wanted.iter().copied());
    let me = &net.nodes[me_id as usize];
    for c in local {
        prop_assert_eq!(dl.chunk_state(*c), Some(ChunkState::NotWanted));
    }
    if wanted.iter().all(|c| honest.contains(c)) {
        prop_assert!(
            me.completed_at.is_some(),
            "an honest peer holds everything, yet no completion"
        );
    }
    if me.completed_at.is_some() {
        prop_assert!(dl.is_complete());
        for c in &wanted {
            prop_assert_eq!(dl.chunk_state(*c), Some(ChunkState::Done));
        }
        let bytes: u64 = wanted.iter().map(|&c| u64::from(lens[c.as_usize()])).sum();
        prop_assert_eq!(dl.stats().bytes_done, bytes);
    } else {
        let not_done: Vec<ChunkIdx> = wanted
            .iter()
            .copied()
            .filter(|&c| dl.chunk_state(c) != Some(ChunkState::Done))
            .collect();
        prop_assert_eq!(me.stalled.as_deref(), Some(&not_done[..]), "stall report");
        for c in &not_done {
            prop_assert!(!honest.contains(c), "{:?} is held by an honest peer", c);
            prop_assert_eq!(dl.holders(*c), 0);
        }
    }
    prop_assert_eq!(dl.total_in_flight(), (0, 0));
    // A corrupt chunk that reached the downloader got its sender banned; nothing from a
    // corrupt peer was ever accepted.
    for (i, p) in peers.iter().enumerate() {
        let id = i as u32 + 1;
        if net
            .delivered
            .iter()
            .any(|&(to, from, corrupt)| to == me_id && from == id && corrupt)
        {
            prop_assert!(me.banned.contains(&id), "corrupt peer {} not banned", id);
        }
        if p.behaviour == 0 {
            let got = dl
                .peer_stats()
                .iter()
                .find(|s| s.0 == id)
                .map(|s| s.1.bytes_received);
            prop_assert_eq!(got, Some(0));
        }
    }
    Ok(())
}
