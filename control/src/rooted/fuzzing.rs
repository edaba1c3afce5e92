//! Entry points for the fuzz targets in `control/fuzz`: the authentication exchange of
//! admission, driven through the sans-IO root and leaf cores with frames an attacker
//! chose. Not a stable API; hidden from the docs.
//!
//! Each takes arbitrary bytes, decodes as many frames from them as it can (skipping a
//! byte where no frame decodes), feeds them to a core with a key that the input cannot
//! know, and says how far the peer got. The cores must never panic, and the invariant the
//! targets assert is that without the key nobody gets in: a root never admits, and a
//! leaf never enters a session.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::auth::{Key, Nonces};
use super::core::leaf::{LeafCore, LeafNote};
use super::core::root::{RootCore, RootNote};
use super::core::{ConnId, Machine, Output, Transmit};
use super::leaf::LeafConfig;
use super::proto::{decode, DataPlan, Frame};
use super::root::{RootConfig, RootHooks};
use crate::transport::Transport;
use crate::Direction;

/// How far an exchange driven by attacker-chosen frames got.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Frames decoded from the input and fed in.
    pub frames: usize,
    /// The exchange reached the challenge: the root sent one, or the leaf answered one
    /// with its proof.
    pub challenged: bool,
    /// The peer was admitted (root) or entered a session (leaf): never without the key.
    pub admitted: bool,
}

/// The key the cores hold; the input cannot know it.
fn key() -> Option<Key> {
    Key::new([0x5A; 32]).ok()
}

/// Frames decoded from `input`, in order; a byte where no frame decodes is skipped.
fn frames(mut input: &[u8]) -> Vec<Frame> {
    let mut out = Vec::new();
    while !input.is_empty() && out.len() < 64 {
        match decode(input) {
            Ok(Some((frame, used))) if used > 0 => {
                out.push(frame);
                input = input.get(used..).unwrap_or_default();
            }
            _ => input = input.get(1..).unwrap_or_default(),
        }
    }
    out
}

struct AdmitAll;
impl RootHooks for AdmitAll {}

/// A keyed root accepts one connection and is fed the frames of `input` on it, with
/// time passing between them.
pub fn root_exchange(input: &[u8]) -> Outcome {
    let mut config = RootConfig::new(*b"FUZZ      ");
    config.plan = Some(DataPlan::Unicast {
        root: SocketAddr::from(([10, 0, 0, 1], 7300)),
        uplink: None,
    });
    config.key = key();
    let mut root = RootCore::new(Transport::RootedUnicast, config, Box::new(AdmitAll))
        .with_nonces(Nonces::counter(3));
    let now = Instant::now();
    let conn = root.handle_accepted(SocketAddr::from(([10, 0, 0, 2], 40000)), now);
    feed(
        &mut root,
        conn,
        input,
        now,
        |output, outcome| match output {
            Output::Note(RootNote::Listed(_))
            | Output::Conn(_, Transmit::Send(Frame::Admit { .. })) => outcome.admitted = true,
            Output::Conn(_, Transmit::Send(Frame::Challenge { .. })) => outcome.challenged = true,
            _ => {}
        },
    )
}

/// A keyed leaf joins a root and is fed the frames of `input` as the root's answers.
pub fn leaf_exchange(input: &[u8]) -> Outcome {
    let mut config = LeafConfig::new("fuzz");
    config.data = Some(SocketAddr::from(([10, 0, 0, 2], 9000)));
    config.key = key();
    let mut leaf = LeafCore::new(Transport::RootedUnicast, config).with_nonces(Nonces::counter(4));
    let now = Instant::now();
    let root = SocketAddr::from(([10, 0, 0, 1], 7000));
    if leaf
        .handle_join(root, Direction::ReceiverOnly, now)
        .is_err()
    {
        return Outcome::default();
    }
    let mut conn = None;
    while let Some(output) = leaf.poll_output() {
        if let Output::Conn(id, Transmit::Connect(_)) = output {
            conn = Some(id);
        }
    }
    let Some(conn) = conn else {
        return Outcome::default();
    };
    leaf.handle_connected(conn, now);
    let mut outcome = feed(
        &mut leaf,
        conn,
        input,
        now,
        |output, outcome| match output {
            Output::Note(LeafNote::Admitted { .. }) => outcome.admitted = true,
            Output::Conn(_, Transmit::Send(Frame::Proof { .. })) => outcome.challenged = true,
            _ => {}
        },
    );
    outcome.admitted |= leaf.in_session();
    outcome
}

/// Feeds the frames of `input` to `machine` on `conn`, 10 ms apart, and every output to
/// `seen`.
fn feed<M: Machine>(
    machine: &mut M,
    conn: ConnId,
    input: &[u8],
    mut now: Instant,
    mut seen: impl FnMut(Output<M::Note>, &mut Outcome),
) -> Outcome {
    let mut outcome = Outcome::default();
    for frame in frames(input) {
        outcome.frames += 1;
        machine.handle_frame(conn, frame, now);
        now += Duration::from_millis(10);
        machine.handle_timeout(now);
        while let Some(output) = machine.poll_output() {
            seen(output, &mut outcome);
        }
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_without_the_key_never_get_anyone_in() {
        // A leaf's Join, a made-up Proof, and an Admit out of turn.
        let mut bytes = Vec::new();
        for frame in [
            Frame::Join {
                transport: Transport::RootedUnicast,
                direction: Direction::ReceiverOnly,
                data: Some(SocketAddr::from(([10, 0, 0, 2], 9000))),
                name: "eve".into(),
            },
            Frame::Proof {
                nonce: [1; 32],
                mac: [2; 32],
            },
        ] {
            frame.encode(&mut bytes).unwrap_or_else(|e| panic!("{e}"));
        }
        let root = root_exchange(&bytes);
        assert_eq!(root.frames, 2);
        assert!(root.challenged && !root.admitted, "{root:?}");
        // The root's side of the exchange, made up: a challenge, then a proof and an admit.
        let mut bytes = Vec::new();
        for frame in [
            Frame::Challenge { nonce: [9; 32] },
            Frame::RootProof { mac: [3; 32] },
        ] {
            frame.encode(&mut bytes).unwrap_or_else(|e| panic!("{e}"));
        }
        let leaf = leaf_exchange(&bytes);
        assert!(leaf.challenged && !leaf.admitted, "{leaf:?}");
        assert_eq!(root_exchange(&[0xFF; 64]), Outcome::default());
    }
}
