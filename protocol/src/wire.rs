//! Every message nodes send each other, defined once: protocol names, gossip topics, message
//! types and their size limits.
//!
//! Each message type implements [`WireMessage`]: it encodes with `codec` (a [`WIRE_VERSION`] byte,
//! then postcard) and decodes only input of at most its [`WireMessage::MAX_LEN`] bytes, checked
//! before any parsing. Inside that cap, postcard reads length prefixes against the bytes actually
//! present, so a hostile length cannot allocate more than the input; counts (chunks per
//! request, catalog entries, bitmap bytes) are then checked against their own limits. No type
//! here is recursive, so decoding depth is fixed.
//!
//! Signed records inside messages (descriptions, delegations, lock records) are carried as their
//! exact envelope bytes, so what a node verified is what it forwards. Decoding a message does
//! NOT verify them; that is `signed`'s job, before anything is stored or forwarded.
//!
//! | protocol / topic | request → response, or message |
//! |---|---|
//! | [`CHUNK_PROTOCOL`] | [`ChunkRequest`] → [`ChunkResponse`] |
//! | [`MANIFEST_PROTOCOL`] | [`ManifestRequest`] → [`ManifestResponse`] |
//! | [`CATALOG_PROTOCOL`] | [`CatalogRequest`] → [`CatalogResponse`] |
//! | [`LOCK_PROTOCOL`] | [`LockRequest`] → [`LockResponse`] |
//! | [`DEPLOY_PROTOCOL`] | [`DeployRequest`] → [`DeployResponse`] |
//! | [`DESCRIPTIONS_TOPIC`], [`LOCKS_TOPIC`], [`PROVIDERS_TOPIC`] | [`GossipMessage`] |

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::codec::{self, DecodeError};
use crate::ids::{ChunkHash, DescriptionHash, ImageId, PeerIdentity, WorkspaceId};
use crate::limits::{MAX_CHUNK_LEN, MAX_MANIFEST_LEN, MAX_SIGNED_RECORD_LEN};
use crate::signed::{
    SignedDelegation, SignedDescription, SignedLockRecord, VerifiedDescription, VerifyError,
    hex_or_bytes,
};
use crate::time::{Span, Timestamp};

mod chunk_frame;

pub use chunk_frame::Pieces;

/// Format version byte of every wire message.
pub const WIRE_VERSION: u8 = 1;

/// Request-response protocol for fetching chunks by hash.
pub const CHUNK_PROTOCOL: &str = "/vwnet/chunk/1";
/// Request-response protocol for fetching an image's manifest by image id.
pub const MANIFEST_PROTOCOL: &str = "/vwnet/manifest/1";
/// Request-response protocol for listing and fetching the descriptions a peer knows.
pub const CATALOG_PROTOCOL: &str = "/vwnet/catalog/1";
/// Gossip topic of description announcements.
pub const DESCRIPTIONS_TOPIC: &str = "vwnet/descriptions/1";
/// Gossip topic of lock records.
pub const LOCKS_TOPIC: &str = "vwnet/locks/1";
/// Gossip topic of provider announcements (version 2: announcements carry the provider's site,
/// so nodes of version 1 and 2 do not see each other's announcements instead of rejecting them).
pub const PROVIDERS_TOPIC: &str = "vwnet/providers/2";

/// Most chunk hashes in one [`ChunkRequest`].
pub const MAX_CHUNKS_PER_REQUEST: usize = 64;
/// Most chunk body bytes, summed, in one [`ChunkResponse`]; a server answers
/// [`ChunkReply::OverBudget`] for chunks past it. At least four maximum-size chunks fit.
pub const MAX_CHUNK_RESPONSE_DATA: usize = 4 * 1024 * 1024;
/// Most entries in one catalog page.
pub const MAX_CATALOG_ENTRIES: usize = 1024;
/// Longest chunk bitmap in a provider announcement: one bit per chunk, 262,144 chunks
/// (a 16 GiB image at 64 KiB chunks). Larger partial images announce a count instead.
pub const MAX_PROVIDER_BITMAP_LEN: usize = 32 * 1024;
/// Longest site name in a provider announcement, in bytes.
pub const MAX_SITE_LEN: usize = 64;

