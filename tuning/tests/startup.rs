#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! `warn_at_startup` logs one `tracing` warning per item that is not ok, with its fix,
//! and audits only once per process. (Its own test binary: the `Once` is per process.)

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use multipoint_tuning::{audit, warn_at_startup, Host, Needs, Verdict};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

/// Collects the `fix` field of every warning.
#[derive(Default, Clone)]
struct Warnings {
    fixes: Arc<Mutex<Vec<String>>>,
    next_id: Arc<AtomicUsize>,
}

struct FixVisitor(Option<String>);

impl Visit for FixVisitor {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "fix" {
            self.0 = Some(format!("{value:?}"));
        }
    }
}

impl Subscriber for Warnings {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(self.next_id.fetch_add(1, Ordering::Relaxed) as u64 + 1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        if *event.metadata().level() == Level::WARN {
            let mut v = FixVisitor(None);
            event.record(&mut v);
            self.fixes.lock().unwrap().push(v.0.unwrap_or_default());
        }
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

#[test]
fn each_setting_that_hurts_is_one_warning_with_its_fix_and_only_once() {
    let needs = Needs::default();
    let expected: Vec<String> = audit(&Host::system(), &needs)
        .into_iter()
        .filter(|i| i.verdict != Verdict::Ok)
        .map(|i| i.fix)
        .collect();
    let warnings = Warnings::default();
    tracing::subscriber::with_default(warnings.clone(), || {
        warn_at_startup(&needs);
        warn_at_startup(&needs);
    });
    let fixes = warnings.fixes.lock().unwrap().clone();
    assert_eq!(fixes, expected, "one warning per item that is not ok, once");
    assert!(fixes.iter().all(|f| !f.is_empty()));
}
