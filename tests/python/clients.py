"""Drives `freehold serve` with the official OpenAI and Anthropic SDKs.

Usage: python clients.py SCENARIO
Environment: FREEHOLD_URL (http://127.0.0.1:PORT), FREEHOLD_KEY, FREEHOLD_MODEL,
and per scenario FREEHOLD_BAD_KEY / FREEHOLD_EXPECT_TEXT.

Each scenario asserts what a real client relies on and prints one JSON line
with what it saw; a failed assertion exits non-zero with the reason.
"""

import base64
import json
import os
import struct
import sys

import anthropic
import openai

URL = os.environ["FREEHOLD_URL"]
KEY = os.environ.get("FREEHOLD_KEY", "none")
MODEL = os.environ.get("FREEHOLD_MODEL", "mock")
EXPECT = os.environ.get("FREEHOLD_EXPECT_TEXT")

WEATHER_OPENAI = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
WEATHER_ANTHROPIC = {
    "name": "get_weather",
    "description": "The current weather in a city.",
    "input_schema": WEATHER_OPENAI["function"]["parameters"],
}
TOOL_PROMPT = "What is the weather in Paris? Please call the get_weather tool."


def oai(key=KEY):
    return openai.OpenAI(base_url=URL + "/v1", api_key=key, max_retries=0, timeout=600)


def ant(key=KEY):
    return anthropic.Anthropic(base_url=URL, api_key=key, max_retries=0, timeout=600)


def check_text(text):
    assert isinstance(text, str) and text, f"empty answer: {text!r}"
    if EXPECT is not None:
        assert text == EXPECT, f"expected {EXPECT!r}, got {text!r}"


def openai_chat():
    reply = oai().chat.completions.create(
        model=MODEL,
        messages=[
            {"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": "Say hello."},
        ],
        max_tokens=32,
        # The end user, for the provider's abuse monitoring and the ledger.
        safety_identifier="sdk-user",
    )
    text = reply.choices[0].message.content
    check_text(text)
    # The SDK reads the gateway's x-request-id (the ledger line's id).
    assert (reply._request_id or "").startswith("req_"), reply._request_id
    assert reply.choices[0].finish_reason in ("stop", "length"), reply.choices[0].finish_reason
    assert reply.usage.prompt_tokens > 0 and reply.usage.completion_tokens > 0, reply.usage
    return {"text": text, "usage": reply.usage.model_dump()}


def openai_stream():
    stream = oai().chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Say hello."}],
        max_tokens=32,
        stream=True,
        stream_options={"include_usage": True},
    )
    parts, usage, finish = [], None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.delta.content:
                parts.append(choice.delta.content)
            if choice.finish_reason:
                finish = choice.finish_reason
    text = "".join(parts)
    check_text(text)
    assert finish in ("stop", "length"), finish
    assert usage is not None and usage.completion_tokens > 0, usage
    return {"text": text, "chunks": len(parts)}


def openai_tools():
    client = oai()
    messages = [{"role": "user", "content": TOOL_PROMPT}]
    reply = client.chat.completions.create(
        model=MODEL, messages=messages, tools=[WEATHER_OPENAI], tool_choice="required",
        max_tokens=64,
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls", choice
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather", call
    arguments = json.loads(call.function.arguments)
    assert isinstance(arguments.get("city"), str), arguments
    # The result goes back, and the model answers in text.
    messages.append(choice.message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": call.id, "content": "Sunny, 21 C"})
    # tool_choice "none": the answer must be text (a small model would
    # otherwise happily call the tool again).
    final = client.chat.completions.create(model=MODEL, messages=messages, tools=[WEATHER_OPENAI],
                                           tool_choice="none", max_tokens=64)
    assert final.choices[0].message.content, final
    # Streamed, the call arrives in fragments that add up to valid JSON.
    stream = client.chat.completions.create(
        model=MODEL, messages=messages[:1], tools=[WEATHER_OPENAI], tool_choice="required",
        max_tokens=64, stream=True,
    )
    names, fragments, finish = [], [], None
    for chunk in stream:
        for c in chunk.choices:
            for delta in c.delta.tool_calls or []:
                if delta.function and delta.function.name:
                    names.append(delta.function.name)
                if delta.function and delta.function.arguments:
                    fragments.append(delta.function.arguments)
            finish = c.finish_reason or finish
    assert names == ["get_weather"], names
    assert isinstance(json.loads("".join(fragments)).get("city"), str), fragments
    assert finish == "tool_calls", finish
    return {"arguments": arguments, "final": final.choices[0].message.content}


def openai_errors():
    seen = {}
    try:
        oai(os.environ.get("FREEHOLD_BAD_KEY", "wrong")).chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}])
        raise AssertionError("a wrong key was accepted")
    except openai.AuthenticationError as error:
        seen["auth"] = error.status_code
    try:
        oai().chat.completions.create(model="no-such-model",
                                      messages=[{"role": "user", "content": "hi"}])
        raise AssertionError("an unknown model was accepted")
    except openai.NotFoundError as error:
        seen["not_found"] = error.status_code
        assert "no-such-model" in str(error), str(error)
        assert (error.request_id or "").startswith("req_"), error.request_id
    try:
        oai().chat.completions.create(model=MODEL, messages="not a list")
        raise AssertionError("a malformed body was accepted")
    except openai.BadRequestError as error:
        seen["bad_request"] = error.status_code
        assert "messages" in str(error), str(error)
    return seen


