//! The cloneable handle through which the rest of the node uses the swarm.
//!
//! Every method sends one [`Command`] over a bounded channel (waiting for room if the event loop
//! is busy, which is the back-pressure we want) and, where there is an answer, awaits a
//! oneshot. A stopped event loop shows up as [`NetworkError::Stopped`] or
//! [`RequestError::Stopped`], never as a panic.

use std::collections::HashSet;

use libp2p::gossipsub::{MessageAcceptance, MessageId};
use libp2p::request_response::{InboundRequestId, ResponseChannel};
use libp2p::{Multiaddr, PeerId, kad};
use tokio::sync::{OwnedSemaphorePermit, mpsc, oneshot};

use super::protocols::{
    CatalogRequest, CatalogResponse, ChunkRequest, ChunkResponse, DeployRequest, DeployResponse,
    LockRequest, LockResponse, ManifestRequest, ManifestResponse,
};
use super::{Command, GossipTopic, NetworkError, NetworkInfo, RequestError};

/// A handle to the network event loop.
#[derive(Debug, Clone)]
pub struct Client {
    commands: mpsc::Sender<Command>,
}

impl Client {
    pub(super) fn new(commands: mpsc::Sender<Command>) -> Self {
        Self { commands }
    }

    async fn send(&self, command: Command) -> Result<(), NetworkError> {
        self.commands
            .send(command)
            .await
            .map_err(|_| NetworkError::Stopped)
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, NetworkError> {
        let (tx, rx) = oneshot::channel();
        self.send(make(tx)).await?;
        rx.await.map_err(|_| NetworkError::Stopped)
    }

    async fn request<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, RequestError>>) -> Command,
    ) -> Result<T, RequestError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(make(tx))
            .await
            .map_err(|_| RequestError::Stopped)?;
        rx.await.map_err(|_| RequestError::Stopped)?
    }

    /// Dials `addr`; returns once the dial has started.
    pub async fn dial(&self, addr: Multiaddr) -> Result<(), NetworkError> {
        self.ask(|reply| Command::Dial { addr, reply }).await?
    }

    /// Our peer id, listen addresses and connected peers.
    pub async fn info(&self) -> Result<NetworkInfo, NetworkError> {
        self.ask(|reply| Command::Info { reply }).await
    }

    /// Publishes a signed record on a gossip topic.
    pub async fn publish(&self, topic: GossipTopic, data: Vec<u8>) -> Result<(), NetworkError> {
        self.ask(|reply| Command::Publish { topic, data, reply })
            .await?
    }

    /// Reports the application's verdict on a gossip message (see [`super::Event::Gossip`]).
    pub async fn report_validation(
        &self,
        message_id: MessageId,
        source: PeerId,
        acceptance: MessageAcceptance,
    ) -> Result<(), NetworkError> {
        self.send(Command::Validated {
            message_id,
            source,
            acceptance,
        })
        .await
    }

    /// Announces on the DHT that this node provides `key`.
    pub async fn start_providing(&self, key: kad::RecordKey) -> Result<(), NetworkError> {
        self.ask(|reply| Command::StartProviding { key, reply })
            .await?
    }

    /// Asks the DHT who provides `key`.
    pub async fn get_providers(
        &self,
        key: kad::RecordKey,
    ) -> Result<HashSet<PeerId>, NetworkError> {
        self.ask(|reply| Command::GetProviders { key, reply }).await
    }

    /// Asks `peer` for chunks.
    pub async fn request_chunks(
        &self,
        peer: PeerId,
        request: ChunkRequest,
    ) -> Result<ChunkResponse, RequestError> {
        self.request(|reply| Command::RequestChunks {
            peer,
            request,
            reply,
        })
        .await
    }

    /// Asks `peer` for a manifest.
    pub async fn request_manifest(
        &self,
        peer: PeerId,
        request: ManifestRequest,
    ) -> Result<ManifestResponse, RequestError> {
        self.request(|reply| Command::RequestManifest {
            peer,
            request,
            reply,
        })
        .await
    }

    /// Asks `peer` for its catalog.
    pub async fn request_catalog(
        &self,
        peer: PeerId,
        request: CatalogRequest,
    ) -> Result<CatalogResponse, RequestError> {
        self.request(|reply| Command::RequestCatalog {
            peer,
            request,
            reply,
        })
        .await
    }

    /// Asks the lock authority `peer` to grant, renew or release a lock.
    pub async fn request_lock(
        &self,
        peer: PeerId,
        request: LockRequest,
    ) -> Result<LockResponse, RequestError> {
        self.request(|reply| Command::RequestLock {
            peer,
            request,
            reply,
        })
        .await
    }

    /// Answers an inbound lock request.
    pub async fn respond_lock(
        &self,
        channel: ResponseChannel<LockResponse>,
        response: LockResponse,
    ) -> Result<(), NetworkError> {
        self.send(Command::RespondLock { channel, response }).await
    }

    /// Asks `peer` to deploy and resume a workspace.
    pub async fn request_deploy(
        &self,
        peer: PeerId,
        request: DeployRequest,
    ) -> Result<DeployResponse, RequestError> {
        self.request(|reply| Command::RequestDeploy {
            peer,
            request: Box::new(request),
            reply,
        })
        .await
    }

    /// Answers an inbound deploy request.
    pub async fn respond_deploy(
        &self,
        channel: ResponseChannel<DeployResponse>,
        response: DeployResponse,
    ) -> Result<(), NetworkError> {
        self.send(Command::RespondDeploy { channel, response })
            .await
    }

    /// Answers inbound chunk request `request_id`. `slot`, if any, is released only once the
    /// response has been handed to the connection or has failed, so upload slots bound the
    /// bytes queued for peers rather than the time spent reading them from the store.
    pub async fn respond_chunks(
        &self,
        channel: ResponseChannel<ChunkResponse>,
        request_id: InboundRequestId,
        response: ChunkResponse,
        slot: Option<OwnedSemaphorePermit>,
    ) -> Result<(), NetworkError> {
        self.send(Command::RespondChunks {
            channel,
            request_id,
            response,
            slot,
        })
        .await
    }

    /// Answers an inbound manifest request.
    pub async fn respond_manifest(
        &self,
        channel: ResponseChannel<ManifestResponse>,
        response: ManifestResponse,
    ) -> Result<(), NetworkError> {
        self.send(Command::RespondManifest { channel, response })
            .await
    }

    /// Answers an inbound catalog request.
    pub async fn respond_catalog(
        &self,
        channel: ResponseChannel<CatalogResponse>,
        response: CatalogResponse,
    ) -> Result<(), NetworkError> {
        self.send(Command::RespondCatalog { channel, response })
            .await
    }

    /// Disconnects `peer` and refuses it until [`Client::unban`].
    pub async fn ban(&self, peer: PeerId) -> Result<(), NetworkError> {
        self.send(Command::Ban { peer }).await
    }

    /// Lifts a ban.
    pub async fn unban(&self, peer: PeerId) -> Result<(), NetworkError> {
        self.send(Command::Unban { peer }).await
    }
}
