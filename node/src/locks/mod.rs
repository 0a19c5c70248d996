//! Deploy locks: leases with fencing tokens, granted by a workspace's lock authorities.
//!
//! # The guarantee
//!
//! *At most one node holds a valid lease on a workspace at any moment, and leases granted
//! later carry strictly higher fencing tokens.* A node may start, resume or restore a
//! workspace's VM only while [`Locks::check_fence`] says it holds a valid lease; so two hosts
//! never run the same workspace at once, and a partitioned old holder stops on its own
//! clock before anyone else can be granted the lock. What it rests on, and what it does not
//! promise, is spelt out below and in `node/LOCKS.md`.
//!
//! # How
//!
//! - **Authorities.** The description names its lock authorities (`lock_authorities`: node
//!   identities, the same ed25519 key as the node's libp2p peer id). The CLI fills in the
//!   publishing node when the owner names none, so every node can check who may grant. A
//!   description that still names none is decided by the node that published it (only that
//!   node knows it did; others refuse to take or believe such locks).
//! - **Grant.** The requester proposes token `t` = (highest token it knows) + 1 to every
//!   authority over `/vwnet/lock/1`; the requester is the noise-authenticated peer, never a
//!   field it fills in. An authority grants iff the lock is free, expired or released *at it*
//!   and `t` is above every token it has issued; it commits its new state to `locks.redb`
//!   before answering, so a restart never makes it reissue a token. The lease counts only
//!   when a majority of authorities granted it; a loser gives back its minority grants and
//!   gets `locked by HOLDER until TIME`.
//! - **Why one holder.** Two overlapping valid leases would need two majorities, which
//!   share an authority that granted the second while the first was live there: it refuses
//!   that. The shared authority also issued the later lease's token after the earlier one,
//!   and only ever issues increasing tokens: hence the fencing order.
//! - **Time.** The holder counts its lease on its own monotonic clock from the moment it
//!   *sent* the request, minus a margin (a tenth of the lease, at least 0.5 s) for clock
//!   rate differences; the authority counts from when it answered, rounded up to the next
//!   whole second. So the holder's lease always ends before the authority's. It renews every
//!   third of the lease; a renewal counts only with a majority, and a failed one leaves the
//!   lease to run out.
//! - **Records.** Every grant, renewal and release is a [`LockRecord`] signed by the
//!   authority's node key. The requester gossips the records of its successful operations on
//!   the locks topic; every node verifies them (signature; signer is an authority of that
//!   workspace per its catalog) and keeps, durably, the highest record per workspace
//!   (highest token; at equal tokens a release, then a later expiry): `inspect` shows it
//!   anywhere, and [`Locks::check_fence`] refuses a lease whose token has been overtaken.
//!   Invalid records are rejected (the gossip sender loses score).
//! - **Availability.** Locks favour safety: with no majority of authorities reachable, new
//!   acquisitions fail with `lock authority unreachable: ...` and renewals fail. Nothing here
//!   touches chunks: pulling and serving go on.
//! - **Restart.** Leases this node holds are kept in `locks.redb`; after a restart the node
//!   renews them at once, and counts them valid only once a majority renewed (an authority
//!   renews only a grant that is still its latest). If that fails until the lease's expiry
//!   passes, the lease is dropped.
//!
//! # Not promised
//! - Clocks: authorities' wall clocks must not jump forward by more than the margin while a
//!   lease is live (a jump shortens the authority's view of the lease; NTP slewing is fine).
//! - Liveness under contention: racers that split the authorities' votes may all lose; they
//!   give their minority grants back and the next attempt can win.
//! - Who may take a lock is not checked here (the manager checks the policy first).

mod authority;
mod db;

pub mod control;

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::{BoxFuture, join_all};
use tracing::{debug, info, warn};
use vwnet_protocol::description::Description;
use vwnet_protocol::identity::Identity;
use vwnet_protocol::ids::{PeerIdentity, WorkspaceId};
use vwnet_protocol::lock::{LockRecord, LockState};
use vwnet_protocol::signed::SignedLockRecord;
use vwnet_protocol::time::{Span, Timestamp};
use vwnet_protocol::wire::{
    GossipMessage, LockDenial, LockRequest, LockResponse, Refusal, WireMessage,
};

