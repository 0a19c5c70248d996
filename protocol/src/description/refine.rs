//! *Refine*: narrow a description's requirements or add new ones, producing its next version.
//!
//! A refinement may only make the set of hosts a workspace fits smaller: narrowing a range,
//! shortening the life cycle, or adding a requirement where none was. Widening a range or changing
//! a value that is already set is rejected, naming the field, because a signed description's
//! consumers may rely on every earlier promise still holding.
//!
//! # Key grammar (`vwnet desc refine --set KEY=VALUE`)
//! ```text
//! refinement := key "=" value       set or narrow
//!             | key "+=" value      add to a collection
//! hardware.ram=MIN-MAX              MiB; within the current range, or the first range
//! hardware.ram.min=N                MiB; raise the minimum (up to the current max)
//! hardware.ram.max=N                MiB; lower the maximum (down to the current min)
//! hardware.vcpus=MIN-MAX | hardware.vcpus.min=N | hardware.vcpus.max=N
//! hardware.devices+=NAME            e.g. cdrom
//! software.kernel=TEXT              only if unset (same value: no change)
//! software.distribution=TEXT        only if unset
//! software.library_signature=TEXT   only if unset
//! software.programs+=NAME@VERSION   e.g. blast@2.2; a listed program keeps its version
//! network.nics+=NAME@ADDRESS        ADDRESS: dhcp | pool:NAME | static:IP/PREFIX
//! capability.startup=PROGRAM        only if unset
//! capability.services+=NAME:PORT/PROTO   e.g. gram:2119/tcp
//! life_cycle=SPAN                   e.g. 7days; only shorter than the current one
//! ```
//! Whitespace around keys and values is ignored.

use std::fmt;
use std::str::FromStr;

use super::model::{AddressMode, Bounds, Description, Nic, Service, Transport};
use crate::time::{Span, Timestamp};

/// How a refinement changes a range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeEdit {
    /// Raise the minimum.
    Min(u64),
    /// Lower the maximum.
    Max(u64),
    /// Replace the range by one inside it (or set the first range).
    Both(Bounds),
}

/// One parsed `KEY=VALUE` or `KEY+=VALUE` refinement.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refinement {
    /// `hardware.ram[.min|.max]=...` (MiB).
    Ram(RangeEdit),
    /// `hardware.vcpus[.min|.max]=...`.
    Vcpus(RangeEdit),
    /// `hardware.devices+=NAME`.
    AddDevice(String),
    /// `software.kernel=TEXT`.
    Kernel(String),
    /// `software.distribution=TEXT`.
    Distribution(String),
    /// `software.library_signature=TEXT`.
    LibrarySignature(String),
    /// `software.programs+=NAME@VERSION`.
    AddProgram {
        /// Program name.
        name: String,
        /// Program version.
        version: String,
    },
    /// `network.nics+=NAME@ADDRESS`.
    AddNic {
        /// Interface name.
        name: String,
        /// How it gets its address.
        address: AddressMode,
    },
    /// `capability.startup=PROGRAM`.
    Startup(String),
    /// `capability.services+=NAME:PORT/PROTO`.
    AddService {
        /// Service name.
        name: String,
        /// Port (not 0).
        port: u16,
        /// Transport protocol.
        protocol: Transport,
    },
    /// `life_cycle=SPAN`.
    LifeCycle(Span),
}

/// Why a `KEY=VALUE` string is not a refinement.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RefinementParseError {
    /// No `=` in the input.
    #[error("{0:?}: expected KEY=VALUE or KEY+=VALUE")]
    Syntax(String),
    /// The key is not one that can be refined with this operator.
    #[error("{key}: cannot be refined with {op:?} (see `Refinement` for the keys)")]
    UnknownKey {
        /// The key.
        key: String,
        /// `=` or `+=`.
        op: &'static str,
    },
    /// The value is not valid for the key.
    #[error("{key}: {reason}")]
    BadValue {
        /// The key.
        key: String,
        /// What is wrong with the value.
        reason: String,
    },
}

