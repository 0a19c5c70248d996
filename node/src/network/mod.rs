//! The libp2p swarm, split like rust-libp2p's file-sharing example.
//!
//! - [`EventLoop`] owns the swarm and nothing else but the `pending_*` maps; run it in its own
//!   task.
//! - [`Client`] is a cheap, cloneable handle that sends [`Command`]s over a bounded channel and
//!   awaits oneshot replies.
//! - [`Event`]s (inbound requests, gossip to validate, peers coming and going) come out of a
//!   bounded channel that the node's services consume.
//!
//! Modules: [`behaviour`] (which protocols and how tuned), [`protocols`] (protocol names and
//! codecs for the wire messages of `vwnet_protocol::wire`), [`codec`] (size-capped framing),
//! [`event_loop`], [`client`].

pub mod behaviour;
pub mod client;
pub mod codec;
pub mod event_loop;
pub mod protocols;

use std::collections::HashSet;

use libp2p::gossipsub::{MessageAcceptance, MessageId};
use libp2p::identity::Keypair;
use libp2p::request_response::{InboundRequestId, OutboundFailure, ResponseChannel};
use libp2p::{Multiaddr, PeerId, kad, noise, tcp, yamux};
use tokio::sync::OwnedSemaphorePermit;
use tokio::sync::{mpsc, oneshot, watch};
use vwnet_protocol::identity::Identity;

pub use behaviour::Behaviour;
pub use client::Client;
pub use event_loop::EventLoop;
use protocols::{
    CatalogRequest, CatalogResponse, ChunkRequest, ChunkResponse, DeployRequest, DeployResponse,
    LockRequest, LockResponse, ManifestRequest, ManifestResponse,
};

use crate::config::NodeConfig;

/// Commands queued to the event loop before senders wait.
const COMMAND_BUFFER: usize = 256;
/// Events queued to the consumer before the event loop starts shedding them.
const EVENT_BUFFER: usize = 1024;

/// The libp2p keypair of a node identity: the same ed25519 secret, so the PeerId and the
/// protocol identity name the same key. This is the one place the two key types meet.
pub fn keypair(identity: &Identity) -> Keypair {
    let mut secret = identity.secret_bytes();
    // `ed25519_from_bytes` only fails for a wrong length; ours is a 32-byte array. It also
    // zeroes the bytes it is given, so we hand it the zeroizing copy.
    match Keypair::ed25519_from_bytes(secret.as_mut()) {
        Ok(k) => k,
        Err(e) => unreachable!("a 32-byte ed25519 secret is always valid: {e}"),
    }
}

/// The peer id of a protocol identity (the inverse of [`peer_identity`]); `None` for bytes
/// that are not an ed25519 public key.
pub fn peer_id_of(identity: &vwnet_protocol::ids::PeerIdentity) -> Option<PeerId> {
    let ed = libp2p::identity::ed25519::PublicKey::try_from_bytes(identity.as_bytes()).ok()?;
    Some(libp2p::identity::PublicKey::from(ed).to_peer_id())
}

/// The protocol identity behind a peer id, when the peer id embeds an ed25519 key (all vwnet
/// peer ids do).
pub fn peer_identity(peer: &PeerId) -> Option<vwnet_protocol::ids::PeerIdentity> {
    let multihash = peer.as_ref();
    // Identity multihash (code 0) of the protobuf-encoded public key.
    if multihash.code() != 0 {
        return None;
    }
    let public = libp2p::identity::PublicKey::try_decode_protobuf(multihash.digest()).ok()?;
    let ed = public.try_into_ed25519().ok()?;
    Some(vwnet_protocol::ids::PeerIdentity::from_bytes(ed.to_bytes()))
}