pub use db::LockDbError;

use crate::catalog::{Catalog, Entry, Origin};
use crate::network::{self, Client, GossipTopic};
use authority::{Decision, decide};
use db::{HeldEntry, LockDb, order_key};

/// File name of the lock database inside the home directory.
pub const LOCKS_DB: &str = "locks.redb";

/// Tries of one acquisition when an authority says the proposed token is too low.
const ACQUIRE_ATTEMPTS: usize = 3;

/// A lease this node holds on a workspace's deploy lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The workspace.
    pub workspace: WorkspaceId,
    /// The description version it was taken for.
    pub version: u64,
    /// The fencing token of the grant.
    pub token: u64,
    /// When the authorities' grant ends unless renewed (the earliest of the majority).
    pub expires_at: Timestamp,
    /// The holder: this node.
    pub holder: PeerIdentity,
}

/// Why a lock operation or a fencing check failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LockError {
    /// Another node holds the lock.
    #[error("locked by {} until {until}", holder.short())]
    Held {
        /// The holder.
        holder: PeerIdentity,
        /// When its lease ends unless renewed.
        until: Timestamp,
    },
    /// Too few authorities answered to make a majority.
    #[error("lock authority unreachable: {reached} of the {needed} needed answered ({detail})")]
    Unreachable {
        /// Authorities that answered.
        reached: usize,
        /// A majority.
        needed: usize,
        /// What happened with each one that did not.
        detail: String,
    },
    /// A later grant (higher token) exists: this lease was taken over.
    #[error("fencing token {token} is stale: token {current} has been granted since")]
    Stale {
        /// Our token.
        token: u64,
        /// The highest token seen.
        current: u64,
    },
    /// Our lease ran out (renewals failed).
    #[error("the lease with fencing token {token} has expired")]
    Expired {
        /// Its token.
        token: u64,
    },
    /// This node holds no lease on the workspace.
    #[error("this node holds no lock on that workspace")]
    NotHeld,
    /// The description names no lock authority and was not published here.
    #[error(
        "workspace {0} names no lock authority and was not published on this node; \
         republish it with lock_authorities"
    )]
    NoAuthority(String),
    /// The authorities answered, but not with a grant (not an authority, unknown workspace).
    #[error("lock authorities refused: {0}")]
    Refused(String),
    /// The node's lock database failed.
    #[error("{0}")]
    Db(String),
}

/// What gossip validation makes of a lock record.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Observation {
    /// Valid and newer than what was known: stored; forward it.
    Newer,
    /// Valid but not newer (an echo, or overtaken): drop without blame.
    NotNewer,
    /// Cannot be judged here (workspace unknown, or it names no authority): drop.
    Unknown(String),
    /// Bad signature, or signed by a key that is not an authority of the workspace.
    Invalid(String),
}

/// How lock requests and records leave this node: the swarm, or an in-process fake in tests.
pub(crate) trait Transport: Send + Sync + 'static {
    /// Sends `request` to the authority `to`.
    fn request(
        &self,
        to: PeerIdentity,
        request: LockRequest,
    ) -> BoxFuture<'static, Result<LockResponse, String>>;
    /// Publishes a record on the locks topic.
    fn gossip(&self, record: SignedLockRecord) -> BoxFuture<'static, ()>;
}

struct NetTransport {
    net: Client,
}

impl Transport for NetTransport {
    fn request(
        &self,
        to: PeerIdentity,
        request: LockRequest,
    ) -> BoxFuture<'static, Result<LockResponse, String>> {
        let net = self.net.clone();
        async move {
            let peer = network::peer_id_of(&to).ok_or("not a valid node key")?;
            net.request_lock(peer, request)
                .await
                .map_err(|e| e.to_string())
        }
        .boxed()
    }

    fn gossip(&self, record: SignedLockRecord) -> BoxFuture<'static, ()> {
        let net = self.net.clone();
        async move {
            match GossipMessage::Lock(record).encode() {
                Ok(bytes) => {
                    if let Err(err) = net.publish(GossipTopic::Locks, bytes).await {
                        debug!(%err, "publishing a lock record failed");
                    }
                }
                Err(err) => warn!(%err, "cannot encode a lock record"),
            }
        }
        .boxed()
    }
}

