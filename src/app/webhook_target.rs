//! Where webhooks may point: http(s) URLs whose host resolves to public addresses only,
//! unless `PARLEY_WEBHOOK_ALLOW_PRIVATE` is set (so a tenant cannot make parley call into
//! the network it runs in). The URL is checked when a webhook is created; the addresses are
//! checked again when each connection is made ([`PublicResolver`]), so a name that resolves
//! elsewhere later (DNS rebinding) cannot lead the request inside.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

fn private_v4(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        // 0/8 "this network", 100.64/10 shared (CGN), 198.18/15 benchmarking
        || o[0] == 0
        || (o[0] == 100 && (64..128).contains(&o[1]))
        || (o[0] == 198 && (18..20).contains(&o[1]))
        // 192.0.0/24 IETF protocol assignments, 192.88.99/24 6to4 relays
        || (o[0] == 192 && o[1] == 0 && o[2] == 0)
        || (o[0] == 192 && o[1] == 88 && o[2] == 99)
        // 240/4 reserved
        || o[0] >= 240
}

/// The IPv4 address an IPv6 address carries, where it carries one parley would reach:
/// IPv4-mapped (`::ffff:a.b.c.d`), IPv4-compatible (`::a.b.c.d`), NAT64 (`64:ff9b::/96`),
/// 6to4 (`2002:AABB:CCDD::/16`).
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let v4 = |hi: u16, lo: u16| Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    if s[..6] == [0; 6] {
        return Some(v4(s[6], s[7]));
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return Some(v4(s[6], s[7]));
    }
    if s[0] == 0x2002 {
        return Some(v4(s[1], s[2]));
    }
    None
}

fn private_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    if let Some(v4) = embedded_v4(ip) {
        return private_v4(v4);
    }
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (s[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
        || (s[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
        || (s[0] & 0xffc0) == 0xfec0 // site-local fec0::/10
        || (s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1) // local-use NAT64 64:ff9b:1::/48
        || (s[0] == 0x100 && s[1..4] == [0, 0, 0]) // discard 100::/64
        || (s[0] == 0x2001 && s[1] == 0) // Teredo 2001::/32 (an IPv4 address in disguise)
        || (s[0] == 0x2001 && s[1] == 0xdb8) // documentation 2001:db8::/32
        || (s[0] == 0x2001 && (s[1] & 0xfff0) == 0x10) // ORCHID 2001:10::/28
        || (s[0] == 0x2001 && s[1] == 2 && s[2] == 0) // benchmarking 2001:2::/48
}

pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => private_v4(v4),
        IpAddr::V6(v6) => private_v6(v6),
    }
}

/// The HTTP client's resolver for webhook requests: the name's addresses with every private,
/// loopback and reserved one removed, at the moment of connecting. A name that resolves to
/// none but those is an error, and no connection is made.
#[derive(Debug, Clone, Copy)]
pub struct PublicResolver {
    pub allow_private: bool,
}

impl PublicResolver {
    /// The addresses of `host` parley may connect to.
    #[tracing::instrument(skip_all)]
    pub async fn resolve(&self, host: &str) -> std::io::Result<Vec<SocketAddr>> {
        // A name that does not resolve and one that resolves only to refused addresses give
        // the same answer: a tenant learns nothing about the names inside parley's network.
        let all: Vec<SocketAddr> = tokio::net::lookup_host((host, 0))
            .await
            .map(Iterator::collect)
            .unwrap_or_default();
        let allowed: Vec<SocketAddr> = all
            .into_iter()
            .filter(|a| self.allow_private || !is_private(a.ip()))
            .collect();
        if allowed.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                not_public(host),
            ));
        }
        Ok(allowed)
    }
}

impl reqwest::dns::Resolve for PublicResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let this = *self;
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs = PublicResolver::resolve(&this, &host).await?;
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Before a request: the scheme, and an address written into the URL (which no resolver
/// sees). Names are checked by [`PublicResolver`] when the connection is made.
pub fn check_before_request(url: &str, allow_private: bool) -> Result<(), String> {
    let parsed = url::Url::parse(url).map_err(|_| format!("not a URL: {url:?}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err("webhook URLs are http:// or https://".into());
    }
    let literal = match parsed.host() {
        Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
        Some(url::Host::Domain(_)) => None,
        None => return Err("the URL names no host".into()),
    };
    match literal {
        Some(ip) if !allow_private && is_private(ip) => {
            Err(format!("{ip} is a loopback, private or reserved address"))
        }
        _ => Ok(()),
    }
}

/// `Err` with a reason when the URL is not one parley may call.
pub async fn check(url: &str, allow_private: bool) -> Result<(), String> {
    check_before_request(url, allow_private)?;
    if allow_private {
        return Ok(());
    }
    let parsed = url::Url::parse(url).map_err(|_| format!("not a URL: {url:?}"))?;
    let Some(url::Host::Domain(host)) = parsed.host() else {
        // An address written into the URL was checked above.
        return Ok(());
    };
    // When registered, every address of the name must be public (when connecting, the
    // resolver drops the others).
    let port = parsed.port_or_known_default().unwrap_or(443);
    let addrs: Vec<IpAddr> = tokio::net::lookup_host((host, port))
        .await
        .map(|found| found.map(|a| a.ip()).collect())
        .unwrap_or_default();
    if addrs.is_empty() || addrs.into_iter().any(is_private) {
        return Err(not_public(host));
    }
    Ok(())
}

/// The one answer for a name parley will not call, whether it does not resolve or resolves
/// to a loopback, private or reserved address.
fn not_public(host: &str) -> String {
    format!("{host} does not resolve to public addresses only")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_ranges_are_recognised() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::127.0.0.1",
            "64:ff9b::a00:1",
            "64:ff9b:1::1",
            "2002:7f00:1::1",
            "2002:c0a8:101::1",
            "fec0::1",
            "2001:db8::1",
            "2001:0:4136:e378::1",
            "240.0.0.1",
            "255.255.255.255",
            "192.0.0.8",
            "224.0.0.1",
        ] {
            assert!(is_private(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "93.184.216.34",
            "2606:2800:220:1:248:1893:25c8:1946",
            "64:ff9b::5db8:d822",
            "2002:5db8:d822::1",
        ] {
            assert!(!is_private(ip.parse().unwrap()), "{ip}");
        }
    }

    #[tokio::test]
    async fn the_resolver_drops_private_addresses_when_connecting() {
        let strict = PublicResolver {
            allow_private: false,
        };
        let err = strict.resolve("localhost").await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied);
        let open = PublicResolver {
            allow_private: true,
        };
        assert!(!open.resolve("localhost").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn loopback_targets_need_the_setting() {
        assert!(check("http://127.0.0.1:9/hook", false).await.is_err());
        assert!(check("http://[::1]:9/hook", false).await.is_err());
        assert!(check("http://127.0.0.1:9/hook", true).await.is_ok());
        assert!(check("ftp://example.com/", true).await.is_err());
    }
}
