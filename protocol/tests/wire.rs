//! Wire messages: golden bytes per message, limits enforced on decode and encode, round trips,
//! and arbitrary input through the fuzz entry point.

use proptest::prelude::*;
use vwnet_protocol::ids::{ChunkHash, DescriptionHash, ImageId, WorkspaceId};
use vwnet_protocol::limits::MAX_CHUNK_LEN;
use vwnet_protocol::signed::{
    Delegation, DelegationScope, RecordKind, SignedDelegation, SignedDescription, SignedEnvelope,
};
use vwnet_protocol::time::Timestamp;
use vwnet_protocol::wire::*;

mod wire_support;
use wire_support::{LOCK_HEX, golden, identity, lock};

/// A signed description whose payload is not a real description: decoding a wire message
/// does not open payloads, and this keeps the golden bytes independent of the description
/// model's encoding.
fn announcement() -> DescriptionAnnouncement {
    let owner = identity(1);
    let envelope = SignedEnvelope::sign(&owner, RecordKind::Description, b"desc".to_vec()).unwrap();
    let delegation = Delegation {
        delegator: owner.public(),
        delegate: identity(2).public(),
        scope: DelegationScope::PublishAll,
        not_before: Timestamp::from_unix_secs(1),
        not_after: Timestamp::from_unix_secs(2),
    };
    DescriptionAnnouncement {
        description: SignedDescription::from_envelope(envelope).unwrap(),
        delegation: Some(SignedDelegation::sign(&owner, &delegation).unwrap()),
    }
}

#[test]
fn protocol_names_are_versioned() {
    assert_eq!(CHUNK_PROTOCOL, "/vwnet/chunk/1");
    assert_eq!(MANIFEST_PROTOCOL, "/vwnet/manifest/1");
    assert_eq!(CATALOG_PROTOCOL, "/vwnet/catalog/1");
    assert_eq!(DESCRIPTIONS_TOPIC, "vwnet/descriptions/1");
    assert_eq!(LOCKS_TOPIC, "vwnet/locks/1");
    assert_eq!(PROVIDERS_TOPIC, "vwnet/providers/2");
}

#[test]
fn golden_chunk_messages() {
    golden(
        &ChunkRequest {
            hashes: vec![
                ChunkHash::from_bytes([0x11; 32]),
                ChunkHash::from_bytes([0x22; 32]),
            ],
        },
        &format!("0102{}{}", "11".repeat(32), "22".repeat(32)),
    );
    golden(
        &ChunkResponse::Chunks(vec![
            ChunkReply::Found(b"abc".to_vec()),
            ChunkReply::Missing,
            ChunkReply::OverBudget,
        ]),
        "01000300036162630102",
    );
    golden(&ChunkResponse::Refused(Refusal::Busy), "010100");
}

#[test]
fn golden_manifest_messages() {
    golden(
        &ManifestRequest {
            image: ImageId::from_bytes([0x33; 32]),
        },
        &format!("01{}", "33".repeat(32)),
    );
    golden(
        &ManifestResponse::Found(b"manifest".to_vec()),
        "0100086d616e6966657374",
    );
    golden(&ManifestResponse::Missing, "0101");
    golden(&ManifestResponse::Refused(Refusal::Forbidden), "010201");
}

/// `DescriptionAnnouncement` of [`announcement`], field by field.
const ANNOUNCEMENT_HEX: &str = concat!(
    "67",                                                               // envelope: 103 bytes
    "01",                                                               // envelope version 1
    "00",                                                               // kind: description
    "0464657363",                                                       // payload: 4 bytes, "desc"
    "8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c", // signer: seed-1 key
    "8ed88aabd9c3b1f3d4093ab2b53a9d2acb1d22dc83d505f8e4e89a488ae43040", // signature (first half)
    "199eb4023817cde8c915c892aa708898145ece07a70663649e8f6e7ff6858e03", // signature (second half)
    "01",                                                               // delegation: Some
    "a701",                                                             // envelope: 167 bytes
    "01",                                                               // envelope version 1
    "03",                                                               // kind: delegation
    "44",                                                               // payload: 68 bytes
    "01",                                                               // record version 1
    "8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c", // delegator: seed-1 key
    "8139770ea87d175f56a35466c34c7ecccb8d8a91b4ee37a25df60f5b8fc9b394", // delegate: seed-2 key
    "00",                                                               // scope: publish all
    "0102",                                                             // not_before 1, not_after 2
    "8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c", // signer: seed-1 key
    "c9a280fd5c1b4e7784cf37ec0ccbc0c88abc0b3eb2348917c16167fb89173d5d", // signature (first half)
    "d40487430adff10119fc58e294fbd5051d54cf485bdc845011ff2323f22fda02", // signature (second half)
);