def openai_models():
    ids = [m.id for m in oai().models.list()]
    assert MODEL in ids or any(i.endswith(MODEL) for i in ids), ids
    one = oai().models.retrieve(MODEL)
    assert one.id == MODEL and one.object == "model", one
    try:
        oai().models.retrieve("no-such-model")
        raise AssertionError("an unknown model was retrieved")
    except openai.NotFoundError as error:
        assert "no-such-model" in str(error), str(error)
    return {"models": ids}


def openai_embeddings():
    client = oai()
    # The SDK asks for base64 unless told otherwise, and decodes it itself.
    reply = client.embeddings.create(model=MODEL, input=["one", "two"])
    assert len(reply.data) == 2 and len(reply.data[0].embedding) > 0, reply
    floats = client.embeddings.create(model=MODEL, input=["one", "two"], encoding_format="float")
    packed = client.embeddings.create(model=MODEL, input=["one", "two"], encoding_format="base64")
    for default, plain, raw in zip(reply.data, floats.data, packed.data):
        assert isinstance(raw.embedding, str), raw
        unpacked = struct.unpack(f"<{len(plain.embedding)}f", base64.b64decode(raw.embedding))
        for vector in (list(default.embedding), list(unpacked)):
            assert len(vector) == len(plain.embedding), (len(vector), len(plain.embedding))
            assert all(abs(a - b) < 1e-5 for a, b in zip(vector, plain.embedding)), vector[:4]
    return {"dimension": len(reply.data[0].embedding)}


def openai_responses():
    client = oai()
    reply = client.responses.create(model=MODEL, input="Say hello.", max_output_tokens=32)
    check_text(reply.output_text)
    assert reply.usage.output_tokens > 0, reply.usage
    stream = client.responses.create(model=MODEL, input="Say hello.", max_output_tokens=32,
                                     stream=True)
    deltas, kinds, completed = [], [], None
    for event in stream:
        kinds.append(event.type)
        if event.type == "response.output_text.delta":
            deltas.append(event.delta)
        # The SDK's types require a list of log probabilities on text
        # events (OpenAI sends an empty one unless they are asked for).
        if event.type in ("response.output_text.delta", "response.output_text.done"):
            assert event.logprobs == [], event
        # A real model may stop at max_output_tokens: `incomplete`.
        if event.type in ("response.completed", "response.incomplete"):
            completed = event.response
    assert kinds[0] == "response.created", kinds
    assert completed is not None, kinds
    check_text("".join(deltas))
    assert completed.output_text == "".join(deltas), completed
    details = completed.usage.input_tokens_details
    assert isinstance(details.cached_tokens, int), details
    assert isinstance(details.cache_write_tokens, int), details
    # Messages without a `type`, as in OpenAI's own examples.
    untyped = client.responses.create(model=MODEL, max_output_tokens=32, input=[
        {"role": "developer", "content": "Answer in one short sentence."},
        {"role": "user", "content": "Say hello."},
    ])
    check_text(untyped.output_text)
    return {"text": reply.output_text, "events": len(kinds)}


# A freeform tool as Codex declares its patch tool: plain-text input that
# follows a grammar, not JSON arguments.
NOTE_TOOL = {
    "type": "custom",
    "name": "write_note",
    "description": "Writes a note. The input is the note itself, one line of plain text.",
    "format": {"type": "grammar", "syntax": "lark", "definition": "start: /[^\\n]+/"},
}
NOTE_PROMPT = "Write a note that says: buy milk. Use the write_note tool."


def responses_custom_tools():
    client = oai()
    # Greedy, so that the small model's call does not depend on the draw
    # (sampled, it once copied the tool's description into the input and ran
    # out of tokens before closing the call).
    reply = client.responses.create(
        model=MODEL, input=NOTE_PROMPT, tools=[NOTE_TOOL],
        tool_choice={"type": "custom", "name": "write_note"}, max_output_tokens=64,
        temperature=0,
    )
    calls = [item for item in reply.output if item.type == "custom_tool_call"]
    assert len(calls) == 1, reply.output
    call = calls[0]
    assert call.name == "write_note", call
    # The input is the text itself, not JSON wrapping it.
    assert isinstance(call.input, str) and call.input.strip(), call
    assert not call.input.lstrip().startswith("{"), call.input
    # The result goes back as Codex sends it, and the model answers in text.
    history = [
        {"role": "user", "content": NOTE_PROMPT},
        {"type": "custom_tool_call", "call_id": call.call_id, "name": call.name,
         "input": call.input},
        {"type": "custom_tool_call_output", "call_id": call.call_id, "output": "Note saved."},
    ]
    final = client.responses.create(model=MODEL, input=history, tools=[NOTE_TOOL],
                                    tool_choice="none", max_output_tokens=64)
    check_text(final.output_text)
    # Streamed: the call's item is announced, its input comes in the
    # custom tool's own events, and the finished item carries it whole.
    # Greedy too: sampled, it twice ran out of tokens before closing the
    # call, which then came back as text with `response.incomplete`.
    stream = client.responses.create(
        model=MODEL, input=NOTE_PROMPT, tools=[NOTE_TOOL],
        tool_choice={"type": "custom", "name": "write_note"}, max_output_tokens=64, stream=True,
        temperature=0,
    )
    kinds, deltas, done_input, done_item = [], [], None, None
    for event in stream:
        kinds.append(event.type)
        if event.type == "response.custom_tool_call_input.delta":
            deltas.append(event.delta)
        if event.type == "response.custom_tool_call_input.done":
            done_input = event.input
        if event.type == "response.output_item.done" and event.item.type == "custom_tool_call":
            done_item = event.item
    assert done_item is not None, kinds
    assert done_input == done_item.input == "".join(deltas), (done_input, done_item, deltas)
    assert done_item.input.strip(), done_item
    return {"input": call.input, "final": final.output_text, "streamed": done_item.input}


