//! The composed libp2p behaviour: which protocols a vwnet node speaks and how each is tuned.

// The `NetworkBehaviour` derive generates `BehaviourEvent` with one undocumented variant per
// field; the fields themselves are documented below.
#![allow(missing_docs)]

use std::time::Duration;

use libp2p::gossipsub::{self, IdentTopic, MessageAuthenticity, ValidationMode};
use libp2p::identity::Keypair;
use libp2p::kad::{self, store::MemoryStore};
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::NetworkBehaviour;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::{StreamProtocol, allow_block_list, identify, mdns, ping};
use vwnet_protocol::wire::MAX_GOSSIP_LEN;

use super::protocols::{CatalogCodec, ChunkCodec, DeployCodec, LockCodec, ManifestCodec, names};
use crate::config::NodeConfig;

/// Identify protocol version: peers with another major version are not vwnet peers.
pub const IDENTIFY_PROTOCOL: &str = "/vwnet/id/1";

/// Kademlia protocol name: a private DHT, so vwnet keys never mix with the public IPFS DHT.
pub const KAD_PROTOCOL: &str = "/vwnet/kad/1";

/// Longest a lock request may wait for its answer.
const LOCK_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest a deploy request may wait for its answer (a pull of a large image included).
const DEPLOY_REQUEST_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// Why the behaviour could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BehaviourError {
    /// Gossipsub rejected its configuration.
    #[error("gossipsub: {0}")]
    Gossipsub(String),
    /// mDNS could not open its socket.
    #[error("mdns: {0}")]
    Mdns(std::io::Error),
}

/// Every protocol of a vwnet node.
#[derive(NetworkBehaviour)]
pub struct Behaviour {
    /// Refuses connections from banned peers (first, so it sees connections before the rest).
    pub blocked: allow_block_list::Behaviour<allow_block_list::BlockedPeers>,
    /// Exchanges listen addresses and agent versions on connect.
    pub identify: identify::Behaviour,
    /// Keeps connections alive and measures round trips.
    pub ping: ping::Behaviour,
    /// Finds peers on the local link; off when disabled in the config.
    pub mdns: Toggle<mdns::tokio::Behaviour>,
    /// The DHT: peer routing across sites and provider records for images.
    pub kad: kad::Behaviour<MemoryStore>,
    /// Announcements of signed descriptions and lock records.
    pub gossipsub: gossipsub::Behaviour,
    /// Batched chunk transfer.
    pub chunks: request_response::Behaviour<ChunkCodec>,
    /// Manifest transfer.
    pub manifests: request_response::Behaviour<ManifestCodec>,
    /// Catalog exchange on connect.
    pub catalog: request_response::Behaviour<CatalogCodec>,
    /// Lock acquire/renew/release at a workspace's lock authorities.
    pub locks: request_response::Behaviour<LockCodec>,
    /// Deploy-and-resume requests between nodes (the end of a migration).
    pub deploys: request_response::Behaviour<DeployCodec>,
}

/// The gossipsub topics a node subscribes to.
pub fn topics() -> [IdentTopic; 3] {
    [
        IdentTopic::new(names::DESCRIPTIONS_TOPIC),
        IdentTopic::new(names::LOCKS_TOPIC),
        IdentTopic::new(names::PROVIDERS_TOPIC),
    ]
}

