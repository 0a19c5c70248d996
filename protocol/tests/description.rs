//! Workspace descriptions through the public API: formats, extensions, validation, and the
//! paper's select / clone / refine operations.

use vwnet_protocol::description::{
    Bounds, Category, Description, FieldError, HostNetworks, HostProfile, RefineError, Refinement,
    State, TEMPLATE, TomlError, Vmm, clone_as, refine, select,
};
use vwnet_protocol::ids::ImageId;
use vwnet_protocol::time::Timestamp;

const NOW: Timestamp = Timestamp::from_unix_secs(1_796_000_000);

/// A description using every section, with unknown keys at every level that keeps them.
const FULL: &str = r#"
id = "0102030405060708090a0b0c0d0e0f10"
name = "bio-env"
owner = "1111111111111111111111111111111111111111111111111111111111111111"
owner_name = "/O=Grid/CN=Alice"
category = "vm"
vmm = "xen"
state = "paused"
creation_time = "2026-11-01T00:00:00Z"
life_cycle = "30days"
last_modified = 2026-11-02T00:00:00Z
version = 3
previous = "2222222222222222222222222222222222222222222222222222222222222222"
lock_authorities = ["3333333333333333333333333333333333333333333333333333333333333333"]
site_policy = { tier = 2, tags = ["a", "b"] }
priority = 0.5

[cloned_from]
workspace = "ffffffffffffffffffffffffffffffff"
version = 7
description = "4444444444444444444444444444444444444444444444444444444444444444"

[hardware]
devices = ["cdrom", "usb"]
numa = true

[hardware.ram]
min = 512
max = 2048

[hardware.vcpus]
min = 1
max = 4

[hardware.disk]
size_mib = 4096
type = "raw"
access = "read-only"
cache = "none"

[[hardware.gpus]]
model = "a100"

[network]
firewall = "strict"

[[network.nics]]
name = "eth0"
address = "dhcp"
mtu = 9000

[[network.nics]]
name = "eth1"
address = "pool:grid-pool"

[[network.nics]]
name = "eth2"
address = "static:10.0.0.5/24"

[software]
kernel = "6.1"
distribution = "debian-12"
library_signature = "glibc-2.36"
arch = "x86_64"

[software.programs]
blast = "2.2"
"gt4 hosting" = "3.9.4"

[capability]
startup = "/opt/start"
motd = "hi"

[[capability.services]]
name = "gram"
port = 2119
protocol = "tcp"
tls = true

[[capability.services]]
name = "dns"
port = 53
protocol = "udp"

[image]
compression = "zstd"

[image.disk]
id = "5555555555555555555555555555555555555555555555555555555555555555"
size = 1073741824

[image.memory_state]
id = "6666666666666666666666666666666666666666666666666666666666666666"
size = 536870912
"#;

fn full() -> Description {
    Description::from_toml_str(FULL).unwrap()
}

#[test]
fn full_description_reads_every_element() {
    let d = full();
    d.validate().unwrap();
    assert_eq!(d.category, Category::Vm { vmm: Vmm::Xen });
    assert_eq!(d.state, State::Paused);
    assert_eq!(d.version, 3);
    assert_eq!(d.hardware.ram, Some(Bounds::new(512, 2048)));
    assert_eq!(d.network.nics.len(), 3);
    assert_eq!(d.software.programs["gt4 hosting"], "3.9.4");
    assert_eq!(d.capability.services[1].port, 53);
    assert_eq!(d.image.memory_state.unwrap().size, 536_870_912);
    assert_eq!(d.cloned_from.unwrap().version, 7);
    // A TOML datetime is accepted where a time string is expected.
    assert_eq!(d.last_modified.to_string(), "2026-11-02T00:00:00Z");
}