/// Why a network operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetworkError {
    /// The event loop has stopped (the node is shutting down).
    #[error("the network has stopped")]
    Stopped,
    /// The transport could not be built or could not listen.
    #[error("transport: {0}")]
    Transport(String),
    /// Building the behaviour failed.
    #[error(transparent)]
    Behaviour(#[from] behaviour::BehaviourError),
    /// A dial could not be started.
    #[error("dial: {0}")]
    Dial(String),
    /// A gossip message could not be published.
    #[error("gossip publish: {0}")]
    Publish(String),
    /// A provider record could not be stored.
    #[error("provide: {0}")]
    Provide(String),
}

/// Why an outbound request got no answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// The event loop has stopped.
    #[error("the network has stopped")]
    Stopped,
    /// The peer could not be reached.
    #[error("peer unreachable")]
    Unreachable,
    /// No answer within the request timeout.
    #[error("request timed out")]
    Timeout,
    /// The connection closed before the answer.
    #[error("connection closed")]
    ConnectionClosed,
    /// The peer does not speak the protocol.
    #[error("protocol not supported by the peer")]
    Unsupported,
    /// The stream failed, or the answer was malformed or oversize.
    #[error("stream: {0}")]
    Io(String),
}

impl From<OutboundFailure> for RequestError {
    fn from(f: OutboundFailure) -> Self {
        match f {
            OutboundFailure::DialFailure => Self::Unreachable,
            OutboundFailure::Timeout => Self::Timeout,
            OutboundFailure::ConnectionClosed => Self::ConnectionClosed,
            OutboundFailure::UnsupportedProtocols => Self::Unsupported,
            OutboundFailure::Io(e) => Self::Io(e.to_string()),
        }
    }
}

/// The two gossip topics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GossipTopic {
    /// Signed workspace descriptions.
    Descriptions,
    /// Signed lock records.
    Locks,
    /// Which chunks of which image a node holds.
    Providers,
}

/// A snapshot of the swarm for status displays.
#[derive(Debug, Clone)]
pub struct NetworkInfo {
    /// Our peer id.
    pub peer_id: PeerId,
    /// Addresses we listen on.
    pub listen: Vec<Multiaddr>,
    /// Peers with at least one open connection.
    pub peers: Vec<PeerId>,
}

