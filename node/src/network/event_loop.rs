//! The one task that owns the [`Swarm`].
//!
//! It holds nothing but the swarm and the `pending_*` maps that route answers back to callers,
//! keyed by query or request id. Every branch is synchronous: commands are applied to the swarm
//! and events are passed on with `try_send`, so a slow consumer can never stall heartbeats,
//! pings or transfers. What happens when the event channel is full is decided per event: an
//! inbound request is refused (the peer sees a failure and asks elsewhere), a gossip message is
//! ignored (it is neither forwarded nor penalised).

use std::collections::{HashMap, HashSet};

use futures::StreamExt;
use libp2p::gossipsub::{self, MessageAcceptance};
use libp2p::kad::{self, GetProvidersOk, QueryId, QueryResult};
use libp2p::request_response::{self, InboundRequestId, OutboundRequestId};
use libp2p::swarm::SwarmEvent;
use libp2p::{PeerId, Swarm, identify, mdns};
use tokio::sync::{OwnedSemaphorePermit, mpsc, oneshot, watch};
use tracing::{debug, info, trace, warn};

use super::behaviour::{Behaviour, BehaviourEvent, topics};
use super::protocols::{
    CatalogResponse, ChunkResponse, DeployResponse, LockResponse, ManifestResponse,
};
use super::{Command, Event, GossipTopic, InboundRequest, NetworkError, NetworkInfo, RequestError};

type Reply<T> = oneshot::Sender<Result<T, RequestError>>;

/// Drives the swarm; created by [`super::new`], run with [`EventLoop::run`].
pub struct EventLoop {
    swarm: Swarm<Behaviour>,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<Event>,
    shutdown: watch::Receiver<bool>,
    pending_start_providing: HashMap<QueryId, oneshot::Sender<Result<(), NetworkError>>>,
    pending_get_providers: HashMap<QueryId, (HashSet<PeerId>, oneshot::Sender<HashSet<PeerId>>)>,
    pending_chunks: HashMap<OutboundRequestId, Reply<ChunkResponse>>,
    pending_manifests: HashMap<OutboundRequestId, Reply<ManifestResponse>>,
    pending_catalog: HashMap<OutboundRequestId, Reply<CatalogResponse>>,
    pending_locks: HashMap<OutboundRequestId, Reply<LockResponse>>,
    pending_deploys: HashMap<OutboundRequestId, Reply<DeployResponse>>,
    /// Upload slots of chunk responses handed to their connection and not yet sent.
    sending_chunks: HashMap<InboundRequestId, OwnedSemaphorePermit>,
    /// Whether a Kademlia bootstrap has been started since the routing table was empty.
    bootstrapped: bool,
}

impl EventLoop {
    pub(super) fn new(
        swarm: Swarm<Behaviour>,
        commands: mpsc::Receiver<Command>,
        events: mpsc::Sender<Event>,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        Self {
            swarm,
            commands,
            events,
            shutdown,
            pending_start_providing: HashMap::new(),
            pending_get_providers: HashMap::new(),
            pending_chunks: HashMap::new(),
            sending_chunks: HashMap::new(),
            pending_manifests: HashMap::new(),
            pending_catalog: HashMap::new(),
            pending_locks: HashMap::new(),
            pending_deploys: HashMap::new(),
            bootstrapped: false,
        }
    }

    /// Runs until every [`super::Client`] is dropped or shutdown is signalled.
    pub async fn run(mut self) {
        let mut shutdown = self.shutdown.clone();
        loop {
            tokio::select! {
                _ = crate::shutdown::signalled(&mut shutdown) => break,
                event = self.swarm.select_next_some() => self.handle_event(event),
                command = self.commands.recv() => match command {
                    Some(command) => self.handle_command(command),
                    None => break,
                },
            }
        }
        debug!("network event loop stopped");
        // Dropping the swarm closes every connection; pending callers get `Stopped` when their
        // reply senders drop with the maps.
    }

