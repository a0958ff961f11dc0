//! The LISTEN/NOTIFY connection that tells each gateway what the others stored and finished.

use super::*;

/// How many notifications wait for a slow subscriber before it is told to resync.
pub(super) const LISTENER_BUFFER: usize = 16 * 1024;

/// Listens on one connection of its own and passes notifications on; re-connects with
/// back-off when the connection is lost (the database restarted), and says
/// [`FleetEvent::Resync`] each time it listens again. Ends when nobody subscribes any more.
pub(super) async fn listen(
    config: tokio_postgres::Config,
    member: String,
    channels: Channels,
    sender: broadcast::Sender<FleetEvent>,
) {
    use futures::StreamExt;
    let mut pause = Duration::from_millis(100);
    while sender.receiver_count() > 0 {
        match config.connect(NoTls).await {
            Ok((client, mut connection)) => {
                let (notes, mut received) = tokio::sync::mpsc::unbounded_channel();
                // poll_message drives the connection: the LISTEN below and the
                // notifications after it.
                let driver = tokio::spawn(async move {
                    let mut messages =
                        futures::stream::poll_fn(move |cx| connection.poll_message(cx));
                    while let Some(message) = messages.next().await {
                        match message {
                            Ok(AsyncMessage::Notification(note)) => {
                                if notes.send(note).is_err() {
                                    return;
                                }
                            }
                            Ok(_) => {}
                            Err(error) => {
                                return tracing::warn!(%error, "the store's listening connection failed");
                            }
                        }
                    }
                });
                let listening = client
                    .batch_execute(&format!(
                        "LISTEN {}; LISTEN {}",
                        channels.tasks, channels.results
                    ))
                    .await;
                if let Err(error) = listening {
                    tracing::warn!(error = %pg(error), "could not LISTEN on the store");
                    driver.abort();
                } else {
                    pause = Duration::from_millis(100);
                    tracing::debug!("listening for the other gateways' tasks and results");
                    let _ = sender.send(FleetEvent::Resync);
                    while let Some(note) = received.recv().await {
                        let event = if note.channel() == channels.tasks {
                            stored_elsewhere(note.payload(), &member)
                        } else {
                            finished_elsewhere(note.payload(), &member)
                        };
                        if let Some(event) = event {
                            if sender.send(event).is_err() {
                                return;
                            }
                        }
                    }
                    drop(client);
                }
            }
            Err(error) => {
                tracing::warn!(error = %pg(error), ?pause, "the store's listener cannot connect; retrying")
            }
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(5));
    }
}

/// The endpoint of a task notification (`"<member> <endpoint>"`), unless this store sent
/// it: its own gateway hands out what it stores itself.
pub(super) fn stored_elsewhere(payload: &str, member: &str) -> Option<FleetEvent> {
    let (from, endpoint) = payload.split_once(' ')?;
    (from != member).then(|| FleetEvent::NewTasks(endpoint.to_string()))
}

/// The ids of a result notification (`"<member> <id>,<id>,..."`), unless this store sent it.
pub(super) fn finished_elsewhere(payload: &str, member: &str) -> Option<FleetEvent> {
    let (from, ids) = payload.split_once(' ')?;
    if from == member {
        return None;
    }
    let ids: Vec<u64> = ids.split(',').filter_map(|id| id.parse().ok()).collect();
    Some(FleetEvent::Finished(ids))
}
