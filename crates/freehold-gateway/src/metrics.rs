//! Prometheus metrics for `GET /metrics`: requests, latency, tokens, cost
//! and errors, per endpoint, model and key. The model label is the name a
//! client asked for only when it has a route (`(none)` otherwise) and a
//! provider has answered for it at least once (`(other)` until then), and
//! only for the first [`MAX_MODEL_LABELS`] such names (`(other)` after
//! them): made-up names, which providers refuse, cannot grow the number of
//! series, nor use up the bound. Names and key names are escaped as the
//! text format requires.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::sync::RwLock;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// The most distinct model names that get series of their own.
pub const MAX_MODEL_LABELS: usize = 1000;

/// The model label of names past [`MAX_MODEL_LABELS`].
pub const OTHER_MODELS: &str = "(other)";

/// A label value that a client or an operator chose (a model's or a key's
/// name), escaped when written: prometheus-client writes label values as
/// they are, so a `"` or a line break in a name would otherwise end the
/// value and let a client write series of its own into the page.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub struct LabelText(pub String);

impl From<&str> for LabelText {
    fn from(text: &str) -> Self {
        Self(text.to_owned())
    }
}

impl EncodeLabelValue for LabelText {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        for c in self.0.chars() {
            match c {
                '\\' => encoder.write_str("\\\\")?,
                '"' => encoder.write_str("\\\"")?,
                '\n' => encoder.write_str("\\n")?,
                c => encoder.write_char(c)?,
            }
        }
        Ok(())
    }
}

/// Labels of a finished request.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The route (`/v1/messages`).
    pub endpoint: String,
    /// The model the client asked for.
    pub model: LabelText,
    /// The key's name (`master`, `open` when no key is needed).
    pub key: LabelText,
    /// The HTTP status sent.
    pub status: u16,
}

/// Labels of latency histograms (status and key left out to keep the
/// number of series small).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LatencyLabels {
    /// The route.
    pub endpoint: String,
    /// The model asked for.
    pub model: LabelText,
}

/// Labels of token counters.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenLabels {
    /// The model asked for.
    pub model: LabelText,
    /// The key's name.
    pub key: LabelText,
    /// `input` or `output`.
    pub direction: &'static str,
}

/// Labels of error counters.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// The route.
    pub endpoint: String,
    /// The model asked for.
    pub model: LabelText,
    /// The key's name (empty when no key was recognised).
    pub key: LabelText,
    /// A short kind (`rate_limited`, `upstream`, `budget`, …).
    pub kind: &'static str,
}

/// Every metric the gateway exports, registered once.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Finished requests.
    pub requests: Family<RequestLabels, Counter>,
    /// Seconds from arrival to the last byte.
    pub latency: Family<LatencyLabels, Histogram>,
    /// Seconds from a streamed request's arrival to the provider's first
    /// event (keepalives sent before it do not count).
    pub first_byte: Family<LatencyLabels, Histogram>,
    /// Tokens in and out.
    pub tokens: Family<TokenLabels, Counter>,
    /// Failed requests by kind.
    pub errors: Family<ErrorLabels, Counter>,
    /// Requests being served now.
    pub in_flight: Gauge,
    /// Usage lines dropped because the ledger's database fell behind.
    pub ledger_dropped: Counter,
    /// The model names that have series of their own.
    models_labelled: RwLock<HashSet<String>>,
}

fn latency_histogram() -> Histogram {
    // 100 µs to about 100 s: the gateway's own overhead sits at the low
    // end, local models' long answers at the high end.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.0001, 2.5, 16,
    ))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("freehold_gateway");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<LatencyLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        let first_byte = Family::<LatencyLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        let tokens = Family::<TokenLabels, Counter>::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        let in_flight = Gauge::default();
        let ledger_dropped = Counter::default();
        registry.register("requests", "Requests answered", requests.clone());
        registry.register(
            "request_duration_seconds",
            "Seconds from a request's arrival to its last byte",
            latency.clone(),
        );
        registry.register(
            "first_byte_seconds",
            "Seconds from a streamed request's arrival to the provider's first event",
            first_byte.clone(),
        );
        registry.register("tokens", "Tokens read and generated", tokens.clone());
        registry.register("errors", "Requests that failed, by kind", errors.clone());
        registry.register("in_flight", "Requests being served", in_flight.clone());
        registry.register(
            "ledger_dropped",
            "Usage lines dropped because the ledger's database fell behind",
            ledger_dropped.clone(),
        );
        Self {
            registry,
            requests,
            latency,
            first_byte,
            tokens,
            errors,
            in_flight,
            ledger_dropped,
            models_labelled: RwLock::new(HashSet::new()),
        }
    }
}

