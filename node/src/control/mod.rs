//! The local control API: how the `vwnet` CLI talks to a running node.
//!
//! Transport: the Unix socket `<home>/node.sock`, mode 0600 inside the 0700 home, so only the
//! node's user can drive it. Framing: a 4-byte big-endian length and one record encoded with
//! `vwnet_protocol::codec` at [`CONTROL_VERSION`]; the length is checked against
//! [`MAX_CONTROL_FRAME`] before the buffer is allocated.
//!
//! A connection carries any number of exchanges, one at a time: the client sends a [`Request`],
//! the node answers with zero or more [`Response::Progress`] records and then exactly one final
//! record (any other variant). The types here are local (not wire messages between nodes), so
//! they may change with the binary; the version byte makes a CLI/daemon mismatch a clear error.

pub mod client;
pub mod server;

use std::io;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use vwnet_protocol::codec;
use vwnet_protocol::ids::{ImageId, WorkspaceId};

/// Format version byte of control records.
pub const CONTROL_VERSION: u8 = 1;

/// Largest control record in bytes (a listing of many workspaces, or one description).
pub const MAX_CONTROL_FRAME: usize = 16 * 1024 * 1024;

/// What the CLI asks of the node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Who and where the node is, and whom it is connected to.
    Status,
    /// Chunks an image file into the store and returns its manifest id and size.
    Ingest {
        /// Absolute path of the image file, read by the node.
        path: PathBuf,
    },
    /// Publishes a signed description (canonical bytes of a `SignedDescription`).
    Publish {
        /// The signed description.
        signed: Vec<u8>,
    },
    /// Lists known workspaces.
    List {
        /// Include workspaces learned from peers (else only those published here).
        remote: bool,
    },
    /// Shows one workspace in full.
    Inspect {
        /// Workspace id, or a unique prefix of its hex form, or its name.
        workspace: String,
    },
    /// Fetches a workspace's images.
    Pull {
        /// Workspace id, unique hex prefix, or name.
        workspace: String,
        /// A specific version; the newest accepted one if `None`.
        version: Option<u64>,
    },
    /// Writes an image held in the store to a file.
    Export {
        /// The image's manifest id.
        image: ImageId,
        /// Absolute destination path, written by the node.
        path: PathBuf,
    },
    /// Asks the node to shut down cleanly.
    Shutdown,
    /// Creates a workspace: the factory checks the policy, then publishes it.
    Create {
        /// The signed version-1 description (canonical bytes of a `SignedDescription`).
        signed: Vec<u8>,
        /// Attribute certificates the creator presents (canonical signed bytes).
        certs: Vec<Vec<u8>>,
    },
    /// Pins (keeps its chunks past expiry) or unpins a workspace.
    Pin {
        /// Workspace id, unique hex prefix, or name.
        workspace: String,
        /// Pin (`true`) or unpin.
        pinned: bool,
    },
    /// Garbage-collects the store: chunks of expired, unpinned workspaces and unpinned images.
    Gc,
    /// Publishes a renewal (`vwnet extend`): a newer version with the same images. Unlike
    /// [`Request::Publish`] it does not need the images locally: they may have been collected
    /// while the workspace was expired, and other nodes may still hold them.
    Extend {
        /// The signed new version.
        signed: Vec<u8>,
        /// The owner's delegation, when a manager (not the owner) signed.
        delegation: Option<Vec<u8>>,
        /// Attribute certificates a manager presents to the policy (action `manage`).
        certs: Vec<Vec<u8>>,
    },
    /// The signed description the catalog holds (its highest version), e.g. to derive a clone
    /// or a renewal from it exactly.
    Signed {
        /// Workspace id, unique hex prefix, or name.
        workspace: String,
    },
    /// Takes a workspace's deploy lock (and keeps renewing it until released).
    LockAcquire {
        /// Workspace id, unique hex prefix, or name.
        workspace: String,
    },
    /// Releases a deploy lock this node holds.
    LockRelease {
        /// Workspace id, unique hex prefix, or name.
        workspace: String,
    },
    /// Shows what is known about a workspace's deploy lock.
    LockShow {
        /// Workspace id, unique hex prefix, or name.
        workspace: String,
    },
    /// Deploys or manages a workspace on this node's hypervisor.
    Manage(crate::manager::api::ManageRequest),
}

