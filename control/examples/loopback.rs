//! Joins a multicast group on loopback, sends a few datagrams to it and prints what came
//! back. Needs no root and no host configuration.
//!
//! ```text
//! cargo run -p multipoint-control --example loopback
//! ```

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use multipoint_control::{transports, Direction, Interface, MultipointSocket, Roles, Transport};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("transports:");
    for t in transports() {
        println!(
            "  {:<20} control {:<10} data {:<10} {}",
            t.name,
            t.control_plane,
            t.data_plane,
            match (t.available, t.control_plane) {
                (false, _) => "not available",
                (true, multipoint_control::Plane::Rooted) => "sockets: rooted::Root, rooted::Leaf",
                (true, _) => "sockets: MultipointSocket",
            }
        );
    }

    // A free port for the group: bind a throwaway socket to port 0 and take its port.
    let port = std::net::UdpSocket::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let group = SocketAddr::from((Ipv4Addr::new(239, 255, 0, 1), port));

    let socket = MultipointSocket::new(Transport::Udp4Multicast, Roles::LEAF)?;
    socket.set_interface(Interface::LOOPBACK_V4)?;
    socket.set_scope(0)?; // this host only
    socket.set_loopback(true)?;
    socket.set_recv_hop_limit(true)?;
    let membership = socket.join_leaf(group, Direction::Both, None)?;
    println!(
        "\njoined {group} on {} (scope {}, loopback {})",
        socket.interface()?,
        socket.scope()?,
        if socket.loopback()? { "on" } else { "off" }
    );

    let mut buf = [0u8; 1500];
    for i in 1..=3 {
        let text = format!("hello #{i} from multipoint");
        membership.send(text.as_bytes())?;
        match socket.recv_timeout(&mut buf, Duration::from_secs(2))? {
            Some(d) => println!(
                "received {} bytes from {} (ttl {}): {}",
                d.len,
                d.source,
                d.hop_limit.map_or("?".into(), |t| t.to_string()),
                String::from_utf8_lossy(&buf[..d.len])
            ),
            None => return Err(format!("datagram #{i} did not come back within 2 s").into()),
        }
    }
    membership.leave()?;
    println!("left {group}");
    Ok(())
}
