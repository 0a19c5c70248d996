//! The lock service end to end over an in-process fabric: several nodes, each with its own
//! catalog and lock database, whose requests and gossip go through a switchboard that can
//! take nodes down. Everything below the transport is the real code.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use vwnet_protocol::description::template_for;

use super::*;
use crate::catalog::Offer;

const WAIT: Duration = Duration::from_secs(20);

#[derive(Default)]
struct Fabric {
    nodes: Mutex<HashMap<PeerIdentity, Locks>>,
    down: Mutex<HashSet<PeerIdentity>>,
}

impl Fabric {
    fn is_down(&self, who: &PeerIdentity) -> bool {
        lock(&self.down).contains(who)
    }

    fn set_down(&self, who: PeerIdentity, down: bool) {
        if down {
            lock(&self.down).insert(who);
        } else {
            lock(&self.down).remove(&who);
        }
    }
}

struct FakeTransport {
    from: PeerIdentity,
    fabric: Arc<Fabric>,
}

impl Transport for FakeTransport {
    fn request(
        &self,
        to: PeerIdentity,
        request: LockRequest,
    ) -> BoxFuture<'static, Result<LockResponse, String>> {
        let (from, fabric) = (self.from, self.fabric.clone());
        async move {
            if fabric.is_down(&from) || fabric.is_down(&to) {
                return Err("peer unreachable".into());
            }
            let node = lock(&fabric.nodes).get(&to).cloned();
            match node {
                Some(node) => Ok(node.serve(from, request).await),
                None => Err("peer unreachable".into()),
            }
        }
        .boxed()
    }

    fn gossip(&self, record: SignedLockRecord) -> BoxFuture<'static, ()> {
        let (from, fabric) = (self.from, self.fabric.clone());
        async move {
            if fabric.is_down(&from) {
                return;
            }
            let others: Vec<Locks> = lock(&fabric.nodes)
                .iter()
                .filter(|(id, _)| **id != from && !fabric.is_down(id))
                .map(|(_, l)| l.clone())
                .collect();
            for node in others {
                node.observe(&record).await;
            }
        }
        .boxed()
    }
}

/// One simulated node: its key, its directory (catalog and lock database) and its handle.
struct TestNode {
    identity: Identity,
    dir: tempfile::TempDir,
    catalog: Catalog,
    locks: Locks,
}

impl TestNode {
    fn id(&self) -> PeerIdentity {
        self.identity.public()
    }
}

fn node(fabric: &Arc<Fabric>, seed: u8, lease: Duration) -> TestNode {
    let identity = Identity::from_secret_bytes(&[seed; 32]);
    let dir = tempfile::tempdir().unwrap();
    let catalog = Catalog::open(&dir.path().join("node.redb")).unwrap();
    let locks = open_locks(fabric, &identity, &dir, &catalog, lease);
    TestNode {
        identity,
        dir,
        catalog,
        locks,
    }
}

fn open_locks(
    fabric: &Arc<Fabric>,
    identity: &Identity,
    dir: &tempfile::TempDir,
    catalog: &Catalog,
    lease: Duration,
) -> Locks {
    let transport = FakeTransport {
        from: identity.public(),
        fabric: fabric.clone(),
    };
    let locks = Locks::with_transport(
        &dir.path().join(LOCKS_DB),
        identity,
        catalog.clone(),
        Box::new(transport),
        lease,
    )
    .unwrap();
    lock(&fabric.nodes).insert(identity.public(), locks.clone());
    locks
}

/// Publishes a description naming `authorities` into every node's catalog.
fn publish(nodes: &[&TestNode], authorities: &[PeerIdentity]) -> Description {
    let owner = Identity::from_secret_bytes(&[0xee; 32]);
    let now = Timestamp::now();
    let mut d =
        Description::from_toml_str(&template_for(WorkspaceId::random(), owner.public(), now))
            .unwrap();
    d.lock_authorities = authorities.to_vec();
    let verified = vwnet_protocol::signed::SignedDescription::sign(&owner, &d)
        .unwrap()
        .verify(None, now)
        .unwrap();
    for n in nodes {
        assert_eq!(
            n.catalog.offer(&verified, Origin::Remote, now).unwrap(),
            Offer::Accepted
        );
    }
    d
}

