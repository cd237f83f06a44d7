//! The recorder behind the `metrics` macros, rendered in Prometheus's text format: counters, gauges, and
//! histograms with fixed buckets. A histogram is its bucket counts, its sum and its count, whatever the
//! number of samples, so memory does not grow with traffic between two scrapes (or with none), and no
//! clock is read or calibrated: the start pays nothing for metrics.

use metrics::{Counter, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

/// Latency buckets in seconds, from a fast local call to the platform's 60 s limit: every histogram
/// whose name ends in `_seconds`.
const SECONDS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];
/// Every other histogram counts things (a batch's writes).
const COUNTS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

/// Every metric recorded so far. Cheap to share: the recorder and `/metrics` hold the same one.
#[derive(Default)]
pub struct Registry {
    counters: Family<AtomicU64>,
    /// An `f64` in the atomic's bits (`metrics` gives `AtomicU64` both roles).
    gauges: Family<AtomicU64>,
    histograms: Family<Buckets>,
}

/// The recorder installed for the `metrics` macros: a view of a [`Registry`].
pub struct PrometheusRecorder(pub Arc<Registry>);

impl Recorder for PrometheusRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.0.counters.get(key, || AtomicU64::new(0)))
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(self.0.gauges.get(key, || AtomicU64::new(0)))
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        let bounds = if key.name().ends_with("_seconds") { SECONDS } else { COUNTS };
        Histogram::from_arc(self.0.histograms.get(key, || Buckets::new(bounds)))
    }
}

impl Registry {
    /// Everything recorded, in Prometheus's text format (version 0.0.4), sorted by name and labels.
    pub fn render(&self) -> String {
        let mut out = String::new();
        render_family(&mut out, "counter", &self.counters, |out, name, labels, counter| {
            let _ = writeln!(out, "{name}{} {}", braces(labels, None), counter.load(Ordering::Relaxed));
        });
        render_family(&mut out, "gauge", &self.gauges, |out, name, labels, gauge| {
            let _ = writeln!(
                out,
                "{name}{} {}",
                braces(labels, None),
                number(f64::from_bits(gauge.load(Ordering::Relaxed)))
            );
        });
        render_family(&mut out, "histogram", &self.histograms, |out, name, labels, histogram| {
            let mut cumulative = 0u64;
            let bounds = histogram.bounds.iter().map(|b| number(*b)).chain(["+Inf".to_string()]);
            for (le, count) in bounds.zip(histogram.counts.iter()) {
                cumulative = cumulative.saturating_add(count.load(Ordering::Relaxed));
                let _ = writeln!(out, "{name}_bucket{} {cumulative}", braces(labels, Some(&le)));
            }
            let sum = f64::from_bits(histogram.sum.load(Ordering::Relaxed));
            let _ = writeln!(out, "{name}_sum{} {}", braces(labels, None), number(sum));
            let _ = writeln!(out, "{name}_count{} {cumulative}", braces(labels, None));
        });
        out
    }
}

/// A metric's name, its labels in the order given, and the metric.
type Row<T> = (String, Vec<(String, String)>, Arc<T>);

/// The metrics of one kind, by key. Registering looks the key up under a shared lock; only a key never
/// seen before takes the exclusive one.
struct Family<T>(RwLock<HashMap<Key, Arc<T>>>);

impl<T> Default for Family<T> {
    fn default() -> Self {
        Family(RwLock::new(HashMap::new()))
    }
}

impl<T> Family<T> {
    fn get(&self, key: &Key, make: impl FnOnce() -> T) -> Arc<T> {
        if let Some(found) = self.0.read().unwrap_or_else(PoisonError::into_inner).get(key) {
            return found.clone();
        }
        let mut all = self.0.write().unwrap_or_else(PoisonError::into_inner);
        all.entry(key.clone()).or_insert_with(|| Arc::new(make())).clone()
    }

    /// Every metric with its name and labels, sorted by them.
    fn sorted(&self) -> Vec<Row<T>> {
        let all = self.0.read().unwrap_or_else(PoisonError::into_inner);
        let mut rows: Vec<_> = all
            .iter()
            .map(|(key, metric)| {
                let labels = key.labels().map(|l| (l.key().to_string(), l.value().to_string())).collect();
                (key.name().to_string(), labels, metric.clone())
            })
            .collect();
        rows.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        rows
    }
}

fn render_family<T>(
    out: &mut String,
    kind: &str,
    family: &Family<T>,
    line: impl Fn(&mut String, &str, &[(String, String)], &T),
) {
    let mut last: Option<String> = None;
    for (name, labels, metric) in family.sorted() {
        if last.as_deref() != Some(name.as_str()) {
            let _ = writeln!(out, "# TYPE {name} {kind}");
        }
        line(out, &name, &labels, &metric);
        last = Some(name);
    }
}

