//! The notification metrics: deliveries by sink and result, and the queue.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The results a delivery is counted under.
pub const RESULTS: [&str; 5] = ["delivered", "retried", "failed", "dropped", "deduplicated"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkLabels {
    pub sink: String,
    pub result: &'static str,
}

/// The notification metrics: registered in the daemon's registry, or kept unregistered by
/// the CLI (which has no /metrics).
#[derive(Clone, Debug, Default)]
pub struct NotifyMetrics {
    pub deliveries: Family<SinkLabels, Counter>,
    pub queued: Gauge,
}

impl NotifyMetrics {
    pub fn register(registry: &mut Registry) -> NotifyMetrics {
        let m = NotifyMetrics::default();
        crate::metrics::register(
            registry,
            "fleetgate",
            "notifications",
            "Notification deliveries by sink and result (delivered, retried, failed: gave up, dropped: queue full, deduplicated: repeated drift not sent)",
            m.deliveries.clone(),
        );
        crate::metrics::register(
            registry,
            "fleetgate",
            "notifications_queued",
            "Notifications waiting for delivery, all sinks",
            m.queued.clone(),
        );
        m
    }

    /// Removes the series of a sink no longer configured.
    pub fn forget(&self, sink: &str) {
        for result in RESULTS {
            self.deliveries.remove(&SinkLabels {
                sink: sink.to_string(),
                result,
            });
        }
    }

    pub(crate) fn count(&self, sink: &str, result: &'static str) {
        self.deliveries
            .get_or_create(&SinkLabels {
                sink: sink.to_string(),
                result,
            })
            .inc();
    }
}
