//! `GET /events`: server-sent events, `reading` for each processed record and `status` for
//! each change. Each client has a bounded buffer; one that falls behind is dropped, so a slow
//! client never slows ingestion.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures::Stream;
use futures::StreamExt;
use tokio_stream::wrappers::BroadcastStream;

use super::AppState;
use crate::service::Event;

/// The live stream of readings and status changes.
#[utoipa::path(get, path = "/events", tag = "live",
    responses((status = 200, description = "text/event-stream with events `reading` (a processed record), `status` (a change) and `alert` (a change of an alert: kind and alert)", content_type = "text/event-stream")))]
pub(crate) async fn stream(
    State(state): State<AppState>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let shutdown = state.shutdown.clone();
    let events = BroadcastStream::new(state.service.subscribe())
        // A lagged client has lost events: end its stream, and its EventSource reconnects.
        .take_while(|e| futures::future::ready(e.is_ok()))
        .filter_map(|e| futures::future::ready(e.ok()))
        .map(|e| {
            let sse = match &e {
                Event::Reading(r) => SseEvent::default().event("reading").json_data(r.as_ref()),
                Event::Status(c) => SseEvent::default().event("status").json_data(c),
                Event::Alert(c) => SseEvent::default().event("alert").json_data(c.as_ref()),
            };
            Ok(sse.unwrap_or_else(|_| SseEvent::default().comment("unserializable event")))
        })
        .take_until(async move { shutdown.cancelled().await });
    // hyper sends the response head with the first body frame: an opening comment makes a
    // client (and a browser's EventSource `open`) see the stream at once, not at the first event.
    let opened = futures::stream::once(futures::future::ready(Ok(
        SseEvent::default().comment("connected")
    )));
    Sse::new(opened.chain(events)).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}