/// What the node answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// Answer to [`Request::Status`].
    Status(NodeStatus),
    /// Answer to [`Request::Ingest`].
    Ingested {
        /// The image's manifest id.
        image: ImageId,
        /// Image size in bytes.
        size: u64,
    },
    /// Answer to [`Request::Publish`].
    Published {
        /// The workspace.
        workspace: WorkspaceId,
        /// Its version now published.
        version: u64,
    },
    /// Answer to [`Request::List`].
    List(Vec<WorkspaceSummary>),
    /// Answer to [`Request::Inspect`].
    Inspect(Box<WorkspaceDetail>),
    /// An intermediate report of a long operation (pull).
    Progress(PullProgress),
    /// Final answer to [`Request::Pull`].
    Pulled(PullSummary),
    /// Answer to [`Request::Export`] and [`Request::Shutdown`].
    Done,
    /// The request failed; one line saying why.
    Error(String),
    /// Answer to [`Request::Pin`].
    Pinned {
        /// The workspace.
        workspace: WorkspaceId,
        /// Whether it is pinned now.
        pinned: bool,
    },
    /// Answer to [`Request::Gc`].
    Collected(crate::lifetime::GcSummary),
    /// Answer to [`Request::Signed`].
    Signed {
        /// Canonical bytes of the `SignedDescription`.
        signed: Vec<u8>,
        /// Canonical bytes of the owner's delegation, when a delegate signed.
        delegation: Option<Vec<u8>>,
    },
    /// Answer to [`Request::LockAcquire`] and [`Request::LockShow`] (`None`: nothing known).
    Lock(Option<LockInfo>),
    /// Final answer to [`Request::Manage`].
    Manage(crate::manager::api::ManageResponse),
    /// An intermediate report of a manager operation: a step finished.
    Step(crate::manager::api::StepProgress),
}

impl Response {
    /// Whether this record ends an exchange (everything but progress does).
    pub fn is_final(&self) -> bool {
        !matches!(self, Response::Progress(_) | Response::Step(_))
    }
}

/// A node's view of itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// The libp2p peer id (derived from the node key).
    pub peer_id: String,
    /// The node's protocol identity (hex ed25519 public key).
    pub identity: String,
    /// Addresses the node listens on.
    pub listen: Vec<String>,
    /// Connected peers.
    pub peers: Vec<PeerInfo>,
    /// Workspaces in the catalog.
    pub workspaces: u64,
    /// Pulls currently running.
    pub pulls_in_progress: u64,
}

/// A connected peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo {
    /// Its libp2p peer id.
    pub peer_id: String,
    /// The address of one connection to it.
    pub addr: String,
}

/// One line of `vwnet ls`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkspaceSummary {
    /// The workspace.
    pub workspace: WorkspaceId,
    /// Its name.
    pub name: String,
    /// The owner's identity (hex).
    pub owner: String,
    /// Highest accepted version.
    pub version: u64,
    /// Total size of its images.
    pub size: u64,
    /// Bytes of its images held locally.
    pub local_bytes: u64,
    /// Whether this node published it.
    pub published_here: bool,
    /// When its lifeCycle ends (`None`: never).
    pub expires_at: Option<vwnet_protocol::time::Timestamp>,
    /// Whether its lifeCycle has passed: it cannot be deployed and its chunks are collectable.
    pub expired: bool,
    /// Whether it is pinned on this node (its chunks survive expiry).
    pub pinned: bool,
    /// Its live state when deployed on this node (`running`, `paused`, `shutdown`).
    pub live_state: Option<String>,
}

/// What `vwnet inspect` shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkspaceDetail {
    /// The summary line.
    pub summary: WorkspaceSummary,
    /// The description as TOML.
    pub description_toml: String,
    /// Who signed it (hex identity).
    pub signer: String,
    /// Signature status, e.g. `valid`.
    pub signature: String,
    /// Per image: its id and the peers known to provide it.
    pub images: Vec<ImageProviders>,
    /// Its deploy lock, if any lock record is known.
    pub lock: Option<LockInfo>,
}

/// A workspace's deploy lock as this node knows it: the highest verified lock record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    /// The workspace.
    pub workspace: WorkspaceId,
    /// The holder's identity (hex).
    pub holder: String,
    /// The fencing token of the grant.
    pub token: u64,
    /// The description version the holder deploys.
    pub description_version: u64,
    /// When it was granted.
    pub granted_at: vwnet_protocol::time::Timestamp,
    /// When it ends unless renewed (for a release: when it was released).
    pub expires_at: vwnet_protocol::time::Timestamp,
    /// The authority that signed the record (hex).
    pub authority: String,
    /// `held`, `expired` or `released`.
    pub state: String,
    /// When this node holds a lease on it: `valid`, or why its fencing check fails.
    pub this_node: Option<String>,
}

