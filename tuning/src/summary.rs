//! What a program that runs the audit itself tells its user: one line when something is
//! not ok ([`Summary`]), and on request the full text of those items ([`findings`]).
//!
//! Both are plain text, without colour or other escape codes, so they read the same in a
//! terminal, a pipe and a log.

use std::fmt;

use crate::item::{Item, Verdict};

/// How many items of an audit have each verdict.
///
/// Its `Display` is the one line to print when something is not ok, and nothing when all
/// is ok; [`Summary::line`] gives the same as an `Option`.
///
/// ```
/// use multipoint_tuning::Summary;
///
/// let summary = Summary { ok: 16, warn: 4, critical: 2 };
/// assert_eq!(
///     summary.to_string(),
///     "host: 2 critical, 4 warnings (multipoint-tune check explains them)"
/// );
/// assert_eq!(Summary { ok: 22, warn: 0, critical: 0 }.line(), None);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Summary {
    /// Items that are ok.
    pub ok: usize,
    /// Items that warn.
    pub warn: usize,
    /// Items that are critical.
    pub critical: usize,
}

impl Summary {
    /// Counts the verdicts of `items`.
    pub fn of(items: &[Item]) -> Summary {
        let mut summary = Summary::default();
        for item in items {
            match item.verdict {
                Verdict::Ok => summary.ok += 1,
                Verdict::Warn => summary.warn += 1,
                Verdict::Critical => summary.critical += 1,
            }
        }
        summary
    }

    /// Whether no item warns or is critical.
    pub fn all_ok(&self) -> bool {
        self.warn == 0 && self.critical == 0
    }

    /// The one line (as `Display` writes it), or `None` when all is ok.
    pub fn line(&self) -> Option<String> {
        (!self.all_ok()).then(|| self.to_string())
    }
}

impl fmt::Display for Summary {
    /// `host: 6 warnings (multipoint-tune check explains them)`, critical items first
    /// (`host: 2 critical, 4 warnings (…)`), `1 warning … explains it` for one; nothing at
    /// all when all is ok.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.all_ok() {
            return Ok(());
        }
        let mut counts = Vec::new();
        if self.critical > 0 {
            counts.push(format!("{} critical", self.critical));
        }
        match self.warn {
            0 => {}
            1 => counts.push("1 warning".to_owned()),
            n => counts.push(format!("{n} warnings")),
        }
        let them = if self.warn + self.critical == 1 {
            "it"
        } else {
            "them"
        };
        write!(
            f,
            "host: {} (multipoint-tune check explains {them})",
            counts.join(", ")
        )
    }
}

/// The full text of the items of `items` that are not ok, in their order: one block per
/// item (verdict and name, then value, wanted, why and fix, one per line, as
/// `multipoint-tune check` prints them), a blank line between blocks. Empty when all are
/// ok.
pub fn findings(items: &[Item]) -> String {
    items
        .iter()
        .filter(|item| item.verdict != Verdict::Ok)
        .map(Item::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    use Verdict::{Critical, Warn};

    /// `Verdict::Ok`, named apart from `Result::Ok`.
    const OK: Verdict = Verdict::Ok;

    /// Items `item.0`, `item.1`, … with these verdicts; each field says whose it is.
    fn items(verdicts: &[Verdict]) -> Vec<Item> {
        verdicts
            .iter()
            .enumerate()
            .map(|(i, verdict)| {
                let name = format!("item.{i}");
                Item::new(
                    &name,
                    format!("{name} value"),
                    format!("{name} wanted"),
                    *verdict,
                    format!("{name} why"),
                    format!("{name} fix"),
                )
            })
            .collect()
    }

    fn line(verdicts: &[Verdict]) -> Option<String> {
        Summary::of(&items(verdicts)).line()
    }

    #[test]
    fn an_audit_with_nothing_wrong_has_no_line() {
        assert_eq!(line(&[]), None);
        assert_eq!(line(&[OK, OK, OK]), None);
        let summary = Summary::of(&items(&[OK, OK]));
        assert!(summary.all_ok());
        assert_eq!(summary.to_string(), "");
    }

    #[test]
    fn one_warning_is_singular() {
        assert_eq!(
            line(&[OK, Warn, OK]).as_deref(),
            Some("host: 1 warning (multipoint-tune check explains it)")
        );
    }

    #[test]
    fn several_warnings_are_counted() {
        assert_eq!(
            line(&[Warn, OK, Warn, Warn, Warn, Warn, Warn]).as_deref(),
            Some("host: 6 warnings (multipoint-tune check explains them)")
        );
    }

    #[test]
    fn critical_items_come_first() {
        assert_eq!(
            line(&[Warn, Critical, Warn, Warn, Critical, Warn, OK]).as_deref(),
            Some("host: 2 critical, 4 warnings (multipoint-tune check explains them)")
        );
        assert_eq!(
            line(&[Critical, OK]).as_deref(),
            Some("host: 1 critical (multipoint-tune check explains it)")
        );
        assert_eq!(
            line(&[Critical, Warn]).as_deref(),
            Some("host: 1 critical, 1 warning (multipoint-tune check explains them)")
        );
    }

    #[test]
    fn the_counts_are_per_verdict() {
        let summary = Summary::of(&items(&[OK, Warn, Critical, OK, Warn, OK]));
        let expected = Summary {
            ok: 3,
            warn: 2,
            critical: 1,
        };
        assert_eq!(summary, expected);
        assert!(!summary.all_ok());
    }

    #[test]
    fn findings_are_one_plain_block_per_item_that_is_not_ok() {
        let text = findings(&items(&[OK, Warn, OK, Critical]));
        assert_eq!(
            text,
            "[warn]     item.1\n    \
               value:  item.1 value\n    \
               wanted: item.1 wanted\n    \
               why:    item.1 why\n    \
               fix:    item.1 fix\n\
             \n\
             [critical] item.3\n    \
               value:  item.3 value\n    \
               wanted: item.3 wanted\n    \
               why:    item.3 why\n    \
               fix:    item.3 fix\n"
        );
        assert!(!text.contains('\u{1b}'), "no escape codes: {text:?}");
        assert_eq!(findings(&items(&[OK, OK])), "");
    }
}
