//! Outcome reports: a bounded per-worker queue of finished requests, drained in batches
//! into `Scorer.Report` calls by the root context's tick, at most one call in flight.
//!
//! Nothing here retries: a full queue drops its oldest outcome, a failed call drops its
//! batch, and both are counted and told to the scorer in the next report's `dropped`.

use std::collections::VecDeque;

use palisade_proto::v1::{ReportRequest, RequestOutcome};

/// The queue, shared by the root context (which drains it) and the HTTP contexts (which
/// fill it). The VM is single-threaded, so an `Rc<RefCell<_>>` is all the sharing needed.
#[derive(Debug)]
pub struct OutcomeQueue {
    items: VecDeque<RequestOutcome>,
    capacity: usize,
    /// Outcomes dropped since the last report that carried the count.
    dropped: u64,
}

impl OutcomeQueue {
    /// An empty queue holding at most `capacity` outcomes (at least one).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            items: VecDeque::with_capacity(capacity.min(1024)),
            capacity,
            dropped: 0,
        }
    }

    /// Queued outcomes.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Drops not yet reported.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Queues `outcome`; when full, drops the oldest. Returns true if one was dropped.
    pub fn push(&mut self, outcome: RequestOutcome) -> bool {
        let overflow = self.items.len() >= self.capacity;
        if overflow {
            self.items.pop_front();
            self.dropped += 1;
        }
        self.items.push_back(outcome);
        overflow
    }

    /// Takes the oldest `max_batch` outcomes and the drop count into a report; `None` when
    /// there is nothing to tell.
    pub fn take_batch(&mut self, max_batch: usize) -> Option<ReportRequest> {
        if self.items.is_empty() && self.dropped == 0 {
            return None;
        }
        let n = self.items.len().min(max_batch.max(1));
        let outcomes = self.items.drain(..n).collect();
        let dropped = std::mem::take(&mut self.dropped);
        Some(ReportRequest { outcomes, dropped })
    }

    /// Records that a report never reached the scorer: its outcomes and the drops it carried
    /// count as dropped, to be told next time.
    pub fn report_lost(&mut self, outcomes: usize, dropped: u64) {
        self.dropped = self
            .dropped
            .saturating_add(dropped)
            .saturating_add(outcomes as u64);
    }
}

/// The report currently in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InFlight {
    /// Host token of the call.
    pub token: u32,
    /// Outcomes in it.
    pub outcomes: usize,
    /// Drop count it carried.
    pub dropped: u64,
    /// When it was sent, nanoseconds since the epoch.
    pub sent_at_nanos: u64,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn outcome(i: usize) -> RequestOutcome {
        RequestOutcome {
            request_id: format!("r{i}"),
            ..Default::default()
        }
    }

    fn ids(r: &ReportRequest) -> Vec<&str> {
        r.outcomes.iter().map(|o| o.request_id.as_str()).collect()
    }

    #[test]
    fn bounded_dropping_the_oldest() {
        let mut q = OutcomeQueue::new(3);
        for i in 0..3 {
            assert!(!q.push(outcome(i)));
        }
        assert!(q.push(outcome(3)));
        assert!(q.push(outcome(4)));
        assert_eq!(q.len(), 3);
        assert_eq!(q.dropped(), 2);
        let r = q.take_batch(10).unwrap();
        assert_eq!(ids(&r), ["r2", "r3", "r4"]);
        assert_eq!(r.dropped, 2);
        assert_eq!(q.dropped(), 0);
        assert!(q.take_batch(10).is_none());
    }

    #[test]
    fn batches_are_bounded_and_in_order() {
        let mut q = OutcomeQueue::new(100);
        for i in 0..5 {
            q.push(outcome(i));
        }
        assert_eq!(ids(&q.take_batch(2).unwrap()), ["r0", "r1"]);
        assert_eq!(ids(&q.take_batch(2).unwrap()), ["r2", "r3"]);
        assert_eq!(ids(&q.take_batch(2).unwrap()), ["r4"]);
        assert!(q.take_batch(2).is_none());
    }

    #[test]
    fn lost_reports_are_counted_and_reported() {
        let mut q = OutcomeQueue::new(2);
        q.push(outcome(0));
        q.push(outcome(1));
        q.push(outcome(2));
        let r = q.take_batch(10).unwrap();
        assert_eq!((r.outcomes.len(), r.dropped), (2, 1));
        q.report_lost(r.outcomes.len(), r.dropped);
        let r = q.take_batch(10).unwrap();
        assert!(
            r.outcomes.is_empty(),
            "a drop count alone is still reported"
        );
        assert_eq!(r.dropped, 3);
    }
}