    fn emit(&mut self, event: Event) {
        match self.events.try_send(event) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(event)) => self.overflow(event),
            // The consumer is gone: the node is shutting down; nothing to deliver to.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    /// The consumer is behind: shed the event in the way that costs the network least.
    fn overflow(&mut self, event: Event) {
        match event {
            Event::Gossip {
                message_id, source, ..
            } => {
                warn!(%source, "event queue full: ignoring a gossip message");
                self.swarm
                    .behaviour_mut()
                    .gossipsub
                    .report_message_validation_result(
                        &message_id,
                        &source,
                        MessageAcceptance::Ignore,
                    );
            }
            // Dropping the response channel refuses the request; the peer asks elsewhere.
            Event::Inbound(request) => {
                warn!(peer = %request.peer(), "event queue full: refusing an inbound request");
            }
            other => warn!(?other, "event queue full: dropping an event"),
        }
    }

    fn handle_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                info!(%address, "listening");
                self.emit(Event::Listening { addr: address });
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                endpoint,
                num_established,
                ..
            } => {
                debug!(peer = %peer_id, addr = %endpoint.get_remote_address(), "connected");
                if num_established.get() == 1 {
                    self.emit(Event::PeerConnected {
                        peer: peer_id,
                        addr: endpoint.get_remote_address().clone(),
                    });
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established,
                ..
            } => {
                if num_established == 0 {
                    debug!(peer = %peer_id, "disconnected");
                    self.emit(Event::PeerDisconnected { peer: peer_id });
                }
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                debug!(?peer_id, %error, "outgoing connection failed");
            }
            SwarmEvent::Behaviour(event) => self.handle_behaviour(event),
            other => trace!(?other, "swarm event"),
        }
    }

    fn handle_behaviour(&mut self, event: BehaviourEvent) {
        match event {
            BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }) => {
                let kad = &mut self.swarm.behaviour_mut().kad;
                for addr in info.listen_addrs {
                    kad.add_address(&peer_id, addr);
                }
                if !self.bootstrapped {
                    // Only now does the routing table hold someone to ask.
                    self.bootstrapped = kad.bootstrap().is_ok();
                }
            }
            BehaviourEvent::Mdns(mdns::Event::Discovered(found)) => {
                for (peer, addr) in found {
                    if peer == *self.swarm.local_peer_id() {
                        continue;
                    }
                    self.swarm
                        .behaviour_mut()
                        .kad
                        .add_address(&peer, addr.clone());
                    if !self.swarm.is_connected(&peer)
                        && let Err(err) = self.swarm.dial(addr)
                    {
                        debug!(%peer, %err, "dialing an mDNS peer failed");
                    }
                }
            }
            BehaviourEvent::Kad(kad::Event::OutboundQueryProgressed {
                id, result, step, ..
            }) => self.handle_query(id, result, step.last),
            BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            }) => {
                let [descriptions, locks, providers] = topics();
                let topic = if message.topic == descriptions.hash() {
                    GossipTopic::Descriptions
                } else if message.topic == locks.hash() {
                    GossipTopic::Locks
                } else if message.topic == providers.hash() {
                    GossipTopic::Providers
                } else {
                    // Not ours: never forward it.
                    self.swarm
                        .behaviour_mut()
                        .gossipsub
                        .report_message_validation_result(
                            &message_id,
                            &propagation_source,
                            MessageAcceptance::Reject,
                        );
                    return;
                };
                self.emit(Event::Gossip {
                    message_id,
                    source: propagation_source,
                    origin: message.source,
                    topic,
                    data: message.data,
                });
            }
            BehaviourEvent::Chunks(event) => {
                // A response's upload slot is free once its bytes are out, or it failed.
                match &event {
                    request_response::Event::ResponseSent { request_id, .. }
                    | request_response::Event::InboundFailure { request_id, .. } => {
                        self.sending_chunks.remove(request_id);
                    }
                    _ => {}
                }
                if let Some(request) = inbound(
                    event,
                    &mut self.pending_chunks,
                    |peer, request_id, request, channel| InboundRequest::Chunks {
                        peer,
                        request_id,
                        request,
                        channel,
                    },
                ) {
                    self.emit(Event::Inbound(request));
                }
            }
            BehaviourEvent::Manifests(event) => {
                if let Some(request) = inbound(
                    event,
                    &mut self.pending_manifests,
                    |peer, _, request, channel| InboundRequest::Manifest {
                        peer,
                        request,
                        channel,
                    },
                ) {
                    self.emit(Event::Inbound(request));
                }
            }
            BehaviourEvent::Catalog(event) => {
                if let Some(request) = inbound(
                    event,
                    &mut self.pending_catalog,
                    |peer, _, request, channel| InboundRequest::Catalog {
                        peer,
                        request,
                        channel,
                    },
                ) {
                    self.emit(Event::Inbound(request));
                }
            }
            BehaviourEvent::Locks(event) => {
                if let Some(request) = inbound(
                    event,
                    &mut self.pending_locks,
                    |peer, _, request, channel| InboundRequest::Lock {
                        peer,
                        request,
                        channel,
                    },
                ) {
                    self.emit(Event::Inbound(request));
                }
            }
            BehaviourEvent::Deploys(event) => {
                if let Some(request) = inbound(
                    event,
                    &mut self.pending_deploys,
                    |peer, _, request, channel| InboundRequest::Deploy {
                        peer,
                        request: Box::new(request),
                        channel,
                    },
                ) {
                    self.emit(Event::Inbound(request));
                }
            }
            other => trace!(?other, "behaviour event"),
        }
    }

    fn handle_query(&mut self, id: QueryId, result: QueryResult, last: bool) {
        match result {
            QueryResult::StartProviding(result) => {
                if let Some(reply) = self.pending_start_providing.remove(&id) {
                    // "No peers to store at" is fine for a node alone: the record is held
                    // locally and peers find it once they connect and query.
                    let _ = reply.send(result.map(|_| ()).or_else(|e| match e {
                        kad::AddProviderError::Timeout { .. } => Ok(()),
                    }));
                }
            }
            QueryResult::GetProviders(result) => {
                if let Ok(GetProvidersOk::FoundProviders { providers, .. }) = result
                    && let Some((found, _)) = self.pending_get_providers.get_mut(&id)
                {
                    found.extend(providers);
                }
                if last && let Some((found, reply)) = self.pending_get_providers.remove(&id) {
                    let _ = reply.send(found);
                }
            }
            QueryResult::Bootstrap(result) => debug!(?result, "kademlia bootstrap step"),
            other => trace!(?other, "kademlia query"),
        }
    }

    fn handle_command(&mut self, command: Command) {
        let behaviour = self.swarm.behaviour_mut();
        match command {
            Command::Dial { addr, reply } => {
                let _ = reply.send(
                    self.swarm
                        .dial(addr)
                        .map_err(|e| NetworkError::Dial(e.to_string())),
                );
            }
            Command::Info { reply } => {
                let _ = reply.send(NetworkInfo {
                    peer_id: *self.swarm.local_peer_id(),
                    listen: self.swarm.listeners().cloned().collect(),
                    peers: self.swarm.connected_peers().copied().collect(),
                });
            }
            Command::Publish { topic, data, reply } => {
                let [descriptions, locks, providers] = topics();
                let topic = match topic {
                    GossipTopic::Descriptions => descriptions,
                    GossipTopic::Locks => locks,
                    GossipTopic::Providers => providers,
                };
                let result = behaviour.gossipsub.publish(topic, data).map(|_| ());
                let _ = reply.send(match result {
                    Ok(()) => Ok(()),
                    // Alone (or all peers pruned): the catalog exchange on connect will carry
                    // the record to peers that come later.
                    Err(gossipsub::PublishError::NoPeersSubscribedToTopic) => Ok(()),
                    Err(gossipsub::PublishError::Duplicate) => Ok(()),
                    Err(e) => Err(NetworkError::Publish(e.to_string())),
                });
            }
            Command::Validated {
                message_id,
                source,
                acceptance,
            } => {
                behaviour.gossipsub.report_message_validation_result(
                    &message_id,
                    &source,
                    acceptance,
                );
            }
            Command::StartProviding { key, reply } => match behaviour.kad.start_providing(key) {
                Ok(id) => {
                    self.pending_start_providing.insert(id, reply);
                }
                Err(e) => {
                    let _ = reply.send(Err(NetworkError::Provide(e.to_string())));
                }
            },
            Command::GetProviders { key, reply } => {
                let id = behaviour.kad.get_providers(key);
                self.pending_get_providers
                    .insert(id, (HashSet::new(), reply));
            }
            Command::RequestChunks {
                peer,
                request,
                reply,
            } => {
                let id = behaviour.chunks.send_request(&peer, request);
                self.pending_chunks.insert(id, reply);
            }
            Command::RequestManifest {
                peer,
                request,
                reply,
            } => {
                let id = behaviour.manifests.send_request(&peer, request);
                self.pending_manifests.insert(id, reply);
            }
            Command::RequestCatalog {
                peer,
                request,
                reply,
            } => {
                let id = behaviour.catalog.send_request(&peer, request);
                self.pending_catalog.insert(id, reply);
            }
            Command::RequestLock {
                peer,
                request,
                reply,
            } => {
                let id = behaviour.locks.send_request(&peer, request);
                self.pending_locks.insert(id, reply);
            }
            Command::RespondLock { channel, response } => {
                let _ = behaviour.locks.send_response(channel, response);
            }
            Command::RequestDeploy {
                peer,
                request,
                reply,
            } => {
                let id = behaviour.deploys.send_request(&peer, *request);
                self.pending_deploys.insert(id, reply);
            }
            Command::RespondDeploy { channel, response } => {
                let _ = behaviour.deploys.send_response(channel, response);
            }
            Command::RespondChunks {
                channel,
                request_id,
                response,
                slot,
            } => {
                // Err means the peer went away or the request timed out: the slot is free now.
                if behaviour.chunks.send_response(channel, response).is_ok()
                    && let Some(slot) = slot
                {
                    self.sending_chunks.insert(request_id, slot);
                }
            }
            Command::RespondManifest { channel, response } => {
                let _ = behaviour.manifests.send_response(channel, response);
            }
            Command::RespondCatalog { channel, response } => {
                let _ = behaviour.catalog.send_response(channel, response);
            }
            Command::Ban { peer } => {
                behaviour.blocked.block_peer(peer);
                behaviour.gossipsub.blacklist_peer(&peer);
            }
            Command::Unban { peer } => {
                behaviour.blocked.unblock_peer(peer);
                behaviour.gossipsub.remove_blacklisted_peer(&peer);
            }
        }
    }
}