/// Room for framing around the payload of a message: enum tags, varint lengths, ids.
const FRAMING: usize = 1024;

/// Largest encoded gossip message. The node must configure gossipsub's maximum transmit size
/// to at least this.
pub const MAX_GOSSIP_LEN: usize = MAX_SIGNED_RECORD_LEN + 4 * 1024;

/// A message-specific limit a value breaks (too many items, inconsistent counts).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Violation(String);

/// Why bytes are not a valid wire message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WireDecodeError {
    /// Too large, wrong version, malformed or not canonical.
    #[error("{message}: {cause}")]
    Decode {
        /// The message type.
        message: &'static str,
        /// What the codec refused.
        cause: DecodeError,
    },
    /// Well-formed, but breaks a limit of the message type.
    #[error("{message}: {cause}")]
    Invalid {
        /// The message type.
        message: &'static str,
        /// The limit broken.
        cause: Violation,
    },
}

/// Why a message could not be encoded: it would be refused by every peer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WireEncodeError {
    /// The value breaks a limit of the message type.
    #[error("{message}: {cause}")]
    Invalid {
        /// The message type.
        message: &'static str,
        /// The limit broken.
        cause: Violation,
    },
    /// The encoding is longer than [`WireMessage::MAX_LEN`].
    #[error("{message}: {len} bytes, more than the {max}-byte limit")]
    TooLarge {
        /// The message type.
        message: &'static str,
        /// The encoded length.
        len: usize,
        /// The limit.
        max: usize,
    },
}

/// A message type of the vwnet wire protocol.
pub trait WireMessage: Serialize + DeserializeOwned {
    /// The type's name, for errors.
    const NAME: &'static str;
    /// Largest encoding accepted; refused before parsing.
    const MAX_LEN: usize;

    /// Checks the limits that the size cap alone does not (counts, consistency).
    fn validate(&self) -> Result<(), Violation> {
        Ok(())
    }

    /// Encodes the message, refusing what peers would refuse.
    fn encode(&self) -> Result<Vec<u8>, WireEncodeError> {
        self.validate().map_err(|cause| WireEncodeError::Invalid {
            message: Self::NAME,
            cause,
        })?;
        let bytes = codec::encode(WIRE_VERSION, self);
        if bytes.len() > Self::MAX_LEN {
            return Err(WireEncodeError::TooLarge {
                message: Self::NAME,
                len: bytes.len(),
                max: Self::MAX_LEN,
            });
        }
        Ok(bytes)
    }

    /// The encoding as [`Pieces`] to write in order. The default is one owned buffer; messages
    /// carrying bulk data lend it instead of copying it into one.
    fn encode_pieces(&self) -> Result<Pieces<'_>, WireEncodeError> {
        self.encode().map(Pieces::owned)
    }

    /// Decodes and validates a message; oversize input is refused before parsing.
    fn decode(bytes: &[u8]) -> Result<Self, WireDecodeError> {
        let value: Self = codec::decode(bytes, WIRE_VERSION, Self::MAX_LEN).map_err(|cause| {
            WireDecodeError::Decode {
                message: Self::NAME,
                cause,
            }
        })?;
        value.validate().map_err(|cause| WireDecodeError::Invalid {
            message: Self::NAME,
            cause,
        })?;
        Ok(value)
    }
}

const fn const_max(a: usize, b: usize) -> usize {
    if a > b { a } else { b }
}

fn at_most(what: &str, count: usize, max: usize) -> Result<(), Violation> {
    if count > max {
        return Err(Violation(format!(
            "{count} {what}, more than the limit of {max}"
        )));
    }
    Ok(())
}

/// Why a server declined a whole request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Refusal {
    /// Too many requests in flight from this peer or overall; try later or elsewhere.
    Busy,
    /// This peer may not have what it asked for (access policy).
    Forbidden,
}

/// Asks a peer for chunks by hash (at most [`MAX_CHUNKS_PER_REQUEST`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRequest {
    /// The chunks wanted, in the order the replies come back.
    pub hashes: Vec<ChunkHash>,
}

impl WireMessage for ChunkRequest {
    const NAME: &'static str = "chunk request";
    const MAX_LEN: usize = MAX_CHUNKS_PER_REQUEST * ChunkHash::LEN + FRAMING;

