//! The root context: one per plugin per worker. Loads the configuration, defines the
//! counters, hands each HTTP stream the shared state, and on its tick sends queued outcomes
//! to the scorer, one `Report` call in flight at a time.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use palisade_proto::v1::ReportResponse;
use palisade_proto::{REPORT_METHOD, SERVICE};
use prost::Message;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::ContextType;

use crate::config::Config;
use crate::host::Host;
use crate::http::Http;
use crate::metrics::{Counters, Metric};
use crate::report::{InFlight, OutcomeQueue};

/// State shared by a root context and its HTTP streams (the VM is single-threaded).
#[derive(Debug)]
pub struct Shared {
    /// The validated configuration.
    pub config: Config,
    /// Counter ids.
    pub counters: Counters,
    /// Finished requests waiting to be reported.
    pub outcomes: RefCell<OutcomeQueue>,
    /// Ids issued without randomness, for the fallback request id.
    pub fallback_ids: Cell<u64>,
    /// The last `Check` failed (so the next failure is logged at debug only).
    pub scorer_failing: Cell<bool>,
}

impl Shared {
    /// Shared state for `config`, with counters defined on `host`.
    pub fn new(config: Config, host: &impl Host) -> Self {
        let outcomes = RefCell::new(OutcomeQueue::new(config.report.max_queue));
        Self {
            counters: Counters::define(host),
            config,
            outcomes,
            fallback_ids: Cell::new(0),
            scorer_failing: Cell::new(false),
        }
    }
}

/// The root context.
#[derive(Debug)]
pub struct Root<H: Host> {
    host: H,
    shared: Option<Rc<Shared>>,
    in_flight: Option<InFlight>,
    /// The last report failed (so the next failure is logged at debug only).
    reports_failing: bool,
}

