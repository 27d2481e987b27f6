//! The gRPC edge: `palisade.v1.Scorer` over the [`Engine`]. Decoding and status mapping only.

use std::{
    sync::Arc,
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use palisade_proto::v1::{
    CheckRequest, CheckResponse, ReportRequest, ReportResponse, scorer_server::Scorer,
};
use tonic::{Request, Response, Status};

use crate::engine::Engine;

/// `palisade.v1.Scorer` implementation.
#[derive(Debug, Clone)]
pub struct ScorerService {
    engine: Arc<Engine>,
}

impl ScorerService {
    /// A service deciding with `engine`.
    pub fn new(engine: Arc<Engine>) -> Self {
        Self { engine }
    }
}

/// The scorer's wall clock in ms since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[tonic::async_trait]
impl Scorer for ScorerService {
    async fn check(
        &self,
        request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        let started = Instant::now();
        let result = self.engine.check(request.get_ref(), now_ms()).await;
        self.engine
            .metrics()
            .check_seconds
            .observe(started.elapsed().as_secs_f64());
        Ok(Response::new(result?))
    }

    async fn report(
        &self,
        request: Request<ReportRequest>,
    ) -> Result<Response<ReportResponse>, Status> {
        Ok(Response::new(self.engine.report(request.get_ref())?))
    }
}
