//! The addresses of one interface (`getifaddrs(3)`, through `nix`'s safe iterator).

use std::net::IpAddr;

/// The IP addresses of interface `name` (empty when they cannot be read; tested through
/// `link::dsr::interface_addrs`).
pub(crate) fn interface_addrs(name: &str) -> Vec<IpAddr> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    addrs
        .filter(|a| a.interface_name == name)
        .filter_map(|a| {
            let sa = a.address?;
            if let Some(v4) = sa.as_sockaddr_in() {
                Some(IpAddr::V4(v4.ip()))
            } else {
                sa.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
            }
        })
        .collect()
}