impl<H: Host + Clone + 'static> Root<H> {
    /// A root context with no configuration yet.
    pub fn new(host: H) -> Self {
        Self {
            host,
            shared: None,
            in_flight: None,
            reports_failing: false,
        }
    }

    /// The shared state, once configured.
    pub fn shared(&self) -> Option<&Rc<Shared>> {
        self.shared.as_ref()
    }

    /// Loads and validates the plugin configuration. On error, logs every problem and
    /// returns false (Envoy then rejects the configuration); the previous one, if any, stays.
    pub fn configure(&mut self) -> bool {
        let Some(bytes) = self.host.plugin_configuration() else {
            log::error!("plugin configuration is missing");
            return false;
        };
        let host = &self.host;
        let config = match Config::parse(&bytes, &|name| host.env_var(name)) {
            Ok(c) => c,
            Err(e) => {
                for p in &e.problems {
                    log::error!("invalid configuration: {p}");
                }
                return false;
            }
        };
        if config.report.enabled
            && let Err(e) = self.host.set_tick_period(config.report.flush_interval())
        {
            log::error!("cannot start the report tick ({e}); outcomes will not be reported");
        }
        log::info!(
            "configured with {} keys, scorer cluster {:?}, {:?}",
            config.keys.len(),
            config.scorer.cluster,
            config.failure_mode
        );
        self.shared = Some(Rc::new(Shared::new(config, &self.host)));
        true
    }

    /// The HTTP context for a new stream.
    pub fn http(&self) -> Http<H> {
        Http::new(self.host.clone(), self.shared.clone())
    }

    /// Sends the next batch of outcomes, unless a report is still in flight.
    pub fn flush(&mut self) {
        let Some(shared) = self.shared.clone() else {
            return;
        };
        let report = &shared.config.report;
        if !report.enabled {
            return;
        }
        let now = self.host.now_nanos();
        if let Some(f) = self.in_flight {
            // Envoy always answers within the timeout; this only guards against a lost
            // callback stopping reports for good.
            let stale_after_ms = report.timeout_ms.saturating_mul(2) + report.flush_interval_ms;
            if now.saturating_sub(f.sent_at_nanos) / 1_000_000 <= stale_after_ms {
                return;
            }
            self.in_flight = None;
            self.lose(
                &shared,
                f.outcomes,
                f.dropped,
                "no answer to the previous report",
            );
        }
        let Some(batch) = shared.outcomes.borrow_mut().take_batch(report.max_batch) else {
            return;
        };
        let (outcomes, dropped) = (batch.outcomes.len(), batch.dropped);
        match self.host.dispatch_grpc(
            &shared.config.scorer.cluster,
            SERVICE,
            REPORT_METHOD,
            &batch.encode_to_vec(),
            report.timeout(),
        ) {
            Ok(token) => {
                self.in_flight = Some(InFlight {
                    token,
                    outcomes,
                    dropped,
                    sent_at_nanos: now,
                });
            }
            Err(e) => self.lose(
                &shared,
                outcomes,
                dropped,
                &format!("cannot send report ({e})"),
            ),
        }
    }

    /// The answer to a `Report` call.
    pub fn report_done(&mut self, token: u32, grpc_status: u32, size: usize) {
        let Some(f) = self.in_flight.filter(|f| f.token == token) else {
            log::debug!("ignoring answer to unknown or abandoned call {token}");
            return;
        };
        self.in_flight = None;
        let Some(shared) = self.shared.clone() else {
            return;
        };
        if grpc_status != 0 {
            let why = format!("report failed with grpc status {grpc_status}");
            self.lose(&shared, f.outcomes, f.dropped, &why);
            return;
        }
        if std::mem::take(&mut self.reports_failing) {
            log::info!("reports are reaching the scorer again");
        }
        shared
            .counters
            .add(&self.host, Metric::ReportsSent, f.outcomes as u64);
        if log::log_enabled!(log::Level::Debug) {
            let accepted = self
                .host
                .grpc_response_body(size)
                .ok()
                .flatten()
                .and_then(|b| ReportResponse::decode(b.as_slice()).ok())
                .map(|r| r.accepted);
            log::debug!(
                "reported {} outcomes, scorer accepted {accepted:?}",
                f.outcomes
            );
        }
        // Keep up with bursts: another full batch goes out now rather than on the next tick.
        let backlog = shared.outcomes.borrow().len();
        if backlog >= shared.config.report.max_batch {
            self.flush();
        }
    }

    /// Counts a lost report. Logged at warn when reports start failing, then at debug.
    fn lose(&mut self, shared: &Shared, outcomes: usize, dropped: u64, why: &str) {
        if std::mem::replace(&mut self.reports_failing, true) {
            log::debug!("{why}; dropping {outcomes} outcomes");
        } else {
            log::warn!(
                "{why}; dropping {outcomes} outcomes (further failures are logged at debug \
                 until reports get through)"
            );
        }
        shared.outcomes.borrow_mut().report_lost(outcomes, dropped);
        shared
            .counters
            .add(&self.host, Metric::ReportsDropped, outcomes as u64);
    }
}

impl<H: Host + Clone + 'static> Context for Root<H> {
    fn on_grpc_call_response(&mut self, token_id: u32, status_code: u32, response_size: usize) {
        self.report_done(token_id, status_code, response_size);
    }
}