/// What the event loop is asked to do.
#[derive(Debug)]
#[non_exhaustive]
pub enum Command {
    /// Dial an address.
    Dial {
        /// Where.
        addr: Multiaddr,
        /// Whether the dial could be started.
        reply: oneshot::Sender<Result<(), NetworkError>>,
    },
    /// Report listen addresses and peers.
    Info {
        /// The snapshot.
        reply: oneshot::Sender<NetworkInfo>,
    },
    /// Publish on a gossip topic.
    Publish {
        /// Which topic.
        topic: GossipTopic,
        /// The signed record.
        data: Vec<u8>,
        /// Whether it was handed to gossipsub.
        reply: oneshot::Sender<Result<(), NetworkError>>,
    },
    /// The application's verdict on a gossip message.
    Validated {
        /// The message.
        message_id: MessageId,
        /// Who forwarded it.
        source: PeerId,
        /// Accept (forward), Reject (drop and penalise) or Ignore (drop).
        acceptance: MessageAcceptance,
    },
    /// Announce that we provide a key.
    StartProviding {
        /// The key.
        key: kad::RecordKey,
        /// Once the record is stored.
        reply: oneshot::Sender<Result<(), NetworkError>>,
    },
    /// Find who provides a key.
    GetProviders {
        /// The key.
        key: kad::RecordKey,
        /// The providers found.
        reply: oneshot::Sender<HashSet<PeerId>>,
    },
    /// Ask a peer for chunks.
    RequestChunks {
        /// The peer.
        peer: PeerId,
        /// The request.
        request: ChunkRequest,
        /// The answer.
        reply: oneshot::Sender<Result<ChunkResponse, RequestError>>,
    },
    /// Ask a peer for a manifest.
    RequestManifest {
        /// The peer.
        peer: PeerId,
        /// The request.
        request: ManifestRequest,
        /// The answer.
        reply: oneshot::Sender<Result<ManifestResponse, RequestError>>,
    },
    /// Ask a peer for its catalog.
    RequestCatalog {
        /// The peer.
        peer: PeerId,
        /// The request.
        request: CatalogRequest,
        /// The answer.
        reply: oneshot::Sender<Result<CatalogResponse, RequestError>>,
    },
    /// Ask a lock authority to grant, renew or release a lock.
    RequestLock {
        /// The authority.
        peer: PeerId,
        /// The request.
        request: LockRequest,
        /// The answer.
        reply: oneshot::Sender<Result<LockResponse, RequestError>>,
    },
    /// Answer an inbound lock request.
    RespondLock {
        /// Where the answer goes.
        channel: ResponseChannel<LockResponse>,
        /// The answer.
        response: LockResponse,
    },
    /// Ask a node to deploy and resume a workspace.
    RequestDeploy {
        /// The destination.
        peer: PeerId,
        /// The request.
        request: Box<DeployRequest>,
        /// The answer.
        reply: oneshot::Sender<Result<DeployResponse, RequestError>>,
    },
    /// Answer an inbound deploy request.
    RespondDeploy {
        /// Where the answer goes.
        channel: ResponseChannel<DeployResponse>,
        /// The answer.
        response: DeployResponse,
    },
    /// Answer an inbound chunk request.
    RespondChunks {
        /// Where the answer goes.
        channel: ResponseChannel<ChunkResponse>,
        /// The request answered, to recognise when its response has left.
        request_id: InboundRequestId,
        /// The answer.
        response: ChunkResponse,
        /// An upload slot held until the response has been sent or has failed.
        slot: Option<OwnedSemaphorePermit>,
    },
    /// Answer an inbound manifest request.
    RespondManifest {
        /// Where the answer goes.
        channel: ResponseChannel<ManifestResponse>,
        /// The answer.
        response: ManifestResponse,
    },
    /// Answer an inbound catalog request.
    RespondCatalog {
        /// Where the answer goes.
        channel: ResponseChannel<CatalogResponse>,
        /// The answer.
        response: CatalogResponse,
    },
    /// Disconnect a peer and refuse its connections and gossip.
    Ban {
        /// The peer.
        peer: PeerId,
    },
    /// Lift a ban.
    Unban {
        /// The peer.
        peer: PeerId,
    },
}

/// A request from a peer, waiting for the node to answer through the [`Client`].
#[derive(Debug)]
#[non_exhaustive]
pub enum InboundRequest {
    /// Chunks wanted.
    Chunks {
        /// Who asks.
        peer: PeerId,
        /// Which request this is, to quote when answering.
        request_id: InboundRequestId,
        /// What.
        request: ChunkRequest,
        /// Where to answer.
        channel: ResponseChannel<ChunkResponse>,
    },
    /// A manifest wanted.
    Manifest {
        /// Who asks.
        peer: PeerId,
        /// What.
        request: ManifestRequest,
        /// Where to answer.
        channel: ResponseChannel<ManifestResponse>,
    },
    /// Our catalog wanted.
    Catalog {
        /// Who asks.
        peer: PeerId,
        /// What.
        request: CatalogRequest,
        /// Where to answer.
        channel: ResponseChannel<CatalogResponse>,
    },
    /// A lock operation asked of us as a lock authority.
    Lock {
        /// Who asks (authenticated by the connection: the requester's identity).
        peer: PeerId,
        /// What.
        request: LockRequest,
        /// Where to answer.
        channel: ResponseChannel<LockResponse>,
    },
    /// A peer asks us to deploy and resume a workspace (a migration's end).
    Deploy {
        /// Who asks (authenticated by the connection).
        peer: PeerId,
        /// What.
        request: Box<DeployRequest>,
        /// Where to answer.
        channel: ResponseChannel<DeployResponse>,
    },
}

