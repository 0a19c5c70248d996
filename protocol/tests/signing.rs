//! Signed records: tampering, weak keys, cross-kind replay, ownership and delegation.

use std::sync::OnceLock;

use proptest::prelude::*;
use vwnet_protocol::description::{Description, template_for};
use vwnet_protocol::identity::{Identity, KeyError, SignatureCheckError};
use vwnet_protocol::ids::{PeerIdentity, WorkspaceId};
use vwnet_protocol::limits::MAX_SIGNED_RECORD_LEN;
use vwnet_protocol::lock::{LockRecord, LockState};
use vwnet_protocol::signed::{
    AttributeCertificate, Delegation, DelegationScope, RecordKind, SignError, SignatureBytes,
    Signed, SignedAttributeCertificate, SignedDecodeError, SignedDelegation, SignedDescription,
    SignedEnvelope, SignedLockRecord, VerifyError, fuzz_verify,
};
use vwnet_protocol::time::Timestamp;

const NOW: Timestamp = Timestamp::from_unix_secs(1_800_000_000);

fn identity(seed: u8) -> Identity {
    Identity::from_secret_bytes(&[seed; 32])
}

fn description(owner: PeerIdentity) -> Description {
    let text = template_for(WorkspaceId::from_bytes([0x5a; 16]), owner, NOW);
    Description::from_toml_str(&text).expect("the template parses")
}

fn delegation(
    owner: &Identity,
    delegate: PeerIdentity,
    scope: DelegationScope,
    not_after: Timestamp,
) -> SignedDelegation {
    let d = Delegation {
        delegator: owner.public(),
        delegate,
        scope,
        not_before: Timestamp::from_unix_secs(NOW.as_unix_secs() - 3600),
        not_after,
    };
    Signed::sign(owner, &d).unwrap()
}

/// Re-signs an envelope as `signer` would, keeping everything else (for forgeries that are
/// internally consistent).
fn resign(envelope: &SignedEnvelope, signer: &Identity) -> SignedEnvelope {
    SignedEnvelope::sign(signer, envelope.kind, envelope.payload.clone()).unwrap()
}

#[test]
fn owner_signed_description_verifies_and_keeps_its_bytes() {
    let owner = identity(1);
    let desc = description(owner.public());
    let signed = SignedDescription::sign(&owner, &desc).unwrap();
    let bytes = signed.to_bytes();
    let back = SignedDescription::from_bytes(&bytes).unwrap();
    let verified = back.verify(None, NOW).unwrap();
    assert_eq!(*verified, desc);
    assert_eq!(verified.id, desc.id);
    assert_eq!(verified.signer(), owner.public());
    assert!(verified.delegation().is_none());
    assert_eq!(
        verified.signed().to_bytes(),
        bytes,
        "re-gossip sends the verified bytes"
    );
}

#[test]
fn tampering_with_any_byte_fails_verification() {
    let owner = identity(1);
    let signed = SignedDescription::sign(&owner, &description(owner.public())).unwrap();
    let bytes = signed.to_bytes();
    assert!(bytes.len() > 200, "a real description, not a toy");
    let mut accepted = Vec::new();
    // One change per position (low bit, high bit or all bits, in turn): a full signature check
    // per position is slow in unoptimised builds, and every byte is still covered.
    for pos in 0..bytes.len() {
        let mask = [0x01u8, 0x80, 0xff][pos % 3];
        let mut tampered = bytes.clone();
        tampered[pos] ^= mask;
        let ok =
            SignedDescription::from_bytes(&tampered).is_ok_and(|s| s.verify(None, NOW).is_ok());
        if ok {
            accepted.push((pos, mask));
        }
    }
    assert!(
        accepted.is_empty(),
        "tampered envelopes verified: {accepted:?}"
    );
}

