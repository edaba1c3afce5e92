//! Feeds arbitrary datagrams to the MoldUDP64 re-request parser.
//!
//! Whatever the bytes, parsing must not panic. Then:
//!
//! - the header accessors read exactly the bytes at their offsets (zero when missing);
//! - a datagram is accepted exactly when it is 20 bytes whose requested range does not run
//!   past the last sequence number, and a rejection says which of the two failed;
//! - an accepted request round-trips through `ReRequestRepr` (parse, emit) to the same
//!   bytes, also into a longer buffer, and refuses a buffer one byte short;
//! - any 20 bytes of the input read as a request and emitted again give back those bytes
//!   exactly when the request is accepted.

#![no_main]

use libfuzzer_sys::fuzz_target;
use multipoint_dataplane::wire::{ReRequest, ReRequestRepr, Session, WireError, REREQUEST_LEN};

fuzz_target!(|data: &[u8]| {
    check_datagram(data);
    // The same decoder on a 20-byte window of the input, so every run also exercises an
    // exactly sized request, whatever length libFuzzer chose.
    if let Some(window) = data.get(..REREQUEST_LEN) {
        check_datagram(window);
        check_repr_from_fields(window);
    }
});

/// Reads `N` bytes at `at`, or zeros if the datagram is too short (what the views promise).
fn field<const N: usize>(data: &[u8], at: usize) -> [u8; N] {
    data.get(at..at + N)
        .map(|b| b.try_into().unwrap_or([0; N]))
        .unwrap_or([0; N])
}

fn check_datagram(data: &[u8]) {
    let session: [u8; 10] = field(data, 0);
    let sequence = u64::from_be_bytes(field(data, 10));
    let count = u16::from_be_bytes(field(data, 18));

    let view = ReRequest::new_unchecked(data);
    assert_eq!(view.session().as_bytes(), &session);
    assert_eq!(view.sequence(), sequence);
    assert_eq!(view.count(), count);
    assert_eq!(view.as_bytes(), data);

    let overflows = sequence.checked_add(u64::from(count)).is_none();
    match ReRequest::new_checked(data) {
        Ok(request) => {
            assert_eq!(data.len(), REREQUEST_LEN);
            assert!(!overflows);
            let repr = ReRequestRepr::parse(&request).expect("a checked request parses");
            assert_eq!(
                repr,
                ReRequestRepr {
                    session: Session::from_bytes(session),
                    sequence,
                    count
                }
            );
            assert_eq!(repr.buffer_len(), REREQUEST_LEN);
            let mut out = [0x5Au8; REREQUEST_LEN + 7];
            let written = repr.emit(&mut out).expect("a parsed request emits");
            assert_eq!(&out[..written], data);
            assert_eq!(
                out[written..],
                [0x5A; 7],
                "nothing written after the request"
            );
            assert!(repr.emit(&mut out[..REREQUEST_LEN - 1]).is_err());
            assert_eq!(request.into_inner(), data);
        }
        Err(WireError::ReRequestLength { len }) => {
            assert_eq!(len, data.len());
            assert_ne!(len, REREQUEST_LEN);
        }
        Err(WireError::SequenceOverflow {
            sequence: s,
            count: c,
        }) => {
            assert_eq!(data.len(), REREQUEST_LEN, "the length is checked first");
            assert_eq!((s, c), (sequence, count));
            assert!(overflows);
        }
        Err(other) => panic!("a re-request parse cannot fail with {other:?}"),
    }
    // The owned parse agrees with the view.
    assert_eq!(
        ReRequestRepr::parse(&view).is_ok(),
        data.len() == REREQUEST_LEN && !overflows
    );
}

/// A request made from any fields emits exactly when its range fits, and then parses back
/// to itself.
fn check_repr_from_fields(window: &[u8]) {
    let repr = ReRequestRepr {
        session: Session::from_bytes(field(window, 0)),
        sequence: u64::from_be_bytes(field(window, 10)),
        count: u16::from_be_bytes(field(window, 18)),
    };
    let mut out = [0u8; REREQUEST_LEN];
    match repr.emit(&mut out) {
        Ok(len) => {
            assert_eq!(len, REREQUEST_LEN);
            assert_eq!(&out[..], window);
            let back = ReRequest::new_checked(&out[..]).expect("an emitted request checks");
            assert_eq!(ReRequestRepr::parse(&back), Ok(repr));
        }
        Err(err) => {
            assert!(matches!(err, WireError::SequenceOverflow { .. }), "{err:?}");
            assert!(repr.sequence.checked_add(u64::from(repr.count)).is_none());
        }
    }
}
