//! Free loopback ports chosen at run time.

use std::net::TcpListener;

/// A port the OS just handed out (bound then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}
