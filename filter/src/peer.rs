//! The client address as Envoy saw the connection (`source.address`), without the port.

use std::net::{IpAddr, SocketAddr};

/// The IP of `1.2.3.4:5678`, `[::1]:8080`, `1.2.3.4` or `::1`; `None` for anything else
/// (a pipe path, an internal listener name, garbage).
pub fn client_ip(source_address: &str) -> Option<IpAddr> {
    let s = source_address.trim();
    if let Ok(sock) = s.parse::<SocketAddr>() {
        return Some(sock.ip());
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    // `[fe80::1%eth0]:80` and friends: take what is inside the brackets, drop a zone id.
    let inner = s.strip_prefix('[')?.split_once(']')?.0;
    inner.split('%').next()?.parse::<IpAddr>().ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn ip(s: &str) -> Option<String> {
        client_ip(s).map(|ip| ip.to_string())
    }

    #[test]
    fn ipv4() {
        assert_eq!(ip("10.1.2.3:54321").as_deref(), Some("10.1.2.3"));
        assert_eq!(ip("10.1.2.3").as_deref(), Some("10.1.2.3"));
    }

    #[test]
    fn ipv6() {
        assert_eq!(ip("[::1]:8080").as_deref(), Some("::1"));
        assert_eq!(ip("[2001:db8::7]:443").as_deref(), Some("2001:db8::7"));
        assert_eq!(ip("2001:db8::7").as_deref(), Some("2001:db8::7"));
        assert_eq!(ip("[fe80::1%eth0]:80").as_deref(), Some("fe80::1"));
        assert_eq!(ip("[::ffff:1.2.3.4]:1").as_deref(), Some("::ffff:1.2.3.4"));
    }

    #[test]
    fn garbage() {
        for s in [
            "",
            "localhost:80",
            "/var/run/envoy.sock",
            "envoy://internal_client_address/",
            "[::1",
            "1.2.3.4.5:6",
            "[nope]:1",
        ] {
            assert_eq!(ip(s), None, "{s}");
        }
    }
}
