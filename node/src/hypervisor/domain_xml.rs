//! libvirt domain XML: [`render`] turns a [`DomainSpec`] into the XML that defines it, and
//! [`rewrite_for_host`] adapts the XML stored in a saved-state image to the host that restores
//! it (new disk, CD-ROM and serial-log paths) after checking the image fits the spec.
//!
//! Rendering is hand-written (the document is small and fixed, and a golden test pins it) with
//! every text and attribute value escaped. Rewriting goes through an XML event reader/writer so
//! that everything it does not change — devices libvirt added, addresses, MACs — passes through
//! untouched: a restore must present the same machine the memory image was taken on.

use std::fmt::Write as _;

use quick_xml::events::{BytesStart, Event};
use quick_xml::{Reader, Writer, XmlVersion};

use super::{
    CDROM_TARGET, DiskFormat, DomainKind, DomainSpec, NicSpec, SpecError, disk_target, host_path,
};

/// Renders the domain XML that defines `spec` with the given accelerator.
///
/// The guest has no graphics, no balloon (RAM is fixed), ACPI (so `shutdown` works) and boots
/// from the CD-ROM if there is one, else from the first disk. The test driver only knows
/// 32-bit x86 guests, so [`DomainKind::Test`] renders `i686`; QEMU kinds render `x86_64`.
pub fn render(spec: &DomainSpec, kind: DomainKind) -> Result<String, SpecError> {
    spec.validate()?;
    let arch = match kind {
        DomainKind::Test => "i686",
        DomainKind::Kvm | DomainKind::Qemu => "x86_64",
    };
    let mut x = String::with_capacity(2048);
    let mut line = |indent: usize, text: &str| {
        for _ in 0..indent {
            x.push_str("  ");
        }
        x.push_str(text);
        x.push('\n');
    };
    line(0, &format!("<domain type='{}'>", kind.as_str()));
    line(1, &format!("<name>{}</name>", escape(&spec.name)));
    line(
        1,
        &format!("<memory unit='MiB'>{}</memory>", spec.memory_mib),
    );
    line(
        1,
        &format!(
            "<currentMemory unit='MiB'>{}</currentMemory>",
            spec.memory_mib
        ),
    );
    line(
        1,
        &format!("<vcpu placement='static'>{}</vcpu>", spec.vcpus),
    );
    line(1, "<os>");
    line(2, &format!("<type arch='{arch}'>hvm</type>"));
    if spec.cdrom.is_some() {
        line(2, "<boot dev='cdrom'/>");
    }
    line(2, "<boot dev='hd'/>");
    line(1, "</os>");
    line(1, "<features>");
    line(2, "<acpi/>");
    line(1, "</features>");
    line(1, "<clock offset='utc'/>");
    line(1, "<on_poweroff>destroy</on_poweroff>");
    line(1, "<on_reboot>restart</on_reboot>");
    line(1, "<on_crash>destroy</on_crash>");
    line(1, "<devices>");
    for (index, disk) in spec.disks.iter().enumerate() {
        let path = host_path("disks.path", &disk.path)?;
        let target = disk_target(index)
            .ok_or_else(|| SpecError::new("disks", "too many disks for target names"))?;
        line(2, "<disk type='file' device='disk'>");
        line(
            3,
            &format!("<driver name='qemu' type='{}'/>", disk.format.as_str()),
        );
        line(3, &format!("<source file='{}'/>", escape(path)));
        line(3, &format!("<target dev='{target}' bus='virtio'/>"));
        if disk.read_only {
            line(3, "<readonly/>");
        }
        line(2, "</disk>");
    }
    if let Some(cdrom) = &spec.cdrom {
        let path = host_path("cdrom", cdrom)?;
        line(2, "<disk type='file' device='cdrom'>");
        line(
            3,
            &format!("<driver name='qemu' type='{}'/>", DiskFormat::Raw.as_str()),
        );
        line(3, &format!("<source file='{}'/>", escape(path)));
        line(3, &format!("<target dev='{CDROM_TARGET}' bus='sata'/>"));
        line(3, "<readonly/>");
        line(2, "</disk>");
    }
    for nic in &spec.nics {
        match nic {
            NicSpec::User => line(2, "<interface type='user'>"),
            NicSpec::Network { name } => {
                line(2, "<interface type='network'>");
                line(3, &format!("<source network='{}'/>", escape(name)));
            }
        }
        line(3, "<model type='virtio'/>");
        line(2, "</interface>");
    }
    if let Some(log) = &spec.serial_log {
        let path = host_path("serial_log", log)?;
        line(2, "<serial type='file'>");
        line(3, &format!("<source path='{}'/>", escape(path)));
        line(3, "<target port='0'/>");
        line(2, "</serial>");
    }
    line(2, "<memballoon model='none'/>");
    line(1, "</devices>");
    line(0, "</domain>");
    Ok(x)
}