#[test]
fn unknown_keys_are_kept_at_every_level() {
    let d = full();
    let ext = |e: &vwnet_protocol::description::Extensions, k: &str| e[k].as_str().to_string();
    assert_eq!(
        ext(&d.extensions, "site_policy"),
        r#"{ tags = ["a", "b"], tier = 2 }"#
    );
    assert_eq!(ext(&d.extensions, "priority"), "0.5");
    assert_eq!(ext(&d.hardware.extensions, "numa"), "true");
    assert_eq!(
        ext(&d.hardware.extensions, "gpus"),
        r#"[{ model = "a100" }]"#
    );
    assert_eq!(
        ext(&d.hardware.disk.as_ref().unwrap().extensions, "cache"),
        r#""none""#
    );
    assert_eq!(ext(&d.network.extensions, "firewall"), r#""strict""#);
    assert_eq!(ext(&d.network.nics[0].extensions, "mtu"), "9000");
    assert_eq!(ext(&d.software.extensions, "arch"), r#""x86_64""#);
    assert_eq!(ext(&d.capability.extensions, "motd"), r#""hi""#);
    assert_eq!(ext(&d.capability.services[0].extensions, "tls"), "true");
    assert_eq!(ext(&d.image.extensions, "compression"), r#""zstd""#);

    assert_eq!(
        d.extension_paths(),
        [
            "priority",
            "site_policy",
            "hardware.gpus",
            "hardware.numa",
            "hardware.disk.cache",
            "network.firewall",
            "network.nics[0].mtu",
            "software.arch",
            "capability.motd",
            "capability.services[0].tls",
            "image.compression",
        ]
    );

    // TOML -> model -> canonical -> model -> TOML -> model loses nothing.
    let bytes = d.to_canonical_bytes();
    let back = Description::from_canonical_bytes(&bytes).unwrap();
    assert_eq!(back, d);
    let text = back.to_toml_string().unwrap();
    assert_eq!(Description::from_toml_str(&text).unwrap(), d);
    let original: toml::Table = toml::from_str(FULL).unwrap();
    let mut written: toml::Table = toml::from_str(&text).unwrap();
    // The only difference may be the time's form (TOML datetime in, string out).
    written.insert("last_modified".into(), original["last_modified"].clone());
    assert_eq!(written, original);
}

#[test]
fn written_toml_reads_top_down() {
    let text = full().to_toml_string().unwrap();
    let pos = |needle: &str| {
        text.find(needle)
            .unwrap_or_else(|| panic!("{needle} missing"))
    };
    assert!(pos("id = ") < pos("name = "));
    assert!(pos("name = ") < pos("category = "));
    assert!(pos("priority = ") < pos("[cloned_from]"));
    assert!(pos("[hardware") < pos("[[network.nics]]"));
    assert!(pos("[[network.nics]]") < pos("[software"));
    assert!(pos("[image") > pos("[[capability.services]]"));
}

#[test]
fn canonical_bytes_are_deterministic() {
    let a = full();
    let b = Description::from_toml_str(&a.to_toml_string().unwrap()).unwrap();
    assert_eq!(a.to_canonical_bytes(), b.to_canonical_bytes());
    assert_eq!(a.digest(), b.digest());
    // Key order in the input does not matter.
    let reordered = FULL.replacen("numa = true\n", "", 1).replacen(
        "devices = [\"cdrom\", \"usb\"]",
        "numa = true\ndevices = [\"usb\", \"cdrom\"]",
        1,
    );
    assert_ne!(reordered, FULL);
    let mut c = Description::from_toml_str(&reordered).unwrap();
    assert_eq!(c.digest(), a.digest());
    c.name.push('!');
    assert_ne!(c.digest(), a.digest());
}

#[test]
fn non_canonical_extension_text_does_not_decode() {
    let mut d = full();
    d.extensions.insert(
        "zz".into(),
        vwnet_protocol::description::ExtValue::new(toml::Value::Integer(11)),
    );
    let mut bytes = d.to_canonical_bytes();
    // Replace the text "11" by "+1": a valid TOML integer, but not the canonical text of 1.
    let at = bytes.windows(5).position(|w| w == b"zz\x0211").unwrap() + 3;
    bytes[at] = b'+';
    let err = Description::from_canonical_bytes(&bytes).unwrap_err();
    assert!(err.to_string().contains("zz"), "{err}");
}

#[test]
fn toml_errors_are_one_line_with_line_or_field() {
    let cases: &[(&str, &str)] = &[
        ("name = \n", "line 1, column 8: "),
        (
            "id = \"zz\"\n",
            "id: workspace id: expected 32 hex digits, got 2",
        ),
    ];
    for (input, want) in cases {
        let err = Description::from_toml_str(input).unwrap_err().to_string();
        assert!(err.starts_with(want), "{err:?} should start with {want:?}");
        assert!(!err.contains('\n'), "{err:?}");
    }
    let field_cases: &[(&str, &str, &str)] = &[
        (
            "min = 512",
            "min = \"512\"",
            "hardware.ram.min: expected an integer, found string",
        ),
        ("min = 512", "min = -1", "hardware.ram.min: -1 is negative"),
        (
            "max = 2048\n",
            "max = 2048\nstep = 1\n",
            "hardware.ram.step: unknown key",
        ),
        (
            "type = \"raw\"",
            "type = \"vmdk\"",
            "hardware.disk.type: \"vmdk\" is not a disk type",
        ),
        (
            "address = \"pool:grid-pool\"",
            "address = \"bootp\"",
            "network.nics[1].address: \"bootp\"",
        ),
        (
            "port = 53",
            "port = 70000",
            "capability.services[1].port: 70000 is not a port",
        ),
        ("vmm = \"xen\"\n", "", "vmm: missing"),
        (
            "category = \"vm\"",
            "category = \"container\"",
            "category: \"container\" is not a category",
        ),
        ("name = \"bio-env\"\n", "", "name: missing"),
        (
            "devices = [\"cdrom\", \"usb\"]",
            "devices = [\"cdrom\", \"cdrom\"]",
            "hardware.devices: \"cdrom\" is listed twice",
        ),
    ];
    for (from, to, want) in field_cases {
        let input = FULL.replacen(from, to, 1);
        assert_ne!(input, FULL, "{from:?} not in FULL");
        let err = Description::from_toml_str(&input).unwrap_err();
        assert!(matches!(err, TomlError::Field { .. }), "{err:?}");
        let err = err.to_string();
        assert!(err.starts_with(want), "{err:?} should start with {want:?}");
        assert!(!err.contains('\n'));
    }
}

#[test]
fn validation_reports_every_problem_with_its_path() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "min = 512",
            "min = 4096",
            "hardware.ram: min 4096 MiB is above max 2048 MiB",
        ),
        (
            "name = \"bio-env\"",
            "name = \"  \"",
            "name: must not be empty",
        ),
        (
            "name = \"eth1\"",
            "name = \"eth0\"",
            "network.nics[1].name: \"eth0\" is used by another NIC",
        ),
        (
            "port = 53",
            "port = 0",
            "capability.services[1].port: port 0 is not a port",
        ),
        (
            "[image.memory_state]\nid = \"6666666666666666666666666666666666666666666666666666666666666666\"\nsize = 536870912\n",
            "",
            "image.memory_state: a paused (hot) workspace needs its saved memory state",
        ),
        (
            "version = 3",
            "version = 1",
            "previous: version 1 has no previous version",
        ),
        (
            "life_cycle = \"30days\"",
            "life_cycle = \"0s\"",
            "life_cycle: must be longer than zero",
        ),
        (
            "[hardware.vcpus]\nmin = 1\nmax = 4\n",
            "",
            "hardware.vcpus: a vm workspace needs a vCPU range",
        ),
        (
            "last_modified = 2026-11-02T00:00:00Z",
            "last_modified = 2026-10-02T00:00:00Z",
            "last_modified: 2026-10-02T00:00:00Z is before creation_time",
        ),
        (
            "size = 1073741824",
            "size = 0",
            "image.disk.size: an image is at least 1 byte",
        ),
        (
            "\"usb\"",
            "\"USB\"",
            "hardware.devices: \"USB\" is not a device name",
        ),
        (
            "port = 53\nprotocol = \"udp\"",
            "port = 2119\nprotocol = \"tcp\"",
            "capability.services[1].port: 2119/tcp is used by another service",
        ),
    ];
    for (from, to, want) in cases {
        let input = FULL.replacen(from, to, 1);
        assert_ne!(input, FULL, "{from:?} not in FULL");
        let d = Description::from_toml_str(&input).unwrap();
        let err = d.validate().unwrap_err();
        let lines: Vec<String> = err.errors().iter().map(FieldError::to_string).collect();
        assert!(
            lines.iter().any(|l| l.starts_with(want)),
            "{lines:?} should contain {want:?}"
        );
    }
    // Two problems at once: both are reported.
    let input = FULL
        .replacen("min = 512", "min = 4096", 1)
        .replacen("port = 53", "port = 0", 1);
    let err = Description::from_toml_str(&input)
        .unwrap()
        .validate()
        .unwrap_err();
    assert_eq!(err.errors().len(), 2, "{err}");
}

#[test]
fn template_is_a_valid_description() {
    let d = Description::from_toml_str(TEMPLATE).unwrap();
    d.validate().unwrap();
    // It round-trips like any other description.
    let again = Description::from_toml_str(&d.to_toml_string().unwrap()).unwrap();
    assert_eq!(again, d);
}

fn host(ram_mib: u64, vcpus: u64) -> HostProfile {
    HostProfile {
        ram_mib,
        vcpus,
        disk_free_bytes: 10 << 30,
        hypervisors: [Vmm::Kvm, Vmm::Xen].into(),
        dynamic_accounts: false,
        networks: HostNetworks {
            dhcp: true,
            pools: ["grid-pool".to_string()].into(),
        },
        devices: ["cdrom".to_string(), "usb".to_string()].into(),
    }
}

#[test]
fn select_table() {
    let base = full();
    type Edit = fn(&mut Description, &mut HostProfile);
    /// RAM MiB and vCPUs given, or the failures' leading text.
    type Expected = Result<(u64, u64), &'static [&'static str]>;
    let cases: &[(&str, Edit, Expected)] = &[
        (
            "512-2048 MiB fits a 1024 MiB host",
            |_, _| {},
            Ok((1024, 2)),
        ),
        (
            "gets at most max",
            |_, h| h.ram_mib = 1 << 20,
            Ok((2048, 2)),
        ),
        ("exactly min fits", |_, h| h.ram_mib = 512, Ok((512, 2))),
        (
            "min - 1 does not",
            |_, h| h.ram_mib = 511,
            Err(&["hardware.ram: needs at least 512 MiB, host has 511 MiB"]),
        ),
        (
            "4096 MiB minimum does not fit 1024",
            |d, _| d.hardware.ram = Some(Bounds::new(4096, 8192)),
            Err(&["hardware.ram: needs at least 4096 MiB, host has 1024 MiB"]),
        ),
        ("vcpus capped by host", |_, h| h.vcpus = 64, Ok((1024, 4))),
        (
            "too few vcpus",
            |d, _| d.hardware.vcpus = Some(Bounds::new(3, 4)),
            Err(&["hardware.vcpus: needs at least 3, host has 2"]),
        ),
        (
            "wrong hypervisor",
            |d, _| d.category = Category::Vm { vmm: Vmm::Qemu },
            Err(&["vmm: needs qemu, host has kvm, xen"]),
        ),
        (
            "no dynamic accounts",
            |d, _| {
                d.category = Category::DynamicAccount;
                d.image.memory_state = None;
            },
            Err(&["category: needs dynamic accounts"]),
        ),
        (
            "missing device",
            |_, h| {
                h.devices.remove("usb");
            },
            Err(&["hardware.devices: needs usb, host has cdrom"]),
        ),
        (
            "no dhcp",
            |_, h| h.networks.dhcp = false,
            Err(&["network.nics[0]: eth0 needs DHCP, host offers none"]),
        ),
        (
            "unknown pool",
            |_, h| h.networks.pools.clear(),
            Err(&["network.nics[1]: eth1 needs address pool \"grid-pool\", host has none"]),
        ),
        // Need: max(4096 MiB virtual disk, 1 GiB image) + 512 MiB memory state = 4.5 GiB.
        (
            "disk too small",
            |_, h| h.disk_free_bytes = (9 << 29) - 1,
            Err(&["hardware.disk: needs 4831838208 bytes of disk, host has 4831838207 free"]),
        ),
        (
            "disk exactly enough",
            |_, h| h.disk_free_bytes = 9 << 29,
            Ok((1024, 2)),
        ),
        (
            "corrupted",
            |d, _| d.state = State::Corrupted,
            Err(&["state: a corrupted workspace cannot be deployed"]),
        ),
        (
            "every failure listed",
            |d, h| {
                d.hardware.ram = Some(Bounds::new(4096, 8192));
                h.vcpus = 0;
                h.networks.dhcp = false;
            },
            Err(&[
                "hardware.ram: needs at least 4096",
                "hardware.vcpus: needs at least 1",
                "network.nics[0]: eth0 needs DHCP",
            ]),
        ),
    ];
    for (name, edit, want) in cases {
        let mut d = base.clone();
        let mut h = host(1024, 2);
        edit(&mut d, &mut h);
        match (select(&d, &h), want) {
            (Ok(p), Ok((ram, vcpus))) => {
                assert_eq!((p.ram_mib, p.vcpus), (Some(*ram), Some(*vcpus)), "{name}");
            }
            (Err(e), Err(wanted)) => {
                let got: Vec<String> = e.failures().iter().map(ToString::to_string).collect();
                assert_eq!(got.len(), wanted.len(), "{name}: {got:?}");
                for (g, w) in got.iter().zip(wanted.iter()) {
                    assert!(g.starts_with(w), "{name}: {g:?} should start with {w:?}");
                }
            }
            (got, _) => panic!("{name}: unexpected {got:?}"),
        }
    }
}

