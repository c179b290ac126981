//! The async follower keeps the views up to date as commands commit.

mod support;

use ledger_core::CommandName;
use ledger_projector::{run_follower, Lookup, Projector};
use serde_json::json;
use std::time::Duration;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_catches_up_as_the_head_moves() {
    let (_dir, _master, store) = fresh();
    let projector = Projector::open(store.db()).unwrap();
    let views = projector.views();
    let mut applied = projector.subscribe();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let follower = tokio::spawn(run_follower(projector, store.clone(), async {
        let _ = stopped.await;
    }));

    let mut last = 0;
    for i in 0..20 {
        let c = store
            .execute(cmd(
                CommandName::IssueClientToken,
                json!({"name": format!("f{i}")}),
            ))
            .await
            .unwrap();
        last = c.positions[0];
    }
    tokio::time::timeout(Duration::from_secs(10), applied.wait_for(|p| *p >= last))
        .await
        .expect("the views catch up")
        .unwrap();
    assert_eq!(views.checkpoint().unwrap(), last);
    let found = views.get(WS, Lookup::Name("F19".into()), now()).unwrap();
    assert!(found.is_some());

    stop.send(()).unwrap();
    let projector = follower.await.unwrap().unwrap();
    assert_eq!(projector.checkpoint(), last);
    tokio::task::spawn_blocking(move || store.shutdown())
        .await
        .unwrap()
        .unwrap();
}
