//! What a run measured, as a human-readable report ([`Display`](fmt::Display)) and as
//! one line of JSON ([`DemoReport::to_json`]).
//!
//! Rates are per second of publishing time; bytes are message bytes (MoldUDP64 framing
//! not counted) and MB is 10^6 bytes. Latencies are nanoseconds in JSON and carry units
//! in the text. Formatting allocates and reads no clock.

use std::fmt::{self, Write as _};
use std::time::Duration;

use multipoint_dataplane::latency::{format_ns, Percentiles};
use multipoint_dataplane::{BackendInfo, PublisherStats, SubscriptionStats};

/// How the run was set up, as shown in the report's first line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Group and port.
    pub group: String,
    /// Interface sent and joined on.
    pub interface: String,
    /// Message size in bytes.
    pub size: usize,
    /// Target rate in messages per second; 0 = as fast as possible.
    pub rate: u64,
    /// Number of shards.
    pub shards: usize,
    /// GSO on the publisher and GRO on the shards.
    pub gso: bool,
    /// The shards' idle strategy.
    pub idle: String,
}

/// The publisher's side of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublisherReport {
    /// The backend it ran on and why.
    pub backend: BackendInfo,
    /// Its final counters.
    pub stats: PublisherStats,
}

/// One subscriber's side of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriberReport {
    /// The shard it ran on.
    pub shard: usize,
    /// The backend the shards ran on and why.
    pub backend: BackendInfo,
    /// Its final counters.
    pub stats: SubscriptionStats,
    /// One-way latency over the whole run.
    pub latency: Percentiles,
}

/// Everything `multipoint demo` measured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoReport {
    /// The setup.
    pub settings: Settings,
    /// How long the publisher published.
    pub elapsed: Duration,
    /// The publisher.
    pub publisher: PublisherReport,
    /// The subscribers, in the order they were created.
    pub subscribers: Vec<SubscriberReport>,
}

/// `count` per second over `elapsed`; 0 for an empty interval.
pub fn per_second(count: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 {
        count as f64 / secs
    } else {
        0.0
    }
}

/// Displays an integer with thousands separators: `1,234,567`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grouped(pub u64);

impl fmt::Display for Grouped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let digits = self.0.to_string();
        let mut out = String::with_capacity(digits.len() + digits.len() / 3);
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        f.pad(&out)
    }
}

impl fmt::Display for DemoReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.settings;
        let rate = if s.rate == 0 {
            "as fast as possible".to_owned()
        } else {
            format!("{} msgs/s", Grouped(s.rate))
        };
        writeln!(
            f,
            "multipoint demo: {} on {}, {}-byte messages, {rate}, {:.2} s, {} shard{}, GSO {}, \
             idle {}",
            s.group,
            s.interface,
            s.size,
            self.elapsed.as_secs_f64(),
            s.shards,
            if s.shards == 1 { "" } else { "s" },
            if s.gso { "on" } else { "off" },
            s.idle,
        )?;
        let p = &self.publisher;
        writeln!(f)?;
        writeln!(f, "publisher          backend {}", p.backend)?;
        writeln!(
            f,
            "  {:>11} msgs/s   messages {}   packets {}   sends {}   GSO sends {}   send errors \
             {}   backpressure {}",
            Grouped(per_second(p.stats.messages, self.elapsed).round() as u64),
            Grouped(p.stats.messages),
            Grouped(p.stats.packets),
            Grouped(p.stats.sends),
            Grouped(p.stats.gso_sends),
            Grouped(p.stats.send_errors),
            Grouped(p.stats.backpressure),
        )?;
        for (i, sub) in self.subscribers.iter().enumerate() {
            let st = &sub.stats;
            let l = &sub.latency;
            writeln!(f)?;
            writeln!(
                f,
                "subscriber {} (shard {})  backend {}",
                i + 1,
                sub.shard,
                sub.backend
            )?;
            writeln!(
                f,
                "  {:>11} msgs/s   {:.1} MB/s",
                Grouped(per_second(st.messages, self.elapsed).round() as u64),
                per_second(st.bytes, self.elapsed) / 1e6,
            )?;
            writeln!(
                f,
                "  messages {}   gaps {}   missing {}   duplicates {}   malformed {}   kernel \
                 drops {}",
                Grouped(st.messages),
                Grouped(st.gaps),
                Grouped(st.missing),
                Grouped(st.duplicates),
                Grouped(st.malformed),
                Grouped(st.kernel_drops),
            )?;
            if l.count == 0 {
                writeln!(f, "  latency  no samples")?;
            } else {
                writeln!(
                    f,
                    "  latency  p50 {}   p90 {}   p99 {}   p99.9 {}   p99.99 {}   max {}   (n={})",
                    format_ns(l.p50),
                    format_ns(l.p90),
                    format_ns(l.p99),
                    format_ns(l.p999),
                    format_ns(l.p9999),
                    format_ns(l.max),
                    Grouped(l.count),
                )?;
            }
        }
        Ok(())
    }
}

