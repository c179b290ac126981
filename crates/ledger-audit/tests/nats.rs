//! `audit verify --nats` checks each message's subject and `Nats-Msg-Id`
//! against the event it carries (a real nats-server, via ledger-testkit).

use async_nats::jetstream;
use async_nats::HeaderMap;
use ledger_audit::nats::{verify_stream, StreamPlan};
use ledger_audit::verify::{FindingKind, NoObserver, VerifyOptions};
use ledger_core::Envelope;
use ledger_testkit::{renamed_chain, NatsServer};
use uuid::Uuid;

/// A legal chain of `n` events on one client token: issued, then renamed.
fn chain(n: u64) -> Vec<Envelope> {
    renamed_chain(n, "t")
}

/// How one message is sent: its subject and `Nats-Msg-Id` (`None`: no header).
struct Sent {
    subject: String,
    msg_id: Option<String>,
}

fn honest(env: &Envelope) -> Sent {
    Sent {
        subject: env.subject(),
        msg_id: Some(env.event_id.to_string()),
    }
}

/// Publishes `events` on a fresh server's `TOKENS` as `sent` says, then
/// verifies the stream; returns the finding as (position, kind, message).
fn verify_sent(events: &[Envelope], sent: Vec<Sent>) -> Option<(u64, FindingKind, String)> {
    let nats = NatsServer::start().expect("nats-server");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let js = runtime.block_on(async {
        let client = async_nats::connect(nats.url()).await.unwrap();
        let js = jetstream::new(client);
        js.create_stream(ledger_nats::StreamSettings::default().config())
            .await
            .unwrap();
        for (env, how) in events.iter().zip(sent) {
            let mut headers = HeaderMap::new();
            if let Some(id) = &how.msg_id {
                headers.insert(async_nats::header::NATS_MESSAGE_ID, id.as_str());
            }
            let ack = js
                .publish_with_headers(how.subject, headers, env.to_json_bytes().into())
                .await
                .unwrap()
                .await
                .unwrap();
            assert_eq!(ack.sequence, env.position);
        }
        js
    });
    let out = verify_stream(
        runtime.handle(),
        &js,
        StreamPlan::whole_stream(),
        &VerifyOptions::default(),
        &mut NoObserver,
        &mut |_| {},
    )
    .unwrap();
    out.report.finding.map(|f| (f.position, f.kind, f.message))
}

#[test]
fn messages_whose_subject_and_id_match_their_events_verify() {
    let events = chain(5);
    let sent = events.iter().map(honest).collect();
    assert_eq!(verify_sent(&events, sent), None);
}

#[test]
fn a_message_without_nats_msg_id_is_named_at_its_position() {
    let events = chain(5);
    let mut sent: Vec<Sent> = events.iter().map(honest).collect();
    sent[2].msg_id = None;
    let (position, kind, message) = verify_sent(&events, sent).expect("a finding");
    assert_eq!((position, kind), (3, FindingKind::MessageMismatch));
    assert!(message.contains("no Nats-Msg-Id"), "{message}");
}

#[test]
fn a_subject_that_is_not_its_events_is_named_at_its_position() {
    let events = chain(6);
    let mut sent: Vec<Sent> = events.iter().map(honest).collect();
    // Event 4 sent under another workspace's subject.
    sent[3].subject = format!(
        "tokens.evt.other.{}.{}",
        events[3].token_id,
        events[3].event_type()
    );
    let (position, kind, message) = verify_sent(&events, sent).expect("a finding");
    assert_eq!((position, kind), (4, FindingKind::MessageMismatch));
    assert!(message.contains("tokens.evt.other."), "{message}");

    // The right workspace and token, the wrong type.
    let mut sent: Vec<Sent> = events.iter().map(honest).collect();
    sent[1].subject = format!("tokens.evt.acme.{}.token_revoked", events[1].token_id);
    let (position, kind, _) = verify_sent(&events, sent).expect("a finding");
    assert_eq!((position, kind), (2, FindingKind::MessageMismatch));
}

#[test]
fn a_nats_msg_id_that_is_not_the_event_id_is_named_at_its_position() {
    let events = chain(6);
    let mut sent: Vec<Sent> = events.iter().map(honest).collect();
    // Event 5 sent with an id of its own (another event's would be taken
    // for a duplicate and dropped by the stream).
    sent[4].msg_id = Some(Uuid::now_v7().to_string());
    let (position, kind, message) = verify_sent(&events, sent).expect("a finding");
    assert_eq!((position, kind), (5, FindingKind::MessageMismatch));
    assert!(message.contains("Nats-Msg-Id"), "{message}");
}
