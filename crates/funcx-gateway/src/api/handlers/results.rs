//! The result stream: server-sent events, or postcard frames.

use super::*;

/// `GET /v1/results`: the caller's tasks as they finish, while the stream is open.
///
/// By default server-sent events: one `result` event per task, a `lagged` event (data: how
/// many were missed, 1 when that is not known) if the caller reads too slowly to keep up
/// or the gateway may have missed results other gateways stored. With `Accept:
/// application/x-postcard`, the binary stream of [`results_postcard`] instead.
pub(crate) async fn results(
    State(gateway): State<Gateway>,
    Extension(user): Extension<User>,
    headers: HeaderMap,
) -> Response {
    let events = gateway.inner.events.subscribe();
    // A stopping gateway ends the stream, so that the stop is not held up by it.
    let mut closing = gateway.inner.closing.subscribe();
    let closed = async move {
        let _ = closing.wait_for(|closing| *closing).await;
    };
    if Format::accepted(&headers) == Format::Postcard {
        return results_postcard(events, user, closed);
    }
    let stream = futures::stream::unfold((events, user), |(mut events, user)| async move {
        loop {
            match events.recv().await {
                Ok(Published::Finished(record)) if record.owner == user.name() => {
                    let record = TaskRecord::clone(&record);
                    let (state, timeline) = (record.state, record.timeline);
                    let view = view_of(record, state, timeline);
                    let event = Event::default()
                        .event("result")
                        .json_data(view)
                        .unwrap_or_else(|e| Event::default().event("error").data(e.to_string()));
                    return Some((Ok::<_, Infallible>(event), (events, user)));
                }
                Ok(Published::Finished(_)) => continue,
                // How many is not known: one, so that the client reads by id.
                Ok(Published::Missed) => {
                    let event = Event::default().event("lagged").data("1");
                    return Some((Ok(event), (events, user)));
                }
                Err(RecvError::Lagged(missed)) => {
                    let event = Event::default().event("lagged").data(missed.to_string());
                    return Some((Ok(event), (events, user)));
                }
                Err(RecvError::Closed) => return None,
            }
        }
    });
    Sse::new(stream.take_until(closed))
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// How often the binary result stream sends an empty frame when nothing finishes (as the
/// event stream sends a keep-alive comment).
pub(super) const FRAME_KEEP_ALIVE: Duration = Duration::from_secs(15);

/// A frame stops taking results past this many payload bytes (the rest go in the next).
pub(super) const FRAME_MAX_BYTES: usize = 16 << 20;

/// The binary result stream: frames of [`ResultFrame::codec`] (a `u32` big-endian length, then
/// a postcard [`ResultFrame`]), each holding every result of the caller's waiting when it is written.
/// Results are encoded straight from the broadcast records: payloads are not copied until
/// they are written into the frame.
pub(super) fn results_postcard(
    events: broadcast::Receiver<Published>,
    user: User,
    closed: impl std::future::Future<Output = ()> + Send + 'static,
) -> Response {
    let frames = futures::stream::unfold(
        (events, user, false),
        |(mut events, user, closed)| async move {
            if closed {
                return None;
            }
            let mut records = Vec::new();
            let mut lagged = 0u64;
            let mut closed = false;
            // Wait for the first result of the caller's (or a lag, or the keep-alive time).
            let deadline = tokio::time::Instant::now() + FRAME_KEEP_ALIVE;
            loop {
                match tokio::time::timeout_at(deadline, events.recv()).await {
                    Err(_) => break,
                    Ok(Ok(Published::Finished(record))) if record.owner == user.name() => {
                        records.push(record);
                        break;
                    }
                    Ok(Ok(Published::Finished(_))) => continue,
                    Ok(Ok(Published::Missed)) => {
                        lagged += 1;
                        break;
                    }
                    Ok(Err(RecvError::Lagged(missed))) => {
                        lagged += missed;
                        break;
                    }
                    Ok(Err(RecvError::Closed)) => return None,
                }
            }
            // Then everything else already there, without waiting.
            let mut bytes = 0;
            while bytes < FRAME_MAX_BYTES {
                match events.try_recv() {
                    Ok(Published::Finished(record)) if record.owner == user.name() => {
                        if let Some(Ok(payload)) = &record.result {
                            bytes += payload.as_bytes().len();
                        }
                        records.push(record);
                    }
                    Ok(Published::Finished(_)) => {}
                    Ok(Published::Missed) => lagged += 1,
                    Err(TryRecvError::Lagged(missed)) => lagged += missed,
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Closed) => {
                        closed = true;
                        break;
                    }
                }
            }
            let frame = FrameRef {
                lagged,
                results: records.iter().map(|record| ViewRef::of(record)).collect(),
            };
            let mut bytes = BytesMut::new();
            let chunk = match ResultFrame::codec().encode(&frame, &mut bytes) {
                Ok(()) => bytes.freeze(),
                Err(error) => {
                    warn!(%error, "cannot send a result frame; the client reads those tasks by id");
                    lagged_frame(lagged + records.len() as u64)
                }
            };
            Some((Ok::<_, Infallible>(chunk), (events, user, closed)))
        },
    )
    .take_until(closed);
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(POSTCARD)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        axum::body::Body::from_stream(frames),
    )
        .into_response()
}

/// A frame that only says `missed` results were dropped.
pub(super) fn lagged_frame(missed: u64) -> Bytes {
    let frame = FrameRef {
        lagged: missed.max(1),
        results: Vec::new(),
    };
    let mut bytes = BytesMut::new();
    // A few bytes: within any frame size, and encoding two integers cannot fail.
    let _ = ResultFrame::codec().encode(&frame, &mut bytes);
    bytes.freeze()
}

/// [`ResultFrame`] borrowing the records it shows: the same postcard encoding.
#[derive(Serialize)]
pub(super) struct FrameRef<'a> {
    lagged: u64,
    results: Vec<ViewRef<'a>>,
}

/// [`TaskView`] borrowing its record: the same fields in the same order, so the same
/// postcard encoding.
#[derive(Serialize)]
pub(super) struct ViewRef<'a> {
    id: u64,
    state: TaskState,
    timeline: funcx_core::Timeline,
    result: Option<BlobRef<'a>>,
    error: Option<&'a TaskError>,
    error_message: Option<String>,
    result_format: Option<funcx_core::Format>,
}

impl<'a> ViewRef<'a> {
    fn of(record: &'a TaskRecord) -> ViewRef<'a> {
        let (result, result_format, error) = match &record.result {
            Some(Ok(payload)) => (
                Some(BlobRef(payload.as_bytes())),
                Some(payload.format()),
                None,
            ),
            Some(Err(error)) => (None, None, Some(error)),
            None => (None, None, None),
        };
        ViewRef {
            id: record.id,
            state: record.state,
            timeline: record.timeline,
            result,
            error,
            error_message: error.map(ToString::to_string),
            result_format,
        }
    }
}

/// [`Blob`] borrowed, for binary formats only (raw bytes, as [`Blob`] is in postcard).
pub(super) struct BlobRef<'a>(&'a [u8]);

impl Serialize for BlobRef<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(self.0)
    }
}