COMPACTION_CONVERSATION = [
    {"role": "user", "content": "My name is Ada and I am fixing add() in calc.py."},
    {"role": "assistant", "content": "Noted: add() subtracts, so I will change - to +."},
    {"role": "user", "content": "Good. Keep going."},
]
# What starts the gateway's compaction content; the summary follows in base64.
COMPACTION_MARK = "freehold-compaction-v1:"


def read_summary(item):
    assert item.type == "compaction", item
    content = item.encrypted_content
    assert content.startswith(COMPACTION_MARK), content
    return base64.b64decode(content[len(COMPACTION_MARK):]).decode()


def responses_compaction():
    """Compaction as OpenAI's API does it: /v1/responses/compact answers with
    the conversation's user messages and one compaction item; a
    compaction_trigger ending the input gets the item alone, whole and
    streamed; a later request reads the item back. The summary is bounded
    with max_output_tokens (for SmolLM2's sake), which the gateway takes on
    /compact too.
    FREEHOLD_EXPECT_TEXT, when set, is what the model writes."""
    client = oai()
    bound = {"max_output_tokens": 96}
    compacted = client.responses.compact(model=MODEL, input=COMPACTION_CONVERSATION,
                                         extra_body=bound)
    assert compacted.object == "response.compaction", compacted
    kinds = [(item.type, getattr(item, "role", None)) for item in compacted.output]
    assert kinds == [("message", "user"), ("message", "user"), ("compaction", None)], kinds
    summary = read_summary(compacted.output[-1])
    check_text(summary)
    assert compacted.usage.output_tokens > 0, compacted.usage
    # The conversation goes on from what the compaction kept.
    go_on = [item.model_dump(exclude_none=True) for item in compacted.output]
    go_on.append({"role": "user", "content": "What is my name?"})
    reply = client.responses.create(model=MODEL, input=go_on, max_output_tokens=32)
    check_text(reply.output_text)
    # A trigger ending the input: the compaction item alone.
    trigger = COMPACTION_CONVERSATION + [{"type": "compaction_trigger"}]
    whole = client.responses.create(model=MODEL, input=trigger, **bound)
    assert [item.type for item in whole.output] == ["compaction"], whole.output
    check_text(read_summary(whole.output[0]))
    with client.responses.stream(model=MODEL, input=trigger, **bound) as stream:
        events = [event.type for event in stream]
        final = stream.get_final_response()
    assert [item.type for item in final.output] == ["compaction"], final.output
    check_text(read_summary(final.output[0]))
    assert "response.output_text.delta" not in events, events
    for kind in ("response.output_item.added", "response.output_item.done", "response.completed"):
        assert kind in events, events
    # A compaction the gateway did not make (OpenAI's, encrypted) cannot be
    # read, and the error says where it is.
    try:
        client.responses.create(model=MODEL, max_output_tokens=8, input=[
            {"type": "compaction", "encrypted_content": "gAAAAABo-encrypted-by-openai"},
            {"role": "user", "content": "hi"}])
        raise AssertionError("a compaction made elsewhere was accepted")
    except openai.BadRequestError as error:
        assert "input[0].encrypted_content" in str(error), str(error)
    return {"summary": summary, "streamed_events": events}