/// Escapes the five XML metacharacters; valid in text and in single- or double-quoted
/// attribute values alike.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// Why saved domain XML cannot be restored with a given spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RewriteError {
    /// The saved machine differs from the spec (name, RAM, vCPUs, set of disks, serial log).
    Mismatch(String),
    /// The XML is malformed or lacks an element every libvirt domain has.
    Malformed(String),
    /// The saved XML asks for something a restore never accepts (see [`rewrite_for_host`]).
    Refused(String),
    /// The spec itself is invalid.
    Spec(SpecError),
}

/// One `<disk>` of the saved XML, in document order.
#[derive(Debug)]
struct SavedDisk {
    target: Option<String>,
    source_type: Option<String>,
}

/// What the first pass learns about the saved XML.
#[derive(Debug, Default)]
struct Saved {
    name: String,
    memory: Option<(String, String)>,
    vcpus: String,
    disks: Vec<SavedDisk>,
    file_chardevs: usize,
}

/// Returns the saved-state XML with the host-specific paths replaced by those of `spec`, after
/// checking that the saved machine is the one `spec` describes.
///
/// Disks are matched by target device (`vda`.. for [`DomainSpec::disks`], `sda` for the CD-ROM),
/// so their order in the saved XML does not matter; a `file` serial port and the console that
/// mirrors it get `spec.serial_log`.
pub fn rewrite_for_host(saved_xml: &str, spec: &DomainSpec) -> Result<String, RewriteError> {
    spec.validate().map_err(RewriteError::Spec)?;
    let saved = inspect(saved_xml)?;

    if saved.name != spec.name {
        return Err(RewriteError::Mismatch(format!(
            "saved domain is named {:?}, spec names {:?}",
            saved.name, spec.name
        )));
    }
    let saved_kib = memory_kib(saved.memory.as_ref())?;
    let spec_kib = spec.memory_mib * 1024;
    if saved_kib != spec_kib {
        return Err(RewriteError::Mismatch(format!(
            "saved RAM is {saved_kib} KiB, spec asks for {spec_kib} KiB"
        )));
    }
    if saved.vcpus.trim() != spec.vcpus.to_string() {
        return Err(RewriteError::Mismatch(format!(
            "saved domain has {} vCPUs, spec asks for {}",
            saved.vcpus.trim(),
            spec.vcpus
        )));
    }

    // Target device -> new path, for every file-backed disk the spec has.
    let mut new_paths: Vec<(String, String)> = Vec::new();
    for (index, disk) in spec.disks.iter().enumerate() {
        let target = disk_target(index).ok_or_else(|| {
            RewriteError::Spec(SpecError::new("disks", "too many disks for target names"))
        })?;
        let path = host_path("disks.path", &disk.path).map_err(RewriteError::Spec)?;
        new_paths.push((target, path.to_owned()));
    }
    if let Some(cdrom) = &spec.cdrom {
        let path = host_path("cdrom", cdrom).map_err(RewriteError::Spec)?;
        new_paths.push((CDROM_TARGET.to_owned(), path.to_owned()));
    }
    let mut saved_targets = Vec::with_capacity(saved.disks.len());
    for disk in &saved.disks {
        let Some(target) = &disk.target else {
            return Err(RewriteError::Malformed(
                "a <disk> has no <target dev>".into(),
            ));
        };
        if disk.source_type.as_deref() != Some("file") {
            return Err(RewriteError::Mismatch(format!(
                "saved disk {target} is not file-backed"
            )));
        }
        saved_targets.push(target.clone());
    }
    let mut spec_targets: Vec<String> = new_paths.iter().map(|(t, _)| t.clone()).collect();
    saved_targets.sort();
    spec_targets.sort();
    if saved_targets != spec_targets {
        return Err(RewriteError::Mismatch(format!(
            "saved disks are {saved_targets:?}, spec has {spec_targets:?}"
        )));
    }
    let serial = spec.serial_log.as_deref();
    match (saved.file_chardevs > 0, serial) {
        (true, None) => {
            return Err(RewriteError::Mismatch(
                "saved domain logs its serial port to a file, spec has no serial log".into(),
            ));
        }
        (false, Some(_)) => {
            return Err(RewriteError::Mismatch(
                "spec has a serial log, saved domain has no file serial port".into(),
            ));
        }
        _ => {}
    }
    let serial = match serial {
        Some(path) => Some(host_path("serial_log", path).map_err(RewriteError::Spec)?),
        None => None,
    };

    rewrite(saved_xml, &saved.disks, &new_paths, serial)
}