impl Metrics {
    /// Counts a failed request of `endpoint` for `model` by `key`.
    pub fn count_error(&self, endpoint: &str, model: LabelText, key: &str, kind: &'static str) {
        self.errors
            .get_or_create(&ErrorLabels {
                endpoint: endpoint.to_owned(),
                model,
                key: key.into(),
                kind,
            })
            .inc();
    }

    /// The label for requests of `model`: its name once it has one, or
    /// when `answered` (a provider answered for it) while fewer than
    /// [`MAX_MODEL_LABELS`] names have series; [`OTHER_MODELS`] otherwise.
    pub fn model_label(&self, model: &str, answered: bool) -> LabelText {
        let known = |names: &HashSet<String>| names.contains(model);
        match self.models_labelled.read() {
            Ok(names) if known(&names) => return model.into(),
            Ok(_) if !answered => return OTHER_MODELS.into(),
            // Full: no write lock for every new name after the bound.
            Ok(names) if names.len() >= MAX_MODEL_LABELS => return OTHER_MODELS.into(),
            _ => {}
        }
        match self.models_labelled.write() {
            Ok(mut names) if known(&names) || names.len() < MAX_MODEL_LABELS => {
                names.insert(model.to_owned());
                model.into()
            }
            _ => OTHER_MODELS.into(),
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counted_requests() {
        let metrics = Metrics::default();
        metrics
            .requests
            .get_or_create(&RequestLabels {
                endpoint: "/v1/messages".into(),
                model: "m".into(),
                key: "ci".into(),
                status: 200,
            })
            .inc();
        metrics
            .latency
            .get_or_create(&LatencyLabels {
                endpoint: "/v1/messages".into(),
                model: "m".into(),
            })
            .observe(0.002);
        let text = metrics.render();
        assert!(
            text.contains(
                r#"freehold_gateway_requests_total{endpoint="/v1/messages",model="m",key="ci",status="200"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains("freehold_gateway_request_duration_seconds_bucket"));
        assert!(text.ends_with("# EOF\n"));
    }

    /// A name cannot end its label and write series of its own.
    #[test]
    fn names_are_escaped() {
        let metrics = Metrics::default();
        let forged = "local:x\"} 1\nfreehold_gateway_tokens_total{model=\"coder\"} 1e12\n\\";
        metrics.count_error("/v1/messages", forged.into(), "a \"key\"", "upstream");
        let text = metrics.render();
        assert!(
            text.contains(
                r#"model="local:x\"} 1\nfreehold_gateway_tokens_total{model=\"coder\"} 1e12\n\\",key="a \"key\"""#
            ),
            "{text}"
        );
        assert!(!text.contains("\nfreehold_gateway_tokens_total{"), "{text}");
    }

    #[test]
    fn model_names_past_the_bound_share_one_label() {
        let metrics = Metrics::default();
        // A name no provider answered for has no series of its own.
        assert_eq!(metrics.model_label("p:made-up", false).0, OTHER_MODELS);
        for n in 0..MAX_MODEL_LABELS {
            assert_eq!(
                metrics.model_label(&format!("p:m{n}"), true).0,
                format!("p:m{n}")
            );
        }
        assert_eq!(metrics.model_label("p:one-more", true).0, OTHER_MODELS);
        // Names seen before keep theirs, answered this time or not.
        assert_eq!(metrics.model_label("p:m7", false).0, "p:m7");
    }
}