/// A lease as this node tracks it.
struct Held {
    lease: Lease,
    authorities: Vec<PeerIdentity>,
    /// Valid until then, by the local monotonic clock (already less the margin).
    valid_until: Instant,
    /// When to stop renewing if renewals keep failing.
    give_up_at: Instant,
    /// Why it ended, once it has (kept so that fencing checks say why).
    ended: Option<LockError>,
    renewer: Option<tokio::task::AbortHandle>,
}

struct Inner {
    me: PeerIdentity,
    signer: Arc<Identity>,
    db: LockDb,
    catalog: Catalog,
    transport: Box<dyn Transport>,
    lease: Duration,
    seen: Mutex<HashMap<WorkspaceId, LockRecord>>,
    held: Mutex<HashMap<WorkspaceId, Held>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for held in lock(&self.held).values() {
            if let Some(r) = &held.renewer {
                r.abort();
            }
        }
    }
}

/// The node's deploy locks: as a holder (acquire, renew, release, fencing checks), as an
/// authority (answering peers), and as an observer of gossiped lock records. Cheap to clone.
#[derive(Clone)]
pub struct Locks {
    inner: Arc<Inner>,
}

impl fmt::Debug for Locks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Locks")
            .field("me", &self.inner.me)
            .field("lease", &self.inner.lease)
            .field("held", &lock(&self.inner.held).len())
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Plain maps: a panicked writer leaves nothing worth refusing to read.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs blocking database work off the runtime's workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(format!("lock task failed: {e}")))
}

/// The authorities of a catalog entry: those it names, else this node if it published it.
fn authorities_of(entry: &Entry, me: PeerIdentity) -> Vec<PeerIdentity> {
    let named = &entry.description.record().lock_authorities;
    if !named.is_empty() {
        named.clone()
    } else if entry.origin == Origin::Local {
        vec![me]
    } else {
        Vec::new()
    }
}

/// Answers from every authority asked, sorted into what matters.
#[derive(Default)]
struct Tally {
    /// The records that are what was asked for, with their signed form.
    records: Vec<(LockRecord, SignedLockRecord)>,
    granted_by: Vec<PeerIdentity>,
    reached: usize,
    /// The live grant of someone else with the highest token.
    held: Option<(PeerIdentity, Timestamp, u64)>,
    too_low: Option<u64>,
    /// Authorities that definitely refused (held by another, or not our grant).
    denials: usize,
    problems: Vec<String>,
}

impl Tally {
    fn of(
        answers: Vec<(PeerIdentity, Result<LockResponse, String>)>,
        wanted: impl Fn(&LockRecord) -> bool,
    ) -> Self {
        let mut t = Tally::default();
        for (authority, answer) in answers {
            let who = authority.short();
            let response = match answer {
                Ok(r) => r,
                Err(e) => {
                    t.problems.push(format!("{who}: {e}"));
                    continue;
                }
            };
            t.reached += 1;
            match response {
                LockResponse::Record(signed) => match signed.verify() {
                    Ok(v) if v.authority == authority && wanted(v.record()) => {
                        t.granted_by.push(authority);
                        t.records.push((v.into_record(), signed));
                    }
                    Ok(_) => t.problems.push(format!("{who}: answered another record")),
                    Err(e) => t.problems.push(format!("{who}: {e}")),
                },
                LockResponse::Denied(LockDenial::Held {
                    holder,
                    until,
                    token,
                }) => {
                    t.denials += 1;
                    if t.held.is_none_or(|(_, _, best)| token > best) {
                        t.held = Some((holder, until, token));
                    }
                }
                LockResponse::Denied(LockDenial::TokenTooLow { last }) => {
                    t.too_low = Some(t.too_low.unwrap_or(0).max(last));
                }
                LockResponse::Denied(LockDenial::NotHeld { last }) => {
                    t.denials += 1;
                    t.too_low = Some(t.too_low.unwrap_or(0).max(last));
                }
                LockResponse::Denied(LockDenial::NotAuthority) => {
                    t.problems
                        .push(format!("{who}: not a lock authority of it"));
                }
                LockResponse::Denied(LockDenial::UnknownWorkspace) => {
                    t.problems
                        .push(format!("{who}: does not know the workspace (yet)"));
                }
                LockResponse::Denied(other) => t.problems.push(format!("{who}: {other:?}")),
                LockResponse::Refused(Refusal::Busy) => t.problems.push(format!("{who}: busy")),
                LockResponse::Refused(other) => t.problems.push(format!("{who}: {other:?}")),
            }
        }
        t
    }

