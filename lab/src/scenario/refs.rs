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

impl Refs {
    /// Resolves every reference in `s`.
    pub fn resolve(&self, s: &str) -> Result<String, String> {
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

    fn lookup(&self, name: &str) -> Result<String, String> {
        let parts: Vec<&str> = name.split('.').collect();
        match parts.as_slice() {
            ["ip", host] => self
                .ips
                .get(*host)
                .and_then(|v| v.first())
                .map(|(_, ip)| ip.to_string())
                .ok_or_else(|| format!("{{{name}}}: host {host:?} has no address in this file")),
            ["ip", host, iface] => self
                .ips
                .get(*host)
                .and_then(|v| v.iter().find(|(i, _)| i == iface))
                .map(|(_, ip)| ip.to_string())
                .ok_or_else(|| {
                    format!("{{{name}}}: host {host:?} has no address on {iface:?} in this file")
                }),
            ["mac", host] => {
                let iface = self
                    .ifaces
                    .get(*host)
                    .and_then(|v| v.first())
                    .ok_or_else(|| format!("{{{name}}}: {host:?} is not a host with a link"))?;
                self.mac(host, iface, name)
            }
            ["mac", host, iface] => {
                let known = self
                    .ifaces
                    .get(*host)
                    .is_some_and(|v| v.iter().any(|i| i == iface));
                if !known {
                    return Err(format!(
                        "{{{name}}}: host {host:?} has no interface {iface:?} (interfaces: {})",
                        self.ifaces
                            .get(*host)
                            .map(|v| v.join(", "))
                            .unwrap_or_default()
                    ));
                }
                self.mac(host, iface, name)
            }
            [var] => self.vars.get(*var).cloned().ok_or_else(|| {
                format!(
                    "{{{name}}}: unknown reference; expected a [vars] name ({}), {{ip.HOST}}, {{ip.HOST.IFACE}}, {{mac.HOST}} or {{mac.HOST.IFACE}}",
                    self.vars.keys().cloned().collect::<Vec<_>>().join(", ")
                )
            }),
            _ => Err(format!(
                "{{{name}}}: unknown reference; expected {{NAME}}, {{ip.HOST}}, {{ip.HOST.IFACE}}, {{mac.HOST}} or {{mac.HOST.IFACE}}"
            )),
        }
    }

    fn mac(&self, host: &str, iface: &str, name: &str) -> Result<String, String> {
        match &self.macs {
            None => Ok(crate::decode::fmt_mac(&PLACEHOLDER_MAC)),
            Some(m) => m
                .get(&(host.to_string(), iface.to_string()))
                .map(crate::decode::fmt_mac)
                .ok_or_else(|| format!("{{{name}}}: no MAC known for {host}:{iface}")),
        }
    }
}
