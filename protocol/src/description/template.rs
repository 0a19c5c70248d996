//! The commented template that `vwnet desc new` writes: every section, with what each key means.

use crate::ids::{PeerIdentity, WorkspaceId};
use crate::time::Timestamp;

/// A commented description showing every section. It parses and validates as it is; use
/// [`template_for`] to fill in a real id, owner and time.
pub const TEMPLATE: &str = r#"# A vwnet workspace description. Check it with `vwnet desc check FILE`.
# Identifiers are lowercase hex, times RFC 3339 in UTC, spans like "30days" or "12h 30m".
# Keys this schema does not know are kept (as extensions) in any section, so tools can add their own.

id = "00000000000000000000000000000000"    # the workspace id: random, the same for every version
name = "my-workspace"
owner = "0000000000000000000000000000000000000000000000000000000000000000"    # owner's ed25519 key
owner_name = "/O=Grid/CN=Alice"    # optional human name of the owner
category = "vm"                    # "vm" or "dynamic-account"
vmm = "kvm"                        # vm only: kvm, qemu, xen, vmware, virtualbox or another name
state = "shutdown"                 # shutdown, paused (needs [image.memory_state]), running, corrupted
creation_time = "2026-01-01T00:00:00Z"
life_cycle = "30days"              # optional: how long the workspace is available after creation
last_modified = "2026-01-01T00:00:00Z"
version = 1                        # one more per published change
# previous = "<description hash>"  # from version 2 on: the digest of the previous version
lock_authorities = []              # node keys that grant locks; empty: the publishing node decides

# Written by `vwnet desc clone`: the workspace version this one was cloned from.
# [cloned_from]
# workspace = "<workspace id>"
# version = 1
# description = "<description hash>"

[hardware]
devices = ["cdrom"]                # devices the workspace needs

[hardware.ram]                     # MiB: a host with at least `min` fits; it gives up to `max`
min = 512
max = 2048

[hardware.vcpus]
min = 1
max = 2

[hardware.disk]
size_mib = 8192
type = "qcow2"                     # raw or qcow2
access = "copy-on-write"           # read-only, read-write or copy-on-write

[[network.nics]]                   # one table per interface
name = "eth0"
address = "dhcp"                   # dhcp, pool:NAME (a reserved pool) or static:IP/PREFIX

[software]
kernel = "6.1"
distribution = "debian-12"
library_signature = "glibc-2.36"

[software.programs]                # name = version
python3 = "3.11"

[capability]
startup = "/usr/local/bin/start-job"    # optional: program run when the workspace starts

[[capability.services]]            # one table per listening service
name = "ssh"
port = 22
protocol = "tcp"                   # tcp or udp

# The images, by the BLAKE3 hash of their manifest; filled in when an image is published.
[image]
# [image.disk]
# id = "<image id>"
# size = 1073741824                # bytes
# [image.memory_state]             # a paused (hot) workspace's saved memory
# id = "<image id>"
# size = 536870912
"#;

const TEMPLATE_ID: &str = "id = \"00000000000000000000000000000000\"";
const TEMPLATE_OWNER: &str =
    "owner = \"0000000000000000000000000000000000000000000000000000000000000000\"";
const TEMPLATE_TIME: &str = "\"2026-01-01T00:00:00Z\"";

/// [`TEMPLATE`] with a real workspace id, owner key and creation time filled in.
pub fn template_for(id: WorkspaceId, owner: PeerIdentity, now: Timestamp) -> String {
    TEMPLATE
        .replacen(TEMPLATE_ID, &format!("id = \"{id}\""), 1)
        .replacen(TEMPLATE_OWNER, &format!("owner = \"{owner}\""), 1)
        .replace(TEMPLATE_TIME, &format!("\"{now}\""))
}

#[cfg(test)]
mod tests {
    use super::super::Description;
    use super::super::human::keys;
    use super::*;

    #[test]
    fn template_parses_validates_and_shows_every_section() {
        let d = Description::from_toml_str(TEMPLATE).unwrap();
        d.validate().unwrap();
        let table: toml::Table = toml::from_str(TEMPLATE).unwrap();
        for key in keys::TOP {
            // Lineage and `previous` only exist on clones and later versions: shown commented.
            if ["cloned_from", "previous"].contains(key) {
                assert!(
                    TEMPLATE.contains(&format!("# [{key}]"))
                        || TEMPLATE.contains(&format!("# {key} ="))
                );
                continue;
            }
            assert!(table.contains_key(*key), "template lacks {key}");
        }
        assert!(d.extensions.is_empty() && d.hardware.extensions.is_empty());
    }

    #[test]
    fn template_for_fills_in_identity_and_time() {
        let id = WorkspaceId::from_bytes([0xab; 16]);
        let owner = PeerIdentity::from_bytes([0xcd; 32]);
        let now = Timestamp::from_unix_secs(1_795_690_647);
        let d = Description::from_toml_str(&template_for(id, owner, now)).unwrap();
        assert_eq!((d.id, d.owner), (id, owner));
        assert_eq!((d.creation_time, d.last_modified), (now, now));
        d.validate().unwrap();
    }
}
