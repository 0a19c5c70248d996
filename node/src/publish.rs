//! Control handlers for publishing and browsing: ingest, publish, ls, inspect.
//!
//! Signing happens in the CLI with the user's key (the node never holds it): the CLI asks the
//! node to ingest the image(s), fills the manifest ids into the description, signs it, and
//! hands the signed bytes to [`publish`], which verifies them like any record from a peer.

use std::collections::BTreeSet;
use std::path::PathBuf;

use tracing::{info, warn};
use vwnet_protocol::description::{Description, ImageRef};
use vwnet_protocol::ids::{ImageId, WorkspaceId};
use vwnet_protocol::signed::SignedDescription;
use vwnet_protocol::time::Timestamp;
use vwnet_protocol::wire::{DescriptionAnnouncement, GossipMessage, Holdings};

use crate::catalog::{Entry, Offer, Origin};
use crate::control::{ImageProviders, Response, WorkspaceDetail, WorkspaceSummary};
use crate::daemon::{AcceptError, Services, accept_description};
use crate::network::{GossipTopic, behaviour::provider_key};

/// The images a description names (disk, then memory state).
pub fn images_of(d: &Description) -> Vec<ImageRef> {
    d.image
        .disk
        .iter()
        .chain(d.image.memory_state.iter())
        .copied()
        .collect()
}

/// `Request::Ingest`: chunk a file into the store.
pub async fn ingest(services: &Services, path: PathBuf) -> Response {
    if !path.is_absolute() {
        return Response::Error(format!("{}: path must be absolute", path.display()));
    }
    match services.store.ingest(path.clone()).await {
        Ok(report) => {
            info!(image = %report.image.short(), size = report.size, new = report.new_bytes, "ingested");
            Response::Ingested {
                image: report.image,
                size: report.size,
            }
        }
        Err(err) => Response::Error(format!("{}: {err}", path.display())),
    }
}

/// `Request::Publish`: verify, store in the catalog, gossip, provide.
pub async fn publish(services: &Services, signed: &[u8]) -> Response {
    let description = match SignedDescription::from_bytes(signed) {
        Ok(d) => d,
        Err(err) => return Response::Error(format!("signed description: {err}")),
    };
    let announcement = DescriptionAnnouncement {
        description,
        delegation: None,
    };
    // Read the claimed record only to check the images; verification follows in accept.
    let now = Timestamp::now();
    let verified = match announcement.description.verify(None, now) {
        Ok(v) => v,
        Err(err) => return Response::Error(err.to_string()),
    };
    let d = verified.record().clone();
    let images = images_of(&d);
    if images.is_empty() {
        return Response::Error("the description names no image".into());
    }
    for image in &images {
        match services.store.missing(image.id).await {
            Ok(missing) if missing.is_empty() => {}
            Ok(missing) => {
                return Response::Error(format!(
                    "image {}: {} chunks are not in the local store",
                    image.id.short(),
                    missing.len()
                ));
            }
            Err(err) => return Response::Error(format!("image {}: {err}", image.id.short())),
        }
    }
    match accept_description(services, &announcement, Origin::Local).await {
        Ok(Offer::Accepted) | Ok(Offer::Duplicate) => {}
        Ok(Offer::Refused(refusal)) => return Response::Error(refusal.to_string()),
        Err(AcceptError::Invalid(reason)) => return Response::Error(reason),
        Err(err) => return Response::Error(err.to_string()),
    }
    services
        .gossip(
            GossipTopic::Descriptions,
            &GossipMessage::Description(announcement),
        )
        .await;
    for image in &images {
        if let Err(err) = services.net.start_providing(provider_key(&image.id)).await {
            warn!(%err, image = %image.id.short(), "provider record not stored");
        }
        services
            .announce_holdings(image.id, Holdings::Complete)
            .await;
    }
    info!(ws = %d.id.short(), version = d.version, "published");
    Response::Published {
        workspace: d.id,
        version: d.version,
    }
}

/// Bytes of `image` held locally: its size minus the bytes of its missing chunks.
async fn local_bytes(services: &Services, image: &ImageRef) -> u64 {
    let Ok(Some(manifest)) = services.store.manifest(image.id).await else {
        return 0;
    };
    let Ok(missing) = services.store.missing(image.id).await else {
        return 0;
    };
    let missing: BTreeSet<_> = missing.into_iter().collect();
    // A chunk repeated in the image counts once per occurrence, like the size does.
    let absent: u64 = manifest
        .chunks()
        .iter()
        .filter(|c| !c.zero && missing.contains(&c.hash))
        .map(|c| u64::from(c.len))
        .sum();
    manifest.size().saturating_sub(absent)
}

