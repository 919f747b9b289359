"""An OpenAI-compatible chat-completions stub on 127.0.0.1, scripted per report, shared
by the LLM tests (the ``stub_server`` fixture in conftest starts and stops it)."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

REPORT_TAG = re.compile(r'<report study_id="([^"]*)">\n(.*)\n</report>\Z', re.DOTALL)


def completion(content: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-stub",
        "object": "chat.completion",
        "created": 1,
        "model": "stub",
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": content},
            }
        ],
        "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120},
    }


# A script maps (study id or "narrative", attempt number from 0) to (delay_s, reply);
# reply is the assistant's content, or an int HTTP status for an error.
Script = Callable[[str, int], tuple[float, "str | int"]]


class Stub:
    """An OpenAI-compatible chat-completions server in a thread, answering from a script."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.requests: list[dict[str, Any]] = []
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self._attempts: dict[str, int] = {}
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                user = body["messages"][-1]["content"]
                match = REPORT_TAG.search(user)
                key = match.group(1) if match else "narrative"
                with stub._lock:
                    stub.requests.append(body)
                    attempt = stub._attempts.get(key, 0)
                    stub._attempts[key] = attempt + 1
                delay, reply = stub.script(key, attempt)
                if delay and stub.stop.wait(min(delay, 10)):
                    return
                if isinstance(reply, int):
                    payload = json.dumps({"error": {"message": "stub error", "type": "x"}})
                    status = reply
                else:
                    payload, status = json.dumps(completion(reply)), 200
                data = payload.encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client timed out
                    pass

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def requests_for(self, key: str) -> list[dict[str, Any]]:
        out = []
        for body in self.requests:
            match = REPORT_TAG.search(body["messages"][-1]["content"])
            if (match.group(1) if match else "narrative") == key:
                out.append(body)
        return out
