//! Free loopback ports chosen at run time.

use std::net::TcpListener;

/// Where ports are picked: below Linux's ephemeral range (32768-60999 by default), so no
/// outgoing connection's source port can take one between this check and the server's bind
/// (with the ephemeral `bind(0)` a busy parallel test run lost that race now and then).
const RANGE: std::ops::Range<u16> = 20_000..32_000;

/// A port nothing listens on right now, picked at random in [`RANGE`].
pub fn free_port() -> u16 {
    for _ in 0..1000 {
        let port = fastrand::u16(RANGE);
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {RANGE:?}")
}