    fn validate(&self) -> Result<(), Violation> {
        at_most(
            "chunks requested",
            self.hashes.len(),
            MAX_CHUNKS_PER_REQUEST,
        )
    }
}

/// The answer for one requested chunk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChunkReply {
    /// The chunk's bytes (at most [`MAX_CHUNK_LEN`]); the requester checks they hash to what
    /// it asked for.
    Found(#[serde(with = "hex_or_bytes")] Vec<u8>),
    /// The peer does not have this chunk.
    Missing,
    /// The peer has it but the response's byte budget is spent; ask again.
    OverBudget,
}

/// A peer's answer to a [`ChunkRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChunkResponse {
    /// One reply per requested hash, in request order.
    Chunks(Vec<ChunkReply>),
    /// The whole request was declined.
    Refused(Refusal),
}

impl WireMessage for ChunkResponse {
    const NAME: &'static str = "chunk response";
    const MAX_LEN: usize = MAX_CHUNK_RESPONSE_DATA + MAX_CHUNKS_PER_REQUEST * 8 + FRAMING;

    // The bulk path: same bytes as the generic codec, fewer copies (see `chunk_frame`).
    fn encode_pieces(&self) -> Result<Pieces<'_>, WireEncodeError> {
        chunk_frame::encode_pieces(self)
    }

    fn decode(bytes: &[u8]) -> Result<Self, WireDecodeError> {
        chunk_frame::decode(bytes)
    }

    fn validate(&self) -> Result<(), Violation> {
        let ChunkResponse::Chunks(replies) = self else {
            return Ok(());
        };
        at_most("chunk replies", replies.len(), MAX_CHUNKS_PER_REQUEST)?;
        let mut total = 0usize;
        for (i, reply) in replies.iter().enumerate() {
            if let ChunkReply::Found(data) = reply {
                if data.is_empty() || data.len() > MAX_CHUNK_LEN {
                    return Err(Violation(format!(
                        "chunk {i} is {} bytes, outside 1..={MAX_CHUNK_LEN}",
                        data.len()
                    )));
                }
                total += data.len();
            }
        }
        at_most("chunk bytes", total, MAX_CHUNK_RESPONSE_DATA)
    }
}

/// Asks a peer for the manifest of an image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestRequest {
    /// The image whose manifest is wanted.
    pub image: ImageId,
}

impl WireMessage for ManifestRequest {
    const NAME: &'static str = "manifest request";
    const MAX_LEN: usize = ImageId::LEN + FRAMING;
}

/// A peer's answer to a [`ManifestRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ManifestResponse {
    /// The manifest's canonical bytes; the requester checks they hash to the image id.
    Found(#[serde(with = "hex_or_bytes")] Vec<u8>),
    /// The peer does not know this image.
    Missing,
    /// The request was declined.
    Refused(Refusal),
}

impl WireMessage for ManifestResponse {
    const NAME: &'static str = "manifest response";
    const MAX_LEN: usize = MAX_MANIFEST_LEN + FRAMING;
}

/// A description as announced: the signed description and, if a delegate signed it, the
/// owner's delegation that lets them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DescriptionAnnouncement {
    /// The signed description, as the signer produced it.
    pub description: SignedDescription,
    /// The owner's delegation, when the signer is not the owner.
    pub delegation: Option<SignedDelegation>,
}

impl DescriptionAnnouncement {
    /// The announcement of a verified description, with the delegation it was verified with.
    pub fn from_verified(verified: &VerifiedDescription) -> Self {
        Self {
            description: verified.signed().clone(),
            delegation: verified.delegation().map(|d| d.signed().clone()),
        }
    }

    /// Verifies the description with the announced delegation (see `SignedDescription::verify`).
    pub fn verify(&self, now: Timestamp) -> Result<VerifiedDescription, VerifyError> {
        self.description.verify(self.delegation.as_ref(), now)
    }
}

/// Which chunks of an image a provider holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Holdings {
    /// Every chunk of the image.
    Complete,
    /// Some chunks, by count only.
    Count {
        /// Chunks held.
        held: u32,
        /// Chunks in the image's manifest.
        total: u32,
    },
    /// Some chunks, as a bitmap over the manifest's chunk list (bit `i` = byte `i / 8`,
    /// bit `i % 8`, least significant first; unused high bits zero).
    Bitmap {
        /// Chunks in the image's manifest.
        total: u32,
        /// `ceil(total / 8)` bytes, at most [`MAX_PROVIDER_BITMAP_LEN`].
        #[serde(with = "hex_or_bytes")]
        bits: Vec<u8>,
    },
}

