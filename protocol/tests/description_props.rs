//! Property tests over arbitrary descriptions: TOML and canonical round trips are lossless and
//! deterministic, and no input, however hostile, makes a decoder panic.

use proptest::collection::{btree_map, btree_set, vec};
use proptest::option;
use proptest::prelude::*;

use vwnet_protocol::description::{
    AccessMode, AddressMode, Bounds, Capability, Category, Description, Disk, DiskType, ExtValue,
    Extensions, Hardware, Image, ImageRef, Lineage, Network, Nic, Service, Software, State,
    Transport, Vmm,
};
use vwnet_protocol::ids::{DescriptionHash, ImageId, PeerIdentity, WorkspaceId};
use vwnet_protocol::time::{Span, Timestamp};

/// Largest integer TOML can hold.
const MAX_INT: u64 = i64::MAX as u64;
/// 9999-12-31T23:59:59Z, the last time RFC 3339 can write.
const MAX_TIME: u64 = 253_402_300_799;

fn text() -> impl Strategy<Value = String> {
    // Mostly printable text, sometimes control characters, quotes and backslashes that TOML
    // must escape.
    prop_oneof![3 => ".{0,12}", 1 => "[\\x00-\\x1f\"\\\\'\\x7f]{0,4}"]
}

fn int() -> impl Strategy<Value = u64> {
    prop_oneof![0..=4096u64, 0..=MAX_INT, Just(MAX_INT)]
}

fn toml_value() -> impl Strategy<Value = toml::Value> {
    let leaf = prop_oneof![
        any::<i64>().prop_map(toml::Value::Integer),
        any::<f64>().prop_map(toml::Value::Float),
        any::<bool>().prop_map(toml::Value::Boolean),
        text().prop_map(toml::Value::String),
        Just(toml::Value::Datetime(
            "1979-05-27T07:32:00Z".parse().unwrap()
        )),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(toml::Value::Array),
            btree_map(text(), inner, 0..4)
                .prop_map(|m| toml::Value::Table(m.into_iter().collect())),
        ]
    })
}

/// Extension keys start with `x_`, so they never collide with a schema field.
fn extensions() -> impl Strategy<Value = Extensions> {
    prop_oneof![
        2 => Just(Extensions::new()),
        1 => btree_map("x_.{0,6}", toml_value().prop_map(ExtValue::new), 0..3),
    ]
}

fn vmm() -> impl Strategy<Value = Vmm> {
    prop_oneof![
        Just(Vmm::Kvm),
        Just(Vmm::Qemu),
        Just(Vmm::Xen),
        Just(Vmm::Vmware),
        Just(Vmm::Virtualbox),
        "z[a-z0-9._-]{0,8}".prop_map(Vmm::Other),
    ]
}

fn bounds() -> impl Strategy<Value = Bounds> {
    (int(), int()).prop_map(|(a, b)| Bounds::new(a, b))
}

fn time() -> impl Strategy<Value = Timestamp> {
    (0..=MAX_TIME).prop_map(Timestamp::from_unix_secs)
}

fn image_ref() -> impl Strategy<Value = ImageRef> {
    (any::<[u8; 32]>(), int()).prop_map(|(id, size)| ImageRef {
        id: ImageId::from_bytes(id),
        size,
    })
}

fn address() -> impl Strategy<Value = AddressMode> {
    prop_oneof![
        Just(AddressMode::Dhcp),
        text().prop_map(AddressMode::Pool),
        (any::<[u8; 4]>(), 0..=32u8).prop_map(|(a, prefix)| AddressMode::Static {
            address: a.into(),
            prefix
        }),
        (any::<[u8; 16]>(), 0..=128u8).prop_map(|(a, prefix)| AddressMode::Static {
            address: a.into(),
            prefix
        }),
    ]
}

