"""A protocol fake of OpenAI's chat completions API that answers from a script: not a model.

The pipeline tests need answers they can predict (wrong code first, right code once the prompt
carries a test failure) to drive a project through every state; the product talks to it with the
official `openai` SDK, over HTTP, exactly as it would talk to OpenAI.
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

REPAIR_MARK = "A previous attempt failed"  # what codegen.prompts.build_messages adds with feedback
PLAN_MARK = "List every top-level function and class"  # codegen.hierarchical.plan_messages
RETRY_MARK = "That code does not parse"  # codegen.generate: hybrid_grammar_neural's check-and-retry
HOLD_LIMIT_S = 120.0  # a held answer goes after this long even when the test never released it


@dataclass
class ScriptedCoder:
    url: str = ""
    scripts: dict[str, tuple[str, str]] = field(default_factory=dict)  # function name -> (first, repair)
    prompts: list[str] = field(default_factory=list)
    requests: list[dict] = field(default_factory=list)  # every request body, as received
    plans: dict[str, str] = field(default_factory=dict)  # spec name -> the answer to a planning prompt
    lock: threading.Lock = field(default_factory=threading.Lock)
    delay: float = 0.0  # seconds each answer takes
    delays: dict[str, float] = field(default_factory=dict)  # function name -> its answers' latency (benches)
    held: dict[str, threading.Event] = field(default_factory=dict)  # function name -> answered once it is set
    spans: list[tuple[str, float, float]] = field(default_factory=list)  # (function name, start, end)
    started: list[str] = field(default_factory=list)  # function names, as their requests arrive
    queued: dict[str, list[str]] = field(default_factory=dict)  # function name -> next first answers

    def hold(self, *names: str) -> None:
        """Keep these functions' answers until `release` (or HOLD_LIMIT_S, so a forgotten hold ends)."""
        for name in names:
            self.held[name] = threading.Event()

    def release(self, *names: str) -> None:
        """Let held answers go: these functions', or every one."""
        for name in names or list(self.held):
            gate = self.held.pop(name, None)
            if gate is not None:
                gate.set()

    def script(self, name: str, first: str, repair: str | None = None) -> None:
        self.scripts[name] = (first, repair if repair is not None else first)

    def prompts_for(self, name: str, since: int = 0) -> list[str]:
        """The prompts that named this function, from the `since`-th prompt on (the fake serves the session)."""
        return [p for p in self.prompts[since:] if f"`{name}`" in p]

    def answer(self, prompt: str) -> str:
        planned = re.search(r"^Name: ([A-Za-z_][A-Za-z0-9_]*)$", prompt, re.M)
        if PLAN_MARK in prompt and planned and planned.group(1) in self.plans:
            return self.plans[planned.group(1)]
        match = re.search(r"named `([A-Za-z_][A-Za-z0-9_]*)`", prompt)
        name = match.group(1) if match else ""
        first, repair = self.scripts.get(name, ("def unknown():\n    pass\n",) * 2)
        if self.queued.get(name) and REPAIR_MARK not in prompt and RETRY_MARK not in prompt:
            first = self.queued[name].pop(0)
        return f"```python\n{repair if REPAIR_MARK in prompt or RETRY_MARK in prompt else first}\n```"


def start() -> tuple[ScriptedCoder, ThreadingHTTPServer]:
    coder = ScriptedCoder()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
            prompt = "\n".join(m.get("content") or "" for m in body.get("messages", []) if isinstance(m, dict))
            started = time.monotonic()
            with coder.lock:
                coder.prompts.append(prompt)
                coder.requests.append(body)
            text = coder.answer(prompt)
            match = re.search(r"named `([A-Za-z_][A-Za-z0-9_]*)`", prompt)
            with coder.lock:
                coder.started.append(match.group(1) if match else "")
            name = match.group(1) if match else ""
            gate = coder.held.get(name)
            if gate is not None:
                gate.wait(HOLD_LIMIT_S)
            time.sleep(coder.delays.get(name, coder.delay))  # a model's latency, as a bench asks for it
            with coder.lock:
                coder.spans.append((match.group(1) if match else "", started, time.monotonic()))
            answer = {
                "id": "chatcmpl-scripted",
                "object": "chat.completion",
                "created": 0,
                "model": body.get("model"),
                "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
                "usage": {
                    "prompt_tokens": len(prompt) // 4,
                    "completion_tokens": len(text) // 4,
                    "total_tokens": (len(prompt) + len(text)) // 4,
                },
            }
            data = json.dumps(answer).encode()
            self.send_response(200 if self.path.endswith("/chat/completions") else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    coder.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return coder, server