def responses_server_compaction():
    """Server-side compaction (context_management with a compact_threshold),
    as the SDK asks for it: a conversation past the threshold is compacted
    before it is answered, the compaction item first in the output, whole
    and streamed, the answer after it. Appended to the conversation, as
    OpenAI's guide says, the output leaves it under the threshold (what the
    item replaced is left out), so the next turn is answered without one.
    FREEHOLD_EXPECT_TEXT, when set, is what the model writes."""
    client = oai()
    manage = [{"type": "compaction", "compact_threshold": 400}]
    listing = "def add(a, b):\n    return a - b  # the bug: it subtracts\n" * 50
    conversation = [
        {"role": "user", "content": "My name is Ada. Show me calc.py."},
        {"role": "assistant", "content": "Here is calc.py:\n" + listing},
        {"role": "user", "content": "Fix add() in it."},
    ]
    bound = {"max_output_tokens": 64}
    whole = client.responses.create(model=MODEL, input=conversation,
                                    context_management=manage, **bound)
    kinds = [item.type for item in whole.output]
    assert kinds[0] == "compaction" and kinds[1:] == ["message"], kinds
    summary = read_summary(whole.output[0])
    check_text(summary)
    check_text(whole.output_text)
    # Both calls' tokens: the summary read the whole conversation.
    assert whole.usage.input_tokens > 400, whole.usage
    with client.responses.stream(model=MODEL, input=conversation,
                                 context_management=manage, **bound) as stream:
        events = list(stream)
    # Completed, or incomplete when the answer reached the bound (SmolLM2
    # often does), which the SDK's get_final_response() does not return.
    final = events[-1].response
    assert events[-1].type in ("response.completed", "response.incomplete"), events[-1]
    assert [item.type for item in final.output][0] == "compaction", final.output
    added = [event for event in events if event.type == "response.output_item.added"]
    assert added[0].output_index == 0 and added[0].item.type == "compaction", added
    assert added[1].output_index == 1 and added[1].item.type == "message", added
    check_text(read_summary(final.output[0]))
    check_text(final.output_text)
    go_on = conversation + [item.model_dump(exclude_none=True) for item in whole.output]
    go_on.append({"role": "user", "content": "What is my name?"})
    # A threshold above what the compaction left (the user's messages, the
    # summary, the answer: however long the model wrote them) and below the
    # whole conversation, which still holds the listing the item replaced.
    left = sum(len(message["content"]) for message in conversation if message["role"] == "user")
    left += len(summary) + len(whole.output_text) + 200
    still_there = left + len(listing)
    assert left // 4 + 300 < still_there // 4, (left, still_there)
    reply = client.responses.create(
        model=MODEL, input=go_on, max_output_tokens=32,
        context_management=[{"type": "compaction", "compact_threshold": left // 4 + 300}])
    assert [item.type for item in reply.output] == ["message"], reply.output
    check_text(reply.output_text)
    # Only `compaction` is a kind of context management.
    try:
        client.responses.create(model=MODEL, input="hi", max_output_tokens=8,
                                context_management=[{"type": "truncation"}])
        raise AssertionError("an unknown kind of context management was accepted")
    except openai.BadRequestError as error:
        assert "context_management[0].type" in str(error), str(error)
    return {"summary": summary, "answer": whole.output_text, "next": reply.output_text}


CONTEXT_MANAGEMENT_BETA = "context-management-2025-06-27"


def weather_conversation():
    """Three get_weather calls, one a turn, each with a long report."""
    messages = [{"role": "user", "content": "What is the weather in Paris, Rome and Oslo?"}]
    for index, city in enumerate(["Paris", "Rome", "Oslo"]):
        messages.append({"role": "assistant", "content": [
            {"type": "tool_use", "id": f"toolu_{index}", "name": "get_weather",
             "input": {"city": city}}]})
        report = f"{city}: 18 degrees, a light wind from the west. " * 30
        messages.append({"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": f"toolu_{index}", "content": report}]})
    return messages


def read_tokens(usage):
    """The prompt's tokens, cached or not (Anthropic counts cache reads and
    writes apart from input_tokens)."""
    return (usage.input_tokens + (usage.cache_read_input_tokens or 0)
            + (usage.cache_creation_input_tokens or 0))


def anthropic_context_editing():
    """Anthropic's context editing through the SDK's beta API: past the
    trigger, all tool results but the last are cleared before the model
    reads the conversation, and the answer says so in the SDK's own types,
    whole and streamed; under it nothing is cleared and the answer says
    that too; count_tokens counts the conversation as the model reads it,
    and says what it was before the edits."""
    client = ant()
    edits = {"edits": [{"type": "clear_tool_uses_20250919",
                        "trigger": {"type": "input_tokens", "value": 200},
                        "keep": {"type": "tool_uses", "value": 1}}]}
    asked = dict(model=MODEL, max_tokens=16, tools=[WEATHER_ANTHROPIC],
                 messages=weather_conversation(), betas=[CONTEXT_MANAGEMENT_BETA])
    plain = client.beta.messages.create(**asked)
    assert plain.context_management is None, plain.context_management
    edited = client.beta.messages.create(**asked, context_management=edits)
    applied = edited.context_management.applied_edits
    assert [edit.type for edit in applied] == ["clear_tool_uses_20250919"], applied
    assert applied[0].cleared_tool_uses == 2, applied
    assert applied[0].cleared_input_tokens > 0, applied
    with client.beta.messages.stream(**asked, context_management=edits) as stream:
        streamed = stream.get_final_message()
    assert streamed.context_management.applied_edits == applied, streamed.context_management
    high = {"edits": [dict(edits["edits"][0],
                           trigger={"type": "input_tokens", "value": 1_000_000})]}
    untouched = client.beta.messages.create(**asked, context_management=high)
    assert untouched.context_management.applied_edits == [], untouched.context_management
    counting = {name: asked[name] for name in ("model", "tools", "messages", "betas")}
    counted_whole = client.beta.messages.count_tokens(**counting)
    assert counted_whole.context_management is None, counted_whole
    counted_whole = counted_whole.input_tokens
    counted = client.beta.messages.count_tokens(**counting, context_management=edits)
    counted_edited = counted.input_tokens
    assert counted_edited < counted_whole, (counted_edited, counted_whole)
    # The count before the edits comes with it, as Anthropic's API gives it.
    assert counted.context_management.original_input_tokens == counted_whole, counted
    return {
        "input_tokens": {"plain": read_tokens(plain.usage), "edited": read_tokens(edited.usage)},
        "counted": {"plain": counted_whole, "edited": counted_edited},
        "cleared_input_tokens": applied[0].cleared_input_tokens,
    }


COMPACTION_BETA = "compact-2026-01-12"


def anthropic_server_compaction():
    """Server-side compaction in the Messages API through the SDK's beta
    client: with the compact_20260112 edit, a conversation past its trigger
    is answered after a compaction block holding the model's summary, whole
    and streamed, the summary's call in usage.iterations; with
    pause_after_compaction, or the compaction parameter, the block alone
    (stop_reason "compaction"). Sent back, the block stands for everything
    before it, so the next turn is under the trigger. A trigger counted in
    tool uses is refused by name. FREEHOLD_EXPECT_TEXT, when set, is what
    the model writes."""
    client = ant()
    listing = "def add(a, b):\n    return a - b  # the bug: it subtracts\n" * 100
    conversation = [
        {"role": "user", "content": "My name is Ada. Show me calc.py."},
        {"role": "assistant", "content": "Here is calc.py:\n" + listing},
        {"role": "user", "content": "Fix add() in it."},
    ]
    compact = {"type": "compact_20260112", "trigger": {"type": "input_tokens", "value": 400}}
    asked = dict(model=MODEL, max_tokens=64, messages=conversation, betas=[COMPACTION_BETA])
    whole = client.beta.messages.create(**asked, context_management={"edits": [compact]})
    kinds = [block.type for block in whole.content]
    assert kinds[0] == "compaction" and "compaction" not in kinds[1:], kinds
    summary = whole.content[0].content
    check_text(summary)
    assert [step.type for step in whole.usage.iterations] == ["compaction", "message"], whole.usage
    # The summary read the whole conversation; the answer only the summary.
    assert whole.usage.iterations[0].input_tokens > whole.usage.iterations[1].input_tokens, \
        whole.usage
    with client.beta.messages.stream(**asked, context_management={"edits": [compact]}) as stream:
        events = [event.type for event in stream]
        streamed = stream.get_final_message()
    assert streamed.content[0].type == "compaction", streamed.content
    check_text(streamed.content[0].content)
    assert "compaction" in events, events
    assert streamed.usage.iterations[0].type == "compaction", streamed.usage
    paused = client.beta.messages.create(
        **asked, context_management={"edits": [dict(compact, pause_after_compaction=True)]})
    assert paused.stop_reason == "compaction", paused
    assert [block.type for block in paused.content] == ["compaction"], paused.content
    alone = client.beta.messages.create(**asked, compaction={"type": "summarize"})
    assert alone.stop_reason == "compaction", alone
    check_text(alone.content[0].content)
    # Sent back: what the block stands for is left out, so a trigger above
    # the summary and the new message, and below the whole conversation,
    # is not reached.
    go_on = conversation + [
        {"role": "assistant", "content": [block.model_dump(exclude_none=True)
                                          for block in paused.content]},
        {"role": "user", "content": "What is my name?"}]
    left = len(paused.content[0].content) + 200
    still_there = left + len(listing)
    assert left // 4 + 300 < still_there // 4, (left, still_there)
    trigger = {"type": "input_tokens", "value": left // 4 + 300}
    reply = client.beta.messages.create(
        model=MODEL, max_tokens=32, messages=go_on, betas=[COMPACTION_BETA],
        context_management={"edits": [dict(compact, trigger=trigger)]})
    assert "compaction" not in [block.type for block in reply.content], reply.content
    assert reply.usage.iterations is None, reply.usage
    try:
        client.beta.messages.create(**asked, context_management={"edits": [
            dict(compact, trigger={"type": "tool_uses", "value": 2})]})
        raise AssertionError("a trigger in tool uses was accepted")
    except anthropic.BadRequestError as error:
        assert "context_management.edits[0].trigger.type" in str(error), str(error)
    return {"summary": summary, "streamed_events": sorted(set(events)),
            "usage": [step.model_dump() for step in whole.usage.iterations]}


def anthropic_messages():
    client = ant()
    reply = client.messages.create(
        model=MODEL, max_tokens=32, system="Answer briefly.",
        messages=[{"role": "user", "content": "Say hello."}],
        metadata={"user_id": "sdk-user"},
    )
    assert reply.type == "message" and reply.role == "assistant", reply
    assert (reply._request_id or "").startswith("req_"), reply._request_id
    text = "".join(b.text for b in reply.content if b.type == "text")
    check_text(text)
    assert reply.stop_reason in ("end_turn", "max_tokens"), reply.stop_reason
    assert reply.usage.input_tokens > 0 and reply.usage.output_tokens > 0, reply.usage
    with client.messages.stream(model=MODEL, max_tokens=32,
                                messages=[{"role": "user", "content": "Say hello."}]) as stream:
        streamed = "".join(stream.text_stream)
        final = stream.get_final_message()
    check_text(streamed)
    assert final.usage.output_tokens > 0, final.usage
    # Claude Code on Claude 4.6 and later asks for adaptive thinking, with
    # its effort in output_config.
    adaptive = client.messages.create(
        model=MODEL, max_tokens=32, thinking={"type": "adaptive"},
        extra_body={"output_config": {"effort": "low"}},
        messages=[{"role": "user", "content": "Say hello."}],
    )
    check_text("".join(b.text for b in adaptive.content if b.type == "text"))
    raw = client.messages.with_raw_response.count_tokens(
        model=MODEL, system="Answer briefly.",
        messages=[{"role": "user", "content": "Say hello."}])
    count = raw.parse()
    assert count.input_tokens > 0, count
    return {"text": text, "streamed": streamed, "count": count.input_tokens,
            "count_source": raw.headers.get("x-freehold-token-count"),
            # Anthropic's input_tokens leaves out what was read from or
            # written to the prompt cache; the count is the whole prompt.
            "prompt_tokens": reply.usage.input_tokens
            + (reply.usage.cache_read_input_tokens or 0)
            + (reply.usage.cache_creation_input_tokens or 0)}


def anthropic_tools():
    client = ant()
    messages = [{"role": "user", "content": TOOL_PROMPT}]
    reply = client.messages.create(model=MODEL, max_tokens=64, tools=[WEATHER_ANTHROPIC],
                                   tool_choice={"type": "any"}, messages=messages)
    assert reply.stop_reason == "tool_use", reply
    use = next(b for b in reply.content if b.type == "tool_use")
    assert use.name == "get_weather" and isinstance(use.input.get("city"), str), use
    messages.append({"role": "assistant", "content": [b.model_dump(exclude_none=True)
                                                      for b in reply.content]})
    messages.append({"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": use.id, "content": "Sunny, 21 C"}]})
    final = client.messages.create(model=MODEL, max_tokens=64, tools=[WEATHER_ANTHROPIC],
                                   tool_choice={"type": "none"}, messages=messages)
    assert any(b.type == "text" and b.text for b in final.content), final
    with client.messages.stream(model=MODEL, max_tokens=64, tools=[WEATHER_ANTHROPIC],
                                tool_choice={"type": "any"},
                                messages=messages[:1]) as stream:
        streamed = stream.get_final_message()
    use = next(b for b in streamed.content if b.type == "tool_use")
    assert use.name == "get_weather" and isinstance(use.input.get("city"), str), streamed
    # Beside the tool search Anthropic's API runs itself, which no model
    # behind the gateway has, the deferred tool is offered as it is.
    searched = client.messages.create(
        model=MODEL, max_tokens=64, tool_choice={"type": "any"}, messages=messages[:1],
        tools=[{"type": "tool_search_tool_regex_20251119", "name": "tool_search_tool_regex"},
               {**WEATHER_ANTHROPIC, "defer_loading": True}])
    found = next(b for b in searched.content if b.type == "tool_use")
    assert found.name == "get_weather", searched
    return {"input": use.input, "searched": found.input}


