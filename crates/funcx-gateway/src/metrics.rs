//! Counters for `GET /metrics`, in the Prometheus text format.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the submit → result latency buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0, 30.0, 300.0,
];

/// What the gateway counts as it runs. Lock-free: results are counted on the hot path.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    submitted: AtomicU64,
    succeeded: AtomicU64,
    failed: AtomicU64,
    recovered: AtomicU64,
    latency_buckets: [AtomicU64; BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_micros: AtomicU64,
}

/// A view of the endpoints at scrape time.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct EndpointGauges {
    pub(crate) registered: usize,
    pub(crate) connected: usize,
    pub(crate) managers: usize,
    pub(crate) workers: usize,
    pub(crate) busy_workers: usize,
    pub(crate) queued: usize,
    pub(crate) in_flight: usize,
}

impl Metrics {
    pub(crate) fn submitted(&self, n: usize) {
        self.submitted.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub(crate) fn recovered(&self, n: usize) {
        self.recovered.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub(crate) fn finished(&self, succeeded: bool, latency: Option<Duration>) {
        if succeeded {
            self.succeeded.fetch_add(1, Ordering::Relaxed);
        } else {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(latency) = latency {
            let seconds = latency.as_secs_f64();
            // Cumulative buckets are computed at render time; count each value once here.
            if let Some(i) = BUCKETS.iter().position(|bound| seconds <= *bound) {
                self.latency_buckets[i].fetch_add(1, Ordering::Relaxed);
            }
            self.latency_count.fetch_add(1, Ordering::Relaxed);
            self.latency_sum_micros.fetch_add(
                u64::try_from(latency.as_micros()).unwrap_or(u64::MAX),
                Ordering::Relaxed,
            );
        }
    }

    pub(crate) fn render(&self, endpoints: EndpointGauges) -> String {
        let mut out = String::new();
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let submitted = load(&self.submitted);
        let succeeded = load(&self.succeeded);
        let failed = load(&self.failed);
        let recovered = load(&self.recovered);
        let _ = writeln!(
            out,
            "# HELP funcx_gateway_tasks_submitted_total Tasks accepted by this gateway process."
        );
        let _ = writeln!(out, "# TYPE funcx_gateway_tasks_submitted_total counter");
        let _ = writeln!(out, "funcx_gateway_tasks_submitted_total {submitted}");
        let _ = writeln!(
            out,
            "# HELP funcx_gateway_tasks_recovered_total Unfinished tasks submitted again at start."
        );
        let _ = writeln!(out, "# TYPE funcx_gateway_tasks_recovered_total counter");
        let _ = writeln!(out, "funcx_gateway_tasks_recovered_total {recovered}");
        let _ = writeln!(
            out,
            "# HELP funcx_gateway_tasks_finished_total Tasks finished, by outcome."
        );
        let _ = writeln!(out, "# TYPE funcx_gateway_tasks_finished_total counter");
        let _ = writeln!(
            out,
            "funcx_gateway_tasks_finished_total{{state=\"succeeded\"}} {succeeded}"
        );
        let _ = writeln!(
            out,
            "funcx_gateway_tasks_finished_total{{state=\"failed\"}} {failed}"
        );
        let _ = writeln!(
            out,
            "# HELP funcx_gateway_tasks Tasks of connected endpoints' queues, by state."
        );
        let _ = writeln!(out, "# TYPE funcx_gateway_tasks gauge");
        let _ = writeln!(
            out,
            "funcx_gateway_tasks{{state=\"queued\"}} {}",
            endpoints.queued
        );
        let _ = writeln!(
            out,
            "funcx_gateway_tasks{{state=\"running\"}} {}",
            endpoints.in_flight
        );
        let _ = writeln!(
            out,
            "# HELP funcx_gateway_task_latency_seconds From submission to stored result."
        );
        let _ = writeln!(out, "# TYPE funcx_gateway_task_latency_seconds histogram");
        let mut cumulative = 0;
        for (bound, count) in BUCKETS.iter().zip(&self.latency_buckets) {
            cumulative += load(count);
            let _ = writeln!(
                out,
                "funcx_gateway_task_latency_seconds_bucket{{le=\"{bound}\"}} {cumulative}"
            );
        }
        let count = load(&self.latency_count);
        let _ = writeln!(
            out,
            "funcx_gateway_task_latency_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let sum = load(&self.latency_sum_micros) as f64 / 1e6;
        let _ = writeln!(out, "funcx_gateway_task_latency_seconds_sum {sum}");
        let _ = writeln!(out, "funcx_gateway_task_latency_seconds_count {count}");
        let gauges = [
            (
                "endpoints_registered",
                "Endpoints with a queue in this gateway process.",
                endpoints.registered,
            ),
            (
                "endpoints_connected",
                "Endpoints with at least one connected manager.",
                endpoints.connected,
            ),
            (
                "managers",
                "Connected managers (endpoint connections).",
                endpoints.managers,
            ),
            (
                "workers",
                "Worker slots of connected endpoints.",
                endpoints.workers,
            ),
            (
                "workers_busy",
                "Worker slots running a task.",
                endpoints.busy_workers,
            ),
        ];
        for (name, help, value) in gauges {
            let _ = writeln!(out, "# HELP funcx_gateway_{name} {help}");
            let _ = writeln!(out, "# TYPE funcx_gateway_{name} gauge");
            let _ = writeln!(out, "funcx_gateway_{name} {value}");
        }
        out
    }
}
