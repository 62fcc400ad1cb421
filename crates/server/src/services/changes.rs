//! The `Changes` service: a server stream of a tenant's changes, and a
//! resource's history.

use std::pin::Pin;

use arbiter_api::v1::{
    Change, ListRevisionsRequest, ListRevisionsResponse, WatchChangesRequest, changes_server::Changes,
};
use arbiter_core::WatchRequest;
use arbiter_store::Store;
use futures::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use super::{Api, Asked};
use crate::status::to_status;

/// The stream of a watch as tonic serves it.
pub type ChangeStream = Pin<Box<dyn Stream<Item = Result<Change, Status>> + Send>>;

#[tonic::async_trait]
impl<S: Store> Changes for Api<S> {
    type WatchChangesStream = ChangeStream;

    async fn watch_changes(
        &self,
        request: Request<WatchChangesRequest>,
    ) -> Result<Response<Self::WatchChangesStream>, Status> {
        let parent = request.get_ref().parent.clone();
        let asked = Asked::any("watch_changes");
        let (caller, req, _permit) = self.parts(request, &parent, asked)?;
        let watch = WatchRequest {
            parent: req.parent,
            collections: req.collections,
            start_revision: req.start_revision,
            send_initial: req.send_initial,
            filter: req.filter,
        };
        let feed = self
            .engine
            .watch(&caller, watch)
            .await
            .map_err(|e| self.refused(&caller, asked, &parent, to_status(&e)))?;
        metrics::gauge!("arbiter_watchers").increment(1.0);
        // A shutdown ends the stream cleanly: the client resumes from its
        // last revision, here after a restart or on another replica.
        let stream = feed
            .map(|item| item.map_err(|e| to_status(&e)))
            .take_until(Box::pin(self.closing.clone().closed()));
        Ok(Response::new(Box::pin(Counted(stream))))
    }

    async fn list_revisions(
        &self,
        request: Request<ListRevisionsRequest>,
    ) -> Result<Response<ListRevisionsResponse>, Status> {
        let name = request.get_ref().name.clone();
        let asked = Asked::any("list_revisions");
        let (caller, req, _permit) = self.parts(request, &name, asked)?;
        let page = self
            .engine
            .list_revisions(&caller, &req.name, req.page_size, &req.page_token)
            .await
            .map_err(|e| self.refused(&caller, asked, &name, to_status(&e)))?;
        Ok(Response::new(ListRevisionsResponse {
            revisions: page.revisions,
            next_page_token: page.next_page_token,
        }))
    }
}

/// A watch stream that counts itself out of `arbiter_watchers` when it ends.
struct Counted<T>(T);

impl<T: Stream + Unpin> Stream for Counted<T> {
    type Item = T::Item;

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        Pin::new(&mut self.0).poll_next(cx)
    }
}

impl<T> Drop for Counted<T> {
    fn drop(&mut self) {
        metrics::gauge!("arbiter_watchers").decrement(1.0);
    }
}