impl Holdings {
    fn validate(&self) -> Result<(), Violation> {
        match self {
            Holdings::Complete => Ok(()),
            Holdings::Count { held, total } => {
                if held > total {
                    return Err(Violation(format!("holds {held} of {total} chunks")));
                }
                Ok(())
            }
            Holdings::Bitmap { total, bits } => {
                let total = *total as usize;
                let expected = total.div_ceil(8);
                if bits.len() != expected {
                    return Err(Violation(format!(
                        "bitmap of {} bytes for {total} chunks (expected {expected})",
                        bits.len()
                    )));
                }
                at_most("bitmap bytes", bits.len(), MAX_PROVIDER_BITMAP_LEN)?;
                let used = total % 8;
                if used != 0 && bits.last().is_some_and(|b| b >> used != 0) {
                    return Err(Violation("bitmap has bits set past the last chunk".into()));
                }
                Ok(())
            }
        }
    }

    /// Whether the provider holds chunk `index` of the manifest (`Count` does not say: `None`).
    pub fn holds(&self, index: u32) -> Option<bool> {
        match self {
            Holdings::Complete => Some(true),
            Holdings::Count { .. } => None,
            Holdings::Bitmap { total, bits } => Some(
                index < *total
                    && bits
                        .get((index / 8) as usize)
                        .is_some_and(|b| b & (1 << (index % 8)) != 0),
            ),
        }
    }
}

/// A peer announces that it can serve (part of) an image.
///
/// Not signed itself: gossipsub signs every message with its author's key, and the node checks
/// that `provider` is that author.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderAnnouncement {
    /// The image.
    pub image: ImageId,
    /// The peer that serves it.
    pub provider: PeerIdentity,
    /// What it holds.
    pub holdings: Holdings,
    /// The provider's site (`--site`), if it has one: pullers fetch from same-site providers
    /// what they hold, and what none holds across sites once per site. Non-empty, at most
    /// [`MAX_SITE_LEN`] bytes.
    pub site: Option<String>,
}

impl ProviderAnnouncement {
    fn validate(&self) -> Result<(), Violation> {
        if let Some(site) = &self.site {
            if site.is_empty() {
                return Err(Violation("empty site name".into()));
            }
            at_most("site name bytes", site.len(), MAX_SITE_LEN)?;
        }
        self.holdings.validate()
    }
}

/// A message on one of the gossip topics.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum GossipMessage {
    /// A new or updated description ([`DESCRIPTIONS_TOPIC`]).
    Description(DescriptionAnnouncement),
    /// A lock grant or release ([`LOCKS_TOPIC`]).
    Lock(SignedLockRecord),
    /// A provider announcement ([`PROVIDERS_TOPIC`]).
    Provider(ProviderAnnouncement),
}

impl GossipMessage {
    /// The topic this message belongs on; a node drops messages that arrive on another one.
    pub fn topic(&self) -> &'static str {
        match self {
            GossipMessage::Description(_) => DESCRIPTIONS_TOPIC,
            GossipMessage::Lock(_) => LOCKS_TOPIC,
            GossipMessage::Provider(_) => PROVIDERS_TOPIC,
        }
    }
}

impl WireMessage for GossipMessage {
    const NAME: &'static str = "gossip message";
    const MAX_LEN: usize = MAX_GOSSIP_LEN;

    fn validate(&self) -> Result<(), Violation> {
        match self {
            GossipMessage::Provider(p) => p.validate(),
            GossipMessage::Description(_) | GossipMessage::Lock(_) => Ok(()),
        }
    }
}

/// Asks a peer what descriptions it knows, so a late joiner learns existing workspaces.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CatalogRequest {
    /// One page of the catalog: workspaces with ids strictly after `after`, in id order.
    List {
        /// Where the previous page ended; `None` for the first page.
        after: Option<WorkspaceId>,
    },
    /// The latest description the peer holds for one workspace.
    Get {
        /// The workspace.
        workspace: WorkspaceId,
    },
}