fn memory_kib(memory: Option<&(String, String)>) -> Result<u64, RewriteError> {
    let Some((unit, value)) = memory else {
        return Err(RewriteError::Malformed("no <memory> element".into()));
    };
    let value: u64 = value
        .trim()
        .parse()
        .map_err(|_| RewriteError::Malformed(format!("<memory> value {value:?}")))?;
    let factor: u64 = match unit.as_str() {
        "b" | "bytes" => return Ok(value / 1024),
        "" | "KiB" | "k" => 1,
        "MiB" | "M" => 1024,
        "GiB" | "G" => 1024 * 1024,
        other => {
            return Err(RewriteError::Malformed(format!("<memory> unit {other:?}")));
        }
    };
    value
        .checked_mul(factor)
        .ok_or_else(|| RewriteError::Malformed("<memory> overflows".into()))
}

fn malformed(e: impl std::fmt::Display) -> RewriteError {
    RewriteError::Malformed(e.to_string())
}

fn attr(e: &BytesStart<'_>, key: &str) -> Result<Option<String>, RewriteError> {
    match e.try_get_attribute(key).map_err(malformed)? {
        Some(a) => Ok(Some(
            a.normalized_value(XmlVersion::Implicit1_0)
                .map_err(malformed)?
                .into_owned(),
        )),
        None => Ok(None),
    }
}

/// Element names from the root down to the current element.
type Path = Vec<String>;

fn under(path: &Path, names: &[&str]) -> bool {
    path.len() == names.len() && path.iter().zip(names).all(|(a, b)| a == b)
}

/// First pass: the facts the checks need, and each disk's target (which follows its source).
fn inspect(xml: &str) -> Result<Saved, RewriteError> {
    let mut reader = Reader::from_str(xml);
    let mut saved = Saved::default();
    let mut path: Path = Vec::new();
    let mut saw_domain = false;
    loop {
        let event = reader.read_event().map_err(malformed)?;
        match &event {
            Event::Start(e) | Event::Empty(e) => {
                let name = e.name().as_ref().to_owned();
                path.push(name);
                check_allowed(&path, e)?;
                if under(&path, &["domain"]) {
                    saw_domain = true;
                } else if under(&path, &["domain", "memory"]) {
                    saved.memory = Some((attr(e, "unit")?.unwrap_or_default(), String::new()));
                } else if under(&path, &["domain", "devices", "disk"]) {
                    saved.disks.push(SavedDisk {
                        target: None,
                        source_type: attr(e, "type")?,
                    });
                } else if under(&path, &["domain", "devices", "disk", "target"]) {
                    if let Some(disk) = saved.disks.last_mut() {
                        disk.target = attr(e, "dev")?;
                    }
                } else if is_file_chardev(&path, e)? {
                    saved.file_chardevs += 1;
                }
                if matches!(event, Event::Empty(_)) {
                    path.pop();
                }
            }
            Event::End(_) => {
                path.pop();
            }
            Event::Text(t) => {
                let text = t.xml10_content();
                if under(&path, &["domain", "name"]) {
                    saved.name.push_str(&text);
                } else if under(&path, &["domain", "vcpu"]) {
                    saved.vcpus.push_str(&text);
                } else if under(&path, &["domain", "memory"])
                    && let Some((_, value)) = saved.memory.as_mut()
                {
                    value.push_str(&text);
                }
            }
            // Entity references only matter inside the name: keep them visible so a name that
            // needs escaping never compares equal to a plain one by accident.
            Event::GeneralRef(r) if under(&path, &["domain", "name"]) => {
                let _ = write!(saved.name, "&{};", r.as_ref());
            }
            // Entity declarations could pull host files into the XML libvirtd parses.
            Event::DocType(_) => return Err(RewriteError::Refused("a DOCTYPE".into())),
            Event::Eof => break,
            _ => {}
        }
    }
    if !saw_domain {
        return Err(RewriteError::Malformed("no <domain> root element".into()));
    }
    Ok(saved)
}

/// Children of `<domain>` a restore accepts. Everything the saving host's libvirt writes for a
/// domain [`render`] produced is here; what is not (memory backing files, host CPU pinning,
/// `qemu:commandline`...) could reach into the restoring host.
const DOMAIN_CHILDREN: &[&str] = &[
    "name",
    "uuid",
    "title",
    "description",
    "metadata",
    "memory",
    "currentMemory",
    "vcpu",
    "resource",
    "os",
    "features",
    "cpu",
    "clock",
    "on_poweroff",
    "on_reboot",
    "on_crash",
    "pm",
    "devices",
    "seclabel",
];
/// Children of `<os>`: no kernel, initrd, loader, NVRAM or ACPI table files from the host.
const OS_CHILDREN: &[&str] = &["type", "boot", "bootmenu", "smbios"];
/// Children of a `<disk>`: no backing chain, encryption secrets or mirror targets.
const DISK_CHILDREN: &[&str] = &[
    "driver",
    "source",
    "backingStore",
    "target",
    "readonly",
    "shareable",
    "address",
    "alias",
    "boot",
    "serial",
];
/// Children of an `<interface>`: no `<script>` (libvirtd would run it) and no `<backend>` or
/// `<rom>` host files.
const INTERFACE_CHILDREN: &[&str] = &[
    "mac", "source", "model", "address", "alias", "target", "link", "mtu", "driver", "boot", "ip",
];