/// `{k="v",…}` with `le` last when given; nothing when there are no labels.
fn braces(labels: &[(String, String)], le: Option<&str>) -> String {
    let mut pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
    if let Some(le) = le {
        pairs.push(format!("le=\"{le}\""));
    }
    if pairs.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", pairs.join(","))
    }
}

fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// A sample value as Prometheus writes it (`+Inf`, `-Inf`, `NaN`, else the shortest exact decimal).
fn number(value: f64) -> String {
    if value.is_nan() {
        "NaN".into()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{value}")
    }
}

/// Adds to an `f64` kept in an atomic's bits.
fn add(cell: &AtomicU64, value: f64) {
    let _ =
        cell.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| Some((f64::from_bits(bits) + value).to_bits()));
}

/// A histogram: how many samples fell at or below each bound (and above the last), and their sum.
struct Buckets {
    bounds: &'static [f64],
    /// One per bound, then the one above them all.
    counts: Box<[AtomicU64]>,
    sum: AtomicU64,
}

impl Buckets {
    fn new(bounds: &'static [f64]) -> Self {
        Buckets { bounds, counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(), sum: AtomicU64::new(0) }
    }
}

impl HistogramFn for Buckets {
    fn record(&self, value: f64) {
        if value.is_nan() {
            return;
        }
        let slot = self.bounds.iter().position(|bound| value <= *bound).unwrap_or(self.bounds.len());
        if let Some(count) = self.counts.get(slot) {
            count.fetch_add(1, Ordering::Relaxed);
        }
        add(&self.sum, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recorder() -> PrometheusRecorder {
        PrometheusRecorder(Arc::new(Registry::default()))
    }

    fn key(name: &'static str, labels: &[(&'static str, &'static str)]) -> Key {
        let labels: Vec<metrics::Label> = labels.iter().map(|(k, v)| metrics::Label::new(*k, *v)).collect();
        Key::from_parts(name, labels)
    }

    const META: Metadata<'static> = Metadata::new("test", metrics::Level::INFO, None);

    #[test]
    fn counters_gauges_and_histograms_render_in_the_text_format() {
        let recorder = recorder();
        let requests = key("http_requests_total", &[("route", "/orders"), ("method", "POST")]);
        recorder.register_counter(&requests, &META).increment(2);
        recorder.register_counter(&requests, &META).increment(1);
        recorder.register_gauge(&key("orders", &[("status", "paid")]), &META).set(4.0);
        let latency = recorder.register_histogram(&key("call_duration_seconds", &[("endpoint", "q\"x")]), &META);
        for seconds in [0.0005, 0.002, 0.002, 90.0] {
            latency.record(seconds);
        }
        recorder.register_histogram(&key("batch_size", &[]), &META).record(3.0);

        let text = recorder.0.render();
        for line in [
            "# TYPE http_requests_total counter",
            "http_requests_total{route=\"/orders\",method=\"POST\"} 3",
            "# TYPE orders gauge",
            "orders{status=\"paid\"} 4",
            "# TYPE call_duration_seconds histogram",
            "call_duration_seconds_bucket{endpoint=\"q\\\"x\",le=\"0.001\"} 1",
            "call_duration_seconds_bucket{endpoint=\"q\\\"x\",le=\"0.0025\"} 3",
            "call_duration_seconds_bucket{endpoint=\"q\\\"x\",le=\"60\"} 3",
            "call_duration_seconds_bucket{endpoint=\"q\\\"x\",le=\"+Inf\"} 4",
            "call_duration_seconds_sum{endpoint=\"q\\\"x\"} 90.0045",
            "call_duration_seconds_count{endpoint=\"q\\\"x\"} 4",
            "batch_size_bucket{le=\"2\"} 0",
            "batch_size_bucket{le=\"4\"} 1",
            "batch_size_count 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing from:\n{text}");
        }
        assert_eq!(text.matches("# TYPE http_requests_total").count(), 1);
    }

    /// A histogram keeps counts, not samples: a million of them take no more room than one.
    #[test]
    fn a_histogram_holds_counts_not_samples() {
        let recorder = recorder();
        let histogram = recorder.register_histogram(&key("x_seconds", &[]), &META);
        for _ in 0..1_000_000 {
            histogram.record(0.003);
        }
        histogram.record(f64::NAN);
        let text = recorder.0.render();
        assert!(text.contains("x_seconds_bucket{le=\"0.005\"} 1000000"), "{text}");
        assert!(text.contains("x_seconds_count 1000000"), "{text}");
    }

    #[test]
    fn gauges_add_and_numbers_are_written_as_prometheus_reads_them() {
        let recorder = recorder();
        let gauge = recorder.register_gauge(&key("g", &[]), &META);
        gauge.increment(1.5);
        gauge.decrement(0.25);
        assert!(recorder.0.render().contains("g 1.25"));
        assert_eq!(
            (number(f64::INFINITY), number(f64::NEG_INFINITY), number(f64::NAN)),
            ("+Inf".into(), "-Inf".into(), "NaN".into())
        );
    }
}