def anthropic_errors():
    seen = {}
    try:
        ant(os.environ.get("FREEHOLD_BAD_KEY", "wrong")).messages.create(
            model=MODEL, max_tokens=8, messages=[{"role": "user", "content": "hi"}])
        raise AssertionError("a wrong key was accepted")
    except anthropic.AuthenticationError as error:
        seen["auth"] = error.status_code
    try:
        ant().messages.create(model="no-such-model", max_tokens=8,
                              messages=[{"role": "user", "content": "hi"}])
        raise AssertionError("an unknown model was accepted")
    except anthropic.NotFoundError as error:
        seen["not_found"] = error.status_code
        assert (error.request_id or "").startswith("req_"), error.request_id
    try:
        ant().messages.create(model=MODEL, max_tokens=8, messages=[{"role": "robot",
                                                                    "content": "hi"}])
        raise AssertionError("a bad role was accepted")
    except anthropic.BadRequestError as error:
        seen["bad_request"] = error.status_code
    # Anthropic's shape (the SDK reads it into its own ModelInfo), with the
    # same names as OpenAI's list.
    page = ant().models.list()
    models = list(page)
    assert models, models
    assert all(m.type == "model" and m.display_name and m.created_at for m in models), models
    assert page.first_id == models[0].id and page.last_id == models[-1].id, page
    assert page.has_more is False, page
    ids = [m.id for m in models]
    assert sorted(ids) == sorted(m.id for m in oai().models.list()), ids
    assert MODEL in ids or any(i.endswith(MODEL) for i in ids), ids
    one = ant().models.retrieve(MODEL)
    assert one.id == MODEL and one.type == "model" and one.display_name, one
    try:
        ant().models.retrieve("no-such-model")
        raise AssertionError("an unknown model was retrieved")
    except anthropic.NotFoundError as error:
        seen["model_not_found"] = error.status_code
    return seen


