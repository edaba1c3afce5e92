//! CPU lists as the kernel writes them (`0-3,8,10-11`) and as `isolcpus=` takes them
//! (with leading flags: `managed_irq,domain,1-3`).

use std::collections::BTreeSet;

/// A set of CPU numbers.
pub(crate) type CpuSet = BTreeSet<u32>;

/// Parses `0-3,8`; empty text (or the kernel's `(null)`) is the empty set; `None` for
/// anything else it cannot read.
pub(crate) fn parse(text: &str) -> Option<CpuSet> {
    let text = text.trim();
    let mut set = CpuSet::new();
    if text.is_empty() || text == "(null)" {
        return Some(set);
    }
    for part in text.split(',') {
        let part = part.trim();
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u32, u32) = (a.parse().ok()?, b.parse().ok()?);
                if a > b || b - a > 65_536 {
                    return None;
                }
                set.extend(a..=b);
            }
            None => {
                set.insert(part.parse().ok()?);
            }
        }
    }
    Some(set)
}

/// Parses the value of `isolcpus=`: optional flags (`nohz`, `domain`, `managed_irq`)
/// before the list.
pub(crate) fn parse_isolcpus(value: &str) -> Option<CpuSet> {
    let list: Vec<&str> = value
        .split(',')
        .skip_while(|p| p.chars().next().is_some_and(|c| c.is_ascii_alphabetic()))
        .collect();
    parse(&list.join(","))
}

/// Formats a set the kernel's way (`0-3,8`); `none` when empty.
pub(crate) fn format(set: &CpuSet) -> String {
    if set.is_empty() {
        return "none".to_owned();
    }
    let mut parts = Vec::new();
    let mut iter = set.iter().copied().peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek() == Some(&(end + 1)) {
            end += 1;
            iter.next();
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
    }
    parts.join(",")
}

/// The value of kernel parameter `key` in `/proc/cmdline` (the last one wins, as in the
/// kernel; parameters after `--` belong to init and are ignored).
pub(crate) fn cmdline_value<'a>(cmdline: &'a str, key: &str) -> Option<&'a str> {
    cmdline
        .split_whitespace()
        .take_while(|w| *w != "--")
        .filter_map(|w| w.split_once('='))
        .filter(|(k, _)| *k == key)
        .map(|(_, v)| v)
        .last()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_round_trip_through_the_kernel_format() {
        let set = parse("0-3,8,10-11").unwrap();
        assert_eq!(set.len(), 7);
        assert_eq!(format(&set), "0-3,8,10-11");
        assert_eq!(parse("(null)").unwrap().len(), 0);
        assert!(parse("x-1").is_none());
    }

    #[test]
    fn isolcpus_flags_are_skipped() {
        assert_eq!(
            format(&parse_isolcpus("managed_irq,domain,1-3").unwrap()),
            "1-3"
        );
        assert_eq!(format(&parse_isolcpus("2,4").unwrap()), "2,4");
    }

    #[test]
    fn init_arguments_are_not_kernel_parameters() {
        let line = "quiet isolcpus=1 nohz_full=1 -- isolcpus=5";
        assert_eq!(cmdline_value(line, "isolcpus"), Some("1"));
        assert_eq!(cmdline_value(line, "rcu_nocbs"), None);
    }
}
