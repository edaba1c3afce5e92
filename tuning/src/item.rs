//! One finding of the audit, and how findings are printed (text for people, JSON for
//! programs).

use std::fmt;

/// How much a setting matters to a low-latency multicast data plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Verdict {
    /// As wanted, or nothing to judge.
    Ok,
    /// Works, but costs latency, throughput or robustness; the item says how much.
    Warn,
    /// The data plane will fail to start or to receive.
    Critical,
}

impl Verdict {
    /// `ok`, `warn` or `critical`.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Warn => "warn",
            Verdict::Critical => "critical",
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// One checked setting: what it is, what is wanted, the verdict, why, and the fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// What was checked: a sysctl name (`net.core.rmem_max`) or a short dotted name
    /// (`io_uring.setup`, `cpu.governor`).
    pub name: String,
    /// The value found on the host.
    pub value: String,
    /// What low-latency multicast wants.
    pub wanted: String,
    /// The verdict.
    pub verdict: Verdict,
    /// Why it matters, with the arithmetic where there is some.
    pub why: String,
    /// The exact command that fixes it; empty when the verdict is [`Verdict::Ok`].
    pub fix: String,
}

impl Item {
    /// An item; `fix` is dropped when `verdict` is [`Verdict::Ok`].
    pub(crate) fn new(
        name: &str,
        value: impl Into<String>,
        wanted: impl Into<String>,
        verdict: Verdict,
        why: impl Into<String>,
        fix: impl Into<String>,
    ) -> Item {
        Item {
            name: name.to_owned(),
            value: value.into(),
            wanted: wanted.into(),
            verdict,
            why: why.into(),
            fix: if verdict == Verdict::Ok {
                String::new()
            } else {
                fix.into()
            },
        }
    }

    /// The item as a JSON object with `name`, `value`, `wanted`, `verdict`, `why` and
    /// `fix`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "name": self.name,
            "value": self.value,
            "wanted": self.wanted,
            "verdict": self.verdict.as_str(),
            "why": self.why,
            "fix": self.fix,
        })
    }
}

impl fmt::Display for Item {
    /// Several lines: the verdict and name, then value, wanted, why and fix, indented.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let label = format!("[{}]", self.verdict);
        writeln!(f, "{label:<11}{}", self.name)?;
        writeln!(f, "    value:  {}", self.value)?;
        writeln!(f, "    wanted: {}", self.wanted)?;
        writeln!(f, "    why:    {}", self.why)?;
        if !self.fix.is_empty() {
            for (i, line) in self.fix.lines().enumerate() {
                let label = if i == 0 { "fix:   " } else { "       " };
                writeln!(f, "    {label} {line}")?;
            }
        }
        Ok(())
    }
}

/// All items as one JSON array (pretty-printed).
pub fn to_json(items: &[Item]) -> String {
    let array = serde_json::Value::Array(items.iter().map(Item::to_json).collect());
    serde_json::to_string_pretty(&array).unwrap_or_else(|_| "[]".to_owned())
}

/// The worst verdict of `items` ([`Verdict::Ok`] for none).
pub fn worst(items: &[Item]) -> Verdict {
    items.iter().map(|i| i.verdict).max().unwrap_or(Verdict::Ok)
}
