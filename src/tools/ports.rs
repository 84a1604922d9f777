//! Free loopback ports for the listeners of the processes `crawler dev`, `crawler bench` and
//! the tests start: chosen where no outgoing connection can take them before the child binds.

/// A free loopback port for a listener started later: one that binds now, taken at random
/// from below the kernel's ephemeral range and never handed out twice by this process.
///
/// A port from `bind(:0)` is an ephemeral one, and every outgoing connection (each etcd
/// client, each HTTP request) also takes its source port from that range, so between the
/// release and the child's bind a connection could take it ("address already in use").
/// Ports below the range are only ever taken by listeners.
pub fn free_port() -> std::io::Result<u16> {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let Some(range) = listener_ports() else {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        return Ok(listener.local_addr()?.port());
    };
    let mut given = GIVEN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    for _ in 0..1_000 {
        let port = rand::random_range(range.clone());
        if !given.contains(&port) && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.push(port);
            return Ok(port);
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AddrInUse,
        format!("no free port in {range:?}"),
    ))
}

/// The ports below the kernel's ephemeral range (at most 20,000 of them, from 1024 up), or
/// `None` when the range cannot be read or leaves too few.
fn listener_ports() -> Option<std::ops::Range<u16>> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let low: u16 = text.split_whitespace().next()?.parse().ok()?;
    let start = low.saturating_sub(20_000).max(1024);
    (low.saturating_sub(start) >= 1_000).then_some(start..low)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_below_the_ephemeral_range_and_never_repeat() {
        let ports: Vec<u16> = (0..200).map(|_| free_port().expect("port")).collect();
        let mut unique = ports.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), ports.len(), "a port was handed out twice");
        if let Some(range) = listener_ports() {
            assert!(
                ports.iter().all(|p| range.contains(p)),
                "{ports:?} not in {range:?}"
            );
        }
    }
}
