//! Fuzzes the rooted control protocol's codec (`rooted::proto`), every frame kind.
//!
//! The first byte picks how the rest is read (see `multipoint_control_fuzz` for the
//! checks):
//!
//! - 0 to 63: as a TCP stream of frames, decoded off the front ([`check_stream`]);
//! - 64 to 127: as a frame type byte and a body, wrapped in a correct length prefix and
//!   version, so every type's body decoder is reached directly ([`check_body`]);
//! - 128 to 255: as the fields of a frame of any kind, which is encoded and must decode
//!   back to itself, or fail to encode for a reason the encoder gives ([`check_encoded`]).
//!
//! Whatever the bytes, nothing panics; every decoded frame re-encodes to the bytes it
//! came from.

#![no_main]

use libfuzzer_sys::fuzz_target;
use multipoint_control::rooted::proto::{DataPlan, Frame};
use multipoint_control::{Direction, Transport};
use multipoint_control_fuzz::{
    check_body, check_encoded, check_stream, on_the_wire, ControlInput, Input,
};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode {
        0..=63 => {
            check_stream(rest);
        }
        64..=127 => {
            if let Some((&ty, body)) = rest.split_first() {
                check_body(ty, body);
            }
        }
        128..=255 => {
            let mut input = Input::new(rest);
            let (frame, expected) = frame(&mut input);
            check_encoded(&frame, &expected, input.rest);
        }
    }
});

/// A frame of any kind from the input, and the frame as the wire carries it (IPv6 flow
/// labels are not sent).
fn frame(input: &mut Input<'_>) -> (Frame, Frame) {
    let kind = input.u8();
    match kind % 7 {
        0 => {
            let (transport, direction) = (transport(input), direction(input));
            let data = input.opt_socket_addr();
            let name = input.text();
            let wire = Frame::Join {
                transport,
                direction,
                data: data.map(on_the_wire),
                name: name.clone(),
            };
            let frame = Frame::Join {
                transport,
                direction,
                data,
                name,
            };
            (frame, wire)
        }
        1 => {
            let session = input.array();
            let timeout_ms = input.u32();
            let next_sequence = input.u64();
            let (plan, wire_plan) = if input.u8() & 1 == 0 {
                let (root, uplink) = (input.socket_addr(), input.opt_socket_addr());
                (
                    DataPlan::Unicast { root, uplink },
                    DataPlan::Unicast {
                        root: on_the_wire(root),
                        uplink: uplink.map(on_the_wire),
                    },
                )
            } else {
                let (group, source) = (input.socket_addr(), input.ip());
                (
                    DataPlan::Multicast { group, source },
                    DataPlan::Multicast {
                        group: on_the_wire(group),
                        source,
                    },
                )
            };
            let admit = |plan| Frame::Admit {
                session,
                timeout_ms,
                next_sequence,
                plan,
            };
            (admit(plan), admit(wire_plan))
        }
        2 => same(Frame::Refuse {
            reason: input.text(),
        }),
        3 => same(Frame::Invite {
            transport: transport(input),
            direction: direction(input),
        }),
        4 => same(Frame::Leave {
            reason: input.text(),
        }),
        5 => same(Frame::Heartbeat),
        _ => same(Frame::End {
            reason: input.text(),
        }),
    }
}

fn same(frame: Frame) -> (Frame, Frame) {
    (frame.clone(), frame)
}

/// Any transport, the IP multicast ones (which a Join or Invite cannot carry) included.
fn transport(input: &mut Input<'_>) -> Transport {
    match input.u8() % 4 {
        0 => Transport::RootedUnicast,
        1 => Transport::AdmittedMulticast,
        2 => Transport::Udp4Multicast,
        _ => Transport::Udp6Multicast,
    }
}

fn direction(input: &mut Input<'_>) -> Direction {
    match input.u8() % 3 {
        0 => Direction::SenderOnly,
        1 => Direction::ReceiverOnly,
        _ => Direction::Both,
    }
}