fn hardware() -> impl Strategy<Value = Hardware> {
    let disk = (
        int(),
        prop::sample::select(DiskType::ALL),
        prop::sample::select(AccessMode::ALL),
        extensions(),
    )
        .prop_map(|(size_mib, kind, access, extensions)| Disk {
            size_mib,
            kind,
            access,
            extensions,
        });
    (
        option::of(bounds()),
        option::of(bounds()),
        option::of(disk),
        btree_set(text(), 0..3),
        extensions(),
    )
        .prop_map(|(ram, vcpus, disk, devices, extensions)| Hardware {
            ram,
            vcpus,
            disk,
            devices,
            extensions,
        })
}

fn network() -> impl Strategy<Value = Network> {
    let nic = (text(), address(), extensions()).prop_map(|(name, address, extensions)| Nic {
        name,
        address,
        extensions,
    });
    (vec(nic, 0..3), extensions()).prop_map(|(nics, extensions)| Network { nics, extensions })
}

fn software() -> impl Strategy<Value = Software> {
    (
        option::of(text()),
        option::of(text()),
        option::of(text()),
        btree_map(text(), text(), 0..3),
        extensions(),
    )
        .prop_map(
            |(kernel, distribution, library_signature, programs, extensions)| Software {
                kernel,
                distribution,
                library_signature,
                programs,
                extensions,
            },
        )
}

fn capability() -> impl Strategy<Value = Capability> {
    let service = (
        text(),
        any::<u16>(),
        prop::sample::select(Transport::ALL),
        extensions(),
    )
        .prop_map(|(name, port, protocol, extensions)| Service {
            name,
            port,
            protocol,
            extensions,
        });
    (option::of(text()), vec(service, 0..3), extensions()).prop_map(
        |(startup, services, extensions)| Capability {
            startup,
            services,
            extensions,
        },
    )
}

fn image() -> impl Strategy<Value = Image> {
    (
        option::of(image_ref()),
        option::of(image_ref()),
        extensions(),
    )
        .prop_map(|(disk, memory_state, extensions)| Image {
            disk,
            memory_state,
            extensions,
        })
}