fn bad(key: &str, reason: impl Into<String>) -> RefinementParseError {
    RefinementParseError::BadValue {
        key: key.to_string(),
        reason: reason.into(),
    }
}

fn number(key: &str, value: &str) -> Result<u64, RefinementParseError> {
    value
        .parse()
        .map_err(|_| bad(key, format!("{value:?} is not a whole number")))
}

fn range(key: &str, value: &str) -> Result<Bounds, RefinementParseError> {
    let (min, max) = value
        .split_once('-')
        .ok_or_else(|| bad(key, format!("{value:?} is not a range MIN-MAX")))?;
    Ok(Bounds::new(
        number(key, min.trim())?,
        number(key, max.trim())?,
    ))
}

fn text(key: &str, value: &str) -> Result<String, RefinementParseError> {
    if value.is_empty() {
        Err(bad(key, "value must not be empty"))
    } else {
        Ok(value.to_string())
    }
}

fn pair<'a>(
    key: &str,
    value: &'a str,
    sep: char,
    form: &str,
) -> Result<(&'a str, &'a str), RefinementParseError> {
    match value.split_once(sep) {
        Some((a, b)) if !a.is_empty() && !b.is_empty() => Ok((a, b)),
        _ => Err(bad(key, format!("{value:?} is not of the form {form}"))),
    }
}

impl FromStr for Refinement {
    type Err = RefinementParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (key, value) = s
            .split_once('=')
            .ok_or_else(|| RefinementParseError::Syntax(s.to_string()))?;
        let (key, add) = match key.trim_end().strip_suffix('+') {
            Some(k) => (k.trim(), true),
            None => (key.trim(), false),
        };
        let value = value.trim();
        let k = key;
        Ok(match (key, add) {
            ("hardware.ram", false) => Refinement::Ram(RangeEdit::Both(range(k, value)?)),
            ("hardware.ram.min", false) => Refinement::Ram(RangeEdit::Min(number(k, value)?)),
            ("hardware.ram.max", false) => Refinement::Ram(RangeEdit::Max(number(k, value)?)),
            ("hardware.vcpus", false) => Refinement::Vcpus(RangeEdit::Both(range(k, value)?)),
            ("hardware.vcpus.min", false) => Refinement::Vcpus(RangeEdit::Min(number(k, value)?)),
            ("hardware.vcpus.max", false) => Refinement::Vcpus(RangeEdit::Max(number(k, value)?)),
            ("hardware.devices", true) => Refinement::AddDevice(text(k, value)?),
            ("software.kernel", false) => Refinement::Kernel(text(k, value)?),
            ("software.distribution", false) => Refinement::Distribution(text(k, value)?),
            ("software.library_signature", false) => Refinement::LibrarySignature(text(k, value)?),
            ("software.programs", true) => {
                let (name, version) = pair(k, value, '@', "NAME@VERSION")?;
                Refinement::AddProgram {
                    name: name.to_string(),
                    version: version.to_string(),
                }
            }
            ("network.nics", true) => {
                let (name, address) = pair(k, value, '@', "NAME@ADDRESS")?;
                Refinement::AddNic {
                    name: name.to_string(),
                    address: address.parse().map_err(|e| bad(k, format!("{e}")))?,
                }
            }
            ("capability.startup", false) => Refinement::Startup(text(k, value)?),
            ("capability.services", true) => {
                let (name, port_proto) = value
                    .rsplit_once(':')
                    .filter(|(n, _)| !n.is_empty())
                    .ok_or_else(|| {
                        bad(k, format!("{value:?} is not of the form NAME:PORT/PROTO"))
                    })?;
                let (port, protocol) = pair(k, port_proto, '/', "NAME:PORT/PROTO")?;
                let port: u16 = port
                    .parse()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| bad(k, format!("{port:?} is not a port (1-65535)")))?;
                Refinement::AddService {
                    name: name.to_string(),
                    port,
                    protocol: protocol.parse().map_err(|e| bad(k, format!("{e}")))?,
                }
            }
            ("life_cycle", false) => {
                let span: Span = value.parse().map_err(|e| bad(k, format!("{e}")))?;
                if span.as_secs() == 0 {
                    return Err(bad(k, "must be longer than zero"));
                }
                Refinement::LifeCycle(span)
            }
            (_, add) => {
                return Err(RefinementParseError::UnknownKey {
                    key: key.to_string(),
                    op: if add { "+=" } else { "=" },
                });
            }
        })
    }
}

