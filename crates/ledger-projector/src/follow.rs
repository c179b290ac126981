//! Keeping the views up to date while a server runs.

use crate::{Projector, ProjectorError};
use ledger_store::Store;
use std::future::Future;

/// Catches the projector up whenever the log's head moves, until `shutdown`
/// completes or the store goes away; returns the projector.
///
/// Catch-up does blocking sled IO, so it runs on tokio's blocking pool.
/// Queries meanwhile go through [`crate::Views`] handles taken before the
/// call; [`Projector::subscribe`] (also taken before) tells how far the views
/// are. A catch-up failure ends the loop with the error.
pub async fn run_follower(
    mut projector: Projector,
    store: Store,
    shutdown: impl Future<Output = ()>,
) -> Result<Projector, ProjectorError> {
    let mut head = store.watch_head();
    tokio::pin!(shutdown);
    loop {
        head.borrow_and_update();
        let s = store.clone();
        let (p, caught_up) = tokio::task::spawn_blocking(move || {
            let r = projector.catch_up(&s);
            (projector, r)
        })
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
        projector = p;
        let position = caught_up?;
        tracing::trace!(position, "views caught up");
        tokio::select! {
            () = &mut shutdown => return Ok(projector),
            changed = head.changed() => {
                if changed.is_err() {
                    return Ok(projector);
                }
            }
        }
    }
}