#[test]
fn clone_changes_id_keeps_hardware_records_lineage() {
    let d = full();
    let c = clone_as(&d, "bio-env-copy", NOW);
    assert_ne!(c.id, d.id);
    assert_ne!(clone_as(&d, "other", NOW).id, c.id);
    assert_eq!(c.name, "bio-env-copy");
    assert_eq!(c.hardware, d.hardware);
    assert_eq!(c.software, d.software);
    assert_eq!(c.network, d.network);
    assert_eq!(c.image, d.image, "image chunks are shared, not copied");
    let lineage = c.cloned_from.unwrap();
    assert_eq!(
        (lineage.workspace, lineage.version, lineage.description),
        (d.id, d.version, d.digest())
    );
    assert_eq!((c.creation_time, c.last_modified), (NOW, NOW));
    assert_eq!((c.version, c.previous), (1, None));
    assert!(c.lock_authorities.is_empty());
    c.validate().unwrap();
    // A clone's TOML round-trips and records where it came from.
    let text = c.to_toml_string().unwrap();
    assert!(text.contains(&format!("workspace = \"{}\"", d.id)));
    assert_eq!(Description::from_toml_str(&text).unwrap(), c);
}

fn refs(list: &[&str]) -> Vec<Refinement> {
    list.iter().map(|s| s.parse().unwrap()).collect()
}