impl Refinement {
    /// The field this refinement is about, as a dotted path.
    pub fn field(&self) -> &'static str {
        match self {
            Refinement::Ram(_) => "hardware.ram",
            Refinement::Vcpus(_) => "hardware.vcpus",
            Refinement::AddDevice(_) => "hardware.devices",
            Refinement::Kernel(_) => "software.kernel",
            Refinement::Distribution(_) => "software.distribution",
            Refinement::LibrarySignature(_) => "software.library_signature",
            Refinement::AddProgram { .. } => "software.programs",
            Refinement::AddNic { .. } => "network.nics",
            Refinement::Startup(_) => "capability.startup",
            Refinement::AddService { .. } => "capability.services",
            Refinement::LifeCycle(_) => "life_cycle",
        }
    }
}

impl fmt::Display for Refinement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let field = self.field();
        match self {
            Refinement::Ram(edit) | Refinement::Vcpus(edit) => match edit {
                RangeEdit::Min(n) => write!(f, "{field}.min={n}"),
                RangeEdit::Max(n) => write!(f, "{field}.max={n}"),
                RangeEdit::Both(b) => write!(f, "{field}={}-{}", b.min, b.max),
            },
            Refinement::AddDevice(v) => write!(f, "{field}+={v}"),
            Refinement::Kernel(v)
            | Refinement::Distribution(v)
            | Refinement::LibrarySignature(v)
            | Refinement::Startup(v) => write!(f, "{field}={v}"),
            Refinement::AddProgram { name, version } => write!(f, "{field}+={name}@{version}"),
            Refinement::AddNic { name, address } => write!(f, "{field}+={name}@{address}"),
            Refinement::AddService {
                name,
                port,
                protocol,
            } => write!(f, "{field}+={name}:{port}/{protocol}"),
            Refinement::LifeCycle(span) => write!(f, "{field}={span}"),
        }
    }
}

/// Why a refinement was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RefineError {
    /// The refinement would widen a range or lengthen the life cycle.
    #[error("{field}: {reason}; refining only narrows")]
    Widens {
        /// The field.
        field: &'static str,
        /// How it would widen.
        reason: String,
    },
    /// The refinement changes a value that is already set.
    #[error("{field}: {reason}")]
    Contradicts {
        /// The field.
        field: &'static str,
        /// The existing value and the requested one.
        reason: String,
    },
    /// The refinement makes no sense for this description (e.g. an empty range).
    #[error("{field}: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// None of the refinements changes anything, so there is no new version.
    #[error("the refinements change nothing")]
    NoChange,
}