#[test]
fn golden_gossip_messages() {
    golden(
        &GossipMessage::Description(announcement()),
        &format!("0100{ANNOUNCEMENT_HEX}"),
    );
    golden(&GossipMessage::Lock(lock()), &format!("0101{LOCK_HEX}"));
    let provider = identity(5).public();
    golden(
        &GossipMessage::Provider(ProviderAnnouncement {
            image: ImageId::from_bytes([0x33; 32]),
            provider,
            holdings: Holdings::Bitmap {
                total: 10,
                bits: vec![0b1010_0101, 0b10],
            },
            site: None,
        }),
        &format!("0102{}{provider}020a02a50200", "33".repeat(32)),
    );
    golden(
        &GossipMessage::Provider(ProviderAnnouncement {
            image: ImageId::from_bytes([0x33; 32]),
            provider,
            holdings: Holdings::Count {
                held: 5,
                total: 300,
            },
            site: Some("b".into()),
        }),
        &format!("0102{}{provider}0105ac02010162", "33".repeat(32)),
    );
    golden(
        &GossipMessage::Provider(ProviderAnnouncement {
            image: ImageId::from_bytes([0x33; 32]),
            provider,
            holdings: Holdings::Complete,
            site: Some("site-a".into()),
        }),
        &format!("0102{}{provider}000106736974652d61", "33".repeat(32)),
    );
}

#[test]
fn golden_catalog_messages() {
    golden(&CatalogRequest::List { after: None }, "010000");
    golden(
        &CatalogRequest::List {
            after: Some(WorkspaceId::from_bytes([0x44; 16])),
        },
        &format!("010001{}", "44".repeat(16)),
    );
    golden(
        &CatalogRequest::Get {
            workspace: WorkspaceId::from_bytes([0x44; 16]),
        },
        &format!("0101{}", "44".repeat(16)),
    );
    golden(
        &CatalogResponse::Entries {
            entries: vec![
                CatalogEntry {
                    workspace: WorkspaceId::from_bytes([0x01; 16]),
                    version: 1,
                    digest: DescriptionHash::from_bytes([0xaa; 32]),
                },
                CatalogEntry {
                    workspace: WorkspaceId::from_bytes([0x02; 16]),
                    version: 200,
                    digest: DescriptionHash::from_bytes([0xbb; 32]),
                },
            ],
            more: true,
        },
        &format!(
            "010002{}01{}{}c801{}01",
            "01".repeat(16),
            "aa".repeat(32),
            "02".repeat(16),
            "bb".repeat(32)
        ),
    );
    golden(
        &CatalogResponse::Description(Box::new(announcement())),
        &format!("0101{ANNOUNCEMENT_HEX}"),
    );
    golden(&CatalogResponse::Missing, "0102");
    golden(&CatalogResponse::Refused(Refusal::Busy), "010300");
}

#[test]
fn oversize_input_is_refused_before_parsing() {
    let huge = vec![1u8; ChunkRequest::MAX_LEN + 1];
    assert!(matches!(
        ChunkRequest::decode(&huge),
        Err(WireDecodeError::Decode {
            cause: vwnet_protocol::codec::DecodeError::TooLarge { .. },
            ..
        })
    ));
    let huge = vec![1u8; GossipMessage::MAX_LEN + 1];
    assert!(GossipMessage::decode(&huge).is_err());
}

#[test]
fn hostile_length_prefixes_do_not_allocate() {
    // 64 replies claimed, the first a chunk of 2^32 - 1 bytes, in 10 bytes of input.
    let bytes = [1, 0, 64, 0, 0xff, 0xff, 0xff, 0xff, 0x0f, 0];
    assert!(ChunkResponse::decode(&bytes).is_err());
    // 2^63 hashes claimed.
    let mut bytes = vec![1];
    bytes.extend_from_slice(&[0xff; 9]);
    bytes.push(0x01);
    assert!(ChunkRequest::decode(&bytes).is_err());
    // A manifest of 2^32 - 1 bytes claimed.
    assert!(ManifestResponse::decode(&[1, 0, 0xff, 0xff, 0xff, 0xff, 0x0f]).is_err());
}