impl DemoReport {
    /// The report as one JSON object on one line (no trailing newline).
    pub fn to_json(&self) -> String {
        let s = &self.settings;
        let p = &self.publisher;
        let mut out = String::with_capacity(512 + 400 * self.subscribers.len());
        // Writing to a String cannot fail.
        let _ = write!(
            out,
            "{{\"command\":\"demo\",\"group\":{},\"interface\":{},\"size\":{},\"rate\":{},\
             \"secs\":{:.3},\"shards\":{},\"gso\":{},\"idle\":{},",
            json_str(&s.group),
            json_str(&s.interface),
            s.size,
            s.rate,
            self.elapsed.as_secs_f64(),
            s.shards,
            s.gso,
            json_str(&s.idle),
        );
        let _ = write!(
            out,
            "\"publisher\":{{\"backend\":{},\"backend_reason\":{},\"messages\":{},\
             \"msgs_per_sec\":{:.0},\"packets\":{},\"sends\":{},\"gso_sends\":{},\
             \"send_errors\":{},\"backpressure\":{}}},\"subscribers\":[",
            json_str(&p.backend.kind.to_string()),
            json_str(&p.backend.reason),
            p.stats.messages,
            per_second(p.stats.messages, self.elapsed),
            p.stats.packets,
            p.stats.sends,
            p.stats.gso_sends,
            p.stats.send_errors,
            p.stats.backpressure,
        );
        for (i, sub) in self.subscribers.iter().enumerate() {
            let st = &sub.stats;
            let l = &sub.latency;
            if i > 0 {
                out.push(',');
            }
            let _ = write!(
                out,
                "{{\"shard\":{},\"backend\":{},\"backend_reason\":{},\"messages\":{},\
                 \"msgs_per_sec\":{:.0},\"bytes_per_sec\":{:.0},\"gaps\":{},\"missing\":{},\
                 \"duplicates\":{},\"malformed\":{},\"kernel_drops\":{},\"latency_ns\":{{\
                 \"count\":{},\"p50\":{},\"p90\":{},\"p99\":{},\"p999\":{},\"p9999\":{},\
                 \"max\":{}}}}}",
                sub.shard,
                json_str(&sub.backend.kind.to_string()),
                json_str(&sub.backend.reason),
                st.messages,
                per_second(st.messages, self.elapsed),
                per_second(st.bytes, self.elapsed),
                st.gaps,
                st.missing,
                st.duplicates,
                st.malformed,
                st.kernel_drops,
                l.count,
                l.p50,
                l.p90,
                l.p99,
                l.p999,
                l.p9999,
                l.max,
            );
        }
        out.push_str("]}");
        out
    }
}

/// `s` as a JSON string literal, quotes included.
fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use multipoint_dataplane::BackendKind;

    use super::*;

    fn report() -> DemoReport {
        let backend = BackendInfo {
            kind: BackendKind::Mmsg,
            reason: "forced by \"configuration\"".into(),
        };
        let sub = SubscriberReport {
            shard: 1,
            backend: backend.clone(),
            stats: SubscriptionStats {
                messages: 2_000_000,
                bytes: 128_000_000,
                ..SubscriptionStats::default()
            },
            latency: Percentiles {
                count: 2_000_000,
                p50: 10_240,
                p9999: 1_300_000,
                max: 2_000_000,
                ..Percentiles::default()
            },
        };
        DemoReport {
            settings: Settings {
                group: "239.255.0.1:31001".into(),
                interface: "127.0.0.1".into(),
                size: 64,
                rate: 1_000_000,
                shards: 2,
                gso: true,
                idle: "block".into(),
            },
            elapsed: Duration::from_secs(2),
            publisher: PublisherReport {
                backend,
                stats: PublisherStats {
                    messages: 2_000_000,
                    ..PublisherStats::default()
                },
            },
            subscribers: vec![sub.clone(), sub],
        }
    }

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(Grouped(0).to_string(), "0");
        assert_eq!(Grouped(999).to_string(), "999");
        assert_eq!(Grouped(1_000).to_string(), "1,000");
        assert_eq!(Grouped(1_234_567).to_string(), "1,234,567");
        assert_eq!(format!("{:>7}", Grouped(1_000)), "  1,000");
    }

    #[test]
    fn the_text_report_shows_rates_counters_and_percentiles() {
        let text = report().to_string();
        assert!(text.contains("1,000,000 msgs/s   64.0 MB/s"), "{text}");
        assert!(text.contains("kernel drops 0"), "{text}");
        assert!(text.contains("p50 10.2µs"), "{text}");
        assert!(text.contains("p99.99 1.30ms"), "{text}");
        assert!(
            text.contains("subscriber 2 (shard 1)  backend mmsg"),
            "{text}"
        );
    }

    #[test]
    fn the_json_report_is_one_line_with_escaped_strings() {
        let json = report().to_json();
        assert!(!json.contains('\n'));
        assert!(json.starts_with("{\"command\":\"demo\""), "{json}");
        assert!(json.ends_with("]}"), "{json}");
        assert!(
            json.contains("\"backend_reason\":\"forced by \\\"configuration\\\"\""),
            "{json}"
        );
        assert!(json.contains("\"msgs_per_sec\":1000000,"), "{json}");
        assert!(
            json.contains(
                "\"latency_ns\":{\"count\":2000000,\"p50\":10240,\"p90\":0,\"p99\":0,\
                 \"p999\":0,\"p9999\":1300000,\"max\":2000000}"
            ),
            "{json}"
        );
        assert_eq!(json.matches("\"shard\":1").count(), 2);
    }

    #[test]
    fn control_characters_are_escaped_in_json() {
        assert_eq!(json_str("a\u{1}b\\"), "\"a\\u0001b\\\\\"");
    }
}
