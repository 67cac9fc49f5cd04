//! Prometheus metrics: one registry per process, every series declared
//! here and recorded through typed functions. No fingerprint, repository,
//! path or rule id is ever a label.

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// The process's metrics.
pub struct Metrics {
    registry: Registry,
    messages: IntCounterVec,
    findings: IntCounter,
    decode_errors: IntCounterVec,
    dead_letters: IntCounterVec,
    events: IntCounterVec,
    state_findings: IntGaugeVec,
    restore_records: IntCounter,
    partitions_restoring: IntGauge,
    partitions_assigned: IntGauge,
    latency: Histogram,
    lag: IntGaugeVec,
    paused: IntGauge,
    ownership_reloads: IntCounterVec,
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

fn gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(g.clone())).expect("unique metric");
    g
}

fn gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("valid metric");
    r.register(Box::new(g.clone())).expect("unique metric");
    g
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    /// A fresh registry with every series declared.
    pub fn new() -> Metrics {
        let r = Registry::new();
        let messages = counter_vec(
            &r,
            "custody_messages_consumed_total",
            "Report messages consumed, by outcome (processed, chunk, dead_lettered).",
            &["outcome"],
        );
        let findings = IntCounter::new(
            "custody_findings_consumed_total",
            "Findings decoded from consumed reports.",
        )
        .expect("valid metric");
        r.register(Box::new(findings.clone()))
            .expect("unique metric");
        let decode_errors = counter_vec(
            &r,
            "custody_decode_errors_total",
            "Reports that could not be decoded, by format and reason.",
            &["format", "reason"],
        );
        let dead_letters = counter_vec(
            &r,
            "custody_dead_lettered_total",
            "Messages sent to the dead-letter topic, by reason.",
            &["reason"],
        );
        let events = counter_vec(
            &r,
            "custody_events_produced_total",
            "Events produced, by kind (finding, ticket) and route (topic).",
            &["kind", "route"],
        );
        let state_findings = gauge_vec(
            &r,
            "custody_state_findings",
            "Findings held in the state of the partitions this instance owns, by status.",
            &["status"],
        );
        let restore_records = IntCounter::new(
            "custody_restore_records_total",
            "Changelog records read while restoring partitions.",
        )
        .expect("valid metric");
        r.register(Box::new(restore_records.clone()))
            .expect("unique metric");
        let partitions_restoring = gauge(
            &r,
            "custody_partitions_restoring",
            "Assigned partitions whose state is still being restored.",
        );
        let partitions_assigned = gauge(
            &r,
            "custody_partitions_assigned",
            "Partitions assigned to this instance.",
        );
        let latency = Histogram::with_opts(
            HistogramOpts::new(
                "custody_processing_latency_seconds",
                "From a report message's timestamp to its events being acknowledged.",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
            ]),
        )
        .expect("valid metric");
        r.register(Box::new(latency.clone()))
            .expect("unique metric");
        let lag = gauge_vec(
            &r,
            "custody_consumer_lag",
            "Messages between the processed offset and the high watermark, per owned partition.",
            &["topic", "partition"],
        );
        let paused = gauge(
            &r,
            "custody_partitions_paused",
            "Partitions paused for backpressure.",
        );
        let ownership_reloads = counter_vec(
            &r,
            "custody_ownership_reloads_total",
            "Ownership configuration reloads, by result (ok, refused).",
            &["result"],
        );
        Metrics {
            registry: r,
            messages,
            findings,
            decode_errors,
            dead_letters,
            events,
            state_findings,
            restore_records,
            partitions_restoring,
            partitions_assigned,
            latency,
            lag,
            paused,
            ownership_reloads,
        }
    }

    /// The Prometheus text exposition of every series.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let enc = TextEncoder::new();
        // Encoding into a Vec cannot fail for well-formed families.
        let _ = enc.encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }

    /// A report message consumed.
    pub fn message(&self, outcome: &str) {
        self.messages.with_label_values(&[outcome]).inc();
    }

    /// Findings decoded.
    pub fn findings_consumed(&self, n: usize) {
        self.findings.inc_by(n as u64);
    }

    /// A report that failed to decode.
    pub fn decode_error(&self, format: &str, reason: &str) {
        self.decode_errors
            .with_label_values(&[format, reason])
            .inc();
    }

    /// A dead-lettered message.
    pub fn dead_letter(&self, reason: &str) {
        self.dead_letters.with_label_values(&[reason]).inc();
    }

    /// An event produced.
    pub fn event(&self, kind: &str, route: &str) {
        self.events.with_label_values(&[kind, route]).inc();
    }

    /// Findings in owned state, by status.
    pub fn state_size(&self, status: &str, n: usize) {
        self.state_findings
            .with_label_values(&[status])
            .set(n as i64);
    }

    /// Changelog records restored.
    pub fn restored(&self, n: usize) {
        self.restore_records.inc_by(n as u64);
    }

    /// Partitions assigned and still restoring.
    pub fn partitions(&self, assigned: usize, restoring: usize, paused: usize) {
        self.partitions_assigned.set(assigned as i64);
        self.partitions_restoring.set(restoring as i64);
        self.paused.set(paused as i64);
    }

    /// Processing latency of one message.
    pub fn latency(&self, seconds: f64) {
        self.latency.observe(seconds.max(0.0));
    }

    /// Consumer lag of an owned partition.
    pub fn lag(&self, topic: &str, partition: i32, lag: i64) {
        self.lag
            .with_label_values(&[topic, &partition.to_string()])
            .set(lag.max(0));
    }

    /// Drops the series of a partition this instance no longer owns.
    pub fn forget_partition(&self, topic: &str, partition: i32) {
        let _ = self
            .lag
            .remove_label_values(&[topic, &partition.to_string()]);
    }

    /// An ownership reload.
    pub fn ownership_reload(&self, ok: bool) {
        self.ownership_reloads
            .with_label_values(&[if ok { "ok" } else { "refused" }])
            .inc();
    }

    /// The processing latency histogram, for the benchmark's p99.
    pub fn latency_histogram(&self) -> &Histogram {
        &self.latency
    }
}