#[test]
fn refine_narrows_into_a_version_chain() {
    let v3 = full();
    let v4 = refine(
        &v3,
        &refs(&["hardware.ram.min=1024", "hardware.vcpus=2-2"]),
        NOW,
    )
    .unwrap();
    let later = Timestamp::from_unix_secs(NOW.as_unix_secs() + 60);
    let v5 = refine(
        &v4,
        &refs(&["software.programs+=hmmer@3.4", "life_cycle=7days"]),
        later,
    )
    .unwrap();
    assert_eq!(v4.hardware.ram, Some(Bounds::new(1024, 2048)));
    assert_eq!(v4.hardware.vcpus, Some(Bounds::new(2, 2)));
    assert_eq!((v4.version, v5.version), (4, 5));
    assert_eq!(v4.previous, Some(v3.digest()));
    assert_eq!(v5.previous, Some(v4.digest()));
    assert_eq!((v4.last_modified, v5.last_modified), (NOW, later));
    assert_eq!(v5.id, v3.id);
    assert_eq!(v5.creation_time, v3.creation_time);
    v5.validate().unwrap();
    // The chain can be followed back through the canonical bytes alone.
    let v4_again = Description::from_canonical_bytes(&v4.to_canonical_bytes()).unwrap();
    assert_eq!(v5.previous, Some(v4_again.digest()));
}

