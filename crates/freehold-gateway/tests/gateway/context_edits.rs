//! Anthropic's context editing (`context_management`) through the
//! gateway: made by the router for a provider that does not make it (an
//! OpenAI-compatible server here), and sent as it is to an Anthropic
//! upstream, whose report of what it cleared reaches the client; either
//! way the client is told in Anthropic's words, whole and streamed.

use freehold_test_support::{MockServer, Scripted, Split, sse_text};

use super::*;

/// The note a cleared tool result becomes.
const CLEARED: &str = freehold_llm::context_edit::CLEARED_RESULT;

/// A Messages request for `model` whose conversation has four `read` tool
/// uses, each with a 2,000-byte result, thinking on each assistant turn,
/// and `context_management` asking to keep one tool use past two, and the
/// thinking of the last turn.
fn conversation_with_edits(model: &str, stream: bool) -> Value {
    let mut messages = vec![json!({"role": "user", "content": "read the four files"})];
    for index in 0..4 {
        messages.push(json!({"role": "assistant", "content": [
            {"type": "thinking", "thinking": format!("file {index} next"), "signature": "sig"},
            {"type": "tool_use", "id": format!("toolu_{index}"), "name": "read",
             "input": {"path": format!("file_{index}.rs")}},
        ]}));
        messages.push(json!({"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": format!("toolu_{index}"),
             "content": format!("{index}").repeat(2_000)},
        ]}));
    }
    json!({
        "model": model,
        "max_tokens": 100,
        "stream": stream,
        "tools": [{"name": "read", "description": "Reads a file.",
                   "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}}}],
        "messages": messages,
        "context_management": {"edits": [
            {"type": "clear_thinking_20251015"},
            {"type": "clear_tool_uses_20250919",
             "trigger": {"type": "tool_uses", "value": 2},
             "keep": {"type": "tool_uses", "value": 1}},
        ]},
    })
}

/// POSTs `body` to `/v1/messages` as an Anthropic client would; the status
/// and the body's text.
async fn messages(url: &str, body: &Value) -> (u16, String) {
    let response = reqwest::Client::new()
        .post(format!("{url}/v1/messages"))
        .header("x-api-key", MASTER)
        .header("anthropic-version", "2023-06-01")
        .header("anthropic-beta", "context-management-2025-06-27")
        .json(body)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

/// The `data` of the stream's `message_delta` event.
fn message_delta(stream: &str) -> Value {
    let data = stream
        .split("\n\n")
        .find(|event| event.starts_with("event: message_delta"))
        .and_then(|event| event.lines().find_map(|line| line.strip_prefix("data: ")))
        .unwrap_or_else(|| panic!("no message_delta in {stream}"));
    serde_json::from_str(data).unwrap()
}

#[tokio::test]
async fn context_edits_are_made_for_a_provider_that_does_not_make_them() {
    let stream = sse_text(&[
        (
            "",
            &json!({"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "mock-model",
                    "choices": [{"index": 0, "delta": {"role": "assistant", "content": "done"},
                                 "finish_reason": "stop"}]})
            .to_string(),
        ),
        ("", "[DONE]"),
    ]);
    let upstream = MockServer::start(vec![
        Scripted::json(200, chat_completion("mock-model", "done")),
        Scripted::sse(&stream, Split::Whole),
    ])
    .await;
    let gw = start(
        routes(vec![format!("{}/v1", upstream.url())]),
        GatewaySettings::default(),
        None,
    )
    .await;

    let (status, whole) = messages(&gw.url, &conversation_with_edits("mock", false)).await;
    assert_eq!(status, 200, "{whole}");
    let (status, streamed) = messages(&gw.url, &conversation_with_edits("mock", true)).await;
    assert_eq!(status, 200, "{streamed}");

    let sent = upstream.requests();
    assert_eq!(sent.len(), 2);
    for request in &sent {
        let body = request.json();
        assert!(body.get("context_management").is_none(), "{body}");
        let results: Vec<&str> = body["messages"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|message| message["role"] == "tool")
            .map(|message| message["content"].as_str().unwrap())
            .collect();
        // Four uses, past the trigger of two: all but the last cleared.
        assert_eq!(&results[..3], [CLEARED; 3], "{body}");
        assert_eq!(results[3], "3".repeat(2_000));
        // The calls themselves stay.
        let calls = body["messages"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|message| message.get("tool_calls").is_some())
            .count();
        assert_eq!(calls, 4, "{body}");
    }

    let per_result = 500 - (CLEARED.len() as u64).div_ceil(4);
    let check = |report: &Value| {
        let edits = report["applied_edits"].as_array().unwrap();
        assert_eq!(edits.len(), 2, "{report}");
        assert_eq!(edits[0]["type"], "clear_thinking_20251015");
        assert_eq!(edits[0]["cleared_thinking_turns"], 3);
        assert_eq!(edits[1]["type"], "clear_tool_uses_20250919");
        assert_eq!(edits[1]["cleared_tool_uses"], 3);
        assert_eq!(edits[1]["cleared_input_tokens"], 3 * per_result);
    };
    let whole: Value = serde_json::from_str(&whole).unwrap();
    check(&whole["context_management"]);
    check(&message_delta(&streamed)["context_management"]);
}

#[tokio::test]
async fn an_anthropic_upstream_gets_the_edits_and_reports_them() {
    let report = json!({"applied_edits": [
        {"type": "clear_tool_uses_20250919", "cleared_tool_uses": 3, "cleared_input_tokens": 1500},
    ]});
    let stream = sse_text(&[
        (
            "message_start",
            r#"{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","model":"claude-x","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":10,"output_tokens":1}}}"#,
        ),
        (
            "content_block_start",
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
        ),
        (
            "content_block_delta",
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"done"}}"#,
        ),
        (
            "content_block_stop",
            r#"{"type":"content_block_stop","index":0}"#,
        ),
        (
            "message_delta",
            &json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null},
                    "usage": {"output_tokens": 2}, "context_management": report})
            .to_string(),
        ),
        ("message_stop", r#"{"type":"message_stop"}"#),
    ]);
    let mut whole = anthropic_message("claude-x", "done");
    whole["context_management"] = report.clone();
    let upstream = MockServer::start(vec![
        Scripted::json(200, whole),
        Scripted::sse(&stream, Split::Whole),
    ])
    .await;
    let gw = start_anthropic(&upstream.url()).await;

    let asked = conversation_with_edits("claude:claude-x", false);
    let (status, whole) = messages(&gw.url, &asked).await;
    assert_eq!(status, 200, "{whole}");
    let (status, streamed) =
        messages(&gw.url, &conversation_with_edits("claude:claude-x", true)).await;
    assert_eq!(status, 200, "{streamed}");

    let sent = upstream.requests();
    assert_eq!(sent.len(), 2);
    for request in sent {
        let body = request.json();
        // Anthropic gets the edits as the client asked, and the whole
        // conversation: it makes them itself.
        assert_eq!(
            body["context_management"], asked["context_management"],
            "{body}"
        );
        assert_eq!(
            body["messages"][2]["content"][0]["content"],
            "0".repeat(2_000)
        );
        assert_eq!(
            request.header("anthropic-beta").as_deref(),
            Some("context-management-2025-06-27")
        );
    }
    let whole: Value = serde_json::from_str(&whole).unwrap();
    assert_eq!(whole["context_management"], report);
    assert_eq!(message_delta(&streamed)["context_management"], report);
}