/// Any description the human format can hold (valid or not: round trips are structural).
fn description() -> impl Strategy<Value = Description> {
    let identity = (
        any::<[u8; 16]>(),
        text(),
        any::<[u8; 32]>(),
        option::of(text()),
        prop_oneof![
            vmm().prop_map(|vmm| Category::Vm { vmm }),
            Just(Category::DynamicAccount)
        ],
        prop::sample::select(State::ALL),
    );
    let history = (
        time(),
        option::of((0..=10_000 * 31_557_600u64).prop_map(Span::from_secs)),
        time(),
        int(),
        option::of(any::<[u8; 32]>().prop_map(DescriptionHash::from_bytes)),
        option::of(
            (any::<[u8; 16]>(), int(), any::<[u8; 32]>()).prop_map(|(w, v, d)| Lineage {
                workspace: WorkspaceId::from_bytes(w),
                version: v,
                description: DescriptionHash::from_bytes(d),
            }),
        ),
        vec(any::<[u8; 32]>().prop_map(PeerIdentity::from_bytes), 0..3),
    );
    let sections = (
        hardware(),
        network(),
        software(),
        capability(),
        image(),
        extensions(),
    );
    (identity, history, sections).prop_map(
        |(
            (id, name, owner, owner_name, category, state),
            (creation_time, life_cycle, last_modified, version, previous, cloned_from, locks),
            (hardware, network, software, capability, image, extensions),
        )| Description {
            id: WorkspaceId::from_bytes(id),
            name,
            owner: PeerIdentity::from_bytes(owner),
            owner_name,
            category,
            state,
            creation_time,
            life_cycle,
            last_modified,
            version,
            previous,
            cloned_from,
            lock_authorities: locks,
            hardware,
            network,
            software,
            capability,
            image,
            extensions,
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn canonical_round_trip_is_lossless(d in description()) {
        let bytes = d.to_canonical_bytes();
        let back = Description::from_canonical_bytes(&bytes).unwrap();
        prop_assert_eq!(&back, &d);
        prop_assert_eq!(back.to_canonical_bytes(), bytes);
    }

    #[test]
    fn toml_round_trip_is_lossless_and_deterministic(d in description()) {
        let text = d.to_toml_string().unwrap();
        let back = Description::from_toml_str(&text)
            .map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        prop_assert_eq!(&back, &d);
        prop_assert_eq!(back.to_toml_string().unwrap(), text);
        prop_assert_eq!(back.digest(), d.digest());
    }

    #[test]
    fn validate_never_panics(d in description()) {
        let _ = d.validate();
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_decoder(
        mut bytes in vec(any::<u8>(), 0..600),
        versioned in any::<bool>(),
    ) {
        if versioned && !bytes.is_empty() {
            bytes[0] = vwnet_protocol::description::DESCRIPTION_FORMAT_VERSION;
        }
        if let Ok(d) = Description::from_canonical_bytes(&bytes) {
            // Whatever decodes is canonical and printable.
            prop_assert_eq!(d.to_canonical_bytes(), bytes);
            prop_assert!(d.to_toml_string().is_ok());
        }
    }

    #[test]
    fn mutated_encodings_never_panic_the_decoder(
        d in description(),
        edits in vec((any::<prop::sample::Index>(), any::<u8>(), 0..3u8), 1..4),
    ) {
        let mut bytes = d.to_canonical_bytes();
        for (at, byte, kind) in edits {
            let i = at.index(bytes.len());
            match kind {
                0 => bytes[i] = byte,
                1 => bytes.truncate(i),
                _ => bytes.insert(i, byte),
            }
            if bytes.is_empty() {
                break;
            }
        }
        if let Ok(back) = Description::from_canonical_bytes(&bytes) {
            prop_assert_eq!(back.to_canonical_bytes(), bytes);
        }
    }

    #[test]
    fn arbitrary_text_never_panics_the_toml_reader(s in "(\\PC|\n){0,200}") {
        let _ = Description::from_toml_str(&s);
    }

    #[test]
    fn mutated_toml_never_panics_the_reader(
        d in description(),
        at in any::<prop::sample::Index>(),
        junk in "[\\[\\]{}=\"#\n.a-z0-9]{1,4}",
    ) {
        let mut text = d.to_toml_string().unwrap();
        let mut i = at.index(text.len() + 1);
        while !text.is_char_boundary(i) {
            i -= 1;
        }
        text.insert_str(i, &junk);
        if let Ok(back) = Description::from_toml_str(&text) {
            // Whatever parses can be written back.
            let _ = back.to_toml_string();
        }
    }
}

#[test]
fn hostile_length_prefixes_do_not_allocate() {
    // Version byte, then a 16-byte id, then a name whose length prefix claims ~4 GiB.
    let mut bytes = vec![vwnet_protocol::description::DESCRIPTION_FORMAT_VERSION];
    bytes.extend([0u8; 16]);
    bytes.extend([0xff, 0xff, 0xff, 0xff, 0x0f]);
    assert!(Description::from_canonical_bytes(&bytes).is_err());
    let oversize = vec![1u8; vwnet_protocol::limits::MAX_DESCRIPTION_LEN + 1];
    assert!(Description::from_canonical_bytes(&oversize).is_err());
}

#[test]
fn deeply_nested_extension_is_refused_not_a_stack_overflow() {
    // An extension text nested far deeper than the TOML parser's limit, inside valid bytes.
    let mut d = Description::from_toml_str(vwnet_protocol::description::TEMPLATE).unwrap();
    d.extensions
        .insert("x".into(), ExtValue::new(toml::Value::Integer(0)));
    let bytes = d.to_canonical_bytes();
    // Rebuild the bytes with the text "0" replaced by 20 000 nested arrays.
    let deep = format!("{}0{}", "[".repeat(20_000), "]".repeat(20_000));
    let tail = [1u8, b'x', 1, b'0'];
    assert!(bytes.ends_with(&tail));
    let mut hostile = bytes[..bytes.len() - 2].to_vec();
    let mut len = deep.len();
    while len >= 0x80 {
        hostile.push((len as u8 & 0x7f) | 0x80);
        len >>= 7;
    }
    hostile.push(len as u8);
    hostile.extend(deep.as_bytes());
    assert!(Description::from_canonical_bytes(&hostile).is_err());
}
