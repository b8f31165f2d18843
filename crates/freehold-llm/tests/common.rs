//! Helpers shared by the client contract suites.

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use freehold_llm::EventStream;
use freehold_llm::client::ClientOptions;
use freehold_llm::http::HttpSettings;
use freehold_llm::retry::RetryPolicy;
use freehold_protocol::{LlmError, StreamEvent};
use futures::StreamExt;

/// Client options for a mock server: fast retries, a short idle timeout.
pub fn options(name: &str, base_url: String) -> ClientOptions {
    let mut options = ClientOptions::new(name, base_url);
    options.http = HttpSettings {
        connect_timeout: Duration::from_secs(2),
        idle_timeout: Duration::from_secs(5),
        response_timeout: Duration::from_secs(10),
        retry: RetryPolicy {
            max_retries: 2,
            initial_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(50),
            max_retry_after: Duration::from_secs(5),
        },
        direct: false,
    };
    options
}

/// Every event of a stream, or the first error (with the events before it).
pub async fn drain(mut stream: EventStream) -> (Vec<StreamEvent>, Option<LlmError>) {
    let mut events = Vec::new();
    while let Some(item) = stream.next().await {
        match item {
            Ok(event) => events.push(event),
            Err(error) => return (events, Some(error)),
        }
    }
    (events, None)
}

/// Text deltas joined.
pub fn text_of(events: &[StreamEvent]) -> String {
    events
        .iter()
        .filter_map(|event| match event {
            StreamEvent::TextDelta { text } => Some(text.as_str()),
            _ => None,
        })
        .collect()
}

/// Checks the event-order contract: Start first if present, Usage and Stop
/// last (with only context edits and a refusal's details between them),
/// tool-call starts before their deltas and ends.
pub fn assert_well_ordered(events: &[StreamEvent]) {
    let stop_positions: Vec<_> = events
        .iter()
        .enumerate()
        .filter(|(_, e)| matches!(e, StreamEvent::Stop { .. }))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(
        stop_positions,
        vec![events.len() - 1],
        "exactly one Stop, last: {events:?}"
    );
    for (i, event) in events.iter().enumerate() {
        if let StreamEvent::Start { .. } = event {
            assert_eq!(i, 0, "Start must come first: {events:?}");
        }
        if let StreamEvent::Usage(_) = event {
            // Only what closes an answer may come between its usage and its stop.
            let closing = events[i + 1..].iter().all(|e| {
                matches!(
                    e,
                    StreamEvent::ContextEdited { .. }
                        | StreamEvent::RefusalDetails(_)
                        | StreamEvent::Stop { .. }
                )
            });
            assert!(closing, "Usage must precede Stop: {events:?}");
        }
        if let StreamEvent::ToolCallArgsDelta { index, .. }
        | StreamEvent::ToolCallEnd { index, .. } = event
        {
            let started = events[..i]
                .iter()
                .any(|e| matches!(e, StreamEvent::ToolCallStart { index: s, .. } if s == index));
            let ended = events[..i]
                .iter()
                .any(|e| matches!(e, StreamEvent::ToolCallEnd { index: s, .. } if s == index));
            assert!(started && !ended, "call {index} out of order: {events:?}");
        }
    }
}