def gateway_errors():
    """What a gateway adds to the SDKs' exception types: a body over its size
    limit (413), and an upstream that is down (502). FREEHOLD_DEAD_MODEL
    routes to a server that refuses connections."""
    big = [{"role": "user", "content": "x" * 200_000}]
    seen = {}
    try:
        oai().chat.completions.create(model=MODEL, messages=big)
        raise AssertionError("an oversized body was accepted")
    except openai.APIStatusError as error:
        seen["openai_too_large"] = error.status_code
        assert "max_body_bytes" in str(error), str(error)
    try:
        ant().messages.create(model=MODEL, max_tokens=8, messages=big)
        raise AssertionError("an oversized body was accepted")
    except anthropic.APIStatusError as error:
        seen["anthropic_too_large"] = error.status_code
        assert error.body["error"]["type"] == "request_too_large", error.body
    dead = os.environ["FREEHOLD_DEAD_MODEL"]
    hello = [{"role": "user", "content": "hi"}]
    try:
        oai().chat.completions.create(model=dead, messages=hello)
        raise AssertionError("a request to a dead upstream succeeded")
    except openai.InternalServerError as error:
        seen["openai_upstream_down"] = error.status_code
    try:
        ant().messages.create(model=dead, max_tokens=8, messages=hello)
        raise AssertionError("a request to a dead upstream succeeded")
    except anthropic.InternalServerError as error:
        seen["anthropic_upstream_down"] = error.status_code
        assert error.body["type"] == "error", error.body
    return seen