/// Whether a restore may accept element `e` at `path`.
///
/// The XML in a saved-state image is data from whoever saved it — possibly another peer — and
/// libvirtd acts on it as root: an `<emulator>` is executed, a `<disk>` source is opened, an
/// `<interface><script>` is run. So the saved XML is checked against what vwnet itself
/// defines (an allow-list); anything else refuses the restore. `<emulator>` is allowed here
/// and dropped by the rewrite, so this host's own QEMU runs the domain.
fn check_allowed(path: &Path, e: &BytesStart<'_>) -> Result<(), RewriteError> {
    let names: Vec<&str> = path.iter().map(String::as_str).collect();
    let refuse = |what: String| Err(RewriteError::Refused(what));
    // Metadata is inert (libvirt only stores it), whatever it holds.
    if names.get(1) == Some(&"metadata") {
        return Ok(());
    }
    let element = names.last().copied().unwrap_or_default();
    if element.contains(':') {
        return refuse(format!("namespaced element <{element}>"));
    }
    let typ = || attr(e, "type");
    match names.as_slice() {
        ["domain"] => Ok(()),
        ["domain", child] if !DOMAIN_CHILDREN.contains(child) => {
            refuse(format!("<{child}> in <domain>"))
        }
        ["domain", "seclabel"] => match typ()?.as_deref() {
            Some("dynamic" | "none") => Ok(()),
            other => refuse(format!("<seclabel type={other:?}>")),
        },
        ["domain", "os", child] if !OS_CHILDREN.contains(child) => {
            refuse(format!("<{child}> in <os>"))
        }
        ["domain", "devices", device] => match *device {
            "emulator" | "controller" | "memballoon" | "input" => Ok(()),
            "disk" => {
                let kind = typ()?;
                let dev = attr(e, "device")?;
                match (kind.as_deref(), dev.as_deref().unwrap_or("disk")) {
                    (Some("file"), "disk" | "cdrom") => Ok(()),
                    _ => refuse(format!("<disk type={kind:?} device={dev:?}>")),
                }
            }
            "interface" => match typ()?.as_deref() {
                Some("user" | "network") => Ok(()),
                other => refuse(format!("<interface type={other:?}>")),
            },
            "serial" | "console" => match typ()?.as_deref() {
                Some("file" | "pty" | "null") => Ok(()),
                other => refuse(format!("<{device} type={other:?}>")),
            },
            "audio" => match typ()?.as_deref() {
                Some("none") => Ok(()),
                other => refuse(format!("<audio type={other:?}>")),
            },
            other => refuse(format!("device <{other}>")),
        },
        ["domain", "devices", "disk", child] if !DISK_CHILDREN.contains(child) => {
            refuse(format!("<{child}> in <disk>"))
        }
        [
            "domain",
            "devices",
            "disk",
            "backingStore" | "source",
            child,
            ..,
        ] => refuse(format!(
            "<{child}> in a disk source (backing chains are not portable)"
        )),
        ["domain", "devices", "interface", child] if !INTERFACE_CHILDREN.contains(child) => {
            refuse(format!("<{child}> in <interface>"))
        }
        ["domain", "devices", "serial" | "console", child]
            if !["source", "target", "address", "alias"].contains(child) =>
        {
            refuse(format!("<{child}> in a serial port"))
        }
        [
            "domain",
            "devices",
            "serial" | "console",
            "source",
            child,
            ..,
        ] => refuse(format!("<{child}> in a serial port source")),
        ["domain", "devices", "input" | "audio", child]
            if !["address", "alias"].contains(child) =>
        {
            refuse(format!("<{child}> in an input or audio device"))
        }
        // Deeper levels of accepted elements (CPU model, controller and target models,
        // addresses, clock timers...) configure the guest, not the host.
        _ => Ok(()),
    }
}

/// `<serial type='file'>` or `<console type='file'>` directly under `<devices>`.
fn is_file_chardev(path: &Path, e: &BytesStart<'_>) -> Result<bool, RewriteError> {
    let chardev = under(path, &["domain", "devices", "serial"])
        || under(path, &["domain", "devices", "console"]);
    Ok(chardev && attr(e, "type")?.as_deref() == Some("file"))
}

