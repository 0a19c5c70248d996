//! The lock authority's state machine: one workspace's last token and current grant in, a
//! decision and the next state out. Pure: no clock, no storage, no keys; [`super::db`] runs it
//! inside one write transaction and commits the next state before anyone sees the decision.

use serde::{Deserialize, Serialize};
use vwnet_protocol::ids::{PeerIdentity, WorkspaceId};
use vwnet_protocol::lock::{LockRecord, LockState};
use vwnet_protocol::time::{Span, Timestamp};
use vwnet_protocol::wire::{LockDenial, LockRequest};

/// What an authority remembers about one workspace's lock (stored, versioned, in `locks.redb`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct AuthorityEntry {
    /// The highest fencing token this authority has ever granted for the workspace.
    pub(crate) last_token: u64,
    /// The grant with `last_token`, if any (live, expired or released).
    pub(crate) grant: Option<Grant>,
}

/// One grant as the authority keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Grant {
    pub(crate) holder: PeerIdentity,
    pub(crate) token: u64,
    pub(crate) description_version: u64,
    pub(crate) granted_at: Timestamp,
    pub(crate) expires_at: Timestamp,
    pub(crate) released: bool,
}

impl Grant {
    /// Live: not released and not expired at `now`. `now` is whole seconds rounded down and
    /// `expires_at` whole seconds, so `now < expires_at` holds exactly while the real time is
    /// before `expires_at`.
    fn live_at(&self, now: Timestamp) -> bool {
        !self.released && now < self.expires_at
    }
}

/// What the authority answers (before signing).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Sign and send this record (a grant, a renewal or a release).
    Record(LockRecord),
    /// Refuse.
    Deny(LockDenial),
}

/// When a lease of `lease` asked at `now` (rounded down) ends: one second later than
/// `now + lease`, so that the authority's lease never ends before the one the holder counts
/// from the moment it sent its request.
fn lease_end(now: Timestamp, lease: Span) -> Timestamp {
    now.saturating_add(lease).saturating_add(Span::from_secs(1))
}