def rate_limited():
    """A key allowed one request a minute: the next ones get each SDK's own
    rate-limit exception, with the gateway's Retry-After."""
    hello = [{"role": "user", "content": "hi"}]
    oai().chat.completions.create(model=MODEL, max_tokens=8, messages=hello)
    seen = {}
    try:
        oai().chat.completions.create(model=MODEL, max_tokens=8, messages=hello)
        raise AssertionError("a second request within the minute was accepted")
    except openai.RateLimitError as error:
        seen["openai"] = error.status_code
        seen["openai_retry_after"] = int(error.response.headers["retry-after"])
    try:
        ant().messages.create(model=MODEL, max_tokens=8, messages=hello)
        raise AssertionError("a third request within the minute was accepted")
    except anthropic.RateLimitError as error:
        seen["anthropic"] = error.status_code
        assert error.body["error"]["type"] == "rate_limit_error", error.body
    # A streamed Responses request too, before its stream begins (Codex
    # 0.171.0 waits for Retry-After and tries again on it).
    try:
        list(oai().responses.create(model=MODEL, input="hi", max_output_tokens=8, stream=True))
        raise AssertionError("a streamed request within the minute was accepted")
    except openai.RateLimitError as error:
        seen["responses_stream"] = error.status_code
    return seen


def budget_spent():
    """A key whose budget cannot pay for the request: each SDK raises at once
    (the gateway says not to retry), with each API's own status."""
    hello = [{"role": "user", "content": "hi"}]
    seen = {}
    try:
        oai().with_options(max_retries=2).chat.completions.create(
            model=MODEL, max_tokens=8, messages=hello)
        raise AssertionError("a request over the budget was served")
    except openai.RateLimitError as error:
        seen["openai"] = error.status_code
        assert error.code == "insufficient_quota", error.body
        assert error.response.headers["x-should-retry"] == "false", error.response.headers
    try:
        ant().with_options(max_retries=2).messages.create(
            model=MODEL, max_tokens=8, messages=hello)
        raise AssertionError("a request over the budget was served")
    except anthropic.APIStatusError as error:
        seen["anthropic"] = error.status_code
        assert error.body["error"]["type"] == "billing_error", error.body
    return seen


def long_prompts():
    """What coding agents send: a system prompt and tool list of tens of
    thousands of tokens, streamed. The answer is either complete or the
    protocol's own context-length error, as each SDK's exception type."""
    system = "You are a coding agent working in a large repository. " + (
        "Read the relevant files before you change them, and keep the style. " * 5000)
    tools = [{
        "name": f"tool_{i}",
        "description": f"Tool number {i}: does one precise thing to the repository. " * 20,
        "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}},
    } for i in range(60)]
    outcome = {}
    try:
        with ant().messages.stream(model=MODEL, max_tokens=16, system=system, tools=tools,
                                   messages=[{"role": "user", "content": "hi"}]) as stream:
            final = stream.get_final_message()
        assert final.content, final
        outcome["anthropic"] = "answered"
    except anthropic.BadRequestError as error:
        message = str(error)
        assert "too long" in message, message
        assert error.body["error"]["type"] == "invalid_request_error", error.body
        outcome["anthropic"] = "context_length"
    messages = [{"role": "system", "content": system}, {"role": "user", "content": "hi"}]
    openai_tools = [{"type": "function", "function": {
        "name": t["name"], "description": t["description"], "parameters": t["input_schema"]}}
        for t in tools]
    try:
        stream = oai().chat.completions.create(model=MODEL, messages=messages, tools=openai_tools,
                                               max_tokens=16, stream=True)
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        outcome["openai"] = "answered"
    except openai.BadRequestError as error:
        assert error.code == "context_length_exceeded", (error.code, str(error))
        outcome["openai"] = "context_length"
    return outcome