#[test]
fn refine_rejects_widening_and_contradictions() {
    let d = full();
    let cases: &[(&[&str], &str)] = &[
        (
            &["hardware.ram.min=256"],
            "hardware.ram: min 256 MiB is below the current min 512 MiB; refining only narrows",
        ),
        (
            &["hardware.ram.max=4096"],
            "hardware.ram: max 4096 MiB is above the current max 2048 MiB; refining only narrows",
        ),
        (
            &["hardware.vcpus=1-8"],
            "hardware.vcpus: max 8 is above the current max 4; refining only narrows",
        ),
        (
            &["software.kernel=5.10"],
            "software.kernel: is already \"6.1\"; refining cannot change it to \"5.10\"",
        ),
        (
            &["software.programs+=blast@2.3"],
            "software.programs: blast is already at version \"2.2\", not \"2.3\"",
        ),
        (
            &["network.nics+=eth0@pool:grid-pool"],
            "network.nics: eth0 already gets its address by dhcp, not pool:grid-pool",
        ),
        (
            &["capability.services+=web:2119/tcp"],
            "capability.services: 2119/tcp is already used by \"gram\"",
        ),
        (
            &["life_cycle=31days"],
            "life_cycle: 1month 13h 26m 24s is longer than the current 30days; refining only narrows",
        ),
        (
            &["hardware.ram.min=4096"],
            "hardware.ram: min 4096 MiB is above max 2048 MiB",
        ),
        // All or nothing: a good refinement before a bad one does not slip through.
        (
            &["hardware.ram.min=1024", "hardware.ram.max=4096"],
            "hardware.ram: max 4096 MiB is above",
        ),
        (&["software.kernel=6.1"], "the refinements change nothing"),
    ];
    for (list, want) in cases {
        let err = refine(&d, &refs(list), NOW).unwrap_err();
        assert!(err.to_string().starts_with(want), "{list:?}: {err}");
    }
    assert!(matches!(
        refine(&d, &refs(&["hardware.ram.max=4096"]), NOW),
        Err(RefineError::Widens {
            field: "hardware.ram",
            ..
        })
    ));
}