fn refine_range(
    field: &'static str,
    unit: &str,
    current: &mut Option<Bounds>,
    edit: RangeEdit,
) -> Result<bool, RefineError> {
    let new = match (*current, edit) {
        (None, RangeEdit::Both(b)) => b,
        (None, _) => {
            return Err(RefineError::Invalid {
                field,
                reason: format!("there is no range to narrow yet; set {field}=MIN-MAX"),
            });
        }
        (Some(c), RangeEdit::Both(b)) => {
            if b.min < c.min {
                return Err(RefineError::Widens {
                    field,
                    reason: format!(
                        "min {}{unit} is below the current min {}{unit}",
                        b.min, c.min
                    ),
                });
            }
            if b.max > c.max {
                return Err(RefineError::Widens {
                    field,
                    reason: format!(
                        "max {}{unit} is above the current max {}{unit}",
                        b.max, c.max
                    ),
                });
            }
            b
        }
        (Some(c), RangeEdit::Min(min)) => {
            if min < c.min {
                return Err(RefineError::Widens {
                    field,
                    reason: format!("min {min}{unit} is below the current min {}{unit}", c.min),
                });
            }
            Bounds::new(min, c.max)
        }
        (Some(c), RangeEdit::Max(max)) => {
            if max > c.max {
                return Err(RefineError::Widens {
                    field,
                    reason: format!("max {max}{unit} is above the current max {}{unit}", c.max),
                });
            }
            Bounds::new(c.min, max)
        }
    };
    if new.min > new.max {
        return Err(RefineError::Invalid {
            field,
            reason: format!("min {}{unit} is above max {}{unit}", new.min, new.max),
        });
    }
    if new.min == 0 {
        return Err(RefineError::Invalid {
            field,
            reason: format!("min must be at least 1{unit}"),
        });
    }
    let changed = *current != Some(new);
    *current = Some(new);
    Ok(changed)
}

fn refine_text(
    field: &'static str,
    current: &mut Option<String>,
    new: &str,
) -> Result<bool, RefineError> {
    match current {
        None => {
            *current = Some(new.to_string());
            Ok(true)
        }
        Some(c) if c == new => Ok(false),
        Some(c) => Err(RefineError::Contradicts {
            field,
            reason: format!("is already {c:?}; refining cannot change it to {new:?}"),
        }),
    }
}

fn apply(desc: &mut Description, r: &Refinement) -> Result<bool, RefineError> {
    let field = r.field();
    match r {
        Refinement::Ram(edit) => refine_range(field, " MiB", &mut desc.hardware.ram, *edit),
        Refinement::Vcpus(edit) => refine_range(field, "", &mut desc.hardware.vcpus, *edit),
        Refinement::AddDevice(name) => Ok(desc.hardware.devices.insert(name.clone())),
        Refinement::Kernel(v) => refine_text(field, &mut desc.software.kernel, v),
        Refinement::Distribution(v) => refine_text(field, &mut desc.software.distribution, v),
        Refinement::LibrarySignature(v) => {
            refine_text(field, &mut desc.software.library_signature, v)
        }
        Refinement::Startup(v) => refine_text(field, &mut desc.capability.startup, v),
        Refinement::AddProgram { name, version } => match desc.software.programs.get(name) {
            None => {
                desc.software.programs.insert(name.clone(), version.clone());
                Ok(true)
            }
            Some(v) if v == version => Ok(false),
            Some(v) => Err(RefineError::Contradicts {
                field,
                reason: format!("{name} is already at version {v:?}, not {version:?}"),
            }),
        },
        Refinement::AddNic { name, address } => {
            match desc.network.nics.iter().find(|n| &n.name == name) {
                None => {
                    desc.network.nics.push(Nic {
                        name: name.clone(),
                        address: address.clone(),
                        extensions: Default::default(),
                    });
                    Ok(true)
                }
                Some(n) if &n.address == address => Ok(false),
                Some(n) => Err(RefineError::Contradicts {
                    field,
                    reason: format!(
                        "{name} already gets its address by {}, not {address}",
                        n.address
                    ),
                }),
            }
        }
        Refinement::AddService {
            name,
            port,
            protocol,
        } => {
            let services = &mut desc.capability.services;
            match services
                .iter()
                .find(|s| s.port == *port && s.protocol == *protocol)
            {
                None => {
                    services.push(Service {
                        name: name.clone(),
                        port: *port,
                        protocol: *protocol,
                        extensions: Default::default(),
                    });
                    Ok(true)
                }
                Some(s) if &s.name == name => Ok(false),
                Some(s) => Err(RefineError::Contradicts {
                    field,
                    reason: format!("{port}/{protocol} is already used by {:?}", s.name),
                }),
            }
        }
        Refinement::LifeCycle(span) => match desc.life_cycle {
            Some(current) if *span > current => Err(RefineError::Widens {
                field,
                reason: format!("{span} is longer than the current {current}"),
            }),
            current => {
                desc.life_cycle = Some(*span);
                Ok(current != Some(*span))
            }
        },
    }
}

