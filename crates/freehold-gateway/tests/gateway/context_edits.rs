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
async fn context_editing_mistakes_and_edits_it_cannot_make_are_400s() {
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

    // A compaction is the gateway's to make; its mistakes are named too.
    let (status, body) = messages(
        &gw.url,
        &with_edits(json!([{"type": "compact_20260112",
                            "trigger": {"type": "tool_uses", "value": 3}}])),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("context_management.edits[0].trigger.type"),
        "{body}"
    );
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

/// A Messages request asking for `compact_20260112` (trigger 1 token, so
/// that it is due) with a tool, a system prompt and two turns.
fn asking_for_compaction(model: &str, stream: bool, pause: bool) -> Value {
    json!({
        "model": model, "max_tokens": 100, "stream": stream,
        "system": "You fix code.",
        "tools": [{"name": "read", "description": "Reads a file.",
                   "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}}}],
        "messages": [
            {"role": "user", "content": "Fix add() in calc.py."},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "toolu_1", "name": "read", "input": {"path": "calc.py"}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "def add(a, b): return a - b"}]},
        ],
        "context_management": {"edits": [
            {"type": "clear_thinking_20251015", "keep": "all"},
            {"type": "compact_20260112", "trigger": {"type": "input_tokens", "value": 1},
             "pause_after_compaction": pause}]},
    })
}

