"""Instructions the gateway executes per request, counted by callgrind.

Used by bench/gateway-instructions (see there). Time on a shared 2-vCPU VM
moves by tens of percent from run to run; the instructions a request costs
move by up to about 2 % (the ledger's batches), so two builds can be compared
on one run each.

Subcommands:
  mock PORT_FILE             an OpenAI-compatible upstream on a free port of
                             127.0.0.1 (written to PORT_FILE once it listens),
                             answering every chat request at once with a
                             fixed text
  drive PORT PID N KIND[,KIND]
                             sends N requests of each KIND to the gateway on
                             PORT over one keep-alive connection, zeroing the
                             counters of callgrind process PID before each
                             kind and dumping them after it
  report OUT_DIR N KINDS     instructions per request for each dump in
                             OUT_DIR; fails unless there is one per kind
  request KIND               prints the body of one request of KIND

KINDs: chat (a one-line chat, /v1/chat/completions), messages (the same on
/v1/messages), editing (messages with Claude Code's context_management),
agent (a coding agent's request to /v1/messages, some 95 KB in Claude Code's
shape: system prompt blocks, 12 tools, a conversation with tool calls), codex
(the same work as a request to /v1/responses in Codex's shape: instructions,
input items with function calls and their outputs, function tools).
"""

import glob
import http.client
import json
import os
import re
import subprocess
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

KEY = "sk-bench-instructions"
TEXT = "Hello from the mock upstream."
QUESTION = [{"role": "user", "content": "Say hello in one short sentence, please."}]


def prose(seed, size):
    sentences = [
        "Read the files you need before you change them, and keep each change small.",
        "Prefer the dedicated tools over shell commands: they are faster and their output is shorter.",
        'When a command fails, read its "stderr" and say what went wrong before trying again.',
        "Never commit unless the user asks; never push to a remote.\n",
        "Answer in a few lines; the user reads your text in a terminal.\n\n",
    ]
    text, index = seed + ": ", len(seed)
    while len(text) < size:
        text += sentences[index % len(sentences)] + " "
        index += 1
    return text


def schema(properties):
    fields = {}
    for index, name in enumerate(properties):
        if index % 3 == 0:
            fields[name] = {"type": "string", "description": prose(name, 120)}
        elif index % 3 == 1:
            fields[name] = {"type": "integer", "minimum": 0, "description": prose(name, 60)}
        else:
            fields[name] = {"type": "boolean", "default": False, "description": prose(name, 40)}
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object", "properties": fields, "required": [properties[0]],
            "additionalProperties": False}


TOOLS = [
    ("Agent", 8200, ["description", "prompt", "subagent_type", "model", "resume", "run_in_background", "isolation"]),
    ("Bash", 10800, ["command", "timeout", "description", "run_in_background", "dangerously_disable_sandbox"]),
    ("Edit", 1100, ["file_path", "old_string", "new_string", "replace_all"]),
    ("ListAgents", 1400, ["status", "limit", "verbose"]),
    ("Read", 1800, ["file_path", "offset", "limit", "pages", "encoding"]),
    ("ReportFindings", 600, ["findings", "summary"]),
    ("ScheduleWakeup", 3400, ["delay_seconds", "reason", "prompt", "repeat", "until"]),
    ("Skill", 1400, ["skill", "args"]),
    ("ToolSearch", 950, ["query", "max_results"]),
    ("Workflow", 3500, ["name", "steps", "inputs", "dry_run", "parallel", "timeout", "on_error"]),
    ("Glob", 600, ["pattern", "path"]),
    ("Write", 600, ["file_path", "content"]),
]


def agent_request():
    messages = [{"role": "user", "content": [
        {"type": "text", "text": prose("reminder", 6000)},
        {"type": "text", "text": prose("context", 4500)},
        {"type": "text", "text": "Look at the modules under src/ and tell me what they do."},
    ]}]
    for round_ in range(3):
        tool_id = f"toolu_bench_{round_}"
        messages.append({"role": "assistant", "content": [
            {"type": "text", "text": "I will read the next module."},
            {"type": "tool_use", "id": tool_id, "name": "Read",
             "input": {"file_path": f"/work/project/src/module_{round_}.rs"}},
        ]})
        messages.append({"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": tool_id, "content": prose(f"module_{round_}.rs", 2000)},
        ]})
    # The mock answers with its text: no "call" in the last message.
    messages.append({"role": "user", "content": "Now summarise what these modules do, in three sentences."})
    return {
        "model": "mock", "max_tokens": 32,
        "system": [{"type": "text", "text": prose(f"system {i}", size)}
                   for i, size in enumerate([2900, 13000, 13000])],
        "messages": messages,
        "tools": [{"name": name, "description": prose(name, size), "input_schema": schema(properties)}
                  for name, size, properties in TOOLS],
        "thinking": {"type": "adaptive", "display": "omitted"},
        "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        "metadata": {"user_id": "bench-user"},
    }