impl InboundRequest {
    /// The asking peer.
    pub fn peer(&self) -> PeerId {
        match self {
            Self::Chunks { peer, .. }
            | Self::Manifest { peer, .. }
            | Self::Catalog { peer, .. }
            | Self::Lock { peer, .. }
            | Self::Deploy { peer, .. } => *peer,
        }
    }
}

/// What the network tells the node.
#[derive(Debug)]
#[non_exhaustive]
pub enum Event {
    /// A new listen address is active.
    Listening {
        /// The address.
        addr: Multiaddr,
    },
    /// The first connection to a peer opened.
    PeerConnected {
        /// The peer.
        peer: PeerId,
        /// Its address on that connection.
        addr: Multiaddr,
    },
    /// The last connection to a peer closed.
    PeerDisconnected {
        /// The peer.
        peer: PeerId,
    },
    /// A gossip message to validate; answer with [`Client::report_validation`].
    Gossip {
        /// Its id, for the verdict.
        message_id: MessageId,
        /// The peer that forwarded it.
        source: PeerId,
        /// The peer that first published it (signed by its key), if known.
        origin: Option<PeerId>,
        /// Which topic.
        topic: GossipTopic,
        /// The payload.
        data: Vec<u8>,
    },
    /// A peer's request.
    Inbound(InboundRequest),
}

/// What [`new`] returns: the handle, the event stream, and the loop to spawn.
pub type Parts = (Client, mpsc::Receiver<Event>, EventLoop);

/// Builds the swarm for `identity` and `config` over TCP (noise, yamux) and QUIC, starts
/// listening, dials the bootstrap addresses, and returns the parts. `shutdown` stops the loop.
pub fn new(
    identity: &Identity,
    config: &NodeConfig,
    shutdown: watch::Receiver<bool>,
) -> Result<Parts, NetworkError> {
    let mut behaviour_err = None;
    let swarm = libp2p::SwarmBuilder::with_existing_identity(keypair(identity))
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| NetworkError::Transport(e.to_string()))?
        .with_quic()
        .with_behaviour(|key| behaviour(key, config, &mut behaviour_err))
        .map_err(|e| behaviour_error(&mut behaviour_err, &e))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(config.idle_connection_timeout()))
        .build();
    finish(swarm, config, shutdown)
}

/// Like [`new`], over libp2p's in-process memory transport (`/memory/N` addresses): for
/// protocol tests and simulations that need the real behaviour without sockets.
pub fn new_in_memory(
    identity: &Identity,
    config: &NodeConfig,
    shutdown: watch::Receiver<bool>,
) -> Result<Parts, NetworkError> {
    use libp2p::Transport as _;
    use libp2p::core::transport::{MemoryTransport, upgrade};
    let mut behaviour_err = None;
    let swarm = libp2p::SwarmBuilder::with_existing_identity(keypair(identity))
        .with_tokio()
        .with_other_transport(|key| {
            Ok::<_, BoxError>(
                MemoryTransport::default()
                    .upgrade(upgrade::Version::V1)
                    .authenticate(noise::Config::new(key)?)
                    .multiplex(yamux::Config::default())
                    .boxed(),
            )
        })
        .map_err(|e| NetworkError::Transport(e.to_string()))?
        .with_behaviour(|key| behaviour(key, config, &mut behaviour_err))
        .map_err(|e| behaviour_error(&mut behaviour_err, &e))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(config.idle_connection_timeout()))
        .build();
    finish(swarm, config, shutdown)
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Builds the behaviour inside the swarm builder, keeping the typed error for the caller
/// (the builder only passes on a boxed one).
fn behaviour(
    key: &Keypair,
    config: &NodeConfig,
    slot: &mut Option<behaviour::BehaviourError>,
) -> Result<Behaviour, BoxError> {
    Behaviour::new(key, config).map_err(|e| {
        let text = e.to_string();
        *slot = Some(e);
        text.into()
    })
}

