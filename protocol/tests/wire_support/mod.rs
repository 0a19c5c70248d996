//! What the wire golden tests share: seeded identities, one signed lock record with its exact
//! bytes, and the golden-bytes check. Used by `wire.rs`, `wire_lock.rs` and `wire_deploy.rs`.

#![allow(dead_code, unreachable_pub)]

use vwnet_protocol::identity::Identity;
use vwnet_protocol::ids::WorkspaceId;
use vwnet_protocol::lock::{LockRecord, LockState};
use vwnet_protocol::signed::SignedLockRecord;
use vwnet_protocol::time::Timestamp;
use vwnet_protocol::wire::WireMessage;

/// The identity whose secret key is `seed` repeated.
pub fn identity(seed: u8) -> Identity {
    Identity::from_secret_bytes(&[seed; 32])
}

/// A lock on workspace 0x44.., held by seed 5, granted by seed 4.
pub fn lock() -> SignedLockRecord {
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

/// The signed lock record of [`lock`], field by field.
pub const LOCK_HEX: &str = concat!(
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

/// Checks that `message` encodes to exactly `expected` (hex), within its size cap, and decodes
/// back to itself.
pub fn golden<M: WireMessage + PartialEq + std::fmt::Debug>(message: &M, expected: &str) {
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
