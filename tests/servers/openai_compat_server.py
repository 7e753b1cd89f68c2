"""A small OpenAI-compatible chat-completions server backed by a local transformers model.

Test infrastructure: it lets the ``openai`` judge backend be exercised against a real server
process over real HTTP on loopback, with a real model computing real log-probabilities.

    python tests/servers/openai_compat_server.py --model smollm2-135m --log requests.jsonl

Serves ``POST /v1/chat/completions`` (greedy decoding of up to ``max_tokens`` tokens, at most 8,
with ``logprobs`` / ``top_logprobs`` in OpenAI's format), ``GET /v1/models`` and ``GET /stats``.
Binds 127.0.0.1 on an OS-chosen port (``--port 0``) and prints ``LISTENING <port>`` once ready.
Every chat request is appended to the ``--log`` JSONL file (and counted in ``/stats``) *before* it
is answered. Results are memoised per rendered prompt: a repeated request is still recorded but
costs no model time, which keeps fault-injection tests fast on a CPU. With ``--api-key``, requests
without ``Authorization: Bearer <key>`` get HTTP 401.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class ModelBackend:
    """Greedy decoding with top-k log-probabilities, memoised, one forward pass at a time."""

    def __init__(self, spec: str) -> None:
        import torch

        from misdirection.models import load_model

        torch.set_num_threads(1)  # the test machine is shared; one thread is plenty for 135M
        self.lm = load_model(spec, device="cpu")
        self._lock = threading.Lock()
        self._memo: dict[tuple[str, int, int], list[dict[str, Any]]] = {}

    def complete(
        self, messages: list[dict[str, str]], max_tokens: int, top_k: int
    ) -> list[dict[str, Any]]:
        """Per generated token: {"token", "logprob", "bytes", "top_logprobs": [...]}."""
        import torch

        from misdirection.models import render_chat

        tok = self.lm.tokenizer
        text = render_chat(tok, messages)
        key = (text, max_tokens, top_k)
        with self._lock:
            if key in self._memo:
                return self._memo[key]
            ids = tok(text, add_special_tokens=False)["input_ids"]
            out: list[dict[str, Any]] = []
            with torch.inference_mode():
                for _ in range(max_tokens):
                    logits = self.lm.model(input_ids=torch.tensor([ids])).logits[0, -1].float()
                    logp = torch.log_softmax(logits, dim=-1)
                    values, indices = torch.topk(logp, max(top_k, 1))
                    chosen = int(indices[0])
                    out.append(
                        {
                            **_token_entry(tok, chosen, float(values[0])),
                            "top_logprobs": [
                                _token_entry(tok, int(i), float(v))
                                for v, i in zip(values[:top_k], indices[:top_k])
                            ],
                        }
                    )
                    ids.append(chosen)
                    if chosen == tok.eos_token_id:
                        break
            self._memo[key] = out
            return out


def _token_entry(tok: Any, token_id: int, logprob: float) -> dict[str, Any]:
    text = tok.decode([token_id])
    return {"token": text, "logprob": logprob, "bytes": list(text.encode("utf-8"))}


def make_handler(
    backend: ModelBackend, served_name: str, log_path: str | None, api_key: str | None
):
    """Build the request handler class bound to one backend and request log."""
    state = {"requests": 0}
    log_lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet: the JSONL log is the record

        def _send(self, status: int, payload: Any) -> None:
            body = json.dumps(payload).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            if self.path == "/stats":
                self._send(200, {"requests": state["requests"]})
            elif self.path.rstrip("/") == "/v1/models":
                self._send(
                    200, {"object": "list", "data": [{"id": served_name, "object": "model"}]}
                )
            else:
                self._send(404, {"error": {"message": f"no route {self.path}"}})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            raw = self.rfile.read(length)
            if self.path.rstrip("/") != "/v1/chat/completions":
                self._send(404, {"error": {"message": f"no route {self.path}"}})
                return
            try:
                body = json.loads(raw)
            except ValueError:
                self._send(400, {"error": {"message": "body is not JSON"}})
                return
            with log_lock:
                state["requests"] += 1
                if log_path:
                    with open(log_path, "a", encoding="utf-8") as fh:
                        fh.write(json.dumps({"time": time.time(), "body": body}) + "\n")
            if api_key and self.headers.get("Authorization") != f"Bearer {api_key}":
                self._send(
                    401, {"error": {"message": "invalid API key", "type": "invalid_request_error"}}
                )
                return
            if body.get("model") != served_name:
                self._send(
                    404, {"error": {"message": f"model {body.get('model')!r} does not exist"}}
                )
                return
            messages = body.get("messages")
            if not isinstance(messages, list) or not messages:
                self._send(400, {"error": {"message": "messages must be a non-empty list"}})
                return
            max_tokens = max(1, min(int(body.get("max_tokens") or 1), 8))
            top_k = (
                max(0, min(int(body.get("top_logprobs") or 0), 20)) if body.get("logprobs") else 0
            )
            tokens = backend.complete(messages, max_tokens, top_k)
            text = "".join(t["token"] for t in tokens)
            finish = (
                "stop"
                if tokens and tokens[-1]["token"] == backend.lm.tokenizer.eos_token
                else "length"
            )
            choice: dict[str, Any] = {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": finish,
                "logprobs": {"content": tokens} if body.get("logprobs") else None,
            }
            self._send(
                200,
                {
                    "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": served_name,
                    "choices": [choice],
                    "usage": {"completion_tokens": len(tokens)},
                },
            )

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", default="smollm2-135m", help="spec for misdirection.models.load_model"
    )
    parser.add_argument(
        "--served-name", default=None, help="model name clients must send (default: --model)"
    )
    parser.add_argument("--port", type=int, default=0, help="0 = let the OS choose")
    parser.add_argument("--log", default=None, help="append every chat request to this JSONL file")
    parser.add_argument("--api-key", default=None, help="require this bearer key")
    args = parser.parse_args()
    backend = ModelBackend(args.model)
    handler = make_handler(backend, args.served_name or args.model, args.log, args.api_key)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), handler)
    server.daemon_threads = True
    print(f"LISTENING {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
