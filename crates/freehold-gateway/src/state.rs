//! The gateway's shared state: settings, the routing table (swapped whole
//! on reload), keys, limits, metrics and the ledger.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use freehold_llm::Router;
use freehold_llm::router::Target;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Authenticator;
use crate::ledger::Ledger;
use crate::limits::RateLimiter;
use crate::metrics::Metrics;
use crate::privacy::{Action, Privacy, PrivacyError, PrivacySettings};
use crate::settings::GatewaySettings;
use crate::store::Store;

/// What a configuration (re)load produces: the router and which of its
/// providers keep data on this machine.
#[derive(Debug)]
pub struct Routes {
    /// Providers, aliases, fallbacks and replicas.
    pub router: Router,
    /// Names of providers that run on this machine (the embedded engine, or
    /// servers on loopback): the only ones a local-only request may use,
    /// for the models they run themselves ([`Routes::runs_locally`]).
    pub local_providers: BTreeSet<String>,
    /// Providers whose models `GET /v1/models` lists (the configured ones:
    /// built-in presets nobody set up would only time out).
    pub listed_providers: BTreeSet<String>,
    /// Names of embedded-engine providers (`kind = "local"`), which would
    /// load a model from any file path they are given: clients may name
    /// their models only by store name (the chat routes refuse paths).
    pub engine_providers: BTreeSet<String>,
}

impl Routes {
    /// Whether a request sent to `target` stays on this machine: its
    /// provider is local, and the model is not one that such a server
    /// passes on to a hosted service. A signed-in Ollama serves its cloud
    /// models (`gpt-oss:120b-cloud`, `gemma4:cloud`) from ollama.com under
    /// the same API as the models it runs itself, so a model whose tag is
    /// `cloud` or ends in `-cloud` counts as hosted on any local server but
    /// the embedded engine, whatever kind of server it is configured as
    /// (Ollama also speaks the OpenAI protocol).
    pub fn runs_locally(&self, target: &Target) -> bool {
        self.local_providers.contains(&target.provider)
            && (self.engine_providers.contains(&target.provider)
                || !is_cloud_model_name(&target.model))
    }
}

/// Whether `model` is named as one of Ollama's cloud models: its tag (what
/// follows the last `:`) is `cloud` or ends in `-cloud`.
fn is_cloud_model_name(model: &str) -> bool {
    model.rsplit_once(':').is_some_and(|(_, tag)| {
        let tag = tag.to_ascii_lowercase();
        tag == "cloud" || tag.ends_with("-cloud")
    })
}

/// Everything a request handler needs.
#[derive(Debug)]
pub struct Gateway {
    pub(crate) settings: GatewaySettings,
    routes: ArcSwap<Routes>,
    pub(crate) auth: Authenticator,
    pub(crate) store: Option<Store>,
    pub(crate) limits: RateLimiter,
    pub(crate) metrics: Metrics,
    pub(crate) ledger: Ledger,
    pub(crate) privacy: Privacy,
    /// The budget settlements under way (database calls spawned after each
    /// response), which shutdown waits for: one cut off would hold its
    /// reservation for good. Shared token counts are written here too.
    pub(crate) settling: TaskTracker,
    /// Cancelled just before a stopping server's grace period ends: the
    /// streams still open then end with their protocol's error event.
    pub(crate) streams_ending: CancellationToken,
}

/// Where rate limits are counted: in a PostgreSQL database the gateway
/// may share with others, so that they enforce one limit between them;
/// in memory otherwise (SQLite is one gateway's file, and memory is
/// exact and costs no write per request).
fn rate_limiter(store: Option<&Store>) -> RateLimiter {
    match store {
        Some(store) if store.backend() == "postgres" => RateLimiter::shared(store.clone()),
        _ => RateLimiter::in_memory(),
    }
}

impl Gateway {
    /// A gateway over `routes`. `master_key` is the secret itself; `store`
    /// holds virtual keys and budgets; `ledger` writes usage lines.
    ///
    /// # Errors
    /// An invalid `[gateway.privacy]` table (a bad pattern, say).
    pub fn new(
        settings: GatewaySettings,
        routes: Routes,
        master_key: Option<String>,
        store: Option<Store>,
        ledger: Ledger,
    ) -> Result<Self, PrivacyError> {
        let privacy = Privacy::new(settings.privacy.clone().unwrap_or_else(|| PrivacySettings {
            action: Action::Off,
            ..PrivacySettings::default()
        }))?;
        Ok(Self {
            auth: Authenticator::new(settings.require_key, master_key, store.clone()),
            settings,
            routes: ArcSwap::from_pointee(routes),
            limits: rate_limiter(store.as_ref()),
            store,
            metrics: Metrics::default(),
            ledger,
            privacy,
            settling: TaskTracker::new(),
            streams_ending: CancellationToken::new(),
        })
    }

    /// The routing table now. Requests hold the one they started with, so a
    /// reload never changes a request in flight.
    pub fn routes(&self) -> Arc<Routes> {
        self.routes.load_full()
    }

    /// Replaces the routing table (on SIGHUP).
    pub fn reload(&self, routes: Routes) {
        self.routes.store(Arc::new(routes));
    }

    /// The settings it runs with.
    pub fn settings(&self) -> &GatewaySettings {
        &self.settings
    }

    /// The time limits to serve it with ([`crate::listen::serve`]): its
    /// settings', with the notice that ends its streams still open near the
    /// end of a stop's grace period. A gateway is served once: after that
    /// notice, its streams end at once.
    pub fn time_limits(&self) -> crate::listen::TimeLimits {
        crate::listen::TimeLimits {
            stream_notice: Some(self.streams_ending.clone()),
            ..self.settings.time_limits()
        }
    }

    /// Requests being served now (streams until their last event).
    pub fn requests_in_flight(&self) -> i64 {
        self.metrics.in_flight.get()
    }

    /// Waits until the budget settlements under way are written, up to
    /// `timeout`; says whether they all were. For shutdown, once requests
    /// have stopped: settlements started after it has begun are waited for
    /// too.
    pub async fn settlements_written(&self, timeout: Duration) -> bool {
        self.settling.close();
        tokio::time::timeout(timeout, self.settling.wait())
            .await
            .is_ok()
    }

    /// The metrics, rendered for Prometheus.
    pub fn metrics_text(&self) -> String {
        self.metrics.render()
    }
}

#[cfg(test)]
mod tests {
    use super::is_cloud_model_name;

    #[test]
    fn ollama_cloud_models_are_told_by_their_tag() {
        for cloud in [
            "gpt-oss:120b-cloud",
            "qwen3-coder:480b-cloud",
            "gemma4:cloud",
            "library/kimi-k2:1T-CLOUD",
        ] {
            assert!(is_cloud_model_name(cloud), "{cloud}");
        }
        for own in [
            "qwen3:8b",
            "cloud",
            "cloud-model",
            "word-cloud:7b",
            "gpt-oss:120b-cloudy",
            "Qwen/Qwen2.5-Coder-32B-Instruct",
        ] {
            assert!(!is_cloud_model_name(own), "{own}");
        }
    }
}
