//! The result stream: `GET /v1/results` in its binary form, kept open and read frame by
//! frame for the driver.

use std::time::Duration;

use bytes::BytesMut;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::sync::mpsc;
use tokio_util::codec::Decoder;
use tracing::warn;

use super::http::Http;
use crate::model::{ResultFrame, TaskView};

/// What the result stream tells the driver.
#[derive(Debug)]
pub(super) enum Feed {
    /// The stream is (re)connected: results from now on arrive as events.
    Connected,
    /// The stream dropped, or could not be opened.
    Down(String),
    /// Tasks finished: one frame of the stream.
    Results(Vec<TaskView>),
    /// The gateway dropped results for this reader (it read too slowly).
    Lagged,
}

/// Keeps `GET /v1/results` open, reconnecting with back-off, and feeds its events to the
/// driver until the driver is gone.
pub(super) async fn result_stream(
    http: Http,
    feed: mpsc::UnboundedSender<Feed>,
    min_backoff: Duration,
    max_backoff: Duration,
) {
    let mut backoff = min_backoff;
    loop {
        let reason = tokio::select! {
            () = feed.closed() => return,
            opened = http.open_result_stream() => match opened {
                Ok(response) => {
                    backoff = min_backoff;
                    if feed.send(Feed::Connected).is_err() {
                        return;
                    }
                    tokio::select! {
                        () = feed.closed() => return,
                        reason = read_frames(response.into_body(), &feed) => reason,
                    }
                }
                Err(error) => error.to_string(),
            }
        };
        if feed.send(Feed::Down(reason)).is_err() {
            return;
        }
        tokio::select! {
            () = feed.closed() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(max_backoff);
    }
}

/// How long the result stream may stay silent before it counts as dead: the gateway sends an
/// empty frame every 15 s, so this only fires on a connection that vanished without a reset
/// (a machine or a network gone).
const STREAM_SILENCE: Duration = Duration::from_secs(45);

/// Reads result frames ([`ResultFrame::codec`]) until the stream ends; each frame goes to the
/// driver whole. Returns why the stream ended.
async fn read_frames(mut body: Incoming, feed: &mpsc::UnboundedSender<Feed>) -> String {
    let mut codec = ResultFrame::codec();
    let mut buffer = BytesMut::new();
    loop {
        let Ok(frame) = tokio::time::timeout(STREAM_SILENCE, body.frame()).await else {
            return format!("nothing from the gateway for {STREAM_SILENCE:?}");
        };
        let data = match frame {
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => data,
                Err(_) => continue,
            },
            Some(Err(error)) => return format!("the stream failed: {error}"),
            None => return "the gateway closed the stream".into(),
        };
        buffer.extend_from_slice(&data);
        loop {
            match codec.decode(&mut buffer) {
                Ok(Some(frame)) => {
                    if frame.lagged > 0 && feed.send(Feed::Lagged).is_err() {
                        return "the driver stopped".into();
                    }
                    if !frame.results.is_empty() && feed.send(Feed::Results(frame.results)).is_err()
                    {
                        return "the driver stopped".into();
                    }
                }
                Ok(None) => break,
                // The frame is off the buffer and the boundaries still hold; the tasks it held
                // are read by id.
                Err(error) if error.is_decode() => {
                    warn!(%error, "unreadable result frame from the gateway; reading outstanding tasks");
                    if feed.send(Feed::Lagged).is_err() {
                        return "the driver stopped".into();
                    }
                }
                // A length past u32::MAX cannot be announced: nothing else fails.
                Err(error) => return format!("a bad result frame: {error}"),
            }
        }
    }
}
