//! Migration's last step, node to node: the source asks the destination, over
//! `/vwnet/deploy/1`, to deploy a workspace version and resume it.
//!
//! By then the CLI has saved the workspace at the source, published its next version (disk and
//! memory state ingested there, so only changed chunks are new) and undeployed it, which
//! released the lock. The request carries the signed description, so the destination need not
//! wait for gossip; it verifies and stores it like any record from a peer, then runs the same
//! deploy as a local one — policy, host match, lock, pull (fetching only the chunks it lacks),
//! materialise, restore — and resumes the guest.
//!
//! # Who is asking
//! The policy judges a requesting identity. A migration is the owner's wish, and the node never
//! holds the owner's key; so the draft the owner signs names the destination
//! ([`MIGRATE_TO_KEY`], a top-level extension). When the signed version names this node, the
//! request is judged as the description's signer (the owner, or a delegate); otherwise as the
//! requesting node, authenticated by the connection.

use std::sync::Arc;
use std::time::Instant;

use libp2p::PeerId;
use libp2p::request_response::ResponseChannel;
use tokio::sync::mpsc;
use tracing::{info, warn};
use vwnet_protocol::description::{Description, ExtValue, State};
use vwnet_protocol::ids::PeerIdentity;
use vwnet_protocol::time::Timestamp;
use vwnet_protocol::wire::{
    DeployRequest, DeployResponse, DescriptionAnnouncement, MAX_DEPLOY_REASON_LEN,
};

use super::api::{ManageResponse, MigrateReport};
use super::{ManageError, millis};
use crate::catalog::Origin;
use crate::control::Response;
use crate::daemon::{AcceptError, Services, accept_description};
use crate::network;

/// Top-level description extension naming the node (identity, hex) a migration deploys to.
pub const MIGRATE_TO_KEY: &str = "migrate_to";

/// Records in `d` that its signer wants it deployed on `to` (or removes a stale target).
pub fn set_migrate_to(d: &mut Description, to: Option<PeerIdentity>) {
    match to {
        Some(to) => {
            d.extensions.insert(
                MIGRATE_TO_KEY.into(),
                ExtValue::new(toml::Value::String(to.to_string())),
            );
        }
        None => {
            d.extensions.remove(MIGRATE_TO_KEY);
        }
    }
}

/// The node `d` is to be migrated to, if it names one.
pub fn migrate_to(d: &Description) -> Option<PeerIdentity> {
    let value = d.extensions.get(MIGRATE_TO_KEY)?.value().ok()?;
    value.as_str()?.parse().ok()
}

/// The destination of `vwnet migrate --to PEER` as a peer id and an identity.
pub fn destination(to: &str) -> Result<(PeerId, PeerIdentity), ManageError> {
    let peer: PeerId = to
        .parse()
        .map_err(|e| ManageError::Migrate(format!("{to}: not a peer id ({e})")))?;
    let identity = network::peer_identity(&peer)
        .ok_or_else(|| ManageError::Migrate(format!("{to}: not a vwnet (ed25519) peer id")))?;
    Ok((peer, identity))
}

/// `Request::Manage(Migrate)` at the source: asks `to` to deploy and resume the newest version.
pub(crate) async fn migrate(
    services: &Arc<Services>,
    query: &str,
    to: &str,
    progress: &mpsc::Sender<Response>,
) -> Result<ManageResponse, ManageError> {
    let (peer, _) = destination(to)?;
    if peer == services.local_peer {
        return Err(ManageError::Migrate(format!(
            "{to} is this node; migrate to another one"
        )));
    }
    let entry = crate::publish::resolve(services, query)
        .await
        .map_err(ManageError::Resolve)?;
    let d = entry.description.record();
    let id = d.id;
    if services.manager.db(move |db| db.get(&id)).await?.is_some() {
        return Err(ManageError::Migrate(format!(
            "workspace {} is still deployed here: save, `undeploy --publish`, then migrate",
            d.id.short()
        )));
    }
    let request = DeployRequest {
        announcement: DescriptionAnnouncement {
            description: entry.description.signed().clone(),
            delegation: entry
                .description
                .delegation()
                .map(|del| del.signed().clone()),
        },
        resume: true,
    };
    let started = Instant::now();
    let _ = progress.try_send(Response::Step(super::api::StepProgress {
        step: format!("asking {to} to deploy"),
        millis: 0,
    }));
    match services.net.request_deploy(peer, request).await {
        Ok(DeployResponse::Deployed {
            version,
            state,
            bytes_fetched,
            bytes_local,
            millis: remote_millis,
        }) => {
            info!(ws = %d.id.short(), %peer, bytes_fetched, ms = millis(started), "migrated");
            Ok(ManageResponse::Migrated(MigrateReport {
                workspace: d.id,
                version,
                to: to.to_owned(),
                state: state.as_str().to_owned(),
                bytes_fetched,
                bytes_local,
                deploy_millis: remote_millis,
            }))
        }
        Ok(DeployResponse::Failed(reason)) => Err(ManageError::Migrate(format!("{to}: {reason}"))),
        Ok(DeployResponse::Refused(r)) => Err(ManageError::Migrate(format!("{to} refused: {r:?}"))),
        Err(err) => Err(ManageError::Migrate(format!("{to}: {err}"))),
    }
}

