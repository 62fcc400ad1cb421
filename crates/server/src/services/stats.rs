//! The `Stats` service: statistics of refused requests and of policy
//! evaluations.

use arbiter_api::v1::{
    ConflictStats, GetConflictStatsRequest, GetPolicyStatsRequest, PolicyEvaluationStats, stats_server::Stats,
};
use arbiter_core::warnings::collect;
use arbiter_store::Store;
use tonic::{Request, Response, Status};

use super::{Api, Asked};

#[tonic::async_trait]
impl<S: Store> Stats for Api<S> {
    async fn get_conflict_stats(
        &self,
        request: Request<GetConflictStatsRequest>,
    ) -> Result<Response<ConflictStats>, Status> {
        let parent = request.get_ref().parent.clone();
        let asked = Asked::any("get_conflict_stats");
        let (caller, req, _permit) = self.parts(request, &parent, asked)?;
        self.reply(
            &caller,
            asked,
            &parent,
            collect(self.engine.conflict_stats(&caller, req)).await,
        )
    }

    async fn get_policy_stats(
        &self,
        request: Request<GetPolicyStatsRequest>,
    ) -> Result<Response<PolicyEvaluationStats>, Status> {
        let parent = request.get_ref().parent.clone();
        let asked = Asked::any("get_policy_stats");
        let (caller, req, _permit) = self.parts(request, &parent, asked)?;
        self.reply(
            &caller,
            asked,
            &parent,
            collect(self.engine.policy_evaluation_stats(&caller, req)).await,
        )
    }
}