fn behaviour_error(
    slot: &mut Option<behaviour::BehaviourError>,
    e: &dyn std::fmt::Display,
) -> NetworkError {
    match slot.take() {
        Some(b) => NetworkError::Behaviour(b),
        None => NetworkError::Transport(e.to_string()),
    }
}

fn finish(
    mut swarm: libp2p::Swarm<Behaviour>,
    config: &NodeConfig,
    shutdown: watch::Receiver<bool>,
) -> Result<Parts, NetworkError> {
    for addr in config.listen() {
        swarm
            .listen_on(addr.clone())
            .map_err(|e| NetworkError::Transport(format!("listen on {addr}: {e}")))?;
    }
    for addr in config.bootstrap() {
        // A bootstrap peer that is down must not keep the node from starting.
        if let Err(e) = swarm.dial(addr.clone()) {
            tracing::warn!(%addr, %e, "cannot dial bootstrap address");
        }
    }
    let (command_tx, command_rx) = mpsc::channel(COMMAND_BUFFER);
    let (event_tx, event_rx) = mpsc::channel(EVENT_BUFFER);
    Ok((
        Client::new(command_tx),
        event_rx,
        EventLoop::new(swarm, command_rx, event_tx, shutdown),
    ))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use libp2p::multiaddr::Protocol;
    use vwnet_protocol::ids::{ChunkHash, WorkspaceId};
    use vwnet_protocol::wire::ChunkReply;

    use super::*;

    const WAIT: Duration = Duration::from_secs(20);

    fn config(bootstrap: Option<Multiaddr>) -> NodeConfig {
        let mut b = NodeConfig::builder("/nonexistent")
            .listen("/memory/0")
            .mdns(false);
        if let Some(addr) = bootstrap {
            b = b.bootstrap(addr.to_string());
        }
        b.build().unwrap()
    }

    async fn next_matching<T>(
        events: &mut mpsc::Receiver<Event>,
        mut f: impl FnMut(Event) -> Option<T>,
    ) -> T {
        tokio::time::timeout(WAIT, async {
            loop {
                let event = events.recv().await.expect("event stream ended");
                if let Some(v) = f(event) {
                    return v;
                }
            }
        })
        .await
        .expect("timed out waiting for an event")
    }

    /// Waits until the one upload slot is free again.
    async fn slot_returns(slots: &tokio::sync::Semaphore) {
        tokio::time::timeout(WAIT, async {
            while slots.available_permits() == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the upload slot was never released");
    }

    #[tokio::test]
    async fn requests_gossip_and_shutdown_over_the_memory_transport() {
        let (trigger, signal) = crate::shutdown::channel();
        let a_id = Identity::from_secret_bytes(&[1; 32]);
        let a_peer = keypair(&a_id).public().to_peer_id();
        let (a, mut a_events, a_loop) =
            new_in_memory(&a_id, &config(None), signal.clone()).unwrap();
        let a_task = tokio::spawn(a_loop.run());
        let addr = next_matching(&mut a_events, |e| match e {
            Event::Listening { addr } => Some(addr),
            _ => None,
        })
        .await;

        let b_id = Identity::from_secret_bytes(&[2; 32]);
        let (b, mut b_events, b_loop) = new_in_memory(
            &b_id,
            &config(Some(addr.with(Protocol::P2p(a_peer)))),
            signal.clone(),
        )
        .unwrap();
        tokio::spawn(b_loop.run());
        next_matching(&mut b_events, |e| match e {
            Event::PeerConnected { peer, .. } if peer == a_peer => Some(()),
            _ => None,
        })
        .await;

        // A's services: answer catalog requests, answer an empty chunk request with a response
        // that breaks the wire limits and any other with "missing", each holding one upload
        // slot, and reject every gossip message.
        let (gossip_tx, mut gossip_rx) = mpsc::channel(16);
        let a_client = a.clone();
        let slots = Arc::new(tokio::sync::Semaphore::new(1));
        let a_slots = Arc::clone(&slots);
        tokio::spawn(async move {
            while let Some(event) = a_events.recv().await {
                match event {
                    Event::Inbound(InboundRequest::Catalog { channel, .. }) => {
                        a_client
                            .respond_catalog(channel, CatalogResponse::Missing)
                            .await
                            .unwrap();
                    }
                    Event::Inbound(InboundRequest::Chunks {
                        channel,
                        request_id,
                        request,
                        ..
                    }) => {
                        let slot = Arc::clone(&a_slots).try_acquire_owned().unwrap();
                        let replies = if request.hashes.is_empty() {
                            vec![ChunkReply::Missing; 1000]
                        } else {
                            vec![ChunkReply::Missing; request.hashes.len()]
                        };
                        a_client
                            .respond_chunks(
                                channel,
                                request_id,
                                ChunkResponse::Chunks(replies),
                                Some(slot),
                            )
                            .await
                            .unwrap();
                    }
                    Event::Gossip {
                        message_id,
                        source,
                        origin,
                        topic,
                        data,
                    } => {
                        a_client
                            .report_validation(message_id, source, MessageAcceptance::Reject)
                            .await
                            .unwrap();
                        let _ = gossip_tx.try_send((origin, topic, data));
                    }
                    _ => {}
                }
            }
        });

        let workspace = WorkspaceId::from_bytes([5; WorkspaceId::LEN]);
        let answer = b
            .request_catalog(a_peer, CatalogRequest::Get { workspace })
            .await
            .unwrap();
        assert_eq!(answer, CatalogResponse::Missing);

        // The responder cannot encode an oversize answer: the requester sees an error.
        let err = b
            .request_chunks(a_peer, ChunkRequest { hashes: vec![] })
            .await
            .unwrap_err();
        assert!(
            matches!(err, RequestError::Io(_) | RequestError::ConnectionClosed),
            "{err:?}"
        );
        // A response that failed gives its upload slot back (else the next request's
        // `try_acquire_owned` in A's handler would panic and B would see no answer).
        slot_returns(&slots).await;
        let hash = ChunkHash::from_bytes([9; ChunkHash::LEN]);
        let answer = b
            .request_chunks(a_peer, ChunkRequest { hashes: vec![hash] })
            .await
            .unwrap();
        assert_eq!(answer, ChunkResponse::Chunks(vec![ChunkReply::Missing]));
        // So does one that was sent.
        slot_returns(&slots).await;

        // Gossip reaches A once the mesh has formed (publish until it does).
        let b_peer = keypair(&b_id).public().to_peer_id();
        let (origin, topic, data) = tokio::time::timeout(WAIT, async {
            loop {
                b.publish(GossipTopic::Descriptions, b"not a record".to_vec())
                    .await
                    .unwrap();
                if let Ok(Some(got)) =
                    tokio::time::timeout(Duration::from_millis(300), gossip_rx.recv()).await
                {
                    return got;
                }
            }
        })
        .await
        .expect("gossip never arrived");
        assert_eq!(origin, Some(b_peer));
        assert_eq!(topic, GossipTopic::Descriptions);
        assert_eq!(data, b"not a record");

        let info = a.info().await.unwrap();
        assert_eq!(info.peers, vec![b_peer]);

        // Shutdown: the loop ends and the handle reports it instead of panicking.
        trigger.send(true).unwrap();
        tokio::time::timeout(WAIT, a_task).await.unwrap().unwrap();
        assert!(matches!(a.info().await, Err(NetworkError::Stopped)));
    }

    #[test]
    fn peer_id_and_identity_are_the_same_key() {
        let identity = Identity::from_secret_bytes(&[7; 32]);
        let peer = keypair(&identity).public().to_peer_id();
        assert_eq!(peer_identity(&peer), Some(identity.public()));
        // Deterministic: the same secret always gives the same peer id.
        assert_eq!(keypair(&identity).public().to_peer_id(), peer);
    }
}
