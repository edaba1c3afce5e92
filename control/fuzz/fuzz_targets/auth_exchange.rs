//! The authentication exchange of rooted admission, driven through the sans-IO cores
//! (`multipoint_control::rooted::fuzzing`): the first byte picks the side (even: a keyed
//! root that accepted a connection; odd: a keyed leaf that asked to join), the rest is
//! decoded into the frames its peer sends. The peer cannot know the key, so whatever it
//! sends, nobody gets in: the root never admits, the leaf never enters a session; and
//! nothing panics.

#![no_main]

use libfuzzer_sys::fuzz_target;
use multipoint_control::rooted::fuzzing::{leaf_exchange, root_exchange};

fuzz_target!(|data: &[u8]| {
    let (side, frames) = data.split_first().map_or((0, &[][..]), |(s, r)| (*s, r));
    let outcome = if side % 2 == 0 {
        root_exchange(frames)
    } else {
        leaf_exchange(frames)
    };
    assert!(
        !outcome.admitted,
        "in without the key ({} side): {outcome:?}",
        if side % 2 == 0 { "root" } else { "leaf" }
    );
});