impl<H: Host + Clone + 'static> RootContext for Root<H> {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        self.configure()
    }

    fn on_tick(&mut self) {
        self.flush();
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        // Never None: the SDK panics on None.
        Some(Box::new(self.http()))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use std::time::Duration;

    use palisade_proto::v1::{ReportRequest, RequestOutcome};

    use super::*;
    use crate::host::fake::FakeHost;
    use crate::test_support::config_json;

    fn root_with(report: serde_json::Value) -> (Root<FakeHost>, FakeHost) {
        let host = FakeHost::new();
        let mut json = config_json();
        json["report"] = report;
        host.state().configuration = Some(json.to_string().into_bytes());
        let mut root = Root::new(host.clone());
        assert!(root.on_configure(0));
        (root, host)
    }

    fn push(root: &Root<FakeHost>, n: usize) {
        let shared = root.shared().unwrap();
        for i in 0..n {
            shared.outcomes.borrow_mut().push(RequestOutcome {
                request_id: format!("r{i}"),
                ..Default::default()
            });
        }
    }

    fn sent_report(host: &FakeHost) -> ReportRequest {
        let call = host.last_call();
        assert_eq!(call.service, "palisade.v1.Scorer");
        assert_eq!(call.method, "Report");
        ReportRequest::decode(call.message.as_slice()).unwrap()
    }

    #[test]
    fn configure_rejects_bad_config_and_defines_counters() {
        let host = FakeHost::new();
        host.state().configuration = Some(br#"{"keys": []}"#.to_vec());
        let mut root = Root::new(host.clone());
        assert!(!root.on_configure(0));
        assert!(root.shared().is_none());

        host.state().configuration = None;
        assert!(!root.on_configure(0));

        let (_root, host) = root_with(serde_json::json!({ "flush_interval_ms": 250 }));
        assert_eq!(host.state().counters.len(), Metric::ALL.len());
        assert_eq!(host.state().tick_period, Some(Duration::from_millis(250)));
    }

    #[test]
    fn disabled_reporting_sets_no_tick_and_sends_nothing() {
        let (mut root, host) = root_with(serde_json::json!({ "enabled": false }));
        assert_eq!(host.state().tick_period, None);
        push(&root, 3);
        root.on_tick();
        assert!(host.state().calls.is_empty());
    }

    #[test]
    fn one_report_in_flight_in_batches() {
        let (mut root, host) =
            root_with(serde_json::json!({ "max_batch": 2, "max_queue": 10, "timeout_ms": 500 }));
        root.on_tick();
        assert!(host.state().calls.is_empty(), "nothing to report");

        push(&root, 3);
        root.on_tick();
        let r = sent_report(&host);
        assert_eq!(r.outcomes.len(), 2);
        assert_eq!(host.last_call().timeout, Duration::from_millis(500));
        assert_eq!(host.last_call().cluster, "palisade_scorer");

        root.on_tick();
        assert_eq!(host.state().calls.len(), 1, "still in flight");

        let token = host.last_call().token;
        root.on_grpc_call_response(token, 0, 0);
        assert_eq!(host.counter("palisade_reports_sent"), 2);
        root.on_tick();
        assert_eq!(host.state().calls.len(), 2);
        assert_eq!(sent_report(&host).outcomes[0].request_id, "r2");
    }

    #[test]
    fn failed_reports_are_dropped_and_counted() {
        let (mut root, host) = root_with(serde_json::json!({ "max_batch": 5, "max_queue": 10 }));
        push(&root, 4);
        root.on_tick();
        let token = host.last_call().token;
        root.on_grpc_call_response(token, 14, 0);
        assert_eq!(host.counter("palisade_reports_dropped"), 4);
        assert_eq!(host.counter("palisade_reports_sent"), 0);

        // The next report tells the scorer what it missed.
        push(&root, 1);
        root.on_tick();
        let r = sent_report(&host);
        assert_eq!((r.outcomes.len(), r.dropped), (1, 4));

        // A dispatch failure drops the batch at once.
        root.on_grpc_call_response(host.last_call().token, 0, 0);
        push(&root, 2);
        host.state().fail_dispatch = true;
        root.on_tick();
        assert_eq!(host.counter("palisade_reports_dropped"), 6);
        assert_eq!(root.shared().unwrap().outcomes.borrow().dropped(), 2);
    }

    #[test]
    fn queue_overflow_is_reported() {
        let (mut root, host) = root_with(serde_json::json!({ "max_batch": 2, "max_queue": 2 }));
        push(&root, 5);
        root.on_tick();
        let r = sent_report(&host);
        assert_eq!(r.dropped, 3);
        assert_eq!(r.outcomes[0].request_id, "r3");
    }

    #[test]
    fn backlog_is_sent_on_completion_and_stale_calls_are_abandoned() {
        let (mut root, host) = root_with(
            serde_json::json!({ "max_batch": 2, "max_queue": 100, "timeout_ms": 100, "flush_interval_ms": 100 }),
        );
        push(&root, 5);
        root.on_tick();
        root.on_grpc_call_response(host.last_call().token, 0, 0);
        assert_eq!(host.state().calls.len(), 2, "backlog flushed immediately");

        let stale = host.last_call().token;
        host.advance(Duration::from_millis(301));
        root.on_tick();
        assert_eq!(host.counter("palisade_reports_dropped"), 2);
        assert_eq!(host.state().calls.len(), 3);
        // A late answer to the abandoned call changes nothing.
        root.on_grpc_call_response(stale, 0, 0);
        assert_eq!(host.counter("palisade_reports_sent"), 2);
    }
}
