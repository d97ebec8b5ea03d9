//! References: `{NAME}`, `{ip.HOST}`, `{mac.HOST}` and their resolution.

use std::collections::BTreeMap;
use std::net::IpAddr;

/// Placeholder MAC used for `{mac.*}` before the topology exists.
pub const PLACEHOLDER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0];

/// Resolves `{NAME}`, `{ip.HOST}`, `{ip.HOST.IFACE}`, `{mac.HOST}` and `{mac.HOST.IFACE}`.
///
/// A reference is `{` + letters, digits, `_`, `.` or `-` + `}`; any other brace (an nft block
/// such as `{ type filter hook ... }`) is left alone.
#[derive(Clone, Debug, Default)]
pub struct Refs {
    pub vars: BTreeMap<String, String>,
    /// host → (iface, address) in file order.
    pub ips: BTreeMap<String, Vec<(String, IpAddr)>>,
    /// host → interfaces, the default one first.
    pub ifaces: BTreeMap<String, Vec<String>>,
    /// (host, iface) → MAC, once the topology exists; `None` = placeholder mode.
    pub macs: Option<BTreeMap<(String, String), [u8; 6]>>,
}

/// A reference that cannot be resolved; the message names it and says what is accepted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RefError {
    /// `{ip.HOST}` / `{ip.HOST.IFACE}` of a host without that address.
    #[error(
        "{{{reference}}}: host {host:?} has no address{} in this file",
        on_iface(iface)
    )]
    NoAddress {
        reference: String,
        host: String,
        iface: Option<String>,
    },
    /// `{mac.HOST}` of a node without a link.
    #[error("{{{reference}}}: {host:?} is not a host with a link")]
    NoLink { reference: String, host: String },
    /// `{mac.HOST.IFACE}` of an interface the host does not have.
    #[error("{{{reference}}}: host {host:?} has no interface {iface:?} (interfaces: {})", known.join(", "))]
    NoInterface {
        reference: String,
        host: String,
        iface: String,
        known: Vec<String>,
    },
    /// A MAC asked for after the topology exists that it does not have.
    #[error("{{{reference}}}: no MAC known for {host}:{iface}")]
    NoMac {
        reference: String,
        host: String,
        iface: String,
    },
    /// `{NAME}` that is not in `[vars]`.
    #[error("{{{reference}}}: unknown reference; expected a [vars] name ({}), {{ip.HOST}}, {{ip.HOST.IFACE}}, {{mac.HOST}} or {{mac.HOST.IFACE}}", vars.join(", "))]
    UnknownVar {
        reference: String,
        vars: Vec<String>,
    },
    /// Anything else between braces that looks like a reference.
    #[error(
        "{{{reference}}}: unknown reference; expected {{NAME}}, {{ip.HOST}}, {{ip.HOST.IFACE}}, {{mac.HOST}} or {{mac.HOST.IFACE}}"
    )]
    Unknown { reference: String },
}

fn on_iface(iface: &Option<String>) -> String {
    iface
        .as_ref()
        .map(|i| format!(" on {i:?}"))
        .unwrap_or_default()
}

/// Validation collects messages: a reference error becomes its message.
impl From<RefError> for String {
    fn from(e: RefError) -> String {
        e.to_string()
    }
}

impl Refs {
    /// Resolves every reference in `s`.
    pub fn resolve(&self, s: &str) -> Result<String, RefError> {
        let mut out = String::with_capacity(s.len());
        let mut rest = s;
        while let Some(open) = rest.find('{') {
            out.push_str(&rest[..open]);
            let after = &rest[open + 1..];
            let close = after.find('}');
            let inner = close.map(|c| &after[..c]);
            match inner {
                Some(name)
                    if !name.is_empty()
                        && name
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c)) =>
                {
                    out.push_str(&self.lookup(name)?);
                    rest = &after[name.len() + 1..];
                }
                _ => {
                    out.push('{');
                    rest = after;
                }
            }
        }
        out.push_str(rest);
        Ok(out)
    }

    fn lookup(&self, name: &str) -> Result<String, RefError> {
        let reference = || name.to_string();
        let parts: Vec<&str> = name.split('.').collect();
        match parts.as_slice() {
            ["ip", host] => self
                .ips
                .get(*host)
                .and_then(|v| v.first())
                .map(|(_, ip)| ip.to_string())
                .ok_or_else(|| RefError::NoAddress {
                    reference: reference(),
                    host: host.to_string(),
                    iface: None,
                }),
            ["ip", host, iface] => self
                .ips
                .get(*host)
                .and_then(|v| v.iter().find(|(i, _)| i == iface))
                .map(|(_, ip)| ip.to_string())
                .ok_or_else(|| RefError::NoAddress {
                    reference: reference(),
                    host: host.to_string(),
                    iface: Some(iface.to_string()),
                }),
            ["mac", host] => {
                let iface = self
                    .ifaces
                    .get(*host)
                    .and_then(|v| v.first())
                    .ok_or_else(|| RefError::NoLink {
                        reference: reference(),
                        host: host.to_string(),
                    })?;
                self.mac(host, iface, name)
            }
            ["mac", host, iface] => {
                let known = self.ifaces.get(*host).cloned().unwrap_or_default();
                if !known.iter().any(|i| i == iface) {
                    return Err(RefError::NoInterface {
                        reference: reference(),
                        host: host.to_string(),
                        iface: iface.to_string(),
                        known,
                    });
                }
                self.mac(host, iface, name)
            }
            [var] => self
                .vars
                .get(*var)
                .cloned()
                .ok_or_else(|| RefError::UnknownVar {
                    reference: reference(),
                    vars: self.vars.keys().cloned().collect(),
                }),
            _ => Err(RefError::Unknown {
                reference: reference(),
            }),
        }
    }

    fn mac(&self, host: &str, iface: &str, name: &str) -> Result<String, RefError> {
        match &self.macs {
            None => Ok(crate::decode::fmt_mac(&PLACEHOLDER_MAC)),
            Some(m) => m
                .get(&(host.to_string(), iface.to_string()))
                .map(crate::decode::fmt_mac)
                .ok_or_else(|| RefError::NoMac {
                    reference: name.to_string(),
                    host: host.to_string(),
                    iface: iface.to_string(),
                }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unresolvable_references_are_typed_errors_that_name_them() {
        let mut refs = Refs::default();
        refs.vars.insert("port".into(), "80".into());
        refs.ips.insert(
            "web1".into(),
            vec![("eth0".into(), "10.0.0.3".parse().unwrap())],
        );
        refs.ifaces.insert("web1".into(), vec!["eth0".into()]);
        assert_eq!(refs.resolve("{ip.web1}:{port}"), Ok("10.0.0.3:80".into()));
        let e = refs.resolve("{ip.web1.eth1}").unwrap_err();
        assert_eq!(
            e,
            RefError::NoAddress {
                reference: "ip.web1.eth1".into(),
                host: "web1".into(),
                iface: Some("eth1".into()),
            }
        );
        assert_eq!(
            e.to_string(),
            "{ip.web1.eth1}: host \"web1\" has no address on \"eth1\" in this file"
        );
        let e = refs.resolve("{mac.web1.eth7}").unwrap_err();
        assert!(matches!(e, RefError::NoInterface { ref known, .. } if known == &["eth0"]));
        let e = refs.resolve("{nope}").unwrap_err();
        assert!(
            e.to_string().contains("expected a [vars] name (port)"),
            "{e}"
        );
        // Braces that are no reference (an nft block) stay as they are.
        assert_eq!(
            refs.resolve("{ type filter hook }"),
            Ok("{ type filter hook }".into())
        );
    }
}