/// Second pass: copies every event, replacing the `file` of each disk's `<source>` and the
/// `path` of each file chardev's `<source>`.
fn rewrite(
    xml: &str,
    disks: &[SavedDisk],
    new_paths: &[(String, String)],
    serial: Option<&str>,
) -> Result<String, RewriteError> {
    let mut reader = Reader::from_str(xml);
    let mut writer = Writer::new(Vec::with_capacity(xml.len() + 256));
    let mut state = RewriteState {
        disks,
        new_paths,
        serial,
        path: Vec::new(),
        disk_index: None,
        in_file_chardev: false,
    };
    // Depth inside a dropped `<emulator>` element: its events are not copied.
    let mut dropping = 0usize;
    loop {
        let event = reader.read_event().map_err(malformed)?;
        if dropping > 0 {
            match event {
                Event::Start(_) => dropping += 1,
                Event::End(_) => dropping -= 1,
                Event::Eof => return Err(RewriteError::Malformed("unclosed <emulator>".into())),
                _ => {}
            }
            continue;
        }
        let out = match event {
            Event::Eof => break,
            // The saving host's emulator path: this host's libvirt fills in its own.
            Event::Start(e) if is_emulator(&state.path, &e) => {
                dropping = 1;
                continue;
            }
            Event::Empty(e) if is_emulator(&state.path, &e) => continue,
            Event::Start(e) => Event::Start(state.enter(e)?),
            Event::Empty(e) => {
                let e = state.enter(e)?;
                state.path.pop();
                Event::Empty(e)
            }
            Event::End(e) => {
                state.path.pop();
                Event::End(e)
            }
            other => other,
        };
        writer.write_event(out).map_err(malformed)?;
    }
    String::from_utf8(writer.into_inner()).map_err(malformed)
}

/// Whether `e`, about to be entered below `path`, is the domain's `<emulator>`.
fn is_emulator(path: &Path, e: &BytesStart<'_>) -> bool {
    e.name().as_ref() == "emulator" && under(path, &["domain", "devices"])
}

/// Where the second pass is, and what it replaces.
struct RewriteState<'a> {
    disks: &'a [SavedDisk],
    new_paths: &'a [(String, String)],
    serial: Option<&'a str>,
    path: Path,
    /// Index into `disks` of the `<disk>` being copied (counts every `<disk>` seen so far).
    disk_index: Option<usize>,
    in_file_chardev: bool,
}

impl RewriteState<'_> {
    /// Enters element `e` and returns it, with its path attribute replaced if it is a source
    /// the spec relocates.
    fn enter<'e>(&mut self, e: BytesStart<'e>) -> Result<BytesStart<'e>, RewriteError> {
        self.path.push(e.name().as_ref().to_owned());
        let path = &self.path;
        if under(path, &["domain", "devices", "disk"]) {
            self.disk_index = Some(self.disk_index.map_or(0, |i| i + 1));
        } else if under(path, &["domain", "devices", "serial"])
            || under(path, &["domain", "devices", "console"])
        {
            self.in_file_chardev = is_file_chardev(path, &e)?;
        }
        let replacement = if under(path, &["domain", "devices", "disk", "source"]) {
            let target = self
                .disk_index
                .and_then(|i| self.disks.get(i))
                .and_then(|d| d.target.as_deref());
            self.new_paths
                .iter()
                .find(|(t, _)| Some(t.as_str()) == target)
                .map(|(_, p)| ("file", p.as_str()))
        } else if self.in_file_chardev
            && (under(path, &["domain", "devices", "serial", "source"])
                || under(path, &["domain", "devices", "console", "source"]))
        {
            self.serial.map(|p| ("path", p))
        } else {
            None
        };
        match replacement {
            Some((key, value)) => replace_attr(&e, key, value),
            None => Ok(e),
        }
    }
}