impl WireMessage for CatalogRequest {
    const NAME: &'static str = "catalog request";
    const MAX_LEN: usize = WorkspaceId::LEN + FRAMING;
}

/// One workspace a peer knows: its latest version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogEntry {
    /// The workspace.
    pub workspace: WorkspaceId,
    /// The latest version the peer holds.
    pub version: u64,
    /// The digest of that version's canonical description.
    pub digest: DescriptionHash,
}

/// A peer's answer to a [`CatalogRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CatalogResponse {
    /// A page of entries in strictly increasing workspace order.
    Entries {
        /// At most [`MAX_CATALOG_ENTRIES`] entries.
        entries: Vec<CatalogEntry>,
        /// Whether more entries follow the last one.
        more: bool,
    },
    /// The requested description, as it would be gossiped.
    Description(Box<DescriptionAnnouncement>),
    /// The peer holds no description of that workspace.
    Missing,
    /// The request was declined.
    Refused(Refusal),
}

impl WireMessage for CatalogResponse {
    const NAME: &'static str = "catalog response";
    const MAX_LEN: usize = const_max(MAX_GOSSIP_LEN, MAX_CATALOG_ENTRIES * 96 + FRAMING);

    fn validate(&self) -> Result<(), Violation> {
        let CatalogResponse::Entries { entries, .. } = self else {
            return Ok(());
        };
        at_most("catalog entries", entries.len(), MAX_CATALOG_ENTRIES)?;
        if entries.windows(2).any(|w| w[0].workspace >= w[1].workspace) {
            return Err(Violation(
                "catalog entries are not in strictly increasing workspace order".into(),
            ));
        }
        Ok(())
    }
}

/// Request-response protocol for taking, renewing and giving back a workspace's deploy lock
/// at one of its lock authorities.
pub const LOCK_PROTOCOL: &str = "/vwnet/lock/1";

/// Longest lease a requester may ask for; authorities grant at most this.
pub const MAX_LOCK_LEASE_SECS: u64 = 3600;

/// Asks a lock authority about a workspace's deploy lock.
///
/// The requester is never named here: the authority takes it from the authenticated
/// connection (the noise-verified peer id), so no one can ask on another node's behalf.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LockRequest {
    /// Grant me the lock with fencing token `token` for `lease`, if it is free, expired or
    /// released here and `token` is higher than any token this authority has issued.
    Acquire {
        /// The workspace.
        workspace: WorkspaceId,
        /// The description version the requester deploys.
        description_version: u64,
        /// The proposed fencing token.
        token: u64,
        /// The lease wanted (at most [`MAX_LOCK_LEASE_SECS`]).
        lease: Span,
    },
    /// Extend my current grant with this token by `lease` from now.
    Renew {
        /// The workspace.
        workspace: WorkspaceId,
        /// The token of the grant being renewed.
        token: u64,
        /// The lease wanted (at most [`MAX_LOCK_LEASE_SECS`]).
        lease: Span,
    },
    /// End my grant with this token now.
    Release {
        /// The workspace.
        workspace: WorkspaceId,
        /// The token of the grant being ended.
        token: u64,
    },
}

impl WireMessage for LockRequest {
    const NAME: &'static str = "lock request";
    const MAX_LEN: usize = WorkspaceId::LEN + 3 * 10 + FRAMING;

    fn validate(&self) -> Result<(), Violation> {
        match self {
            LockRequest::Acquire { lease, .. } | LockRequest::Renew { lease, .. } => {
                if lease.as_secs() == 0 || lease.as_secs() > MAX_LOCK_LEASE_SECS {
                    return Err(Violation(format!(
                        "lease of {} s is outside 1..={MAX_LOCK_LEASE_SECS} s",
                        lease.as_secs()
                    )));
                }
                Ok(())
            }
            LockRequest::Release { .. } => Ok(()),
        }
    }
}