#[test]
fn truncated_or_extended_envelopes_are_refused() {
    let owner = identity(1);
    let bytes = SignedDescription::sign(&owner, &description(owner.public()))
        .unwrap()
        .to_bytes();
    for len in 0..bytes.len() {
        assert!(
            SignedDescription::from_bytes(&bytes[..len]).is_err(),
            "prefix {len}"
        );
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(SignedDescription::from_bytes(&longer).is_err());
}

#[test]
fn wrong_key_is_refused() {
    let owner = identity(1);
    let signed = SignedDescription::sign(&owner, &description(owner.public())).unwrap();
    let mut envelope = signed.envelope().clone();
    envelope.signer = identity(2).public();
    let err = SignedDescription::from_envelope(envelope)
        .unwrap()
        .verify(None, NOW)
        .unwrap_err();
    assert!(
        matches!(
            err,
            VerifyError::Signature {
                cause: SignatureCheckError::BadSignature(_),
                ..
            }
        ),
        "{err}"
    );
}

/// Encodings of the eight small-order points (and sign-bit variants), as blocklisted by
/// libsodium.
const SMALL_ORDER: [&str; 7] = [
    "0100000000000000000000000000000000000000000000000000000000000000",
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "0000000000000000000000000000000000000000000000000000000000000000",
    "0000000000000000000000000000000000000000000000000000000000000080",
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
];

#[test]
fn small_order_keys_are_refused() {
    for hex_key in SMALL_ORDER {
        let peer: PeerIdentity = hex_key.parse().unwrap();
        let err = peer.verifying_key().unwrap_err();
        assert!(
            matches!(err, KeyError::Weak(_) | KeyError::Invalid(_)),
            "{hex_key}: {err}"
        );
    }
    let identity_point: PeerIdentity = SMALL_ORDER[0].parse().unwrap();
    assert!(matches!(
        identity_point.verifying_key(),
        Err(KeyError::Weak(_))
    ));
}

#[test]
fn weak_key_forgery_of_a_description_is_refused() {
    // With A = identity point, (R = identity, s = 0) satisfies the plain verification equation
    // for every message: a "signature" anyone can make. The owner is the weak key, so the
    // ownership check alone would not catch it.
    let weak: PeerIdentity = SMALL_ORDER[0].parse().unwrap();
    let mut sig = [0u8; 64];
    sig[0] = 1;
    let envelope = SignedEnvelope {
        kind: RecordKind::Description,
        payload: description(weak).to_canonical_bytes(),
        signer: weak,
        signature: SignatureBytes(sig),
    };
    let err = SignedDescription::from_envelope(envelope)
        .unwrap()
        .verify(None, NOW)
        .unwrap_err();
    assert!(
        matches!(
            err,
            VerifyError::Signature {
                cause: SignatureCheckError::Key(KeyError::Weak(_)),
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn signature_of_one_kind_never_verifies_as_another() {
    let signer = identity(3);
    let payload = b"the same payload bytes".to_vec();
    for signed_as in RecordKind::ALL {
        let envelope = SignedEnvelope::sign(&signer, signed_as, payload.clone()).unwrap();
        envelope.verify_signature(signed_as).unwrap();
        for replayed_as in RecordKind::ALL.into_iter().filter(|k| *k != signed_as) {
            let mut relabelled = envelope.clone();
            relabelled.kind = replayed_as;
            let err = relabelled.verify_signature(replayed_as).unwrap_err();
            assert!(
                matches!(err, VerifyError::Signature { .. }),
                "{signed_as} replayed as {replayed_as}: {err}"
            );
            // And without relabelling, the kind check refuses it.
            assert!(matches!(
                envelope.verify_signature(replayed_as),
                Err(VerifyError::WrongKind { .. })
            ));
        }
    }
}

#[test]
fn lock_record_bytes_are_not_a_signed_description() {
    let authority = identity(4);
    let lock = lock_record(authority.public());
    let bytes = SignedLockRecord::sign(&authority, &lock)
        .unwrap()
        .to_bytes();
    assert!(matches!(
        SignedDescription::from_bytes(&bytes),
        Err(SignedDecodeError::WrongKind {
            expected: RecordKind::Description,
            found: RecordKind::LockRecord
        })
    ));
}

#[test]
fn non_owner_signature_is_refused() {
    let owner = identity(1);
    let mallory = identity(9);
    let desc = description(owner.public());
    let err = SignedDescription::sign(&mallory, &desc)
        .unwrap()
        .verify(None, NOW)
        .unwrap_err();
    assert!(matches!(err, VerifyError::NotOwner { .. }), "{err}");
}

#[test]
fn owner_delegation_lets_the_delegate_publish() {
    let owner = identity(1);
    let delegate = identity(2);
    let desc = description(owner.public());
    let signed = SignedDescription::sign(&delegate, &desc).unwrap();
    for scope in [
        DelegationScope::PublishWorkspace(desc.id),
        DelegationScope::PublishAll,
    ] {
        let d = delegation(
            &owner,
            delegate.public(),
            scope,
            Timestamp::from_unix_secs(NOW.as_unix_secs() + 60),
        );
        let verified = signed.verify(Some(&d), NOW).unwrap();
        assert_eq!(verified.signer(), delegate.public());
        assert_eq!(
            verified.delegation().map(|d| d.delegate),
            Some(delegate.public())
        );
    }
}

#[test]
fn expired_or_future_delegation_is_refused() {
    let owner = identity(1);
    let delegate = identity(2);
    let signed = SignedDescription::sign(&delegate, &description(owner.public())).unwrap();
    let expired = delegation(
        &owner,
        delegate.public(),
        DelegationScope::PublishAll,
        Timestamp::from_unix_secs(NOW.as_unix_secs() - 1),
    );
    let err = signed.verify(Some(&expired), NOW).unwrap_err();
    assert!(
        matches!(&err, VerifyError::Delegation(inner) if matches!(**inner, VerifyError::Expired { .. })),
        "{err}"
    );
    // Valid through its last second, inclusive.
    let until_now = delegation(&owner, delegate.public(), DelegationScope::PublishAll, NOW);
    signed.verify(Some(&until_now), NOW).unwrap();

    let future = Delegation {
        delegator: owner.public(),
        delegate: delegate.public(),
        scope: DelegationScope::PublishAll,
        not_before: Timestamp::from_unix_secs(NOW.as_unix_secs() + 1),
        not_after: Timestamp::from_unix_secs(NOW.as_unix_secs() + 100),
    };
    let future = SignedDelegation::sign(&owner, &future).unwrap();
    let err = signed.verify(Some(&future), NOW).unwrap_err();
    assert!(
        matches!(&err, VerifyError::Delegation(inner) if matches!(**inner, VerifyError::NotYetValid { .. })),
        "{err}"
    );
}

#[test]
fn delegation_that_does_not_fit_is_refused() {
    let owner = identity(1);
    let delegate = identity(2);
    let mallory = identity(9);
    let desc = description(owner.public());
    let later = Timestamp::from_unix_secs(NOW.as_unix_secs() + 60);
    let signed = SignedDescription::sign(&delegate, &desc).unwrap();

    // Granted by someone who is not the owner (validly signed by them).
    let not_owners = delegation(
        &mallory,
        delegate.public(),
        DelegationScope::PublishAll,
        later,
    );
    assert!(matches!(
        signed.verify(Some(&not_owners), NOW),
        Err(VerifyError::DelegationMismatch(_))
    ));
    // Granted to another key.
    let to_other = delegation(&owner, mallory.public(), DelegationScope::PublishAll, later);
    assert!(matches!(
        signed.verify(Some(&to_other), NOW),
        Err(VerifyError::DelegationMismatch(_))
    ));
    // For another workspace.
    let other_ws = delegation(
        &owner,
        delegate.public(),
        DelegationScope::PublishWorkspace(WorkspaceId::from_bytes([1; 16])),
        later,
    );
    assert!(matches!(
        signed.verify(Some(&other_ws), NOW),
        Err(VerifyError::DelegationMismatch(_))
    ));
    // Claims the owner as delegator but is signed by mallory.
    let forged = resign(
        delegation(
            &owner,
            delegate.public(),
            DelegationScope::PublishAll,
            later,
        )
        .envelope(),
        &mallory,
    );
    let forged = SignedDelegation::from_envelope(forged).unwrap();
    let err = signed.verify(Some(&forged), NOW).unwrap_err();
    assert!(
        matches!(&err, VerifyError::Delegation(inner) if matches!(**inner, VerifyError::SignerMismatch { .. })),
        "{err}"
    );
}

fn lock_record(authority: PeerIdentity) -> LockRecord {
    LockRecord {
        workspace: WorkspaceId::from_bytes([0x5a; 16]),
        description_version: 2,
        holder: identity(5).public(),
        fencing_token: 17,
        granted_at: NOW,
        expires_at: Timestamp::from_unix_secs(NOW.as_unix_secs() + 30),
        authority,
        state: LockState::Held,
    }
}

#[test]
fn lock_record_must_be_signed_by_its_authority() {
    let authority = identity(4);
    let lock = lock_record(authority.public());
    let verified = SignedLockRecord::sign(&authority, &lock)
        .unwrap()
        .verify()
        .unwrap();
    assert_eq!(verified.fencing_token, 17);
    assert!(verified.is_held_at(NOW));

    let err = SignedLockRecord::sign(&identity(9), &lock)
        .unwrap()
        .verify()
        .unwrap_err();
    assert!(
        matches!(
            err,
            VerifyError::SignerMismatch {
                field: "authority",
                ..
            }
        ),
        "{err}"
    );

    let mut backwards = lock.clone();
    backwards.expires_at = Timestamp::from_unix_secs(NOW.as_unix_secs() - 1);
    let err = SignedLockRecord::sign(&authority, &backwards)
        .unwrap()
        .verify()
        .unwrap_err();
    assert!(matches!(err, VerifyError::Payload { .. }), "{err}");
}

#[test]
fn attribute_certificate_must_be_signed_by_its_issuer_and_be_current() {
    let vo = identity(6);
    let cert = AttributeCertificate {
        issuer: vo.public(),
        subject: identity(7).public(),
        attributes: vec!["vo=biology".parse().unwrap(), "role=admin".parse().unwrap()],
        not_before: NOW,
        not_after: Timestamp::from_unix_secs(NOW.as_unix_secs() + 10),
    };
    let signed = SignedAttributeCertificate::sign(&vo, &cert).unwrap();
    assert_eq!(signed.verify(NOW).unwrap().attributes.len(), 2);
    assert!(matches!(
        signed.verify(Timestamp::from_unix_secs(NOW.as_unix_secs() + 11)),
        Err(VerifyError::Expired { .. })
    ));
    assert!(matches!(
        SignedAttributeCertificate::sign(&identity(9), &cert)
            .unwrap()
            .verify(NOW),
        Err(VerifyError::SignerMismatch {
            field: "issuer",
            ..
        })
    ));
    let mut dup = cert.clone();
    dup.attributes.push("vo=biology".parse().unwrap());
    assert!(matches!(
        SignedAttributeCertificate::sign(&vo, &dup)
            .unwrap()
            .verify(NOW),
        Err(VerifyError::Payload { .. })
    ));
}

#[test]
fn oversize_records_are_refused_on_both_sides() {
    let signer = identity(1);
    let err = SignedEnvelope::sign(
        &signer,
        RecordKind::Description,
        vec![0; MAX_SIGNED_RECORD_LEN],
    )
    .unwrap_err();
    assert!(matches!(err, SignError::TooLarge { .. }));
    assert!(SignedEnvelope::from_bytes(&vec![1; MAX_SIGNED_RECORD_LEN + 1]).is_err());
}

#[test]
fn fuzz_verify_accepts_exactly_the_valid_envelopes() {
    let owner = identity(1);
    let bytes = SignedDescription::sign(&owner, &description(owner.public()))
        .unwrap()
        .to_bytes();
    assert_eq!(fuzz_verify(&bytes), Some(RecordKind::Description));
    let lock = SignedLockRecord::sign(&identity(4), &lock_record(identity(4).public()))
        .unwrap()
        .to_bytes();
    assert_eq!(fuzz_verify(&lock), Some(RecordKind::LockRecord));
}

/// The canonical bytes of the owner-signed test description, computed once.
fn signed_description_bytes() -> Vec<u8> {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES
        .get_or_init(|| {
            let owner = identity(1);
            SignedDescription::sign(&owner, &description(owner.public()))
                .unwrap()
                .to_bytes()
        })
        .clone()
}

proptest! {
    /// Arbitrary bytes never panic the verifier and never verify.
    #[test]
    fn arbitrary_bytes_never_verify(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        prop_assert_eq!(fuzz_verify(&bytes), None);
    }

    /// Arbitrary bytes behind a valid envelope header reach the payload decoders.
    #[test]
    fn arbitrary_payloads_never_verify(
        kind in 0u8..4,
        payload in proptest::collection::vec(any::<u8>(), 0..1024),
        sig in proptest::collection::vec(any::<u8>(), 64),
    ) {
        let mut bytes = vec![1, kind];
        let mut len = payload.len();
        loop {
            let byte = (len & 0x7f) as u8;
            len >>= 7;
            if len == 0 { bytes.push(byte); break; }
            bytes.push(byte | 0x80);
        }
        bytes.extend_from_slice(&payload);
        bytes.extend_from_slice(identity(1).public().as_bytes());
        bytes.extend_from_slice(&sig);
        prop_assert!(SignedEnvelope::from_bytes(&bytes).is_ok());
        prop_assert_eq!(fuzz_verify(&bytes), None);
    }

    /// Random multi-byte corruption of a valid signed description never verifies.
    #[test]
    fn corrupted_description_never_verifies(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..8),
    ) {
        let original = signed_description_bytes();
        let mut bytes = original.clone();
        for (index, mask) in edits {
            let i = index.index(bytes.len());
            bytes[i] ^= mask;
        }
        // Edits may cancel out; only a changed envelope must fail.
        if bytes != original {
            prop_assert_eq!(fuzz_verify(&bytes), None);
        }
    }
}

#[test]
fn delegated_description_survives_gossip_with_its_delegation() {
    use vwnet_protocol::wire::{DescriptionAnnouncement, GossipMessage, WireMessage};
    let owner = identity(1);
    let delegate = identity(2);
    let desc = description(owner.public());
    let d = delegation(
        &owner,
        delegate.public(),
        DelegationScope::PublishWorkspace(desc.id),
        Timestamp::from_unix_secs(NOW.as_unix_secs() + 60),
    );
    let verified = SignedDescription::sign(&delegate, &desc)
        .unwrap()
        .verify(Some(&d), NOW)
        .unwrap();
    let bytes = GossipMessage::Description(DescriptionAnnouncement::from_verified(&verified))
        .encode()
        .unwrap();
    let GossipMessage::Description(received) = GossipMessage::decode(&bytes).unwrap() else {
        panic!("not a description announcement");
    };
    assert!(received.delegation.is_some());
    let again = received.verify(NOW).unwrap();
    assert_eq!(*again, desc);
    // Without the delegation, the same signed description is refused.
    assert!(matches!(
        received.description.verify(None, NOW),
        Err(VerifyError::NotOwner { .. })
    ));
}