/// The text of each message an OpenAI-compatible upstream was sent, by role.
fn roles_and_texts(body: &Value) -> Vec<(String, String)> {
    body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|message| {
            (
                message["role"].as_str().unwrap().to_owned(),
                message["content"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// `compact_20260112` made by the gateway, for a provider that has never
/// heard of it: the summary's call, then the answer's from the summary;
/// the answer begins with the `compaction` block, whose call's usage is in
/// `usage.iterations`; paused, the block alone; sent back, it stands for
/// everything before it, and nothing is compacted again until the
/// conversation reaches the trigger anew.
#[tokio::test]
async fn a_compaction_is_made_by_the_gateway_then_sent_back() {
    let summary = "The user wants add() in calc.py fixed: it subtracts.";
    let mut summary_answer = chat_completion("mock-model", summary);
    summary_answer["usage"] =
        json!({"prompt_tokens": 700, "completion_tokens": 20, "total_tokens": 720});
    let mut answer = chat_completion("mock-model", "Fixed: add() now adds.");
    answer["usage"] = json!({"prompt_tokens": 40, "completion_tokens": 6, "total_tokens": 46});
    let stream = sse_text(&[
        (
            "",
            &json!({"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "mock-model",
                    "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Streamed fix."},
                                 "finish_reason": "stop"}]})
            .to_string(),
        ),
        ("", "[DONE]"),
    ]);
    let upstream = MockServer::start(vec![
        Scripted::json(200, summary_answer.clone()),
        Scripted::json(200, answer.clone()),
        Scripted::json(200, summary_answer.clone()),
        Scripted::sse(&stream, Split::Whole),
        Scripted::json(200, summary_answer.clone()),
        Scripted::json(200, summary_answer.clone()),
        Scripted::json(200, summary_answer),
        Scripted::json(200, answer),
    ])
    .await;
    let gw = start(
        routes(vec![format!("{}/v1", upstream.url())]),
        GatewaySettings::default(),
        None,
    )
    .await;

    // Whole, for an end user.
    let mut for_user = asking_for_compaction("mock", false, false);
    for_user["metadata"] = json!({"user_id": "user-7"});
    let (status, whole) = messages(&gw.url, &for_user).await;
    assert_eq!(status, 200, "{whole}");
    let whole: Value = serde_json::from_str(&whole).unwrap();
    assert_eq!(
        whole["content"],
        json!([{"type": "compaction", "content": summary},
               {"type": "text", "text": "Fixed: add() now adds."}])
    );
    assert_eq!(whole["stop_reason"], "end_turn");
    assert_eq!(whole["usage"]["input_tokens"], 40);
    assert_eq!(whole["usage"]["output_tokens"], 6);
    let iterations = whole["usage"]["iterations"].as_array().unwrap();
    assert_eq!(iterations[0]["type"], "compaction");
    assert_eq!(iterations[0]["input_tokens"], 700);
    assert_eq!(iterations[0]["output_tokens"], 20);
    assert_eq!(iterations[1]["type"], "message");
    assert_eq!(iterations[1]["input_tokens"], 40);
    assert_eq!(whole["context_management"], json!({"applied_edits": []}));

    let sent = upstream.requests();
    assert_eq!(sent.len(), 2);
    // The summary's call: the whole conversation, then the ask; the tool
    // declared, none to be called.
    let first = sent[0].json();
    let texts = roles_and_texts(&first);
    assert_eq!(texts.len(), 5, "{first}");
    assert!(
        texts[4].1.contains("Nothing else of it will be kept"),
        "{first}"
    );
    assert_eq!(first["tool_choice"], "none");
    assert!(first.get("max_tokens").is_none() && first.get("max_completion_tokens").is_none());
    // The answer's: the system prompt and the summary, with the tool.
    let second = sent[1].json();
    let texts = roles_and_texts(&second);
    assert_eq!(texts.len(), 2, "{second}");
    assert_eq!(texts[0], ("system".to_owned(), "You fix code.".to_owned()));
    assert_eq!(texts[1].0, "user");
    assert!(texts[1].1.ends_with(summary), "{second}");
    assert_eq!(second["tools"][0]["function"]["name"], "read");

    // Streamed: the block at index 0, the answer's text at 1.
    let (status, streamed) = messages(&gw.url, &asking_for_compaction("mock", true, false)).await;
    assert_eq!(status, 200, "{streamed}");
    assert!(
        streamed.contains(r#""content_block":{"content":null,"type":"compaction"}"#)
            || streamed.contains(r#""content_block":{"type":"compaction","content":null}"#),
        "{streamed}"
    );
    assert!(
        streamed.contains(&format!(
            r#""delta":{{"content":"{summary}","type":"compaction_delta"}}"#
        )) || streamed.contains(&format!(
            r#""delta":{{"type":"compaction_delta","content":"{summary}"}}"#
        )),
        "{streamed}"
    );
    assert!(streamed.contains(r#""index":1,"#), "{streamed}");
    let delta = message_delta(&streamed);
    assert_eq!(delta["delta"]["stop_reason"], "end_turn");
    assert_eq!(delta["usage"]["iterations"][0]["input_tokens"], 700);

    // Paused: the block alone, from one call.
    let (status, paused) = messages(&gw.url, &asking_for_compaction("mock", false, true)).await;
    assert_eq!(status, 200, "{paused}");
    let paused: Value = serde_json::from_str(&paused).unwrap();
    assert_eq!(
        paused["content"],
        json!([{"type": "compaction", "content": summary}])
    );
    assert_eq!(paused["stop_reason"], "compaction");
    assert_eq!(paused["usage"]["output_tokens"], 0);
    assert_eq!(paused["usage"]["iterations"][0]["output_tokens"], 20);
    assert_eq!(paused["context_management"], json!({"applied_edits": []}));
    assert_eq!(upstream.requests().len(), 5);

    // Paused and streamed: the block, then the end, from one call.
    let (status, streamed) = messages(&gw.url, &asking_for_compaction("mock", true, true)).await;
    assert_eq!(status, 200, "{streamed}");
    let events: Vec<&str> = streamed
        .lines()
        .filter_map(|line| line.strip_prefix("event: "))
        .filter(|event| *event != "ping")
        .collect();
    assert_eq!(
        events,
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ],
        "{streamed}"
    );
    let delta = message_delta(&streamed);
    assert_eq!(delta["delta"]["stop_reason"], "compaction");
    assert_eq!(delta["usage"]["iterations"][0]["input_tokens"], 700);
    assert_eq!(upstream.requests().len(), 6);

    // The `compaction` parameter: the same, asked at once.
    let mut parameter = asking_for_compaction("mock", false, false);
    parameter
        .as_object_mut()
        .unwrap()
        .remove("context_management");
    parameter["compaction"] = json!({"type": "summarize"});
    let (status, alone) = messages(&gw.url, &parameter).await;
    assert_eq!(status, 200, "{alone}");
    let alone: Value = serde_json::from_str(&alone).unwrap();
    assert_eq!(alone["stop_reason"], "compaction");
    assert_eq!(upstream.requests().len(), 7);

    // Sent back with the paused block, asking again at a trigger the
    // conversation after the block has not reached: one call, which reads
    // the summary in place of what it stands for.
    let mut back = asking_for_compaction("mock", false, false);
    back["messages"]
        .as_array_mut()
        .unwrap()
        .push(json!({"role": "assistant", "content": paused["content"]}));
    back["messages"]
        .as_array_mut()
        .unwrap()
        .push(json!({"role": "user", "content": "Go on."}));
    back["context_management"]["edits"][1]["trigger"]["value"] = json!(10_000);
    let (status, body) = messages(&gw.url, &back).await;
    assert_eq!(status, 200, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["content"][0]["type"], "text", "{body}");
    assert!(body["usage"].get("iterations").is_none(), "{body}");
    let sent = upstream.requests();
    assert_eq!(sent.len(), 8);
    let texts = roles_and_texts(&sent[7].json());
    assert_eq!(texts.len(), 3, "{texts:?}");
    assert_eq!(texts[0].0, "system");
    assert!(texts[1].1.ends_with(summary), "{texts:?}");
    assert_eq!(texts[2], ("user".to_owned(), "Go on.".to_owned()));

    // Each call has its line in the ledger: 2 + 2 + 1 + 1 + 1 + 1. Both of
    // the first request's (the oldest) name its end user.
    let lines = super::ledger_lines(&gw.store, 8).await;
    assert_eq!(lines.len(), 8);
    assert!(lines.iter().all(|l| l.record.status == 200), "{lines:#?}");
    let users: Vec<_> = lines.iter().map(|l| l.record.end_user.as_deref()).collect();
    assert_eq!(users[6..], [Some("user-7"), Some("user-7")], "{users:?}");
    assert!(users[..6].iter().all(Option::is_none), "{users:?}");
}

/// With `log_bodies` on, a request answered with its compaction alone has
/// its request and its answer (the block) in its one ledger line, as any
/// whole answer has; streamed, its request (a stream's body is not
/// logged). Each is one line, a success.
#[tokio::test]
async fn a_paused_compactions_answer_is_logged_with_its_request() {
    let summary = "The user wants add() in calc.py fixed.";
    let upstream = MockServer::start(vec![
        Scripted::json(200, chat_completion("mock-model", summary)),
        Scripted::json(200, chat_completion("mock-model", summary)),
    ])
    .await;
    let settings = GatewaySettings {
        log_bodies: true,
        ..GatewaySettings::default()
    };
    let gw = start(
        routes(vec![format!("{}/v1", upstream.url())]),
        settings,
        None,
    )
    .await;
    let (status, paused) = messages(&gw.url, &asking_for_compaction("mock", false, true)).await;
    assert_eq!(status, 200, "{paused}");
    let lines = super::ledger_lines(&gw.store, 1).await;
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0].record.status, 200);
    let bodies = super::ledger_bodies(&gw._dir.path().join("g.db")).await;
    let body = bodies[0].as_deref().expect("the body was logged");
    assert!(body.contains("Fix add() in calc.py."), "{body}");
    assert!(body.contains(summary), "{body}");
    assert!(body.contains("\"stop_reason\":\"compaction\""), "{body}");

    let (status, streamed) = messages(&gw.url, &asking_for_compaction("mock", true, true)).await;
    assert_eq!(status, 200, "{streamed}");
    assert!(streamed.contains("compaction_delta"), "{streamed}");
    let lines = super::ledger_lines(&gw.store, 2).await;
    // Nothing else comes late: one line a request.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let lines_later = super::ledger_lines(&gw.store, 2).await;
    assert_eq!(lines_later.len(), 2, "{lines_later:#?}");
    assert!(lines.iter().all(|l| l.record.status == 200), "{lines:#?}");
    let bodies = super::ledger_bodies(&gw._dir.path().join("g.db")).await;
    let body = bodies[1].as_deref().expect("the body was logged");
    assert!(body.contains("Fix add() in calc.py."), "{body}");
    assert!(!body.contains(summary), "{body}");
}

/// Anthropic's API is sent the edits it makes without the compaction, which
/// the gateway makes for it as for any provider.
#[tokio::test]
async fn an_anthropic_upstream_gets_the_other_edits_and_the_gateways_compaction() {
    let upstream = MockServer::start(vec![
        Scripted::json(200, anthropic_message("claude-x", "Notes.")),
        Scripted::json(200, anthropic_message("claude-x", "done")),
    ])
    .await;
    let gw = start_anthropic(&upstream.url()).await;
    let (status, body) = messages(
        &gw.url,
        &asking_for_compaction("claude:claude-x", false, false),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        body["content"][0],
        json!({"type": "compaction", "content": "Notes."})
    );
    let sent = upstream.requests();
    assert_eq!(sent.len(), 2);
    for request in &sent {
        assert_eq!(
            request.json()["context_management"],
            json!({"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]})
        );
    }
    let answer = sent[1].json();
    assert_eq!(answer["system"], "You fix code.", "{answer}");
    assert_eq!(answer["messages"].as_array().unwrap().len(), 1, "{answer}");
}