/// Why a lock authority did not grant, renew or release.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum LockDenial {
    /// Another grant is live here.
    Held {
        /// Its holder.
        holder: PeerIdentity,
        /// When it ends unless renewed.
        until: Timestamp,
        /// Its fencing token.
        token: u64,
    },
    /// The proposed token is not above the highest this authority has issued; propose more.
    TokenTooLow {
        /// The highest token issued here.
        last: u64,
    },
    /// The renewed or released grant is not the current one here (it ended, or another
    /// grant followed it).
    NotHeld {
        /// The highest token issued here.
        last: u64,
    },
    /// This node is not a lock authority of the workspace (as far as its catalog knows).
    NotAuthority,
    /// This node holds no description of the workspace.
    UnknownWorkspace,
}

/// A lock authority's answer to a [`LockRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LockResponse {
    /// The grant (for `Acquire` and `Renew`) or the release, signed by the authority.
    Record(SignedLockRecord),
    /// Not done, and why.
    Denied(LockDenial),
    /// The request was declined.
    Refused(Refusal),
}

impl WireMessage for LockResponse {
    const NAME: &'static str = "lock response";
    // A signed lock record is about 200 bytes; the rest is tags and varints.
    const MAX_LEN: usize = 2 * FRAMING;
}

/// Request-response protocol by which a node asks another to deploy a workspace and resume it:
/// the last step of a migration.
pub const DEPLOY_PROTOCOL: &str = "/vwnet/deploy/1";

/// Longest failure reason in a [`DeployResponse`].
pub const MAX_DEPLOY_REASON_LEN: usize = 1024;

/// Asks a node to deploy (and possibly resume) the workspace version `announcement` carries.
/// The destination verifies and stores the description like any record from a peer, and
/// decides with its own policy for the authenticated requester.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployRequest {
    /// The version to deploy, as its signer produced it.
    pub announcement: DescriptionAnnouncement,
    /// Unpause (hot) or boot (cold) it once deployed.
    pub resume: bool,
}

impl WireMessage for DeployRequest {
    const NAME: &'static str = "deploy request";
    const MAX_LEN: usize = MAX_GOSSIP_LEN;
}

/// The answer to a [`DeployRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeployResponse {
    /// Deployed (and resumed if asked).
    Deployed {
        /// The version deployed.
        version: u64,
        /// Its state there now.
        state: crate::description::State,
        /// Bytes the destination fetched from peers.
        bytes_fetched: u64,
        /// Bytes it already held.
        bytes_local: u64,
        /// Milliseconds it took.
        millis: u64,
    },
    /// Not deployed; one line saying why (at most [`MAX_DEPLOY_REASON_LEN`] bytes).
    Failed(String),
    /// The request was declined.
    Refused(Refusal),
}

impl WireMessage for DeployResponse {
    const NAME: &'static str = "deploy response";
    const MAX_LEN: usize = MAX_DEPLOY_REASON_LEN + FRAMING;

    fn validate(&self) -> Result<(), Violation> {
        match self {
            DeployResponse::Failed(reason) if reason.len() > MAX_DEPLOY_REASON_LEN => {
                Err(Violation(format!(
                    "reason of {} bytes, at most {MAX_DEPLOY_REASON_LEN}",
                    reason.len()
                )))
            }
            _ => Ok(()),
        }
    }
}

/// Decodes `bytes` as every message type and checks that whatever decodes re-encodes to the
/// same bytes; never panics on any input unless that property breaks.
///
/// The body of the `decode_wire` fuzz target, also driven by the stable test suite with
/// arbitrary bytes. Returns how many message types accepted the input.
pub fn fuzz_decode(bytes: &[u8]) -> usize {
    fn one<M: WireMessage + PartialEq + std::fmt::Debug>(bytes: &[u8]) -> usize {
        let Ok(message) = M::decode(bytes) else {
            return 0;
        };
        match message.encode() {
            Ok(again) => assert_eq!(again, bytes, "{} re-encodes differently", M::NAME),
            Err(e) => panic!("{} decoded but does not re-encode: {e}", M::NAME),
        }
        1
    }
    one::<ChunkRequest>(bytes)
        + one::<ChunkResponse>(bytes)
        + one::<ManifestRequest>(bytes)
        + one::<ManifestResponse>(bytes)
        + one::<GossipMessage>(bytes)
        + one::<CatalogRequest>(bytes)
        + one::<CatalogResponse>(bytes)
        + one::<LockRequest>(bytes)
        + one::<LockResponse>(bytes)
        + one::<DeployRequest>(bytes)
        + one::<DeployResponse>(bytes)
}
