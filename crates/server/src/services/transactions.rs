//! The `Transactions` service: several writes of one tenant as one commit.

use arbiter_api::v1::{
    CommitTransactionRequest, CommitTransactionResponse, transactions_server::Transactions,
};
use arbiter_core::warnings::collect;
use arbiter_store::Store;
use tonic::{Request, Response, Status};

use super::{Api, Asked};

#[tonic::async_trait]
impl<S: Store> Transactions for Api<S> {
    async fn commit_transaction(
        &self,
        request: Request<CommitTransactionRequest>,
    ) -> Result<Response<CommitTransactionResponse>, Status> {
        let parent = request.get_ref().parent.clone();
        let asked = Asked {
            method: "commit_transaction",
            kind: "transaction",
            collection: "transactions",
        };
        let (caller, req, _permit) = self.parts(request, &parent, asked)?;
        self.reply(
            &caller,
            asked,
            &parent,
            collect(self.engine.commit_transaction(&caller, req)).await,
        )
    }
}