def silent_upstream():
    """Streams from an upstream that says nothing for several seconds: the
    gateway begins each answer and keeps it alive in the protocol's own way
    until the text comes, and each SDK, its stream helpers included, reads
    through to the whole answer."""
    hello = [{"role": "user", "content": "Say hello."}]
    seen = {}
    # Each SDK gives up on a read that waits longer than this: shorter than
    # the upstream's silence, longer than the gateway's keepalive interval.
    read_limit = openai.Timeout(600, read=2.5)
    stream = oai().with_options(timeout=read_limit).chat.completions.create(
        model=MODEL, messages=hello, max_tokens=32, stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    check_text(text)
    # The helper that gathers the response from its events: the repeated
    # `response.in_progress` must not upset it.
    with oai().with_options(timeout=read_limit).responses.stream(
            model=MODEL, input="Say hello.", max_output_tokens=32) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds[:2] == ["response.created", "response.in_progress"], kinds
    seen["responses_in_progress"] = kinds.count("response.in_progress")
    assert seen["responses_in_progress"] >= 2, kinds
    check_text(final.output_text)
    # Anthropic's helper, and the raw events (the SDK drops pings).
    with ant().with_options(timeout=read_limit).messages.stream(
            model=MODEL, max_tokens=32, messages=hello) as stream:
        streamed = "".join(stream.text_stream)
        message = stream.get_final_message()
    check_text(streamed)
    assert message.content[0].text == streamed, message
    assert message.stop_reason == "end_turn", message
    events = ant().with_options(timeout=read_limit).messages.create(
        model=MODEL, max_tokens=32, messages=hello, stream=True)
    kinds = [event.type for event in events]
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop", kinds
    seen["anthropic_events"] = len(kinds)
    return seen


def refusals():
    """A model's refusal (the mock refuses when asked to) reaches each SDK as
    its own: `refusal` in Chat Completions, whole and streamed, so that
    `parse()` and `stream()` return it rather than parse it; a `refusal`
    part in the Responses API; `stop_reason: "refusal"` in Anthropic's.
    FREEHOLD_EXPECT_REFUSAL is the refusal's text."""
    import pydantic

    refusal = os.environ["FREEHOLD_EXPECT_REFUSAL"]
    class Answer(pydantic.BaseModel):
        answer: str

    ask = [{"role": "user", "content": "Please refuse this."}]
    client = oai()
    parsed = client.chat.completions.parse(
        model=MODEL, messages=ask, max_tokens=32, response_format=Answer)
    message = parsed.choices[0].message
    assert message.refusal == refusal, message
    assert message.content is None and message.parsed is None, message
    with client.chat.completions.stream(
            model=MODEL, messages=ask, max_tokens=32, response_format=Answer) as stream:
        events = list(stream)
        final = stream.get_final_completion()
    kinds = [event.type for event in events]
    # The stream opens with empty content, before the provider's first
    # words say they are a refusal.
    contents = [event.delta for event in events if event.type == "content.delta"]
    assert "refusal.delta" in kinds and not "".join(contents), kinds
    assert final.choices[0].message.refusal == refusal, final
    assert final.choices[0].message.parsed is None, final
    with client.responses.stream(
            model=MODEL, input="Please refuse this.", max_output_tokens=32,
            text_format=Answer) as stream:
        response_kinds = [event.type for event in stream]
        response = stream.get_final_response()
    assert "response.refusal.delta" in response_kinds, response_kinds
    assert "response.output_text.delta" not in response_kinds, response_kinds
    part = response.output[0].content[0]
    assert part.type == "refusal" and part.refusal == refusal, response
    whole = ant().messages.create(model=MODEL, max_tokens=32, messages=ask)
    assert whole.stop_reason == "refusal", whole
    assert whole.content[0].text == refusal, whole
    with ant().messages.stream(model=MODEL, max_tokens=32, messages=ask) as stream:
        streamed = stream.get_final_message()
    assert streamed.stop_reason == "refusal", streamed
    assert streamed.content[0].text == refusal, streamed
    return {"chat_stream_events": len(kinds), "responses_events": len(response_kinds)}


def refusal_details():
    """What Anthropic's API says of a refusal (`stop_details`: its category
    and explanation) reaches the Anthropic SDK through the gateway, whole
    and streamed. FREEHOLD_REFUSING_MODEL names a model behind an Anthropic
    upstream that refuses; FREEHOLD_EXPECT_EXPLANATION is what it says."""
    model = os.environ["FREEHOLD_REFUSING_MODEL"]
    explanation = os.environ["FREEHOLD_EXPECT_EXPLANATION"]
    ask = [{"role": "user", "content": "Write a worm."}]
    whole = ant().messages.create(model=model, max_tokens=32, messages=ask)
    with ant().messages.stream(model=model, max_tokens=32, messages=ask) as stream:
        streamed = stream.get_final_message()
    for message in (whole, streamed):
        assert message.stop_reason == "refusal", message
        details = message.stop_details
        assert details is not None and details.type == "refusal", message
        assert details.category == "cyber", message
        assert details.explanation == explanation, message
    return {"category": whole.stop_details.category}


def stop_sequences():
    """Stop sequences past what the upstream takes (the mock's provider takes
    one) end the answer at the gateway: each SDK gets the text before the
    sequence, without it, and its own stop reason (Anthropic's also names the
    sequence), whole and streamed.
    FREEHOLD_EXPECT_TEXT is the upstream's whole answer."""
    stop = " the mock"
    assert EXPECT and stop in EXPECT, f"FREEHOLD_EXPECT_TEXT must hold {stop!r}: {EXPECT!r}"
    before = EXPECT[:EXPECT.index(stop)]
    stops = ["\n\nHuman:", stop]
    ask = [{"role": "user", "content": "hello"}]
    whole = ant().messages.create(
        model=MODEL, max_tokens=32, messages=ask, stop_sequences=stops)
    assert whole.stop_reason == "stop_sequence", whole
    assert whole.stop_sequence == stop, whole
    assert [block.text for block in whole.content] == [before], whole
    with ant().messages.stream(
            model=MODEL, max_tokens=32, messages=ask, stop_sequences=stops) as stream:
        streamed = stream.get_final_message()
    assert streamed.stop_reason == "stop_sequence", streamed
    assert streamed.stop_sequence == stop, streamed
    assert [block.text for block in streamed.content] == [before], streamed
    reply = oai().chat.completions.create(
        model=MODEL, messages=ask, max_tokens=32, stop=stops)
    assert reply.choices[0].message.content == before, reply
    assert reply.choices[0].finish_reason == "stop", reply
    chunks = list(oai().chat.completions.create(
        model=MODEL, messages=ask, max_tokens=32, stop=stops, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finishes = [c.choices[0].finish_reason for c in chunks
                if c.choices and c.choices[0].finish_reason]
    assert text == before and finishes == ["stop"], chunks
    return {"anthropic": whole.stop_reason, "openai": reply.choices[0].finish_reason}


SCENARIOS = {f.__name__: f for f in [
    long_prompts, rate_limited, budget_spent, gateway_errors,
    openai_chat, openai_stream, openai_tools, openai_errors, openai_models, openai_embeddings,
    openai_responses, responses_custom_tools, responses_compaction, responses_server_compaction,
    anthropic_messages,
    anthropic_tools, anthropic_context_editing, anthropic_server_compaction,
    anthropic_errors, silent_upstream, refusals, refusal_details, stop_sequences,
]}

if __name__ == "__main__":
    name = sys.argv[1]
    result = SCENARIOS[name]()
    print(json.dumps({"scenario": name, "result": result}))