/// Polls `f` every 20 ms until it returns `Some`, failing after [`WAIT`].
async fn eventually<T>(what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const LONG: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn majority_of_three_authorities_with_one_down() {
    let fabric = Arc::new(Fabric::default());
    let (a, b, c) = (
        node(&fabric, 1, LONG),
        node(&fabric, 2, LONG),
        node(&fabric, 3, LONG),
    );
    let (x, y) = (node(&fabric, 4, LONG), node(&fabric, 5, LONG));
    let all = [&a, &b, &c, &x, &y];
    let desc = publish(&all, &[a.id(), b.id(), c.id()]);
    fabric.set_down(c.id(), true);

    let lease = x.locks.acquire(&desc).await.unwrap();
    assert_eq!(
        (lease.holder, lease.token, lease.workspace),
        (x.id(), 1, desc.id)
    );
    assert_eq!(x.locks.check_fence(desc.id).unwrap(), lease);
    // Acquiring again returns the lease held.
    assert_eq!(x.locks.acquire(&desc).await.unwrap(), lease);

    let err = y.locks.acquire(&desc).await.unwrap_err();
    assert!(
        matches!(err, LockError::Held { holder, until } if holder == x.id() && until >= lease.expires_at),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .starts_with(&format!("locked by {} until ", x.id().short()))
    );
    assert_eq!(y.locks.check_fence(desc.id), Err(LockError::NotHeld));
    // The grant was gossiped: every node up knows who holds the lock.
    for n in [&a, &b, &y] {
        let current = n.locks.current(desc.id).expect("lock record gossiped");
        assert_eq!((current.holder, current.fencing_token), (x.id(), 1));
    }
    assert!(c.locks.current(desc.id).is_none(), "C was down");

    // With B down too, no majority: a new acquisition fails clearly.
    x.locks.release(desc.id).await.unwrap();
    fabric.set_down(b.id(), true);
    let err = y.locks.acquire(&desc).await.unwrap_err();
    assert!(
        matches!(
            err,
            LockError::Unreachable {
                reached: 1,
                needed: 2,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string().starts_with("lock authority unreachable: "),
        "{err}"
    );
    // B back: Y gets it, with a token above X's.
    fabric.set_down(b.id(), false);
    let lease = y.locks.acquire(&desc).await.unwrap();
    assert!(lease.token > 1, "{lease:?}");
    // A release that reaches only a minority leaves the others' grant to expire: Y's
    // release reaches A only, so X cannot take the lock at once (B still has Y's grant).
    fabric.set_down(b.id(), true);
    y.locks.release(desc.id).await.unwrap();
    fabric.set_down(b.id(), false);
    let err = x.locks.acquire(&desc).await.unwrap_err();
    assert!(
        matches!(err, LockError::Held { holder, .. } if holder == y.id()),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_racers_exactly_one_wins() {
    let fabric = Arc::new(Fabric::default());
    let (a, b, c) = (
        node(&fabric, 1, LONG),
        node(&fabric, 2, LONG),
        node(&fabric, 3, LONG),
    );
    let (x, y) = (node(&fabric, 4, LONG), node(&fabric, 5, LONG));
    for _ in 0..10 {
        let desc = publish(&[&a, &b, &c, &x, &y], &[a.id(), b.id(), c.id()]);
        let (rx, ry) = tokio::join!(x.locks.acquire(&desc), y.locks.acquire(&desc));
        let (winner, loser, err) = match (rx, ry) {
            (Ok(_), Err(e)) => (&x, &y, e),
            (Err(e), Ok(_)) => (&y, &x, e),
            other => panic!("exactly one racer must win: {other:?}"),
        };
        assert!(
            matches!(err, LockError::Held { holder, .. } if holder == winner.id()),
            "{err:?}"
        );
        assert!(winner.locks.check_fence(desc.id).is_ok());
        assert!(loser.locks.check_fence(desc.id).is_err());
        // The loser gave back its minority grant: after the winner releases, it gets in.
        winner.locks.release(desc.id).await.unwrap();
        let lease = loser.locks.acquire(&desc).await.unwrap();
        assert_eq!(lease.holder, loser.id());
        loser.locks.release(desc.id).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_holder_loses_the_lease_at_expiry_and_is_fenced_off() {
    let short = Duration::from_secs(2);
    let fabric = Arc::new(Fabric::default());
    let a = node(&fabric, 1, short);
    let (x, y) = (node(&fabric, 4, short), node(&fabric, 5, short));
    let desc = publish(&[&a, &x, &y], &[a.id()]);
    let first = x.locks.acquire(&desc).await.unwrap();
    // Renewals keep X's lease valid well past one lease length.
    let until = Instant::now() + short * 2;
    while Instant::now() < until {
        assert!(x.locks.check_fence(desc.id).is_ok(), "renewal failed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // X is cut off: its own clock ends its lease, and then Y can take over.
    fabric.set_down(x.id(), true);
    eventually("X's lease to run out", async || {
        matches!(x.locks.check_fence(desc.id), Err(LockError::Expired { .. })).then_some(())
    })
    .await;
    let second = eventually("Y to take the lock", async || {
        y.locks.acquire(&desc).await.ok()
    })
    .await;
    assert!(second.token > first.token, "{first:?} {second:?}");
    // X comes back: Y's renewals reach it by gossip and it stays fenced off as stale.
    fabric.set_down(x.id(), false);
    let err = eventually("X to see the higher token", async || {
        match x.locks.check_fence(desc.id) {
            Err(e @ LockError::Stale { .. }) => Some(e),
            _ => None,
        }
    })
    .await;
    assert_eq!(
        err,
        LockError::Stale {
            token: first.token,
            current: second.token
        }
    );
    assert!(y.locks.check_fence(desc.id).is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_tokens_and_renews_the_held_lease() {
    let fabric = Arc::new(Fabric::default());
    let a = node(&fabric, 1, LONG);
    let x = node(&fabric, 4, LONG);
    let desc = publish(&[&a, &x], &[a.id()]);
    let lease = x.locks.acquire(&desc).await.unwrap();

    // Restart X: drop every handle (so its database closes) and reopen it.
    let TestNode {
        identity,
        dir,
        catalog,
        locks,
    } = x;
    lock(&fabric.nodes).remove(&identity.public());
    drop(locks);
    let locks = open_locks(&fabric, &identity, &dir, &catalog, LONG);
    assert!(
        locks.check_fence(desc.id).is_err(),
        "not valid before the renewal"
    );
    locks.resume().await.unwrap();
    let renewed = eventually("the lease to be renewed after the restart", async || {
        locks.check_fence(desc.id).ok()
    })
    .await;
    assert_eq!(renewed.token, lease.token);
    locks.release(desc.id).await.unwrap();

    // Restart the authority: it never hands out a token it already granted.
    let TestNode {
        identity,
        dir,
        catalog,
        locks: a_locks,
    } = a;
    lock(&fabric.nodes).remove(&identity.public());
    drop(a_locks);
    let _a = open_locks(&fabric, &identity, &dir, &catalog, LONG);
    let again = locks.acquire(&desc).await.unwrap();
    assert!(again.token > lease.token, "{again:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gossip_from_non_authorities_is_invalid_and_old_records_are_not_newer() {
    let fabric = Arc::new(Fabric::default());
    let a = node(&fabric, 1, LONG);
    let y = node(&fabric, 5, LONG);
    let desc = publish(&[&a, &y], &[a.id()]);
    let record = |signer: &Identity, token| LockRecord {
        workspace: desc.id,
        description_version: 1,
        holder: y.id(),
        fencing_token: token,
        granted_at: Timestamp::now(),
        expires_at: Timestamp::now().saturating_add(Span::from_secs(30)),
        authority: signer.public(),
        state: LockState::Held,
    };
    let mallory = Identity::from_secret_bytes(&[0x66; 32]);
    let forged = SignedLockRecord::sign(&mallory, &record(&mallory, 99)).unwrap();
    assert!(matches!(
        y.locks.observe(&forged).await,
        Observation::Invalid(_)
    ));
    assert!(y.locks.current(desc.id).is_none());
    let good = SignedLockRecord::sign(&a.identity, &record(&a.identity, 5)).unwrap();
    assert_eq!(y.locks.observe(&good).await, Observation::Newer);
    assert_eq!(y.locks.observe(&good).await, Observation::NotNewer);
    let old = SignedLockRecord::sign(&a.identity, &record(&a.identity, 4)).unwrap();
    assert_eq!(y.locks.observe(&old).await, Observation::NotNewer);
    assert_eq!(y.locks.current(desc.id).unwrap().fencing_token, 5);
    // A workspace this node does not know cannot be judged.
    let mut unknown = record(&a.identity, 1);
    unknown.workspace = WorkspaceId::random();
    let unknown = SignedLockRecord::sign(&a.identity, &unknown).unwrap();
    assert!(matches!(
        y.locks.observe(&unknown).await,
        Observation::Unknown(_)
    ));
    // The next acquisition proposes above the highest token seen.
    let lease = y.locks.acquire(&desc).await.unwrap();
    assert_eq!(lease.token, 6);
}