/// A server that speaks the Messages API without being Anthropic's may
/// ignore context editing, or refuse it: the gateway makes the edits for
/// it, as for any provider that does not make them.
#[tokio::test]
async fn another_messages_server_gets_the_edits_made() {
    let upstream = MockServer::start(vec![Scripted::json(
        200,
        anthropic_message("glm-x", "done"),
    )])
    .await;
    let gw = start_configured(vec![(
        "compatible",
        ProviderConfig {
            kind: Some(ProviderKind::Anthropic),
            base_url: Some(upstream.url()),
            ..ProviderConfig::default()
        },
    )])
    .await;
    let (status, whole) =
        messages(&gw.url, &conversation_with_edits("compatible:glm-x", false)).await;
    assert_eq!(status, 200, "{whole}");
    let body = upstream.requests()[0].json();
    assert!(body.get("context_management").is_none(), "{body}");
    assert_eq!(body["messages"][2]["content"][0]["content"], CLEARED);
    assert_eq!(
        body["messages"][8]["content"][0]["content"],
        "3".repeat(2_000)
    );
    // The thinking of the last assistant turn alone is kept.
    let first_blocks: Vec<&Value> = [1, 3, 5, 7]
        .iter()
        .map(|&index| &body["messages"][index]["content"][0]["type"])
        .collect();
    assert_eq!(
        first_blocks,
        ["tool_use", "tool_use", "tool_use", "thinking"]
    );
    let whole: Value = serde_json::from_str(&whole).unwrap();
    assert_eq!(
        whole["context_management"]["applied_edits"][1]["cleared_tool_uses"],
        3
    );
}

#[tokio::test]
async fn context_editing_mistakes_and_a_compaction_it_cannot_make_are_400s() {
    let upstream = MockServer::start(Vec::new()).await;
    let gw = start(
        routes(vec![format!("{}/v1", upstream.url())]),
        GatewaySettings::default(),
        None,
    )
    .await;
    let with_edits = |edits: Value| {
        let mut body = chat_body("mock");
        body["context_management"] = json!({ "edits": edits });
        body
    };

    let (status, body) = messages(
        &gw.url,
        &with_edits(json!([{"type": "clear_tool_uses_20250919",
                            "keep": {"type": "input_tokens", "value": 3}}])),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("context_management.edits[0].keep.type"),
        "{message}"
    );

    // A summary made by Anthropic's API, whose block could not come
    // through: refused for every provider.
    let (status, body) =
        messages(&gw.url, &with_edits(json!([{"type": "compact_20260112"}]))).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("is not served"), "{body}");
    // A kind of edit Freehold does not know is left to Anthropic's API; this
    // provider is not it.
    let (status, body) = messages(
        &gw.url,
        &with_edits(json!([{"type": "clear_everything_20270101"}])),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("route the model to Anthropic"), "{body}");
    assert!(upstream.requests().is_empty());
}