impl Behaviour {
    /// Builds the behaviour for `key` according to `config`.
    pub fn new(key: &Keypair, config: &NodeConfig) -> Result<Self, BehaviourError> {
        let peer_id = key.public().to_peer_id();

        let identify = identify::Behaviour::new(
            identify::Config::new(IDENTIFY_PROTOCOL.to_owned(), key.public()).with_agent_version(
                format!(
                    "vwnet/{}{}",
                    env!("CARGO_PKG_VERSION"),
                    config
                        .site()
                        .map(|s| format!(" site={s}"))
                        .unwrap_or_default()
                ),
            ),
        );

        let mdns = if config.mdns() {
            Some(
                mdns::tokio::Behaviour::new(mdns::Config::default(), peer_id)
                    .map_err(BehaviourError::Mdns)?,
            )
        } else {
            None
        };

        let mut kad_config = kad::Config::new(StreamProtocol::new(KAD_PROTOCOL));
        kad_config.set_query_timeout(Duration::from_secs(30));
        let mut kad = kad::Behaviour::with_config(peer_id, MemoryStore::new(peer_id), kad_config);
        // Nodes are servers by default: they hold provider records for one another even on a
        // LAN where no external address has been confirmed.
        kad.set_mode(Some(kad::Mode::Server));

        let gossipsub = gossip(key)?;

        let rr = |timeout: Duration, streams: usize| {
            request_response::Config::default()
                .with_request_timeout(timeout)
                .with_max_concurrent_streams(streams)
        };
        let timeout = config.request_timeout();
        let chunks = request_response::Behaviour::new(
            [(
                StreamProtocol::new(names::CHUNK_PROTOCOL),
                ProtocolSupport::Full,
            )],
            rr(timeout, 64),
        );
        let manifests = request_response::Behaviour::new(
            [(
                StreamProtocol::new(names::MANIFEST_PROTOCOL),
                ProtocolSupport::Full,
            )],
            rr(timeout, 16),
        );
        let catalog = request_response::Behaviour::new(
            [(
                StreamProtocol::new(names::CATALOG_PROTOCOL),
                ProtocolSupport::Full,
            )],
            rr(timeout, 16),
        );
        // Lock requests are tiny and answered from one database lookup; a slow answer is as
        // good as none (a renewal must land well within the lease), so their timeout is short.
        let locks = request_response::Behaviour::new(
            [(
                StreamProtocol::new(names::LOCK_PROTOCOL),
                ProtocolSupport::Full,
            )],
            rr(timeout.min(LOCK_REQUEST_TIMEOUT), 16),
        );

        // A deploy asked by a peer pulls and materialises a whole image before it answers.
        let deploys = request_response::Behaviour::new(
            [(
                StreamProtocol::new(names::DEPLOY_PROTOCOL),
                ProtocolSupport::Full,
            )],
            rr(DEPLOY_REQUEST_TIMEOUT, 4),
        );

        Ok(Self {
            blocked: allow_block_list::Behaviour::default(),
            identify,
            ping: ping::Behaviour::new(ping::Config::new()),
            mdns: Toggle::from(mdns),
            kad,
            gossipsub,
            chunks,
            manifests,
            catalog,
            locks,
            deploys,
        })
    }
}

/// Gossipsub with application validation and scoring of invalid messages.
fn gossip(key: &Keypair) -> Result<gossipsub::Behaviour, BehaviourError> {
    let config = gossipsub::ConfigBuilder::default()
        // Messages are forwarded only after the node reported them valid.
        .validate_messages()
        .validation_mode(ValidationMode::Strict)
        // One gossip message plus protobuf framing; anything bigger is refused on receipt.
        .max_transmit_size(MAX_GOSSIP_LEN + 1024)
        .heartbeat_interval(Duration::from_secs(1))
        .build()
        .map_err(|e| BehaviourError::Gossipsub(e.to_string()))?;
    let mut behaviour = gossipsub::Behaviour::new(MessageAuthenticity::Signed(key.clone()), config)
        .map_err(|e| BehaviourError::Gossipsub(e.to_owned()))?;

    // Scoring: a message the application rejects counts as an invalid delivery on its topic,
    // which costs the forwarding peer score (the penalty is weight x count^2, decaying by 0.9
    // per second). One rejection (-15) only lowers it: nodes' policies differ, so an honest
    // peer may relay a description that this node's policy refuses, and graylisting it for
    // that would drop its next, valid messages too. Two (-60) pass the gossip and publish
    // thresholds; a third within a few seconds (-135) graylists the peer (below -80).
    let mut params = gossipsub::PeerScoreParams::default();
    for topic in topics() {
        let topic_params = gossipsub::TopicScoreParams {
            topic_weight: 1.0,
            invalid_message_deliveries_weight: -15.0,
            invalid_message_deliveries_decay: 0.9,
            ..gossipsub::TopicScoreParams::default()
        };
        params.topics.insert(topic.hash(), topic_params);
    }
    behaviour
        .with_peer_score(params, gossipsub::PeerScoreThresholds::default())
        .map_err(BehaviourError::Gossipsub)?;
    for topic in topics() {
        behaviour
            .subscribe(&topic)
            .map_err(|e| BehaviourError::Gossipsub(e.to_string()))?;
    }
    Ok(behaviour)
}

/// Kademlia record key of an image's provider record.
pub fn provider_key(image: &vwnet_protocol::ids::ImageId) -> kad::RecordKey {
    kad::RecordKey::new(image.as_bytes())
}