#[test]
fn counts_are_limited_on_both_sides() {
    let too_many = ChunkRequest {
        hashes: vec![ChunkHash::from_bytes([0; 32]); MAX_CHUNKS_PER_REQUEST + 1],
    };
    assert!(matches!(
        too_many.encode(),
        Err(WireEncodeError::Invalid { .. })
    ));
    // What a non-checking peer would send: the same encoding without the check.
    let raw = vwnet_protocol::codec::encode(WIRE_VERSION, &too_many);
    assert!(matches!(
        ChunkRequest::decode(&raw),
        Err(WireDecodeError::Invalid { .. })
    ));
    let max = ChunkRequest {
        hashes: vec![ChunkHash::from_bytes([0; 32]); MAX_CHUNKS_PER_REQUEST],
    };
    assert_eq!(ChunkRequest::decode(&max.encode().unwrap()).unwrap(), max);

    let big_chunk = ChunkResponse::Chunks(vec![ChunkReply::Found(vec![7; MAX_CHUNK_LEN + 1])]);
    assert!(big_chunk.encode().is_err());
    let empty_chunk = ChunkResponse::Chunks(vec![ChunkReply::Found(Vec::new())]);
    assert!(empty_chunk.encode().is_err());
    let at_budget = ChunkResponse::Chunks(vec![
        ChunkReply::Found(vec![7; MAX_CHUNK_LEN]);
        MAX_CHUNK_RESPONSE_DATA / MAX_CHUNK_LEN
    ]);
    let bytes = at_budget.encode().unwrap();
    assert_eq!(ChunkResponse::decode(&bytes).unwrap(), at_budget);
    let over_budget = ChunkResponse::Chunks(vec![
        ChunkReply::Found(vec![7; MAX_CHUNK_LEN]);
        MAX_CHUNK_RESPONSE_DATA / MAX_CHUNK_LEN + 1
    ]);
    assert!(over_budget.encode().is_err());
}

#[test]
fn provider_bitmaps_must_be_exact() {
    let provider = identity(5).public();
    let with = |holdings| {
        GossipMessage::Provider(ProviderAnnouncement {
            image: ImageId::from_bytes([0; 32]),
            provider,
            holdings,
            site: None,
        })
    };
    let short = with(Holdings::Bitmap {
        total: 9,
        bits: vec![0xff],
    });
    assert!(short.encode().is_err());
    let stray_bit = with(Holdings::Bitmap {
        total: 9,
        bits: vec![0xff, 0b10],
    });
    assert!(stray_bit.encode().is_err());
    let ok = with(Holdings::Bitmap {
        total: 9,
        bits: vec![0xff, 0b01],
    });
    assert!(ok.encode().is_ok());
    let over = with(Holdings::Count { held: 2, total: 1 });
    assert!(over.encode().is_err());

    // Site names: non-empty and bounded, checked on both sides.
    let sited = |site: &str| {
        GossipMessage::Provider(ProviderAnnouncement {
            image: ImageId::from_bytes([0; 32]),
            provider,
            holdings: Holdings::Complete,
            site: Some(site.to_owned()),
        })
    };
    assert!(sited(&"s".repeat(MAX_SITE_LEN)).encode().is_ok());
    assert!(sited(&"s".repeat(MAX_SITE_LEN + 1)).encode().is_err());
    assert!(sited("").encode().is_err());
    let mut bytes = sited(&"s".repeat(MAX_SITE_LEN)).encode().unwrap();
    // The same message with one byte more in the name, encoded by hand: refused on decode.
    let at = bytes.len() - MAX_SITE_LEN - 1;
    bytes[at] += 1;
    bytes.push(b's');
    assert!(GossipMessage::decode(&bytes).is_err());

    let bits = Holdings::Bitmap {
        total: 10,
        bits: vec![0b1010_0101, 0b10],
    };
    let held: Vec<u32> = (0..12).filter(|&i| bits.holds(i) == Some(true)).collect();
    assert_eq!(held, [0, 2, 5, 7, 9]);
    assert_eq!(Holdings::Count { held: 1, total: 2 }.holds(0), None);
}

