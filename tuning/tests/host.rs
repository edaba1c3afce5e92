#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The audit on the machine running the tests: it must complete and return every item,
//! whatever the machine's settings. (It reads files and sets up one small io_uring; it
//! changes nothing.)

use multipoint_tuning::{audit, Host, Needs, ITEM_NAMES};

#[test]
fn the_audit_of_this_host_completes_with_every_item() {
    let items = audit(&Host::system(), &Needs::default());
    let names: Vec<&str> = items.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ITEM_NAMES);
    for item in &items {
        assert!(!item.value.is_empty(), "{item}");
        println!("{item}");
    }
}
