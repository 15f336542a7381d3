//! Helpers shared by the workspace's tests and test fixtures. Nothing in
//! the service uses this crate.
//!
//! It owns one problem: choosing a loopback port to hand to a *child
//! process* (etcd, Prometheus, another `stratus`) that must listen on a
//! port it is told. Binding port 0, reading the port and closing the socket
//! is racy: the kernel hands the same port out again as the ephemeral port
//! of the next outgoing connection or `:0` listener anywhere on the
//! machine, often before the child binds it. [`loopback_port`] instead picks
//! ports *below* the kernel's ephemeral range, which the kernel never
//! assigns on its own, so only another caller of this function could take
//! them: within one process a counter prevents that, and different
//! processes start at different offsets.

use std::net::{Ipv4Addr, TcpListener};
use std::sync::atomic::{AtomicU32, Ordering};

/// Lowest port handed out.
const FIRST: u32 = 10_000;

/// The first port of the kernel's ephemeral range (Linux:
/// `/proc/sys/net/ipv4/ip_local_port_range`; 32768 when unknown).
fn ephemeral_start() -> u32 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

/// A TCP port on 127.0.0.1 that nothing listens on now and that the kernel
/// will not hand out by itself (see the module docs). Each call in a
/// process returns a different port.
///
/// # Panics
///
/// When no port in the range is free (a test fixture cannot go on).
pub fn loopback_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let end = ephemeral_start().min(65_536);
    if end < FIRST + 1_000 {
        // An unusual kernel setting leaves no room below the ephemeral
        // range: fall back to a port the kernel chooses.
        return TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("bind 127.0.0.1:0");
    }
    let span = end - FIRST;
    // Processes start far apart; calls within one process step by one.
    let start = std::process::id().wrapping_mul(7_919) % span;
    for _ in 0..span {
        let i = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = FIRST + (start + i) % span;
        let Ok(port) = u16::try_from(port) else {
            continue;
        };
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {FIRST}..{end}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_free_and_below_the_ephemeral_range() {
        let ports: Vec<u16> = (0..50).map(|_| loopback_port()).collect();
        let mut sorted = ports.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), ports.len(), "{ports:?}");
        let end = ephemeral_start();
        for p in ports {
            assert!(u32::from(p) >= FIRST && u32::from(p) < end, "{p}");
            TcpListener::bind((Ipv4Addr::LOCALHOST, p)).expect("port is free");
        }
    }
}