/// Who provides one image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageProviders {
    /// The image.
    pub image: ImageId,
    /// Image size in bytes.
    pub size: u64,
    /// Peer ids known to hold (part of) it.
    pub providers: Vec<String>,
}

/// Progress of a pull.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullProgress {
    /// Bytes to fetch in total (not counting those already local).
    pub total: u64,
    /// Bytes fetched so far.
    pub done: u64,
    /// Peers currently serving.
    pub peers: u64,
}

/// Result of a pull.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullSummary {
    /// The workspace pulled.
    pub workspace: WorkspaceId,
    /// Its version.
    pub version: u64,
    /// Bytes fetched from peers and stored, each distinct chunk counted once.
    pub bytes_fetched: u64,
    /// Bytes of distinct non-zero chunks that were already held locally.
    pub bytes_local: u64,
    /// Bytes of all-zero chunks: never transferred or stored (export writes holes).
    #[serde(default)]
    pub bytes_zero: u64,
    /// Bytes fetched per peer id, credited to the peer whose copy was stored; sums to
    /// `bytes_fetched`.
    pub per_peer: Vec<(String, u64)>,
    /// Duration in milliseconds.
    pub millis: u64,
    /// What the transfer cost beyond `bytes_fetched`.
    pub overhead: PullOverhead,
}

/// The scheduling cost of a pull: the numbers to look at when it moved more than it needed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullOverhead {
    /// Bytes of verified chunks that arrived after another copy was stored (endgame
    /// duplicates and replies that came after their request had been given up): wasted.
    pub bytes_duplicate: u64,
    /// Chunk requests sent.
    pub requests: u64,
    /// Of those, endgame duplicates of late requests.
    pub endgame_requests: u64,
    /// Requests given up: timed out, or made useless by another copy. A reply that still
    /// arrives is dropped unverified, so its bytes count in no field here.
    pub cancels: u64,
    /// Of those, requests that timed out.
    pub timeouts: u64,
    /// Requests a peer refused because all its upload slots were taken; asked again elsewhere
    /// or later. Absent in summaries from nodes before upload slots were held until sent.
    #[serde(default)]
    pub busy: u64,
}

/// Why a control exchange failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// The socket could not be reached or read.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The peer sent a frame that is not a valid record.
    #[error("malformed control record: {0}")]
    Decode(#[from] codec::DecodeError),
    /// The connection closed before a final answer.
    #[error("the node closed the connection")]
    Closed,
}

/// Reads one record, refusing frames over [`MAX_CONTROL_FRAME`] before allocating.
///
/// Returns `Ok(None)` on a clean end of stream before the first byte of a frame.
pub async fn read_record<T, R>(io: &mut R) -> Result<Option<T>, ControlError>
where
    T: Serialize + serde::de::DeserializeOwned,
    R: AsyncRead + Unpin,
{
    let mut len = [0u8; 4];
    match io.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_CONTROL_FRAME {
        return Err(codec::DecodeError::TooLarge {
            len,
            max: MAX_CONTROL_FRAME,
        }
        .into());
    }
    let mut buf = vec![0u8; len];
    io.read_exact(&mut buf).await?;
    Ok(Some(codec::decode(
        &buf,
        CONTROL_VERSION,
        MAX_CONTROL_FRAME,
    )?))
}

/// Writes one record.
pub async fn write_record<T, W>(io: &mut W, value: &T) -> Result<(), ControlError>
where
    T: Serialize,
    W: AsyncWrite + Unpin,
{
    let bytes = codec::encode(CONTROL_VERSION, value);
    let len = u32::try_from(bytes.len())
        .ok()
        .filter(|&l| l as usize <= MAX_CONTROL_FRAME)
        .ok_or(codec::DecodeError::TooLarge {
            len: bytes.len(),
            max: MAX_CONTROL_FRAME,
        })?;
    io.write_all(&len.to_be_bytes()).await?;
    io.write_all(&bytes).await?;
    io.flush().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn records_round_trip_and_oversize_is_refused() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        let req = Request::Pull {
            workspace: "abc".into(),
            version: Some(2),
        };
        write_record(&mut a, &req).await.unwrap();
        let back: Request = read_record(&mut b).await.unwrap().unwrap();
        assert_eq!(back, req);

        a.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
        let err = read_record::<Request, _>(&mut b).await.unwrap_err();
        assert!(matches!(
            err,
            ControlError::Decode(codec::DecodeError::TooLarge { .. })
        ));
        drop(a);
        assert!(read_record::<Request, _>(&mut b).await.unwrap().is_none());
    }
}