/// Decides `request` from `requester` against `entry`; returns the decision and the state to
/// commit before answering (`None`: unchanged).
pub(crate) fn decide(
    entry: &AuthorityEntry,
    authority: PeerIdentity,
    workspace: WorkspaceId,
    requester: PeerIdentity,
    request: &LockRequest,
    now: Timestamp,
) -> (Decision, Option<AuthorityEntry>) {
    let record = |g: &Grant, state| LockRecord {
        workspace,
        description_version: g.description_version,
        holder: g.holder,
        fencing_token: g.token,
        granted_at: g.granted_at,
        expires_at: g.expires_at,
        authority,
        state,
    };
    match *request {
        LockRequest::Acquire {
            description_version,
            token,
            lease,
            ..
        } => {
            // Checked before the token, so that a loser learns who holds the lock.
            if let Some(g) = &entry.grant
                && g.live_at(now)
                && g.holder != requester
            {
                return (
                    Decision::Deny(LockDenial::Held {
                        holder: g.holder,
                        until: g.expires_at,
                        token: g.token,
                    }),
                    None,
                );
            }
            if token <= entry.last_token {
                return (
                    Decision::Deny(LockDenial::TokenTooLow {
                        last: entry.last_token,
                    }),
                    None,
                );
            }
            // Free, expired, released, or the requester's own grant (which this supersedes).
            let grant = Grant {
                holder: requester,
                token,
                description_version,
                granted_at: now,
                expires_at: lease_end(now, lease),
                released: false,
            };
            let decision = Decision::Record(record(&grant, LockState::Held));
            (
                decision,
                Some(AuthorityEntry {
                    last_token: token,
                    grant: Some(grant),
                }),
            )
        }
        LockRequest::Renew { token, lease, .. } => match &entry.grant {
            // Also after expiry: as long as no later grant exists here, nobody else holds it.
            Some(g)
                if g.holder == requester
                    && g.token == token
                    && token == entry.last_token
                    && !g.released =>
            {
                let grant = Grant {
                    expires_at: lease_end(now, lease).max(g.expires_at),
                    ..g.clone()
                };
                let decision = Decision::Record(record(&grant, LockState::Held));
                (
                    decision,
                    Some(AuthorityEntry {
                        last_token: entry.last_token,
                        grant: Some(grant),
                    }),
                )
            }
            _ => (
                Decision::Deny(LockDenial::NotHeld {
                    last: entry.last_token,
                }),
                None,
            ),
        },
        LockRequest::Release { token, .. } => match &entry.grant {
            Some(g) if g.holder == requester && g.token == token => {
                // Idempotent: a retried release gets the same answer.
                let grant = Grant {
                    released: true,
                    expires_at: if g.released {
                        g.expires_at
                    } else {
                        now.max(g.granted_at).min(g.expires_at)
                    },
                    ..g.clone()
                };
                let decision = Decision::Record(record(&grant, LockState::Released));
                let next = (!g.released).then_some(AuthorityEntry {
                    last_token: entry.last_token,
                    grant: Some(grant),
                });
                (decision, next)
            }
            _ => (
                Decision::Deny(LockDenial::NotHeld {
                    last: entry.last_token,
                }),
                None,
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WS: WorkspaceId = WorkspaceId::from_bytes([1; 16]);
    const AUTH: PeerIdentity = PeerIdentity::from_bytes([9; 32]);
    const A: PeerIdentity = PeerIdentity::from_bytes([0xa; 32]);
    const B: PeerIdentity = PeerIdentity::from_bytes([0xb; 32]);

    fn t(s: u64) -> Timestamp {
        Timestamp::from_unix_secs(s)
    }

    fn acquire(token: u64) -> LockRequest {
        LockRequest::Acquire {
            workspace: WS,
            description_version: 1,
            token,
            lease: Span::from_secs(10),
        }
    }

    /// Applies a request like the database does: commit the next state if there is one.
    fn step(entry: &mut AuthorityEntry, who: PeerIdentity, req: LockRequest, now: u64) -> Decision {
        let (d, next) = decide(entry, AUTH, WS, who, &req, t(now));
        if let Some(next) = next {
            *entry = next;
        }
        d
    }

    fn granted(d: Decision) -> LockRecord {
        match d {
            Decision::Record(r) => r,
            Decision::Deny(denial) => panic!("expected a record, got {denial:?}"),
        }
    }

    #[test]
    fn grant_then_others_are_refused_until_expiry() {
        let mut e = AuthorityEntry::default();
        let r = granted(step(&mut e, A, acquire(1), 100));
        assert_eq!(
            (r.holder, r.fencing_token, r.state),
            (A, 1, LockState::Held)
        );
        assert_eq!((r.granted_at, r.expires_at), (t(100), t(111)));
        assert_eq!(r.authority, AUTH);
        // B, even with a higher token, is told who holds it and until when.
        assert_eq!(
            step(&mut e, B, acquire(5), 110),
            Decision::Deny(LockDenial::Held {
                holder: A,
                until: t(111),
                token: 1
            })
        );
        assert_eq!(e.last_token, 1, "a refusal changes nothing");
        // At the expiry second the grant is over; B's token must still be higher.
        assert_eq!(
            step(&mut e, B, acquire(1), 111),
            Decision::Deny(LockDenial::TokenTooLow { last: 1 })
        );
        let r = granted(step(&mut e, B, acquire(2), 111));
        assert_eq!((r.holder, r.fencing_token), (B, 2));
    }

    #[test]
    fn renew_extends_only_the_current_grant_of_its_holder() {
        let mut e = AuthorityEntry::default();
        step(&mut e, A, acquire(3), 100);
        let renew = |token| LockRequest::Renew {
            workspace: WS,
            token,
            lease: Span::from_secs(10),
        };
        let r = granted(step(&mut e, A, renew(3), 105));
        assert_eq!((r.granted_at, r.expires_at), (t(100), t(116)));
        // Not B's grant; not A's old token.
        assert_eq!(
            step(&mut e, B, renew(3), 106),
            Decision::Deny(LockDenial::NotHeld { last: 3 })
        );
        assert_eq!(
            step(&mut e, A, renew(2), 106),
            Decision::Deny(LockDenial::NotHeld { last: 3 })
        );
        // Expired but not taken by anyone: the holder may still renew.
        let r = granted(step(&mut e, A, renew(3), 200));
        assert_eq!(r.expires_at, t(211));
        // Once someone else took it, the old holder's renewal fails.
        step(&mut e, B, acquire(4), 300);
        assert_eq!(
            step(&mut e, A, renew(3), 301),
            Decision::Deny(LockDenial::NotHeld { last: 4 })
        );
    }

    #[test]
    fn release_frees_the_lock_and_is_idempotent() {
        let mut e = AuthorityEntry::default();
        step(&mut e, A, acquire(1), 100);
        let release = LockRequest::Release {
            workspace: WS,
            token: 1,
        };
        assert_eq!(
            step(&mut e, B, release.clone(), 101),
            Decision::Deny(LockDenial::NotHeld { last: 1 })
        );
        let r = granted(step(&mut e, A, release.clone(), 102));
        assert_eq!((r.state, r.expires_at), (LockState::Released, t(102)));
        assert_eq!(granted(step(&mut e, A, release, 103)), r);
        // Free now, well before the old expiry; renewing the released grant fails.
        let renew = LockRequest::Renew {
            workspace: WS,
            token: 1,
            lease: Span::from_secs(10),
        };
        assert!(matches!(
            step(&mut e, A, renew, 103),
            Decision::Deny(LockDenial::NotHeld { .. })
        ));
        assert_eq!(granted(step(&mut e, B, acquire(2), 103)).holder, B);
    }

    #[test]
    fn the_holder_may_take_its_own_lock_again_with_a_higher_token() {
        let mut e = AuthorityEntry::default();
        step(&mut e, A, acquire(1), 100);
        let r = granted(step(&mut e, A, acquire(2), 101));
        assert_eq!(r.fencing_token, 2);
        assert_eq!(
            step(&mut e, A, acquire(2), 101),
            Decision::Deny(LockDenial::TokenTooLow { last: 2 })
        );
    }
}
