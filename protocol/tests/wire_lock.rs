//! The lock protocol's wire messages: golden bytes, limits, round trips.

use vwnet_protocol::identity::Identity;
use vwnet_protocol::ids::WorkspaceId;
use vwnet_protocol::lock::{LockRecord, LockState};
use vwnet_protocol::signed::SignedLockRecord;
use vwnet_protocol::time::{Span, Timestamp};
use vwnet_protocol::wire::*;

fn identity(seed: u8) -> Identity {
    Identity::from_secret_bytes(&[seed; 32])
}

fn lock() -> SignedLockRecord {
    let authority = identity(4);
    let record = LockRecord {
        workspace: WorkspaceId::from_bytes([0x44; 16]),
        description_version: 3,
        holder: identity(5).public(),
        fencing_token: 300,
        granted_at: Timestamp::from_unix_secs(1000),
        expires_at: Timestamp::from_unix_secs(1030),
        authority: authority.public(),
        state: LockState::Held,
    };
    SignedLockRecord::sign(&authority, &record).unwrap()
}

/// The signed lock record of [`lock`] (the same record as in `wire.rs`).
const LOCK_HEX: &str = concat!(
    "bc01",                                                             // envelope: 188 bytes
    "01",                                                               // envelope version 1
    "01",                                                               // kind: lock record
    "59",                                                               // payload: 89 bytes
    "01",                                                               // record version 1
    "44444444444444444444444444444444",                                 // workspace
    "03",                                                               // description_version 3
    "6e7a1cdd29b0b78fd13af4c5598feff4ef2a97166e3ca6f2e4fbfccd80505bf1", // holder: seed-5 key
    "ac02",                                                             // fencing_token 300
    "e807",                                                             // granted_at 1000
    "8608",                                                             // expires_at 1030
    "ca93ac1705187071d67b83c7ff0efe8108e8ec4530575d7726879333dbdabe7c", // authority: seed-4 key
    "00",                                                               // state: held
    "ca93ac1705187071d67b83c7ff0efe8108e8ec4530575d7726879333dbdabe7c", // signer: seed-4 key
    "e20bf6d80fda118778fcab4382b3f22195dd0107dca5ffd638524f788de2e444", // signature (first half)
    "5e1448a29496341b191963e4f77cc30c2fa9e1e702c373a9a27f34e476ac6d04", // signature (second half)
);

fn golden<M: WireMessage + PartialEq + std::fmt::Debug>(message: &M, expected: &str) {
    let bytes = message.encode().unwrap();
    assert_eq!(
        hex::encode(&bytes),
        expected,
        "{} encoding changed; if intended, bump WIRE_VERSION or the protocol name",
        M::NAME
    );
    assert_eq!(&M::decode(&bytes).unwrap(), message);
    assert!(bytes.len() <= M::MAX_LEN);
}

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
