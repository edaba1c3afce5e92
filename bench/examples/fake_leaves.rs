//! Fake leaves for measuring what a root's limits do: opens N control connections to a
//! root from one loopback address and asks to join on each (receive-only, each naming a
//! data port of its own on that address, where nothing listens), then holds them open,
//! saying nothing more, until killed. Prints how many were admitted and refused.
//!
//! `cargo run --example fake_leaves -- ROOT_ADDR N [FROM_IP]` (FROM_IP default
//! 127.0.0.2).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read as _, Write as _};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;

use multipoint_control::rooted::proto::{decode, Frame};
use multipoint_control::socket2::{Domain, Socket, Type};
use multipoint_control::{Direction, Transport};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let root: SocketAddr = args.get(1).expect("ROOT_ADDR").parse().unwrap();
    let n: u16 = args.get(2).expect("N").parse().unwrap();
    let from: IpAddr = args
        .get(3)
        .map_or("127.0.0.2", String::as_str)
        .parse()
        .unwrap();
    let mut held = Vec::new();
    let (mut admitted, mut refused) = (0, 0);
    for i in 0..n {
        let socket = Socket::new(Domain::for_address(root), Type::STREAM, None).unwrap();
        socket.bind(&SocketAddr::new(from, 0).into()).unwrap();
        socket.connect(&root.into()).unwrap();
        let mut stream = TcpStream::from(socket);
        let mut bytes = Vec::new();
        Frame::Join {
            transport: Transport::RootedUnicast,
            direction: Direction::ReceiverOnly,
            data: Some(SocketAddr::new(from, 30_000 + i)),
            name: format!("fake-{i}"),
        }
        .encode(&mut bytes)
        .unwrap();
        let _ = stream.write_all(&bytes);
        stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 512];
        let answer = loop {
            if let Ok(Some((frame, _))) = decode(&buf) {
                break Some(frame);
            }
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => break None,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        match answer {
            Some(Frame::Admit { .. }) => admitted += 1,
            _ => refused += 1,
        }
        held.push(stream);
    }
    println!("fake leaves: {admitted} admitted, {refused} refused or unanswered");
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