/// Serves an inbound [`DeployRequest`] from `peer` and answers it.
pub async fn serve(
    services: &Arc<Services>,
    peer: PeerId,
    request: DeployRequest,
    channel: ResponseChannel<DeployResponse>,
) {
    let response = match deploy_for(services, peer, request).await {
        Ok(r) => r,
        Err(err) => {
            warn!(%peer, %err, "deploy asked by a peer failed");
            let mut reason = err.to_string();
            if reason.len() > MAX_DEPLOY_REASON_LEN {
                let mut cut = MAX_DEPLOY_REASON_LEN;
                while !reason.is_char_boundary(cut) {
                    cut -= 1;
                }
                reason.truncate(cut);
            }
            DeployResponse::Failed(reason)
        }
    };
    let _ = services.net.respond_deploy(channel, response).await;
}

async fn deploy_for(
    services: &Arc<Services>,
    peer: PeerId,
    request: DeployRequest,
) -> Result<DeployResponse, ManageError> {
    let started = Instant::now();
    let node = network::peer_identity(&peer)
        .ok_or_else(|| ManageError::Migrate(format!("{peer}: not an ed25519 peer")))?;
    let announcement = &request.announcement;
    let verified = announcement
        .description
        .verify(announcement.delegation.as_ref(), Timestamp::now())
        .map_err(|e| ManageError::Migrate(e.to_string()))?;
    let d = verified.record().clone();
    // Stored like a record from gossip: a newer version held here wins, an equal one is a
    // duplicate; either way the catalog then decides what is deployed.
    match accept_description(services, announcement, Origin::Remote).await {
        Ok(_) => {}
        Err(AcceptError::Invalid(reason)) => return Err(ManageError::Migrate(reason)),
        Err(err) => return Err(ManageError::Migrate(err.to_string())),
    }
    let id = d.id;
    let entry = services
        .with_catalog(move |c| c.get(&id))
        .await
        .map_err(|e| ManageError::Migrate(e.to_string()))?
        .ok_or_else(|| ManageError::Resolve(format!("workspace {}: not stored", id.short())))?;
    // The owner's signed wish names this node: judge the request as the signer's.
    let requester = if migrate_to(&d) == Some(services.identity) {
        verified.signer()
    } else {
        node
    };
    info!(ws = %d.id.short(), %peer, requester = %requester.short(), "deploy asked by a peer");
    // Progress of a remote deploy has no one to go to.
    let (progress, _) = mpsc::channel(1);
    let report = services
        .manager
        .deploy_entry(services, &entry, Some(d.version), requester, &progress)
        .await?;
    let query = d.id.to_string();
    let state = if request.resume {
        let resumed = if report.hot {
            services.manager.unpause(services, &query).await?
        } else {
            services.manager.start(services, &query).await?
        };
        match resumed {
            ManageResponse::State(s) => s.state,
            _ => report.state.state.clone(),
        }
    } else {
        report.state.state.clone()
    };
    Ok(DeployResponse::Deployed {
        version: d.version,
        state: state.parse().unwrap_or(State::Shutdown),
        bytes_fetched: report.pull.bytes_fetched,
        bytes_local: report.pull.bytes_local,
        millis: millis(started),
    })
}

#[cfg(test)]
mod tests {
    use vwnet_protocol::ids::WorkspaceId;

    use super::*;

    #[test]
    fn migrate_to_round_trips_and_can_be_cleared() {
        let text = vwnet_protocol::description::template_for(
            WorkspaceId::from_bytes([1; 16]),
            PeerIdentity::from_bytes([2; 32]),
            Timestamp::from_unix_secs(1_800_000_000),
        );
        let mut d = Description::from_toml_str(&text).unwrap();
        assert_eq!(migrate_to(&d), None);
        let to = PeerIdentity::from_bytes([3; 32]);
        set_migrate_to(&mut d, Some(to));
        assert_eq!(migrate_to(&d), Some(to));
        // It survives the canonical encoding the signature covers.
        let back = Description::from_canonical_bytes(&d.to_canonical_bytes()).unwrap();
        assert_eq!(migrate_to(&back), Some(to));
        set_migrate_to(&mut d, None);
        assert_eq!(migrate_to(&d), None);
    }

    #[test]
    fn destinations_must_be_ed25519_peer_ids() {
        assert!(destination("not-a-peer").is_err());
        let key = libp2p::identity::Keypair::generate_ed25519();
        let peer = key.public().to_peer_id();
        let (p, identity) = destination(&peer.to_string()).unwrap();
        assert_eq!(p, peer);
        assert_eq!(network::peer_id_of(&identity), Some(peer));
    }
}
