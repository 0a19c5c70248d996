//! The human format: TOML, read and written by hand.
//!
//! Reading by hand (instead of deriving serde for a TOML-shaped twin of the model) gives every
//! error the dotted path of the field it is about (`hardware.ram.min: expected an integer, found
//! string`) and makes keeping unknown keys straightforward: whatever a section does not consume
//! becomes one of its [`Extensions`]. Writing controls the order of the output so that a file
//! reads top-down like the template: identity and state first, then one table per section.
//!
//! Identifiers are hex strings, times RFC 3339 strings (TOML datetimes are accepted too), spans
//! humantime strings (`30days`). TOML integers are signed 64-bit, so larger numbers and times
//! after year 9999 cannot be written: [`Description::to_toml_string`] refuses them, and so does
//! the canonical decoder, which keeps every decodable description printable.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Display;
use std::str::FromStr;

use toml::{Table, Value};

use super::extensions::{ExtValue, Extensions, one_line};
use super::model::{
    AddressMode, Bounds, Capability, Category, Description, Disk, Hardware, Image, ImageRef,
    Lineage, Network, Nic, Service, Software, State,
};
use crate::ids::{DescriptionHash, ImageId, PeerIdentity, WorkspaceId};
use crate::time::{Span, Timestamp};

/// Why a TOML description could not be read or written. Always one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TomlError {
    /// The text is not valid TOML.
    #[error("line {line}, column {column}: {message}")]
    Syntax {
        /// 1-based line of the error.
        line: usize,
        /// 1-based column (in characters) of the error.
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// A field is missing, has the wrong type or an invalid value.
    #[error("{path}: {reason}")]
    Field {
        /// Dotted path of the field, e.g. `hardware.ram.min` or `network.nics[1].address`.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// A value of the model has no TOML form (too large an integer, a time after year 9999,
    /// an extension whose key is a schema field or whose text is not canonical).
    #[error("{path}: cannot be written as TOML: {reason}")]
    Unrepresentable {
        /// Dotted path of the field.
        path: String,
        /// Why.
        reason: String,
    },
}

/// Schema keys of each section; anything else is an extension.
pub(crate) mod keys {
    /// Top-level keys.
    pub(crate) const TOP: &[&str] = &[
        "id",
        "name",
        "owner",
        "owner_name",
        "category",
        "vmm",
        "state",
        "creation_time",
        "life_cycle",
        "last_modified",
        "version",
        "previous",
        "lock_authorities",
        "cloned_from",
        "hardware",
        "network",
        "software",
        "capability",
        "image",
    ];
    /// Keys of `[hardware]`.
    pub(crate) const HARDWARE: &[&str] = &["ram", "vcpus", "disk", "devices"];
    /// Keys of `[hardware.disk]`.
    pub(crate) const DISK: &[&str] = &["size_mib", "type", "access"];
    /// Keys of `[network]`.
    pub(crate) const NETWORK: &[&str] = &["nics"];
    /// Keys of each `[[network.nics]]`.
    pub(crate) const NIC: &[&str] = &["name", "address"];
    /// Keys of `[software]`.
    pub(crate) const SOFTWARE: &[&str] =
        &["kernel", "distribution", "library_signature", "programs"];
    /// Keys of `[capability]`.
    pub(crate) const CAPABILITY: &[&str] = &["startup", "services"];
    /// Keys of each `[[capability.services]]`.
    pub(crate) const SERVICE: &[&str] = &["name", "port", "protocol"];
    /// Keys of `[image]`.
    pub(crate) const IMAGE: &[&str] = &["disk", "memory_state"];
}

/// Last second that RFC 3339 (and so the human format) can express: 9999-12-31T23:59:59Z.
const MAX_TIMESTAMP_SECS: u64 = 253_402_300_799;

/// Longest life cycle the human format writes: 10 000 years, far beyond any real workspace, and
/// short enough that humantime's text parses back to the same number of seconds.
const MAX_SPAN_SECS: u64 = 10_000 * 31_557_600;

/// Parses a TOML description.
pub(crate) fn from_toml_str(input: &str) -> Result<Description, TomlError> {
    let table: Table = toml::from_str(input).map_err(|e| syntax_error(input, &e))?;
    read_description(Section::new(String::new(), table))
}

fn syntax_error(input: &str, err: &toml::de::Error) -> TomlError {
    let start = err.span().map_or(0, |span| span.start);
    let before = input.get(..start).unwrap_or(input);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    TomlError::Syntax {
        line,
        column,
        message: one_line(err.message()),
    }
}

/// A table being read, with the path it sits at; what is not taken out becomes extensions.
struct Section {
    path: String,
    table: Table,
}

type Conv<T> = fn(Value) -> Result<T, String>;

impl Section {
    fn new(path: String, table: Table) -> Self {
        Self { path, table }
    }

    fn path_of(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    fn opt<T>(&mut self, key: &str, conv: Conv<T>) -> Result<Option<T>, TomlError> {
        match self.table.remove(key) {
            None => Ok(None),
            Some(value) => conv(value).map(Some).map_err(|reason| TomlError::Field {
                path: self.path_of(key),
                reason,
            }),
        }
    }

    fn req<T>(&mut self, key: &str, conv: Conv<T>) -> Result<T, TomlError> {
        self.opt(key, conv)?.ok_or_else(|| TomlError::Field {
            path: self.path_of(key),
            reason: "missing".into(),
        })
    }

    fn sub(&mut self, key: &str) -> Result<Option<Section>, TomlError> {
        let path = self.path_of(key);
        Ok(self.opt(key, table)?.map(|t| Section::new(path, t)))
    }

    fn subs(&mut self, key: &str) -> Result<Vec<Section>, TomlError> {
        let path = self.path_of(key);
        let items = self.opt(key, array)?.unwrap_or_default();
        items
            .into_iter()
            .enumerate()
            .map(|(i, item)| {
                let path = format!("{path}[{i}]");
                match item {
                    Value::Table(t) => Ok(Section::new(path, t)),
                    other => Err(TomlError::Field {
                        path,
                        reason: format!("expected a table, found {}", other.type_str()),
                    }),
                }
            })
            .collect()
    }

    /// Everything not consumed, kept as extensions.
    fn extensions(self) -> Extensions {
        self.table
            .into_iter()
            .map(|(k, v)| (k, ExtValue::new(v)))
            .collect()
    }

    /// For small fixed records (ranges, image references, lineage): unknown keys are mistakes.
    fn strict(self) -> Result<(), TomlError> {
        match self.table.keys().next() {
            None => Ok(()),
            Some(key) => Err(TomlError::Field {
                path: self.path_of(key),
                reason: "unknown key".into(),
            }),
        }
    }
}

fn type_error(expected: &str, found: &Value) -> String {
    format!("expected {expected}, found {}", found.type_str())
}

fn string(v: Value) -> Result<String, String> {
    match v {
        Value::String(s) => Ok(s),
        other => Err(type_error("a string", &other)),
    }
}

fn uint(v: Value) -> Result<u64, String> {
    match v {
        Value::Integer(i) => u64::try_from(i).map_err(|_| format!("{i} is negative")),
        other => Err(type_error("an integer", &other)),
    }
}

fn port(v: Value) -> Result<u16, String> {
    let n = uint(v)?;
    u16::try_from(n).map_err(|_| format!("{n} is not a port number (0-65535)"))
}

fn table(v: Value) -> Result<Table, String> {
    match v {
        Value::Table(t) => Ok(t),
        other => Err(type_error("a table", &other)),
    }
}

fn array(v: Value) -> Result<Vec<Value>, String> {
    match v {
        Value::Array(a) => Ok(a),
        other => Err(type_error("an array", &other)),
    }
}

fn parsed<T: FromStr>(v: Value) -> Result<T, String>
where
    T::Err: Display,
{
    string(v)?.parse().map_err(|e: T::Err| e.to_string())
}

fn time(v: Value) -> Result<Timestamp, String> {
    match v {
        Value::Datetime(dt) => dt
            .to_string()
            .parse()
            .map_err(|e: crate::time::TimeParseError| e.to_string()),
        other => parsed(other),
    }
}

fn string_list(v: Value) -> Result<Vec<String>, String> {
    array(v)?
        .into_iter()
        .enumerate()
        .map(|(i, item)| string(item).map_err(|e| format!("item {i}: {e}")))
        .collect()
}

fn identities(v: Value) -> Result<Vec<PeerIdentity>, String> {
    string_list(v)?
        .iter()
        .enumerate()
        .map(|(i, s)| s.parse().map_err(|e| format!("item {i}: {e}")))
        .collect()
}

fn string_set(v: Value) -> Result<BTreeSet<String>, String> {
    let mut set = BTreeSet::new();
    for item in string_list(v)? {
        if !set.insert(item.clone()) {
            return Err(format!("{item:?} is listed twice"));
        }
    }
    Ok(set)
}

fn string_map(v: Value) -> Result<BTreeMap<String, String>, String> {
    table(v)?
        .into_iter()
        .map(|(k, v)| {
            string(v)
                .map(|s| (k.clone(), s))
                .map_err(|e| format!("{k}: {e}"))
        })
        .collect()
}

fn read_description(mut top: Section) -> Result<Description, TomlError> {
    let id = top.req("id", parsed::<WorkspaceId>)?;
    let name = top.req("name", string)?;
    let owner = top.req("owner", parsed::<PeerIdentity>)?;
    let owner_name = top.opt("owner_name", string)?;
    let category_name = top.req("category", string)?;
    let vmm = top.opt("vmm", parsed)?;
    let category = match (category_name.as_str(), vmm) {
        ("vm", Some(vmm)) => Category::Vm { vmm },
        ("vm", None) => {
            return Err(TomlError::Field {
                path: "vmm".into(),
                reason: "missing: a vm workspace names its monitor type (kvm, qemu, xen, ...)"
                    .into(),
            });
        }
        ("dynamic-account", None) => Category::DynamicAccount,
        ("dynamic-account", Some(_)) => {
            return Err(TomlError::Field {
                path: "vmm".into(),
                reason: "only a vm workspace has a monitor type".into(),
            });
        }
        (other, _) => {
            return Err(TomlError::Field {
                path: "category".into(),
                reason: format!("{other:?} is not a category (expected vm or dynamic-account)"),
            });
        }
    };
    let state = top
        .opt("state", parsed::<State>)?
        .unwrap_or(State::Shutdown);
    let creation_time = top.req("creation_time", time)?;
    let life_cycle = top.opt("life_cycle", parsed::<Span>)?;
    let last_modified = top.opt("last_modified", time)?.unwrap_or(creation_time);
    let version = top.opt("version", uint)?.unwrap_or(1);
    let previous = top.opt("previous", parsed::<DescriptionHash>)?;
    let lock_authorities = top.opt("lock_authorities", identities)?.unwrap_or_default();
    let cloned_from = top.sub("cloned_from")?.map(read_lineage).transpose()?;
    let hardware = top
        .sub("hardware")?
        .map(read_hardware)
        .transpose()?
        .unwrap_or_default();
    let network = top
        .sub("network")?
        .map(read_network)
        .transpose()?
        .unwrap_or_default();
    let software = top
        .sub("software")?
        .map(read_software)
        .transpose()?
        .unwrap_or_default();
    let capability = top
        .sub("capability")?
        .map(read_capability)
        .transpose()?
        .unwrap_or_default();
    let image = top
        .sub("image")?
        .map(read_image)
        .transpose()?
        .unwrap_or_default();
    Ok(Description {
        id,
        name,
        owner,
        owner_name,
        category,
        state,
        creation_time,
        life_cycle,
        last_modified,
        version,
        previous,
        cloned_from,
        lock_authorities,
        hardware,
        network,
        software,
        capability,
        image,
        extensions: top.extensions(),
    })
}

fn read_lineage(mut s: Section) -> Result<Lineage, TomlError> {
    let lineage = Lineage {
        workspace: s.req("workspace", parsed)?,
        version: s.req("version", uint)?,
        description: s.req("description", parsed)?,
    };
    s.strict()?;
    Ok(lineage)
}

fn read_bounds(mut s: Section) -> Result<Bounds, TomlError> {
    let bounds = Bounds {
        min: s.req("min", uint)?,
        max: s.req("max", uint)?,
    };
    s.strict()?;
    Ok(bounds)
}

fn read_hardware(mut s: Section) -> Result<Hardware, TomlError> {
    let ram = s.sub("ram")?.map(read_bounds).transpose()?;
    let vcpus = s.sub("vcpus")?.map(read_bounds).transpose()?;
    let disk = match s.sub("disk")? {
        None => None,
        Some(mut d) => Some(Disk {
            size_mib: d.req("size_mib", uint)?,
            kind: d.req("type", parsed)?,
            access: d.req("access", parsed)?,
            extensions: d.extensions(),
        }),
    };
    let devices = s.opt("devices", string_set)?.unwrap_or_default();
    Ok(Hardware {
        ram,
        vcpus,
        disk,
        devices,
        extensions: s.extensions(),
    })
}

fn read_network(mut s: Section) -> Result<Network, TomlError> {
    let nics = s
        .subs("nics")?
        .into_iter()
        .map(|mut n| {
            Ok(Nic {
                name: n.req("name", string)?,
                address: n.req("address", parsed::<AddressMode>)?,
                extensions: n.extensions(),
            })
        })
        .collect::<Result<_, TomlError>>()?;
    Ok(Network {
        nics,
        extensions: s.extensions(),
    })
}

fn read_software(mut s: Section) -> Result<Software, TomlError> {
    Ok(Software {
        kernel: s.opt("kernel", string)?,
        distribution: s.opt("distribution", string)?,
        library_signature: s.opt("library_signature", string)?,
        programs: s.opt("programs", string_map)?.unwrap_or_default(),
        extensions: s.extensions(),
    })
}

fn read_capability(mut s: Section) -> Result<Capability, TomlError> {
    let startup = s.opt("startup", string)?;
    let services = s
        .subs("services")?
        .into_iter()
        .map(|mut v| {
            Ok(Service {
                name: v.req("name", string)?,
                port: v.req("port", port)?,
                protocol: v.req("protocol", parsed)?,
                extensions: v.extensions(),
            })
        })
        .collect::<Result<_, TomlError>>()?;
    Ok(Capability {
        startup,
        services,
        extensions: s.extensions(),
    })
}

fn read_image_ref(mut s: Section) -> Result<ImageRef, TomlError> {
    let r = ImageRef {
        id: s.req("id", parsed::<ImageId>)?,
        size: s.req("size", uint)?,
    };
    s.strict()?;
    Ok(r)
}

fn read_image(mut s: Section) -> Result<Image, TomlError> {
    Ok(Image {
        disk: s.sub("disk")?.map(read_image_ref).transpose()?,
        memory_state: s.sub("memory_state")?.map(read_image_ref).transpose()?,
        extensions: s.extensions(),
    })
}

// ---------------------------------------------------------------------------------------------
// Writing.

/// A table being built, with the path it sits at (for error messages).
struct Out {
    path: String,
    table: Table,
}

impl Out {
    fn new(path: &str) -> Self {
        Self {
            path: path.to_string(),
            table: Table::new(),
        }
    }

    fn path_of(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    fn put(&mut self, key: &str, value: impl Into<Value>) {
        self.table.insert(key.to_string(), value.into());
    }

    fn put_opt(&mut self, key: &str, value: Option<impl Into<Value>>) {
        if let Some(value) = value {
            self.put(key, value);
        }
    }

    fn put_str(&mut self, key: &str, value: &impl ToString) {
        self.put(key, value.to_string());
    }

    fn put_int(&mut self, key: &str, value: u64) -> Result<(), TomlError> {
        let v = i64::try_from(value).map_err(|_| TomlError::Unrepresentable {
            path: self.path_of(key),
            reason: format!("{value} is above the TOML integer limit {}", i64::MAX),
        })?;
        self.put(key, v);
        Ok(())
    }

    fn put_time(&mut self, key: &str, value: Timestamp) -> Result<(), TomlError> {
        if value.as_unix_secs() > MAX_TIMESTAMP_SECS {
            return Err(TomlError::Unrepresentable {
                path: self.path_of(key),
                reason: format!(
                    "{} s after the epoch is after year 9999",
                    value.as_unix_secs()
                ),
            });
        }
        self.put_str(key, &value);
        Ok(())
    }

    fn put_table(&mut self, key: &str, sub: Out) {
        if !sub.table.is_empty() {
            self.put(key, sub.table);
        }
    }

    /// Adds the extensions, refusing keys the schema uses (they would be read back as fields).
    fn put_extensions(&mut self, ext: &Extensions, known: &[&str]) -> Result<(), TomlError> {
        for (key, value) in ext {
            if known.contains(&key.as_str()) {
                return Err(TomlError::Unrepresentable {
                    path: self.path_of(key),
                    reason: "an extension may not use the name of a schema field".into(),
                });
            }
            let v = value.value().map_err(|e| TomlError::Unrepresentable {
                path: self.path_of(key),
                reason: e.to_string(),
            })?;
            self.put(key, v);
        }
        Ok(())
    }

    fn sub(&self, key: &str) -> Out {
        Out::new(&self.path_of(key))
    }
}

fn write_bounds(out: &mut Out, key: &str, bounds: Option<&Bounds>) -> Result<(), TomlError> {
    if let Some(b) = bounds {
        let mut t = out.sub(key);
        t.put_int("min", b.min)?;
        t.put_int("max", b.max)?;
        out.put_table(key, t);
    }
    Ok(())
}

fn write_image_ref(out: &mut Out, key: &str, r: Option<&ImageRef>) -> Result<(), TomlError> {
    if let Some(r) = r {
        let mut t = out.sub(key);
        t.put_str("id", &r.id);
        t.put_int("size", r.size)?;
        out.put_table(key, t);
    }
    Ok(())
}

/// Builds the TOML table of `desc`, checking that everything is representable.
pub(crate) fn to_toml_table(desc: &Description) -> Result<Table, TomlError> {
    let mut top = Out::new("");
    top.put_str("id", &desc.id);
    top.put("name", desc.name.clone());
    top.put_str("owner", &desc.owner);
    top.put_opt("owner_name", desc.owner_name.clone());
    top.put("category", desc.category.name());
    if let Category::Vm { vmm } = &desc.category {
        top.put_str("vmm", vmm);
    }
    top.put("state", desc.state.as_str());
    top.put_time("creation_time", desc.creation_time)?;
    if let Some(span) = desc.life_cycle {
        if span.as_secs() > MAX_SPAN_SECS {
            return Err(TomlError::Unrepresentable {
                path: "life_cycle".into(),
                reason: format!("{} s is longer than 10000 years", span.as_secs()),
            });
        }
        top.put_str("life_cycle", &span);
    }
    top.put_time("last_modified", desc.last_modified)?;
    top.put_int("version", desc.version)?;
    if let Some(previous) = &desc.previous {
        top.put_str("previous", previous);
    }
    if !desc.lock_authorities.is_empty() {
        let list: Vec<Value> = desc
            .lock_authorities
            .iter()
            .map(|k| Value::String(k.to_string()))
            .collect();
        top.put("lock_authorities", list);
    }
    if let Some(l) = &desc.cloned_from {
        let mut t = top.sub("cloned_from");
        t.put_str("workspace", &l.workspace);
        t.put_int("version", l.version)?;
        t.put_str("description", &l.description);
        top.put_table("cloned_from", t);
    }

    let hw = &desc.hardware;
    let mut t = top.sub("hardware");
    write_bounds(&mut t, "ram", hw.ram.as_ref())?;
    write_bounds(&mut t, "vcpus", hw.vcpus.as_ref())?;
    if let Some(disk) = &hw.disk {
        let mut d = t.sub("disk");
        d.put_int("size_mib", disk.size_mib)?;
        d.put("type", disk.kind.as_str());
        d.put("access", disk.access.as_str());
        d.put_extensions(&disk.extensions, keys::DISK)?;
        t.put_table("disk", d);
    }
    if !hw.devices.is_empty() {
        let list: Vec<Value> = hw.devices.iter().cloned().map(Value::String).collect();
        t.put("devices", list);
    }
    t.put_extensions(&hw.extensions, keys::HARDWARE)?;
    top.put_table("hardware", t);

    let mut t = top.sub("network");
    if !desc.network.nics.is_empty() {
        let mut nics = Vec::new();
        for (i, nic) in desc.network.nics.iter().enumerate() {
            let mut n = Out::new(&format!("network.nics[{i}]"));
            n.put("name", nic.name.clone());
            n.put_str("address", &nic.address);
            n.put_extensions(&nic.extensions, keys::NIC)?;
            nics.push(Value::Table(n.table));
        }
        t.put("nics", nics);
    }
    t.put_extensions(&desc.network.extensions, keys::NETWORK)?;
    top.put_table("network", t);

    let sw = &desc.software;
    let mut t = top.sub("software");
    t.put_opt("kernel", sw.kernel.clone());
    t.put_opt("distribution", sw.distribution.clone());
    t.put_opt("library_signature", sw.library_signature.clone());
    if !sw.programs.is_empty() {
        let programs: Table = sw
            .programs
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        t.put("programs", programs);
    }
    t.put_extensions(&sw.extensions, keys::SOFTWARE)?;
    top.put_table("software", t);

    let cap = &desc.capability;
    let mut t = top.sub("capability");
    t.put_opt("startup", cap.startup.clone());
    if !cap.services.is_empty() {
        let mut services = Vec::new();
        for (i, svc) in cap.services.iter().enumerate() {
            let mut s = Out::new(&format!("capability.services[{i}]"));
            s.put("name", svc.name.clone());
            s.put("port", i64::from(svc.port));
            s.put("protocol", svc.protocol.as_str());
            s.put_extensions(&svc.extensions, keys::SERVICE)?;
            services.push(Value::Table(s.table));
        }
        t.put("services", services);
    }
    t.put_extensions(&cap.extensions, keys::CAPABILITY)?;
    top.put_table("capability", t);

    let mut t = top.sub("image");
    write_image_ref(&mut t, "disk", desc.image.disk.as_ref())?;
    write_image_ref(&mut t, "memory_state", desc.image.memory_state.as_ref())?;
    t.put_extensions(&desc.image.extensions, keys::IMAGE)?;
    top.put_table("image", t);

    top.put_extensions(&desc.extensions, keys::TOP)?;
    Ok(top.table)
}

/// Writes `desc` as TOML: top-level values in schema order, then one table per section.
pub(crate) fn to_toml_string(desc: &Description) -> Result<String, TomlError> {
    let mut table = to_toml_table(desc)?;
    // Emit the pieces one key at a time, in the schema's order rather than alphabetically.
    // Plain values must all precede the first `[table]` header, so they are collected first.
    let mut order: Vec<String> = keys::TOP.iter().map(|k| k.to_string()).collect();
    order.extend(desc.extensions.keys().cloned());
    let mut values = String::new();
    let mut tables = String::new();
    for key in order {
        let Some(value) = table.remove(&key) else {
            continue;
        };
        let mut one = Table::new();
        one.insert(key.clone(), value);
        let text = toml::to_string(&one).map_err(|e| TomlError::Unrepresentable {
            path: key.clone(),
            reason: one_line(&e.to_string()),
        })?;
        if text.starts_with('[') {
            if !tables.is_empty() {
                tables.push('\n');
            }
            tables.push_str(&text);
        } else {
            values.push_str(&text);
        }
    }
    if !tables.is_empty() {
        values.push('\n');
    }
    values.push_str(&tables);
    Ok(values)
}
