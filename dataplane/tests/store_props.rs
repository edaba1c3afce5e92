//! Property tests of the retransmission store against a model: whatever the sizes of the
//! store, the messages and the packets, after every packet the store holds exactly the
//! longest run of newest messages within both bounds (the messages and the bytes), and
//! every answer is the valid packet of whole messages the model says, byte for byte.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::VecDeque;

use multipoint_dataplane::core::store::{Answer, RetransmitStore, StoreConfig};
use multipoint_dataplane::wire::{Packet, PacketKind, PacketRepr, Session, HEADER_LEN};
use proptest::prelude::*;

const SESSION: Session = Session::from_bytes(*b"STOREPROPS");

/// A request: a sequence number as an offset around the stored range, a count and a
/// reply buffer length.
type Ask = (i64, u16, usize);

fn stream() -> impl Strategy<Value = (usize, usize, Vec<Vec<u16>>, Vec<Ask>)> {
    (
        1usize..40,
        1usize..600,
        prop::collection::vec(prop::collection::vec(0u16..120, 1..12), 1..40),
        prop::collection::vec((-3i64..45, 0u16..20, 0usize..400), 1..40),
    )
}

/// Message `s` of `len` bytes: its sequence number's bytes, repeated.
fn message(s: u64, len: u16) -> Vec<u8> {
    s.to_le_bytes()
        .iter()
        .copied()
        .cycle()
        .take(usize::from(len))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn the_store_holds_the_newest_messages_within_both_bounds_and_answers_them_exactly(
        (messages, bytes, packets, asks) in stream()
    ) {
        let mut store = RetransmitStore::new(&StoreConfig { messages, bytes }).unwrap();
        let mut model: VecDeque<(u64, Vec<u8>)> = VecDeque::new();
        let mut model_bytes = 0usize;
        let mut next = 1u64;
        for lens in &packets {
            let msgs: Vec<Vec<u8>> =
                lens.iter().enumerate().map(|(i, &l)| message(next + i as u64, l)).collect();
            let repr = PacketRepr {
                session: SESSION,
                sequence: next,
                kind: PacketKind::Data,
                messages: msgs.clone(),
            };
            let mut buf = vec![0; repr.buffer_len()];
            let len = repr.emit(&mut buf).unwrap();
            store.append_packet(&buf[..len]);
            for (i, m) in msgs.into_iter().enumerate() {
                model_bytes += m.len() + 2;
                model.push_back((next + i as u64, m));
            }
            next += lens.len() as u64;
            while model.len() > messages || model_bytes > bytes {
                let (_, m) = model.pop_front().unwrap();
                model_bytes -= m.len() + 2;
            }
            let first = model.front().map_or(next, |(s, _)| *s);
            prop_assert_eq!((store.first(), store.next()), (first, next));
            prop_assert_eq!(store.stored_bytes(), model_bytes as u64);
            let stats = store.stats();
            prop_assert_eq!(stats.messages - stats.evicted, model.len() as u64);
        }
        let first = store.first();
        for &(offset, count, room) in &asks {
            let s = u64::try_from(first as i64 + offset).unwrap_or(0);
            let mut buf = vec![0xA5; room];
            let got = store.answer(&SESSION, s, count, &mut buf);
            if s >= next {
                prop_assert_eq!(got, Answer::NotYetSent);
                continue;
            }
            if s < first {
                prop_assert_eq!(got, Answer::NoLongerStored);
                continue;
            }
            let mut want = Vec::new();
            let mut len = HEADER_LEN;
            for (_, m) in model.iter().skip((s - first) as usize).take(usize::from(count.max(1))) {
                if len + 2 + m.len() > room {
                    break;
                }
                len += 2 + m.len();
                want.push(m.clone());
            }
            match got {
                Answer::Written { len: written, messages } => {
                    prop_assert_eq!(written, len);
                    prop_assert_eq!(usize::from(messages), want.len());
                    let packet = Packet::new_checked(&buf[..written]).unwrap();
                    let repr = PacketRepr::parse(&packet).unwrap();
                    prop_assert_eq!(repr.session, SESSION);
                    prop_assert_eq!(repr.sequence, s);
                    prop_assert_eq!(repr.messages, want);
                }
                Answer::TooLarge { needed } => {
                    prop_assert!(want.is_empty());
                    let m = &model[(s - first) as usize].1;
                    prop_assert_eq!(needed, HEADER_LEN + 2 + m.len());
                    prop_assert!(needed > room);
                }
                other => prop_assert!(false, "{:?} for {} in {}..{}", other, s, first, next),
            }
        }
    }
}
