//! Latency: clock, timestamps in payloads, histograms.
