//! Memory: transparent hugepages.

use super::{Check, Input};
use crate::item::Item;

const ENABLED: &str = "sys/kernel/mm/transparent_hugepage/enabled";
const DEFRAG: &str = "sys/kernel/mm/transparent_hugepage/defrag";

/// The bracketed choice of a sysfs selector (`always [madvise] never` → `madvise`).
pub(crate) fn selected(text: &str) -> Option<&str> {
    let start = text.find('[')? + 1;
    let end = start + text[start..].find(']')?;
    Some(&text[start..end])
}

pub(super) fn transparent_hugepage(input: &Input<'_>) -> Item {
    let check = Check::new(
        "mm.transparent_hugepage",
        "enabled: madvise or never; defrag: not always",
    );
    let enabled = input.host.read(ENABLED);
    let defrag = input.host.read(DEFRAG);
    let Some(enabled_text) = enabled else {
        return check.ok(
            "absent",
            "this kernel has no transparent hugepages, so neither khugepaged nor fault-time \
             compaction can stall the data plane",
        );
    };
    let en = selected(&enabled_text).unwrap_or(&enabled_text).to_owned();
    let df = defrag
        .as_deref()
        .map(|d| selected(d).unwrap_or(d).to_owned());
    let value = match &df {
        Some(d) => format!("enabled={en} defrag={d}"),
        None => format!("enabled={en}"),
    };
    let mut fixes = Vec::new();
    if en == "always" {
        fixes.push(format!("echo madvise > /{ENABLED}"));
    }
    if df.as_deref() == Some("always") {
        fixes.push(format!("echo madvise > /{DEFRAG}"));
    }
    if fixes.is_empty() {
        return check.ok(
            value,
            "huge pages only where a program asks (madvise), so the data plane's buffers are \
             never collapsed or compacted behind its back",
        );
    }
    check.warn(
        value,
        "with 'always' the kernel backs any large mapping with huge pages: a page fault may \
         stop to compact memory (defrag=always), and khugepaged rewrites mappings in the \
         background, which stalls the thread touching them for up to milliseconds; the data \
         plane's buffers are touched once at start-up and gain nothing from huge pages",
        fixes.join("; "),
    )
}