async fn summary(services: &Services, entry: &Entry) -> WorkspaceSummary {
    let d = entry.description.record();
    let images = images_of(d);
    let mut local = 0;
    for image in &images {
        local += local_bytes(services, image).await;
    }
    WorkspaceSummary {
        workspace: d.id,
        name: d.name.clone(),
        owner: d.owner.to_string(),
        version: d.version,
        size: images.iter().map(|i| i.size).sum(),
        local_bytes: local,
        published_here: entry.origin == Origin::Local,
        live_state: services.manager.live_state(d.id).await,
        expires_at: d.expires_at(),
        expired: d.is_expired(Timestamp::now()),
        pinned: services.lifetime.pins().contains(&d.id),
    }
}

/// `Request::List`.
pub async fn list(services: &Services, remote: bool) -> Response {
    let entries = match services.with_catalog(move |c| c.list()).await {
        Ok(e) => e,
        Err(err) => return Response::Error(err.to_string()),
    };
    let mut out = Vec::new();
    for entry in &entries {
        let s = summary(services, entry).await;
        // Without --remote: what this node published or holds any of.
        if remote || s.published_here || s.local_bytes > 0 {
            out.push(s);
        }
    }
    Response::List(out)
}

/// Finds a workspace by full id, unique hex prefix, or unique name.
pub async fn resolve(services: &Services, query: &str) -> Result<Entry, String> {
    if let Ok(id) = query.parse::<WorkspaceId>() {
        return match services.with_catalog(move |c| c.get(&id)).await {
            Ok(Some(e)) => Ok(e),
            Ok(None) => Err(format!("workspace {query}: not known to this node")),
            Err(err) => Err(err.to_string()),
        };
    }
    let entries = services
        .with_catalog(move |c| c.list())
        .await
        .map_err(|e| e.to_string())?;
    let lower = query.to_ascii_lowercase();
    let matches: Vec<Entry> = entries
        .into_iter()
        .filter(|e| {
            let d = e.description.record();
            d.name == query || d.id.to_string().starts_with(&lower)
        })
        .collect();
    match matches.len() {
        1 => matches
            .into_iter()
            .next()
            .ok_or_else(|| "unreachable".into()),
        0 => Err(format!("workspace {query:?}: not known to this node")),
        n => Err(format!(
            "workspace {query:?}: ambiguous ({n} workspaces match; give more of the id)"
        )),
    }
}

/// Who provides `image`: DHT providers, peers that announced holdings, and this node.
pub async fn providers(services: &Services, image: &ImageId) -> Vec<String> {
    let mut out: BTreeSet<String> = services
        .net
        .get_providers(provider_key(image))
        .await
        .unwrap_or_default()
        .iter()
        .map(ToString::to_string)
        .collect();
    out.extend(services.holdings_of(image).keys().map(ToString::to_string));
    if services
        .store
        .missing(*image)
        .await
        .is_ok_and(|m| m.is_empty())
    {
        out.insert(services.local_peer.to_string());
    }
    out.into_iter().collect()
}

/// `Request::Inspect`.
pub async fn inspect(services: &Services, query: &str) -> Response {
    let entry = match resolve(services, query).await {
        Ok(e) => e,
        Err(err) => return Response::Error(err),
    };
    let mut d = entry.description.record().clone();
    // The description's state follows reality here: a workspace deployed on this node shows
    // its live state, not the one it was published with.
    if let Some(live) = services.manager.live_state(d.id).await
        && let Ok(state) = live.parse()
    {
        d.state = state;
    }
    let d = &d;
    let description_toml = match d.to_toml_string() {
        Ok(t) => t,
        Err(err) => return Response::Error(err.to_string()),
    };
    let signature = match entry.description.delegation() {
        None => "valid (signed by the owner)".to_owned(),
        Some(del) => format!(
            "valid (signed by a delegate of the owner, delegation by {})",
            del.signer().short()
        ),
    };
    let mut images = Vec::new();
    for image in images_of(d) {
        images.push(ImageProviders {
            image: image.id,
            size: image.size,
            providers: providers(services, &image.id).await,
        });
    }
    Response::Inspect(Box::new(WorkspaceDetail {
        summary: summary(services, &entry).await,
        description_toml,
        signer: entry.description.signer().to_string(),
        signature,
        images,
        lock: crate::locks::control::info(&services.locks, d.id),
    }))
}