    fn detail(&self) -> String {
        if self.problems.is_empty() {
            "no answer".into()
        } else {
            self.problems.join("; ")
        }
    }

    fn earliest_expiry(&self) -> Timestamp {
        self.records
            .iter()
            .map(|(r, _)| r.expires_at)
            .min()
            .unwrap_or(Timestamp::EPOCH)
    }
}

/// What one renewal round did.
enum Renewal {
    Renewed,
    /// Not enough answers; try again next round.
    Pending,
    /// The lease is over (taken over, released, ran out) or no longer tracked.
    Over,
}

impl Locks {
    /// Opens `<home>/locks.redb` and builds the handle for a node with key `identity`, whose
    /// requests go through `net` and who asks for leases of `lease`. Blocking (opens the
    /// database); call it from `spawn_blocking`, then [`Locks::resume`] inside the runtime.
    pub fn open(
        home: &Path,
        identity: &Identity,
        catalog: Catalog,
        net: Client,
        lease: Duration,
    ) -> Result<Self, LockDbError> {
        Self::with_transport(
            &home.join(LOCKS_DB),
            identity,
            catalog,
            Box::new(NetTransport { net }),
            lease,
        )
    }

    fn with_transport(
        path: &Path,
        identity: &Identity,
        catalog: Catalog,
        transport: Box<dyn Transport>,
        lease: Duration,
    ) -> Result<Self, LockDbError> {
        let db = LockDb::open(path)?;
        let seen = db
            .seen_all()?
            .into_iter()
            .map(|r| (r.workspace, r))
            .collect();
        Ok(Self {
            inner: Arc::new(Inner {
                me: identity.public(),
                signer: Arc::new(Identity::from_secret_bytes(&identity.secret_bytes())),
                db,
                catalog,
                transport,
                lease,
                seen: Mutex::new(seen),
                held: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// Picks up the leases this node held before a restart: each is renewed at once and is
    /// valid again only once a majority of its authorities renewed it.
    pub async fn resume(&self) -> Result<(), LockError> {
        let db = self.inner.db.clone();
        let entries = blocking(move || db.held_all().map_err(|e| e.to_string()))
            .await
            .map_err(LockError::Db)?;
        let now = Instant::now();
        for e in entries {
            let left = e.expires_at.saturating_since(Timestamp::now());
            info!(ws = %e.workspace.short(), token = e.token, "renewing a lease held before the restart");
            let held = Held {
                lease: Lease {
                    workspace: e.workspace,
                    version: e.description_version,
                    token: e.token,
                    expires_at: e.expires_at,
                    holder: self.inner.me,
                },
                authorities: e.authorities,
                valid_until: now,
                give_up_at: now + Duration::from(left),
                ended: None,
                renewer: None,
            };
            lock(&self.inner.held).insert(e.workspace, held);
            let renewer = self.spawn_renewer(e.workspace, Duration::ZERO);
            if let Some(h) = lock(&self.inner.held).get_mut(&e.workspace) {
                h.renewer = Some(renewer);
            }
        }
        Ok(())
    }

    /// The lease this node asks for.
    pub fn lease_duration(&self) -> Duration {
        self.inner.lease
    }

    /// How long a granted lease counts locally: the lease less the clock margin.
    fn valid_for(&self) -> Duration {
        let lease = self.inner.lease;
        lease.saturating_sub((lease / 10).max(Duration::from_millis(500)))
    }

    fn renew_interval(&self) -> Duration {
        self.inner.lease / 3
    }

    fn lease_span(&self) -> Span {
        Span::from_secs(self.inner.lease.as_secs().max(1))
    }

    /// Takes the deploy lock of `desc`'s workspace and keeps renewing it in the background
    /// until [`Locks::release`]. Returns the lease this node already holds, if it holds one.
    pub async fn acquire(&self, desc: &Description) -> Result<Lease, LockError> {
        let ws = desc.id;
        if let Ok(lease) = self.check_fence(ws) {
            return Ok(lease);
        }
        let authorities = self.authorities_for(ws, &desc.lock_authorities).await?;
        let needed = authorities.len() / 2 + 1;
        let mut token = self.highest_known_token(ws) + 1;
        let me = self.inner.me;
        let mut last = None;
        for _ in 0..ACQUIRE_ATTEMPTS {
            let sent = Instant::now();
            let request = LockRequest::Acquire {
                workspace: ws,
                description_version: desc.version,
                token,
                lease: self.lease_span(),
            };
            let answers = self.ask_all(&authorities, &request).await;
            let tally = Tally::of(answers, |r| {
                r.workspace == ws
                    && r.holder == me
                    && r.fencing_token == token
                    && r.state == LockState::Held
            });
            if tally.records.len() >= needed {
                return Ok(self
                    .install(ws, desc.version, token, authorities, sent, tally)
                    .await);
            }
            // Lost: give back the grants we got, so that they do not block the winner or a
            // retry until they expire.
            self.give_back(ws, token, &tally.granted_by).await;
            if let Some((holder, until, _)) = tally.held {
                return Err(LockError::Held { holder, until });
            }
            if tally.reached < needed {
                return Err(LockError::Unreachable {
                    reached: tally.reached,
                    needed,
                    detail: tally.detail(),
                });
            }
            match tally.too_low {
                Some(high) if high >= token => token = high + 1,
                _ => return Err(LockError::Refused(tally.detail())),
            }
            last = Some(tally.detail());
        }
        Err(LockError::Refused(format!(
            "no majority after {ACQUIRE_ATTEMPTS} tries ({})",
            last.unwrap_or_default()
        )))
    }

    /// Stops renewing the lease on `workspace`, tells its authorities, and gossips the
    /// release. The local lease is gone even when this fails; an authority that was not
    /// reached frees the lock when the lease expires.
    pub async fn release(&self, workspace: WorkspaceId) -> Result<(), LockError> {
        let Some(held) = lock(&self.inner.held).remove(&workspace) else {
            return Err(LockError::NotHeld);
        };
        if let Some(r) = &held.renewer {
            r.abort();
        }
        self.forget_held(workspace).await;
        let token = held.lease.token;
        let me = self.inner.me;
        let answers = self
            .ask_all(
                &held.authorities,
                &LockRequest::Release { workspace, token },
            )
            .await;
        let tally = Tally::of(answers, |r| {
            r.workspace == workspace
                && r.holder == me
                && r.fencing_token == token
                && r.state == LockState::Released
        });
        for (_, signed) in &tally.records {
            self.publish(signed.clone()).await;
        }
        if held.ended.is_some() || !tally.records.is_empty() {
            return Ok(());
        }
        Err(LockError::Unreachable {
            reached: tally.reached,
            needed: held.authorities.len() / 2 + 1,
            detail: format!(
                "the lock is freed when the lease expires at {}; {}",
                held.lease.expires_at,
                tally.detail()
            ),
        })
    }

    /// `Ok` only if this node holds an unexpired lease on `workspace` (by its monotonic
    /// clock, less a safety margin) and no higher token for it has been seen.
    pub fn check_fence(&self, workspace: WorkspaceId) -> Result<Lease, LockError> {
        let (lease, valid_until, ended) = {
            let held = lock(&self.inner.held);
            let h = held.get(&workspace).ok_or(LockError::NotHeld)?;
            (h.lease.clone(), h.valid_until, h.ended.clone())
        };
        if let Some(current) = lock(&self.inner.seen).get(&workspace)
            && current.fencing_token > lease.token
        {
            return Err(LockError::Stale {
                token: lease.token,
                current: current.fencing_token,
            });
        }
        if let Some(err) = ended {
            return Err(err);
        }
        if Instant::now() >= valid_until {
            return Err(LockError::Expired { token: lease.token });
        }
        Ok(lease)
    }

    /// The highest-token lock record known for `workspace` (verified; possibly expired or
    /// released: see [`LockRecord::is_held_at`]).
    pub fn current(&self, workspace: WorkspaceId) -> Option<LockRecord> {
        lock(&self.inner.seen).get(&workspace).cloned()
    }

    /// Answers a lock request from `requester` (the authenticated peer) as an authority.
    pub async fn serve(&self, requester: PeerIdentity, request: LockRequest) -> LockResponse {
        let workspace = match &request {
            LockRequest::Acquire { workspace, .. }
            | LockRequest::Renew { workspace, .. }
            | LockRequest::Release { workspace, .. } => *workspace,
        };
        let (catalog, db, signer, me) = (
            self.inner.catalog.clone(),
            self.inner.db.clone(),
            self.inner.signer.clone(),
            self.inner.me,
        );
        let answer = blocking(move || {
            let Some(entry) = catalog.get(&workspace).map_err(|e| e.to_string())? else {
                return Ok(LockResponse::Denied(LockDenial::UnknownWorkspace));
            };
            if !authorities_of(&entry, me).contains(&me) {
                return Ok(LockResponse::Denied(LockDenial::NotAuthority));
            }
            let decision = db
                .authority_step(&workspace, |e| {
                    decide(e, me, workspace, requester, &request, Timestamp::now())
                })
                .map_err(|e| e.to_string())?;
            match decision {
                Decision::Record(record) => SignedLockRecord::sign(&signer, &record)
                    .map(LockResponse::Record)
                    .map_err(|e| e.to_string()),
                Decision::Deny(denial) => Ok(LockResponse::Denied(denial)),
            }
        })
        .await;
        match answer {
            Ok(a) => {
                debug!(ws = %workspace.short(), requester = %requester.short(), ?a, "lock request answered");
                a
            }
            Err(err) => {
                warn!(%err, "lock authority failed");
                LockResponse::Refused(Refusal::Busy)
            }
        }
    }

    /// Checks a gossiped lock record and keeps it if it is the newest for its workspace.
    pub async fn observe(&self, signed: &SignedLockRecord) -> Observation {
        let verified = match signed.verify() {
            Ok(v) => v,
            Err(e) => return Observation::Invalid(e.to_string()),
        };
        let record = verified.into_record();
        let (catalog, db, me) = (
            self.inner.catalog.clone(),
            self.inner.db.clone(),
            self.inner.me,
        );
        let (r, s) = (record.clone(), signed.clone());
        let verdict = blocking(move || {
            let Some(entry) = catalog.get(&r.workspace).map_err(|e| e.to_string())? else {
                return Ok(Observation::Unknown(format!(
                    "workspace {} is not in the catalog",
                    r.workspace.short()
                )));
            };
            let authorities = authorities_of(&entry, me);
            if authorities.is_empty() {
                return Ok(Observation::Unknown(format!(
                    "workspace {} names no lock authority",
                    r.workspace.short()
                )));
            }
            if !authorities.contains(&r.authority) {
                return Ok(Observation::Invalid(format!(
                    "lock record signed by {}, not a lock authority of workspace {}",
                    r.authority.short(),
                    r.workspace.short()
                )));
            }
            let newer = db.offer_seen(&r, &s).map_err(|e| e.to_string())?;
            Ok(if newer {
                Observation::Newer
            } else {
                Observation::NotNewer
            })
        })
        .await;
        match verdict {
            Ok(Observation::Newer) => {
                let mut seen = lock(&self.inner.seen);
                let slot = seen
                    .entry(record.workspace)
                    .or_insert_with(|| record.clone());
                if order_key(&record) > order_key(slot) {
                    *slot = record;
                }
                Observation::Newer
            }
            Ok(other) => other,
            Err(err) => Observation::Unknown(err),
        }
    }

    async fn authorities_for(
        &self,
        workspace: WorkspaceId,
        named: &[PeerIdentity],
    ) -> Result<Vec<PeerIdentity>, LockError> {
        if !named.is_empty() {
            return Ok(named.to_vec());
        }
        let catalog = self.inner.catalog.clone();
        let entry = blocking(move || catalog.get(&workspace).map_err(|e| e.to_string()))
            .await
            .map_err(LockError::Db)?;
        match entry {
            Some(e) if e.origin == Origin::Local => Ok(vec![self.inner.me]),
            _ => Err(LockError::NoAuthority(workspace.short())),
        }
    }

    fn highest_known_token(&self, workspace: WorkspaceId) -> u64 {
        let seen = lock(&self.inner.seen)
            .get(&workspace)
            .map_or(0, |r| r.fencing_token);
        let held = lock(&self.inner.held)
            .get(&workspace)
            .map_or(0, |h| h.lease.token);
        seen.max(held)
    }

    /// Asks one authority; this node answers itself without the network.
    async fn call(&self, to: PeerIdentity, request: LockRequest) -> Result<LockResponse, String> {
        if to == self.inner.me {
            return Ok(self.serve(to, request).await);
        }
        self.inner.transport.request(to, request).await
    }

    /// Asks every authority at once, each within a third of the lease (at least a second).
    async fn ask_all(
        &self,
        authorities: &[PeerIdentity],
        request: &LockRequest,
    ) -> Vec<(PeerIdentity, Result<LockResponse, String>)> {
        let timeout = self.renew_interval().max(Duration::from_secs(1));
        join_all(authorities.iter().map(|&a| {
            let request = request.clone();
            async move {
                let answer = match tokio::time::timeout(timeout, self.call(a, request)).await {
                    Ok(r) => r,
                    Err(_) => Err(format!("no answer within {timeout:?}")),
                };
                (a, answer)
            }
        }))
        .await
    }

    /// Releases grants of a failed acquisition (best effort: they expire anyway).
    async fn give_back(&self, workspace: WorkspaceId, token: u64, authorities: &[PeerIdentity]) {
        if authorities.is_empty() {
            return;
        }
        let answers = self
            .ask_all(authorities, &LockRequest::Release { workspace, token })
            .await;
        for (a, answer) in answers {
            if !matches!(answer, Ok(LockResponse::Record(_))) {
                debug!(authority = %a.short(), ?answer, "giving back a minority grant failed");
            }
        }
    }

    /// Notes our own record (as a gossip receiver would) and gossips it.
    async fn publish(&self, signed: SignedLockRecord) {
        let observed = self.observe(&signed).await;
        debug!(?observed, "own lock record");
        self.inner.transport.gossip(signed).await;
    }

    async fn install(
        &self,
        workspace: WorkspaceId,
        version: u64,
        token: u64,
        authorities: Vec<PeerIdentity>,
        sent: Instant,
        tally: Tally,
    ) -> Lease {
        let lease = Lease {
            workspace,
            version,
            token,
            expires_at: tally.earliest_expiry(),
            holder: self.inner.me,
        };
        let valid_until = sent + self.valid_for();
        self.persist_held(&lease, &authorities).await;
        let previous = lock(&self.inner.held).insert(
            workspace,
            Held {
                lease: lease.clone(),
                authorities,
                valid_until,
                give_up_at: valid_until,
                ended: None,
                renewer: None,
            },
        );
        if let Some(r) = previous.and_then(|p| p.renewer) {
            r.abort();
        }
        let renewer = self.spawn_renewer(workspace, self.renew_interval());
        if let Some(h) = lock(&self.inner.held).get_mut(&workspace) {
            h.renewer = Some(renewer);
        }
        for (_, signed) in tally.records {
            self.publish(signed).await;
        }
        info!(ws = %workspace.short(), token, until = %lease.expires_at, "lock acquired");
        lease
    }

    async fn persist_held(&self, lease: &Lease, authorities: &[PeerIdentity]) {
        let entry = HeldEntry {
            workspace: lease.workspace,
            description_version: lease.version,
            token: lease.token,
            authorities: authorities.to_vec(),
            expires_at: lease.expires_at,
        };
        let db = self.inner.db.clone();
        // Losing this only loses the renewal after a restart, never safety: log and go on.
        if let Err(err) = blocking(move || db.put_held(&entry).map_err(|e| e.to_string())).await {
            warn!(%err, "cannot remember a held lease");
        }
    }

    async fn forget_held(&self, workspace: WorkspaceId) {
        let db = self.inner.db.clone();
        if let Err(err) =
            blocking(move || db.remove_held(&workspace).map_err(|e| e.to_string())).await
        {
            warn!(%err, "cannot forget a held lease");
        }
    }

    fn spawn_renewer(&self, workspace: WorkspaceId, first: Duration) -> tokio::task::AbortHandle {
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(renew_loop(weak, workspace, first)).abort_handle()
    }

    /// One renewal round of the lease on `workspace`.
    async fn renew_once(&self, workspace: WorkspaceId) -> Renewal {
        let Some((lease, authorities)) = lock(&self.inner.held)
            .get(&workspace)
            .filter(|h| h.ended.is_none())
            .map(|h| (h.lease.clone(), h.authorities.clone()))
        else {
            return Renewal::Over;
        };
        let needed = authorities.len() / 2 + 1;
        let (me, token) = (self.inner.me, lease.token);
        let sent = Instant::now();
        let request = LockRequest::Renew {
            workspace,
            token,
            lease: self.lease_span(),
        };
        let answers = self.ask_all(&authorities, &request).await;
        let tally = Tally::of(answers, |r| {
            r.workspace == workspace
                && r.holder == me
                && r.fencing_token == token
                && r.state == LockState::Held
        });
        if tally.records.len() >= needed {
            let expires_at = tally.earliest_expiry();
            let renewed = {
                let mut held = lock(&self.inner.held);
                match held.get_mut(&workspace) {
                    Some(h) if h.ended.is_none() && h.lease.token == token => {
                        h.valid_until = h.valid_until.max(sent + self.valid_for());
                        h.give_up_at = h.valid_until;
                        h.lease.expires_at = expires_at;
                        Some(h.lease.clone())
                    }
                    _ => None,
                }
            };
            let Some(renewed) = renewed else {
                return Renewal::Over;
            };
            self.persist_held(&renewed, &authorities).await;
            for (_, signed) in tally.records {
                self.publish(signed).await;
            }
            return Renewal::Renewed;
        }
        let lost = tally.denials > authorities.len() - needed;
        let give_up = lock(&self.inner.held)
            .get(&workspace)
            .is_none_or(|h| Instant::now() >= h.give_up_at);
        if !lost && !give_up {
            debug!(ws = %workspace.short(), detail = %tally.detail(), "lease renewal failed; retrying");
            return Renewal::Pending;
        }
        let current = self
            .highest_known_token(workspace)
            .max(tally.too_low.unwrap_or(0));
        let reason = if current > token {
            LockError::Stale { token, current }
        } else {
            LockError::Expired { token }
        };
        warn!(ws = %workspace.short(), token, %reason, detail = %tally.detail(), "lease lost");
        if let Some(h) = lock(&self.inner.held).get_mut(&workspace)
            && h.lease.token == token
        {
            h.ended = Some(reason);
            h.renewer = None;
        }
        self.forget_held(workspace).await;
        Renewal::Over
    }
}

async fn renew_loop(inner: Weak<Inner>, workspace: WorkspaceId, first: Duration) {
    let mut delay = first;
    loop {
        tokio::time::sleep(delay).await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let locks = Locks { inner };
        delay = locks.renew_interval();
        if let Renewal::Over = locks.renew_once(workspace).await {
            return;
        }
    }
}

#[cfg(test)]
mod tests;