/// Applies `refinements` in order and returns the next version of `desc` (see
/// [`Description::next_version`]). All or nothing: the first rejected refinement is the error.
pub fn refine(
    desc: &Description,
    refinements: &[Refinement],
    now: Timestamp,
) -> Result<Description, RefineError> {
    let mut next = desc.next_version(now);
    let mut changed = false;
    for r in refinements {
        changed |= apply(&mut next, r)?;
    }
    if changed {
        Ok(next)
    } else {
        Err(RefineError::NoChange)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::sample;
    use super::*;

    fn r(s: &str) -> Refinement {
        s.parse().unwrap()
    }

    #[test]
    fn grammar_parses_and_displays_back() {
        for s in [
            "hardware.ram=1024-2048",
            "hardware.ram.min=1024",
            "hardware.vcpus.max=2",
            "hardware.devices+=cdrom",
            "software.kernel=6.1",
            "software.programs+=blast@2.2",
            "network.nics+=eth1@pool:grid",
            "network.nics+=eth2@static:10.0.0.5/24",
            "capability.services+=gram:2119/tcp",
            "capability.startup=/opt/run.sh",
        ] {
            assert_eq!(r(s).to_string(), s);
        }
        assert_eq!(r(" hardware.ram.min = 1024 "), r("hardware.ram.min=1024"));
        assert!(matches!(
            "hardware.ram+=5".parse::<Refinement>(),
            Err(RefinementParseError::UnknownKey { .. })
        ));
        assert!("software.programs+=blast".parse::<Refinement>().is_err());
        assert!(
            "capability.services+=x:0/tcp"
                .parse::<Refinement>()
                .is_err()
        );
        assert!("name".parse::<Refinement>().is_err());
        assert!("name=x".parse::<Refinement>().is_err());
    }

    #[test]
    fn narrowing_makes_a_new_version() {
        let d = sample();
        let now = Timestamp::from_unix_secs(1_796_000_000);
        let n = refine(
            &d,
            &[
                r("hardware.ram.min=1024"),
                r("software.programs+=hmmer@3.4"),
            ],
            now,
        )
        .unwrap();
        assert_eq!(n.hardware.ram, Some(Bounds::new(1024, 2048)));
        assert_eq!(n.software.programs["hmmer"], "3.4");
        assert_eq!(n.version, 2);
        assert_eq!(n.previous, Some(d.digest()));
        assert_eq!(n.last_modified, now);
        n.validate().unwrap();
    }

    #[test]
    fn widening_and_contradicting_are_rejected() {
        let d = sample();
        let now = Timestamp::from_unix_secs(1_796_000_000);
        let err = refine(&d, &[r("hardware.ram.max=4096")], now).unwrap_err();
        assert_eq!(
            err.to_string(),
            "hardware.ram: max 4096 MiB is above the current max 2048 MiB; refining only narrows"
        );
        let err = refine(&d, &[r("software.kernel=5.10")], now).unwrap_err();
        assert!(matches!(
            err,
            RefineError::Contradicts {
                field: "software.kernel",
                ..
            }
        ));
        let err = refine(&d, &[r("hardware.ram.min=4096")], now).unwrap_err();
        assert!(matches!(
            err,
            RefineError::Invalid {
                field: "hardware.ram",
                ..
            }
        ));
        let err = refine(&d, &[r("life_cycle=60days")], now).unwrap_err();
        assert!(matches!(
            err,
            RefineError::Widens {
                field: "life_cycle",
                ..
            }
        ));
        assert_eq!(
            refine(&d, &[r("software.kernel=6.1")], now).unwrap_err(),
            RefineError::NoChange
        );
    }
}