#[test]
fn catalog_pages_must_be_sorted_and_unique() {
    let entry = |b: u8| CatalogEntry {
        workspace: WorkspaceId::from_bytes([b; 16]),
        version: 1,
        digest: DescriptionHash::from_bytes([0; 32]),
    };
    for entries in [vec![entry(2), entry(1)], vec![entry(1), entry(1)]] {
        let page = CatalogResponse::Entries {
            entries,
            more: false,
        };
        assert!(page.encode().is_err());
    }
}

#[test]
fn a_signed_record_of_the_wrong_kind_does_not_decode() {
    // A lock gossip message whose envelope holds a description.
    let envelope =
        SignedEnvelope::sign(&identity(1), RecordKind::Description, b"desc".to_vec()).unwrap();
    let inner = envelope.to_bytes();
    assert!(inner.len() < 128, "single-byte varint length below");
    let mut bytes = vec![WIRE_VERSION, 1, inner.len() as u8];
    bytes.extend_from_slice(&inner);
    // postcard drops the message of custom errors, so only the error's class is visible here.
    let err = GossipMessage::decode(&bytes).unwrap_err();
    assert!(matches!(err, WireDecodeError::Decode { .. }), "{err}");
    // The same framing around a lock record's envelope decodes (it is still not verified).
    let lock_env = lock().to_bytes();
    let mut ok = vec![WIRE_VERSION, 1];
    ok.extend_from_slice(&encode_varint(lock_env.len()));
    ok.extend_from_slice(&lock_env);
    assert!(GossipMessage::decode(&ok).is_ok());
}

fn encode_varint(mut n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

#[test]
fn gossip_topics_match_their_messages() {
    assert_eq!(GossipMessage::Lock(lock()).topic(), LOCKS_TOPIC);
    assert_eq!(
        GossipMessage::Description(announcement()).topic(),
        DESCRIPTIONS_TOPIC
    );
}

fn chunk_reply() -> impl Strategy<Value = ChunkReply> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 1..2048).prop_map(ChunkReply::Found),
        Just(ChunkReply::Missing),
        Just(ChunkReply::OverBudget),
    ]
}

proptest! {
    #[test]
    fn chunk_messages_round_trip(
        hashes in proptest::collection::vec(any::<[u8; 32]>(), 0..=MAX_CHUNKS_PER_REQUEST),
        replies in proptest::collection::vec(chunk_reply(), 0..=MAX_CHUNKS_PER_REQUEST),
    ) {
        let request = ChunkRequest { hashes: hashes.into_iter().map(ChunkHash::from_bytes).collect() };
        prop_assert_eq!(ChunkRequest::decode(&request.encode().unwrap()).unwrap(), request);
        let response = ChunkResponse::Chunks(replies);
        prop_assert_eq!(ChunkResponse::decode(&response.encode().unwrap()).unwrap(), response);
    }

    #[test]
    fn provider_bitmaps_round_trip(total in 0u32..2000, seed in any::<u64>()) {
        let len = total.div_ceil(8) as usize;
        let mut bits: Vec<u8> = (0..len).map(|i| (seed.rotate_left(i as u32) & 0xff) as u8).collect();
        if let (Some(last), 1..) = (bits.last_mut(), total % 8) {
            *last &= (1u8 << (total % 8)) - 1;
        }
        let message = GossipMessage::Provider(ProviderAnnouncement {
            image: ImageId::from_bytes([1; 32]),
            provider: identity(5).public(),
            holdings: Holdings::Bitmap { total, bits },
            site: (total % 3 == 0).then(|| format!("site-{seed}")),
        });
        prop_assert_eq!(GossipMessage::decode(&message.encode().unwrap()).unwrap(), message);
    }

    /// Arbitrary bytes never panic a decoder, and whatever decodes re-encodes identically.
    #[test]
    fn arbitrary_bytes_decode_safely(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        fuzz_decode(&bytes);
    }

    /// The same with a valid version byte and a small variant tag, to get past the first checks.
    #[test]
    fn arbitrary_bodies_decode_safely(
        tag in 0u8..4,
        body in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        let mut bytes = vec![WIRE_VERSION, tag];
        bytes.extend_from_slice(&body);
        fuzz_decode(&bytes);
    }
}