/// A copy of `e` with attribute `key` set to `value` (escaped), other attributes as they were.
fn replace_attr<'e>(
    e: &BytesStart<'_>,
    key: &str,
    value: &str,
) -> Result<BytesStart<'e>, RewriteError> {
    let name = e.name().as_ref().to_owned();
    let mut out = BytesStart::new(name);
    let mut replaced = false;
    for a in e.attributes() {
        let a = a.map_err(malformed)?;
        if a.key.as_ref() == key {
            replaced = true;
            out.push_attribute((key, value));
        } else {
            // Unescaped and escaped again rather than copied raw: the writer quotes with `"`,
            // and a raw value taken from between `'` quotes may hold a bare `"`.
            let value = a
                .normalized_value(XmlVersion::Implicit1_0)
                .map_err(malformed)?;
            out.push_attribute((a.key.as_ref(), value.as_ref()));
        }
    }
    if !replaced {
        out.push_attribute((key, value));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One way to spoil a valid spec.
    type Mutation = Box<dyn Fn(&mut DomainSpec)>;
    use crate::hypervisor::DiskSpec;

    fn spec() -> DomainSpec {
        DomainSpec {
            name: "ws-1".into(),
            memory_mib: 128,
            vcpus: 2,
            disks: vec![
                DiskSpec {
                    path: "/images/base.qcow2".into(),
                    format: DiskFormat::Qcow2,
                    read_only: true,
                },
                DiskSpec {
                    path: "/images/data.raw".into(),
                    format: DiskFormat::Raw,
                    read_only: false,
                },
            ],
            cdrom: Some("/images/seed.iso".into()),
            nics: vec![
                NicSpec::User,
                NicSpec::Network {
                    name: "default".into(),
                },
            ],
            serial_log: Some("/logs/ws-1.log".into()),
        }
    }

    const GOLDEN_KVM: &str = "\
<domain type='kvm'>
  <name>ws-1</name>
  <memory unit='MiB'>128</memory>
  <currentMemory unit='MiB'>128</currentMemory>
  <vcpu placement='static'>2</vcpu>
  <os>
    <type arch='x86_64'>hvm</type>
    <boot dev='cdrom'/>
    <boot dev='hd'/>
  </os>
  <features>
    <acpi/>
  </features>
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='/images/base.qcow2'/>
      <target dev='vda' bus='virtio'/>
      <readonly/>
    </disk>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file='/images/data.raw'/>
      <target dev='vdb' bus='virtio'/>
    </disk>
    <disk type='file' device='cdrom'>
      <driver name='qemu' type='raw'/>
      <source file='/images/seed.iso'/>
      <target dev='sda' bus='sata'/>
      <readonly/>
    </disk>
    <interface type='user'>
      <model type='virtio'/>
    </interface>
    <interface type='network'>
      <source network='default'/>
      <model type='virtio'/>
    </interface>
    <serial type='file'>
      <source path='/logs/ws-1.log'/>
      <target port='0'/>
    </serial>
    <memballoon model='none'/>
  </devices>
</domain>
";

    #[test]
    fn golden_kvm_domain() {
        assert_eq!(render(&spec(), DomainKind::Kvm).as_deref(), Ok(GOLDEN_KVM));
    }

    #[test]
    fn minimal_test_domain_has_no_optional_devices() {
        let mut s = spec();
        s.disks.clear();
        s.cdrom = None;
        s.nics.clear();
        s.serial_log = None;
        let xml = render(&s, DomainKind::Test).unwrap_or_default();
        assert!(xml.starts_with("<domain type='test'>\n"), "{xml}");
        assert!(xml.contains("<type arch='i686'>hvm</type>"), "{xml}");
        for absent in ["<disk", "<interface", "<serial", "cdrom"] {
            assert!(!xml.contains(absent), "{absent} in {xml}");
        }
    }

    #[test]
    fn render_rejects_an_invalid_spec() {
        let mut s = spec();
        s.vcpus = 0;
        assert_eq!(
            render(&s, DomainKind::Kvm).map_err(|e| e.field),
            Err("vcpus")
        );
    }

    #[test]
    fn escape_covers_the_five_metacharacters() {
        assert_eq!(escape(r#"a<b>&"c'"#), "a&lt;b&gt;&amp;&quot;c&apos;");
        assert_eq!(escape("plain/path-1.raw"), "plain/path-1.raw");
    }

    /// Paths full of metacharacters come back from an XML parser exactly as given.
    #[test]
    fn hostile_paths_survive_a_parse() -> Result<(), Box<dyn std::error::Error>> {
        let mut s = spec();
        let hostile = r#"/img/<disk>&"quoted" 'single' ]]> --.raw"#;
        s.disks[1].path = hostile.into();
        s.nics = vec![NicSpec::Network {
            name: "net&<'\"".into(),
        }];
        let xml = render(&s, DomainKind::Kvm)?;
        let mut reader = Reader::from_str(&xml);
        let mut sources = Vec::new();
        loop {
            match reader.read_event()? {
                Event::Eof => break,
                Event::Empty(e) if e.name().as_ref() == "source" => {
                    for key in ["file", "network"] {
                        if let Some(v) = attr(&e, key).map_err(|e| format!("{e:?}"))? {
                            sources.push(v);
                        }
                    }
                }
                _ => {}
            }
        }
        assert!(sources.iter().any(|v| v == hostile), "{sources:?}");
        assert!(sources.iter().any(|v| v == "net&<'\""), "{sources:?}");
        Ok(())
    }

    /// What libvirt 9.0's QEMU driver handed back from a save image of a domain rendered from
    /// `spec()` (captured with `virsh save-image-dumpxml`; the saving host's paths under
    /// `/old/`, the data disk moved last and given quotes, an attribute with a bare `"`).
    const SAVED: &str = r#"<domain type='kvm'>
  <name>ws-1</name>
  <uuid>2f548926-868d-4f9d-8b16-2485e8962147</uuid>
  <memory unit='KiB'>131072</memory>
  <currentMemory unit='KiB'>131072</currentMemory>
  <vcpu placement='static'>2</vcpu>
  <resource>
    <partition>/machine</partition>
  </resource>
  <os>
    <type arch='x86_64' machine='pc-i440fx-7.2'>hvm</type>
    <boot dev='cdrom'/>
    <boot dev='hd'/>
  </os>
  <features>
    <acpi/>
  </features>
  <cpu mode='custom' match='exact' check='none'>
    <model fallback='forbid'>qemu64</model>
  </cpu>
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='/old/base.qcow2' index='3'/>
      <backingStore/>
      <target dev='vda' bus='virtio'/>
      <readonly/>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x04' function='0x0'/>
    </disk>
    <disk type='file' device='cdrom'>
      <driver name='qemu' type='raw'/>
      <source file='/old/seed.iso' index='1'/>
      <backingStore/>
      <target dev='sda' bus='sata'/>
      <readonly/>
      <address type='drive' controller='0' bus='0' target='0' unit='0'/>
    </disk>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file='/old/data &amp; "more".raw' index='2' extra='say "hi"'/>
      <backingStore/>
      <target dev='vdb' bus='virtio'/>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x05' function='0x0'/>
    </disk>
    <controller type='sata' index='0'>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x03' function='0x0'/>
    </controller>
    <controller type='usb' index='0' model='piix3-uhci'>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x01' function='0x2'/>
    </controller>
    <controller type='pci' index='0' model='pci-root'/>
    <interface type='user'>
      <mac address='52:54:00:9d:37:cd'/>
      <model type='virtio'/>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x02' function='0x0'/>
    </interface>
    <serial type='file'>
      <source path='/old/ws-1.log'/>
      <target type='isa-serial' port='0'>
        <model name='isa-serial'/>
      </target>
    </serial>
    <console type='file'>
      <source path='/old/ws-1.log'/>
      <target type='serial' port='0'/>
    </console>
    <input type='mouse' bus='ps2'/>
    <input type='keyboard' bus='ps2'/>
    <audio id='1' type='none'/>
    <memballoon model='none'/>
  </devices>
  <seclabel type='dynamic' model='dac' relabel='yes'/>
</domain>
"#;

    #[test]
    fn rewrite_moves_every_host_path_and_nothing_else() -> Result<(), Box<dyn std::error::Error>> {
        let mut s = spec();
        s.disks[1].path = "/new/data'1.raw".into();
        let xml = rewrite_for_host(SAVED, &s).map_err(|e| format!("{e:?}"))?;
        assert!(!xml.contains("/old/"), "{xml}");
        // Disks are matched by target, not position: vdb comes third in the saved XML.
        for expected in [
            r#"<source file="/images/base.qcow2" index="3"/>"#,
            r#"<source file="/images/seed.iso" index="1"/>"#,
            r#"<source file="/new/data&apos;1.raw" index="2" extra="say &quot;hi&quot;"/>"#,
        ] {
            assert!(xml.contains(expected), "{expected} missing in {xml}");
        }
        assert_eq!(
            xml.matches(r#"<source path="/logs/ws-1.log"/>"#).count(),
            2,
            "{xml}"
        );
        // Everything else passes through byte for byte.
        for kept in [
            "<uuid>2f548926-868d-4f9d-8b16-2485e8962147</uuid>",
            "<mac address='52:54:00:9d:37:cd'/>",
            "<controller type='usb' index='0' model='piix3-uhci'>",
            "<seclabel type='dynamic' model='dac' relabel='yes'/>",
            "<target type='isa-serial' port='0'>",
            "<type arch='x86_64' machine='pc-i440fx-7.2'>hvm</type>",
        ] {
            assert!(xml.contains(kept), "{kept} lost in {xml}");
        }
        // The saving host's emulator is dropped (this host's libvirt picks its own), and
        // nothing else: the line count only loses what the emulator element held.
        assert!(!xml.contains("emulator"), "{xml}");
        assert_eq!(xml.lines().count(), SAVED.lines().count());
        Ok(())
    }

    /// Everything a hostile saver could slip into a hot image's XML to reach the restoring
    /// host is refused, naming what was refused.
    #[test]
    fn rewrite_refuses_host_reaching_xml() {
        let cases = [
            (
                "</devices>",
                "<hostdev mode='subsystem' type='pci'/></devices>",
                "hostdev",
            ),
            (
                "</devices>",
                "<filesystem type='mount'><source dir='/'/><target dir='r'/></filesystem></devices>",
                "filesystem",
            ),
            (
                "</devices>",
                "<rng model='virtio'><backend model='random'>/dev/random</backend></rng></devices>",
                "rng",
            ),
            (
                "<interface type='user'>",
                "<interface type='user'><script path='/tmp/x.sh'/>",
                "script",
            ),
            (
                "<interface type='user'>",
                "<interface type='bridge'>",
                "bridge",
            ),
            ("<os>", "<os><kernel>/boot/vmlinuz</kernel>", "kernel"),
            (
                "<os>",
                "<os><loader>/usr/share/OVMF/OVMF_CODE.fd</loader>",
                "loader",
            ),
            (
                "</domain>",
                "<qemu:commandline xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>\
                 <qemu:arg value='-x'/></qemu:commandline></domain>",
                "qemu:commandline",
            ),
            ("<devices>", "<devices><memoryBacking/>", "memoryBacking"),
            (
                "</domain>",
                "<memoryBacking><source type='file'/></memoryBacking></domain>",
                "memoryBacking",
            ),
            (
                "<backingStore/>",
                "<backingStore type='file'><source file='/etc/shadow'/></backingStore>",
                "backing",
            ),
            ("<serial type='file'>", "<serial type='unix'>", "unix"),
            (
                "<domain type='kvm'>",
                "<!DOCTYPE domain [<!ENTITY x SYSTEM 'file:///etc/shadow'>]><domain type='kvm'>",
                "DOCTYPE",
            ),
            (
                "<source path='/old/ws-1.log'/>",
                "<source path='/old/ws-1.log'/><log file='/etc/x'/>",
                "log",
            ),
            (
                "<disk type='file' device='disk'>",
                "<disk type='block' device='disk'>",
                "block",
            ),
            (
                "<audio id='1' type='none'/>",
                "<audio id='1' type='pulseaudio'/>",
                "pulseaudio",
            ),
            (
                "<seclabel type='dynamic' model='dac' relabel='yes'/>",
                "<seclabel type='static' model='dac'><label>+0:+0</label></seclabel>",
                "static",
            ),
        ];
        for (anchor, replacement, word) in cases {
            assert!(SAVED.contains(anchor), "fixture lacks {anchor}");
            let hostile = SAVED.replacen(anchor, replacement, 1);
            match rewrite_for_host(&hostile, &spec()) {
                Err(RewriteError::Refused(what)) => assert!(what.contains(word), "{word}: {what}"),
                other => panic!("{word}: expected a refusal, got {other:?}"),
            }
        }
    }

    #[test]
    fn metadata_may_hold_anything() -> Result<(), String> {
        let with_metadata = SAVED.replacen(
            "<memory ",
            "<metadata><vw:ws xmlns:vw='urn:vwnet'><vw:kernel>x</vw:kernel></vw:ws></metadata><memory ",
            1,
        );
        let xml = rewrite_for_host(&with_metadata, &spec()).map_err(|e| format!("{e:?}"))?;
        assert!(xml.contains("<vw:kernel>x</vw:kernel>"), "{xml}");
        Ok(())
    }

    #[test]
    fn rewrite_checks_the_machine_shape() {
        let cases: Vec<(&str, Mutation)> = vec![
            ("named", Box::new(|s| s.name = "ws-2".into())),
            ("RAM", Box::new(|s| s.memory_mib = 256)),
            ("vCPUs", Box::new(|s| s.vcpus = 1)),
            ("disks", Box::new(|s| s.cdrom = None)),
            (
                "disks",
                Box::new(|s| {
                    s.disks.pop();
                }),
            ),
            ("disks", Box::new(|s| s.disks.push(s.disks[0].clone()))),
            ("serial", Box::new(|s| s.serial_log = None)),
        ];
        for (word, mutate) in cases {
            let mut s = spec();
            mutate(&mut s);
            match rewrite_for_host(SAVED, &s) {
                Err(RewriteError::Mismatch(reason)) => assert!(reason.contains(word), "{reason}"),
                other => panic!("{word}: expected a mismatch, got {other:?}"),
            }
        }
    }

    #[test]
    fn rewrite_reports_malformed_xml() {
        for bad in [
            "",
            "<domain>",
            "<x/>",
            "<domain><memory unit='KiB'>lots</memory></domain>",
        ] {
            assert!(
                matches!(
                    rewrite_for_host(bad, &spec()),
                    Err(RewriteError::Malformed(_) | RewriteError::Mismatch(_))
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn memory_units_convert_to_kib() {
        let kib = |unit: &str, v: &str| memory_kib(Some(&(unit.to_owned(), v.to_owned())));
        assert_eq!(kib("KiB", "131072"), Ok(131072));
        assert_eq!(kib("", "131072"), Ok(131072));
        assert_eq!(kib("MiB", "128"), Ok(131072));
        assert_eq!(kib("GiB", "1"), Ok(1048576));
        assert_eq!(kib("bytes", "134217728"), Ok(131072));
        assert!(kib("TiB", "1").is_err());
        assert!(kib("GiB", &u64::MAX.to_string()).is_err());
        assert!(memory_kib(None).is_err());
    }
}
