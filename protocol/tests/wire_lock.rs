//! The lock protocol's wire messages: golden bytes, limits, round trips.

use vwnet_protocol::ids::WorkspaceId;
use vwnet_protocol::time::{Span, Timestamp};
use vwnet_protocol::wire::*;

mod wire_support;
use wire_support::{LOCK_HEX, golden, identity, lock};

const WS: WorkspaceId = WorkspaceId::from_bytes([0x44; 16]);

#[test]
fn lock_protocol_name_is_versioned() {
    assert_eq!(LOCK_PROTOCOL, "/vwnet/lock/1");
}

#[test]
fn golden_lock_requests() {
    let ws = "44".repeat(16);
    golden(
        &LockRequest::Acquire {
            workspace: WS,
            description_version: 3,
            token: 300,
            lease: Span::from_secs(30),
        },
        // version, variant 0, workspace, version 3, token 300, lease 30 s
        &format!("0100{ws}03ac021e"),
    );
    golden(
        &LockRequest::Renew {
            workspace: WS,
            token: 300,
            lease: Span::from_secs(30),
        },
        &format!("0101{ws}ac021e"),
    );
    golden(
        &LockRequest::Release {
            workspace: WS,
            token: 300,
        },
        &format!("0102{ws}ac02"),
    );
}

#[test]
fn golden_lock_responses() {
    golden(&LockResponse::Record(lock()), &format!("0100{LOCK_HEX}"));
    golden(
        &LockResponse::Denied(LockDenial::Held {
            holder: identity(5).public(),
            until: Timestamp::from_unix_secs(1030),
            token: 300,
        }),
        &format!("010100{}8608ac02", identity(5).public()),
    );
    golden(
        &LockResponse::Denied(LockDenial::TokenTooLow { last: 7 }),
        "01010107",
    );
    golden(
        &LockResponse::Denied(LockDenial::NotHeld { last: 7 }),
        "01010207",
    );
    golden(&LockResponse::Denied(LockDenial::NotAuthority), "010103");
    golden(
        &LockResponse::Denied(LockDenial::UnknownWorkspace),
        "010104",
    );
    golden(&LockResponse::Refused(Refusal::Busy), "010200");
}

#[test]
fn leases_outside_the_limit_are_refused_both_ways() {
    for secs in [0, MAX_LOCK_LEASE_SECS + 1] {
        let request = LockRequest::Renew {
            workspace: WS,
            token: 1,
            lease: Span::from_secs(secs),
        };
        assert!(matches!(
            request.encode(),
            Err(WireEncodeError::Invalid { .. })
        ));
        let raw = vwnet_protocol::codec::encode(WIRE_VERSION, &request);
        assert!(matches!(
            LockRequest::decode(&raw),
            Err(WireDecodeError::Invalid { .. })
        ));
    }
    let max = LockRequest::Acquire {
        workspace: WS,
        description_version: u64::MAX,
        token: u64::MAX,
        lease: Span::from_secs(MAX_LOCK_LEASE_SECS),
    };
    assert_eq!(LockRequest::decode(&max.encode().unwrap()).unwrap(), max);
}

#[test]
fn oversize_lock_messages_are_refused_before_parsing() {
    assert!(LockRequest::decode(&vec![1u8; LockRequest::MAX_LEN + 1]).is_err());
    assert!(LockResponse::decode(&vec![1u8; LockResponse::MAX_LEN + 1]).is_err());
}