/// Routes one request-response event: answers go to their pending caller, requests are
/// returned for the consumer.
fn inbound<Req, Resp>(
    event: request_response::Event<Req, Resp>,
    pending: &mut HashMap<OutboundRequestId, Reply<Resp>>,
    wrap: impl FnOnce(
        PeerId,
        InboundRequestId,
        Req,
        request_response::ResponseChannel<Resp>,
    ) -> InboundRequest,
) -> Option<InboundRequest> {
    match event {
        request_response::Event::Message { peer, message, .. } => match message {
            request_response::Message::Request {
                request_id,
                request,
                channel,
            } => Some(wrap(peer, request_id, request, channel)),
            request_response::Message::Response {
                request_id,
                response,
            } => {
                if let Some(reply) = pending.remove(&request_id) {
                    let _ = reply.send(Ok(response));
                }
                None
            }
        },
        request_response::Event::OutboundFailure {
            request_id, error, ..
        } => {
            if let Some(reply) = pending.remove(&request_id) {
                let _ = reply.send(Err(RequestError::from(error)));
            }
            None
        }
        request_response::Event::InboundFailure { peer, error, .. } => {
            debug!(%peer, %error, "inbound request failed");
            None
        }
        request_response::Event::ResponseSent { .. } => None,
    }
}