#[test]
fn refine_adds_requirements_where_none_were() {
    let mut d = Description::from_toml_str(TEMPLATE).unwrap();
    d.software.kernel = None;
    d.image.disk = Some(vwnet_protocol::description::ImageRef {
        id: ImageId::from_bytes([9; 32]),
        size: 1,
    });
    let n = refine(
        &d,
        &refs(&[
            "software.kernel=6.1",
            "hardware.devices+=usb",
            "network.nics+=eth1@static:192.168.1.10/24",
            "capability.services+=gram:2119/tcp",
        ]),
        NOW,
    )
    .unwrap();
    assert_eq!(n.software.kernel.as_deref(), Some("6.1"));
    assert!(n.hardware.devices.contains("usb"));
    assert_eq!(
        n.network.nics[1].address.to_string(),
        "static:192.168.1.10/24"
    );
    assert_eq!(n.capability.services[1].port, 2119);
    n.validate().unwrap();
}

#[test]
fn next_version_is_what_the_node_publishes() {
    let d = full();
    let mut n = d.next_version(NOW);
    n.image.disk = Some(vwnet_protocol::description::ImageRef {
        id: ImageId::from_bytes([7; 32]),
        size: 2 << 30,
    });
    assert_eq!(n.version, d.version + 1);
    assert_eq!(n.previous, Some(d.digest()));
    n.validate().unwrap();
}

#[test]
fn expiry() {
    let d = full();
    let created = d.creation_time.as_unix_secs();
    assert_eq!(
        d.expires_at(),
        Some(Timestamp::from_unix_secs(created + 30 * 86_400))
    );
    assert!(!d.is_expired(Timestamp::from_unix_secs(created + 30 * 86_400 - 1)));
    assert!(d.is_expired(Timestamp::from_unix_secs(created + 30 * 86_400)));
}

#[test]
fn json_views_use_the_human_names() {
    let d = full();
    let json = serde_json::to_value(d.to_toml_table().unwrap()).unwrap();
    assert_eq!(json["hardware"]["ram"]["min"], 512);
    assert_eq!(json["network"]["nics"][1]["address"], "pool:grid-pool");
    assert_eq!(json["vmm"], "xen");
    // The model's own serde (the canonical shape) also reads well in JSON.
    let json = serde_json::to_value(&d).unwrap();
    assert_eq!(json["category"]["vm"]["vmm"], "xen");
    assert_eq!(json["state"], "paused");
    assert_eq!(json["hardware"]["disk"]["type"], "raw");
    assert_eq!(json["hardware"]["disk"]["access"], "read-only");
    assert_eq!(json["id"], "0102030405060708090a0b0c0d0e0f10");
}

/// Pins the canonical encoding: any change to field order, types or the version byte changes
/// every description's digest and breaks every signature, so it must be deliberate.
#[test]
fn golden_template_encoding() {
    let d = Description::from_toml_str(TEMPLATE).unwrap();
    let bytes = d.to_canonical_bytes();
    assert_eq!(
        hex::encode(&bytes),
        concat!(
            "01000000000000000000000000000000000c6d792d776f726b737061636500000000000000000000",
            "0000000000000000000000000000000000000000000001102f4f3d477269642f434e3d416c696365",
            "00036b766d0080f2d6ca0601809a9e0180f2d6ca0601000000018004801001010201804001020001",
            "056364726f6d000104657468300000000103362e31010964656269616e2d3132010a676c6962632d",
            "322e33360107707974686f6e3304332e31310001182f7573722f6c6f63616c2f62696e2f73746172",
            "742d6a6f6201037373681600000000000000",
        )
    );
    assert_eq!(
        d.digest().to_string(),
        "83b41a08c06c9548db184d1ba8465dccad4919a7784d7eee54f9b53b2d43e168"
    );
}