def codex_request():
    """The agent's request as Codex sends it: the system prompt as
    `instructions`, the context as developer and user messages of
    `input_text` parts, each tool call a `function_call` item and its result
    a `function_call_output` item, the tools as function tools."""
    def message(role, *texts):
        return {"type": "message", "role": role,
                "content": [{"type": "input_text", "text": text} for text in texts]}

    items = [
        message("developer", prose("permissions", 3000)),
        message("user", prose("reminder", 6000), prose("context", 4500)),
        message("user", "Look at the modules under src/ and tell me what they do."),
    ]
    for round_ in range(3):
        call_id = f"call_bench_{round_}"
        items.append({"type": "message", "role": "assistant",
                      "content": [{"type": "output_text", "text": "I will read the next module.",
                                   "annotations": []}]})
        items.append({"type": "function_call", "name": "Read", "call_id": call_id,
                      "arguments": json.dumps({"file_path": f"/work/project/src/module_{round_}.rs"})})
        items.append({"type": "function_call_output", "call_id": call_id,
                      "output": prose(f"module_{round_}.rs", 2000)})
    items.append(message("user", "Now summarise what these modules do, in three sentences."))
    return {
        "model": "mock", "max_output_tokens": 32, "store": False, "stream": False,
        "instructions": "\n\n".join(prose(f"system {i}", size)
                                     for i, size in enumerate([2900, 13000, 13000])),
        "input": items,
        "tools": [{"type": "function", "name": name, "description": prose(name, size),
                   "strict": False, "parameters": schema(properties)}
                  for name, size, properties in TOOLS],
        "tool_choice": "auto", "parallel_tool_calls": False,
        "reasoning": {"effort": "medium", "summary": "auto"}, "include": [],
        "prompt_cache_key": "bench-session",
    }


def request(kind):
    editing = {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]}
    return {
        "chat": ("/v1/chat/completions", {"model": "mock", "messages": QUESTION, "max_tokens": 32}),
        "messages": ("/v1/messages", {"model": "mock", "messages": QUESTION, "max_tokens": 32}),
        "editing": ("/v1/messages", {"model": "mock", "messages": QUESTION, "max_tokens": 32,
                                     "context_management": editing}),
        "agent": ("/v1/messages", agent_request()),
        "codex": ("/v1/responses", codex_request()),
    }[kind]


class Mock(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *_):
        pass

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        asked = json.loads(body)
        answer = json.dumps({
            "id": "chatcmpl-mock", "object": "chat.completion", "created": 0, "model": asked.get("model"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": TEXT}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": max(1, len(body) // 4), "completion_tokens": 7,
                      "total_tokens": max(1, len(body) // 4) + 7},
        }).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)


KINDS = ("chat", "messages", "editing", "agent", "codex")


def callgrind(pid, *arguments):
    """Runs callgrind_control on the gateway's process; it says on its
    standard output, not in its status, when there was none."""
    done = subprocess.run(["callgrind_control", *arguments, str(pid)], capture_output=True, text=True)
    if done.returncode != 0 or "No active callgrind" in done.stdout:
        sys.exit(f"callgrind_control {' '.join(arguments)} {pid}: {done.stdout}{done.stderr}")


def drive(port, pid, count, kinds):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)

    def send(path, body):
        connection.request("POST", path, body, {
            "content-type": "application/json", "x-api-key": KEY,
            "authorization": f"Bearer {KEY}", "anthropic-version": "2023-06-01"})
        response = connection.getresponse()
        answer = response.read()
        if response.status != 200 or TEXT.encode() not in answer:
            sys.exit(f"{path}: HTTP {response.status}: {answer[:300]!r}")

    for kind in kinds:
        path, body = request(kind)
        body = json.dumps(body)
        for _ in range(20):  # warm up: connections, caches, lazy statics
            send(path, body)
        callgrind(pid, "--zero")
        for _ in range(count):
            send(path, body)
        callgrind(pid, f"--dump={kind}")


def report(out_dir, count, kinds):
    found = []
    for dump in sorted(glob.glob(os.path.join(out_dir, "callgrind.out.*.*")),
                       key=lambda name: int(name.rsplit(".", 1)[1])):
        text = open(dump, encoding="utf-8", errors="replace").read()
        kind = re.search(r"^desc: Trigger: .*dump (\S+)", text, re.M)
        total = re.search(r"^summary: (\d+)", text, re.M)
        if kind and total:
            found.append((kind.group(1), int(total.group(1)) // count))
    if [kind for kind, _ in found] != kinds:
        sys.exit(f"expected a count for each of {kinds} in {out_dir}, found {found}")
    for kind, per_request in found:
        print(f"{kind}\t{per_request}")


def main():
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    if command == "mock":
        server = ThreadingHTTPServer(("127.0.0.1", 0), Mock)
        with open(sys.argv[2] + ".new", "w", encoding="utf-8") as port_file:
            port_file.write(str(server.server_address[1]))
        os.replace(sys.argv[2] + ".new", sys.argv[2])
        server.serve_forever()
    elif command == "drive":
        drive(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5].split(","))
    elif command == "report":
        report(sys.argv[2], int(sys.argv[3]), sys.argv[4].split(","))
    elif command == "request":
        print(json.dumps(request(sys.argv[2])[1]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
