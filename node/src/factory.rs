//! Control handlers of the factory and the repository's lifetime: create, extend, pin, gc.
//!
//! `vwnet create` builds the new description in the CLI (fresh id, or `clone_as` of an
//! existing workspace: same image manifests, so no chunk is copied), signs it with the user's
//! key and sends it here. The node checks it as the factory: a valid version 1 of a workspace it
//! does not know, which the policy lets its signer create (rules, then resource limits and
//! `max_workspaces` against the live workspaces created here), and then publishes it like
//! `Request::Publish`. The user's key never reaches the node.

use vwnet_protocol::acl::Action;
use vwnet_protocol::signed::{SignedAttributeCertificate, SignedDelegation, SignedDescription};
use vwnet_protocol::time::Timestamp;

use vwnet_protocol::wire::{DescriptionAnnouncement, GossipMessage};

use crate::catalog::{Offer, Origin};
use crate::control::Response;
use crate::daemon::{Services, accept_description};
use crate::network::GossipTopic;
use crate::publish::resolve;

fn parse_certs(certs: &[Vec<u8>]) -> Result<Vec<SignedAttributeCertificate>, String> {
    certs
        .iter()
        .enumerate()
        .map(|(i, bytes)| {
            SignedAttributeCertificate::from_bytes(bytes)
                .map_err(|err| format!("attribute certificate {i}: {err}"))
        })
        .collect()
}

/// `Request::Create`: the factory's decision, then publication.
pub async fn create(services: &Services, signed: &[u8], certs: &[Vec<u8>]) -> Response {
    let now = Timestamp::now();
    let description = match SignedDescription::from_bytes(signed) {
        Ok(d) => d,
        Err(err) => return Response::Error(format!("signed description: {err}")),
    };
    let verified = match description.verify(None, now) {
        Ok(v) => v,
        Err(err) => return Response::Error(err.to_string()),
    };
    let d = verified.record();
    if let Err(err) = d.validate() {
        return Response::Error(err.to_string());
    }
    if d.version != 1 || d.previous.is_some() {
        return Response::Error(format!(
            "create makes version 1 of a new workspace; this is version {} (use publish or extend)",
            d.version
        ));
    }
    let presented = match parse_certs(certs) {
        Ok(c) => c,
        Err(err) => return Response::Error(err),
    };
    if let Err(denied) =
        services
            .policy
            .check(Action::Create, verified.signer(), &presented, d, now)
    {
        tracing::warn!(%denied, ws = %d.id.short(), "create refused");
        return Response::Error(denied.to_string());
    }
    let id = d.id;
    let entries = match services.with_catalog(move |c| c.list()).await {
        Ok(e) => e,
        Err(err) => return Response::Error(err.to_string()),
    };
    if entries.iter().any(|e| e.description.record().id == id) {
        return Response::Error(format!("workspace {id} already exists"));
    }
    let created_here = entries
        .iter()
        .filter(|e| e.origin == Origin::Local && !e.description.record().is_expired(now))
        .count() as u64;
    if let Err(denied) = services.policy.check_count(Action::Create, created_here) {
        return Response::Error(denied.to_string());
    }
    crate::publish::publish(services, signed).await
}

/// `Request::Pin`: pins or unpins a workspace known to the catalog.
pub async fn pin(services: &Services, workspace: &str, pinned: bool) -> Response {
    let entry = match resolve(services, workspace).await {
        Ok(e) => e,
        Err(err) => return Response::Error(err),
    };
    let id = entry.description.record().id;
    match services.lifetime.set_pin(id, pinned).await {
        Ok(_) => Response::Pinned {
            workspace: id,
            pinned,
        },
        Err(err) => Response::Error(err.to_string()),
    }
}

/// `Request::Gc`: collects the chunks of expired, unpinned workspaces (and any unpinned image).
pub async fn gc(services: &Services) -> Response {
    match services
        .lifetime
        .gc(services.catalog.clone(), Timestamp::now())
        .await
    {
        Ok(summary) => {
            tracing::info!(
                deleted = summary.deleted_chunks,
                expired = summary.expired_workspaces.len(),
                "gc"
            );
            Response::Collected(summary)
        }
        Err(err) => Response::Error(err.to_string()),
    }
}

/// `Request::Signed`: the held signed description, as bytes the CLI verifies itself.
pub async fn signed(services: &Services, workspace: &str) -> Response {
    match resolve(services, workspace).await {
        Ok(entry) => Response::Signed {
            signed: entry.description.signed().to_bytes(),
            delegation: entry
                .description
                .delegation()
                .map(|d| d.signed().to_bytes()),
        },
        Err(err) => Response::Error(err),
    }
}

/// `Request::Extend`: accepts a renewal of a held workspace and announces it.
///
/// The renewal must be a newer version of a workspace in the catalog naming the same images;
/// the catalog's rules (verified, strictly newer, not expired) and the publish policy apply as
/// to any publication. Signed by the owner, or by a manager holding the owner's delegation
/// whom the policy allows `manage` (the delegation travels with the description, so every
/// node verifies it).
pub async fn extend(
    services: &Services,
    signed: &[u8],
    delegation: Option<&[u8]>,
    certs: &[Vec<u8>],
) -> Response {
    let now = Timestamp::now();
    let description = match SignedDescription::from_bytes(signed) {
        Ok(d) => d,
        Err(err) => return Response::Error(format!("signed description: {err}")),
    };
    let delegation = match delegation.map(SignedDelegation::from_bytes).transpose() {
        Ok(d) => d,
        Err(err) => return Response::Error(format!("delegation: {err}")),
    };
    let verified = match description.verify(delegation.as_ref(), now) {
        Ok(v) => v,
        Err(err) => return Response::Error(err.to_string()),
    };
    let d = verified.record().clone();
    if verified.signer() != d.owner {
        let presented = match parse_certs(certs) {
            Ok(c) => c,
            Err(err) => return Response::Error(err),
        };
        if let Err(denied) =
            services
                .policy
                .check(Action::Manage, verified.signer(), &presented, &d, now)
        {
            tracing::warn!(%denied, ws = %d.id.short(), "extend refused");
            return Response::Error(denied.to_string());
        }
    }
    let id = d.id;
    let held = match services.with_catalog(move |c| c.get(&id)).await {
        Ok(Some(e)) => e,
        Ok(None) => return Response::Error(format!("workspace {id}: not known to this node")),
        Err(err) => return Response::Error(err.to_string()),
    };
    let held = held.description.record();
    if held.image != d.image {
        return Response::Error(format!(
            "workspace {}: a renewal keeps the images of version {} (publish a new image with `vwnet publish`)",
            id.short(),
            held.version
        ));
    }
    if held.owner != d.owner {
        return Response::Error(format!(
            "workspace {}: a renewal cannot change the owner",
            id.short()
        ));
    }
    let announcement = DescriptionAnnouncement {
        description,
        delegation,
    };
    match accept_description(services, &announcement, Origin::Local).await {
        Ok(Offer::Accepted) | Ok(Offer::Duplicate) => {}
        Ok(Offer::Refused(refusal)) => return Response::Error(refusal.to_string()),
        Err(err) => return Response::Error(err.to_string()),
    }
    services
        .gossip(
            GossipTopic::Descriptions,
            &GossipMessage::Description(announcement),
        )
        .await;
    tracing::info!(ws = %id.short(), version = d.version, expires = ?d.expires_at(), "extended");
    Response::Published {
        workspace: id,
        version: d.version,
    }
}
