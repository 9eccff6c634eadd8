"""End to end with a client nobody here wrote: the official `openai` package calls
`tollgate serve` (plain and streaming) while one upstream fails; every call must succeed
with the right content.

Run by scripts/e2e.sh (which builds tollgate and installs `openai` if missing):
    TOLLGATE_BIN=target/debug/tollgate python3 tests/e2e_openai.py

Two fake OpenAI-compatible upstreams run in this process on 127.0.0.1: `broken` answers
every call with 503, `good` answers deterministically. The policy tries `broken` first.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import openai

GOOD_KEY = "sk-e2e-good-key"
CALLER_KEY = "tk-e2e-caller"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Fake(BaseHTTPRequestHandler):
    name = "?"
    broken = False
    calls = 0
    auth = []

    def log_message(self, *args):
        pass

    def do_POST(self):
        type(self).calls += 1
        body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))))
        type(self).auth.append(self.headers.get("authorization"))
        if self.broken:
            self.send_json(503, {"error": {"message": "down", "type": "server_error"}})
            return
        last = [m for m in body["messages"] if m["role"] == "user"][-1]["content"]
        reply = f"{self.name}/{body['model']}: {last}"
        usage = {"prompt_tokens": 5, "completion_tokens": len(reply.split()), "total_tokens": 0}
        if body.get("stream"):
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.end_headers()
            words = reply.split(" ")
            for i, w in enumerate(words):
                chunk = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": body["model"],
                         "choices": [{"index": 0, "delta": {"content": w + (" " if i < len(words) - 1 else "")},
                                      "finish_reason": None}]}
                self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                self.wfile.flush()
            if body.get("stream_options", {}).get("include_usage"):
                u = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": body["model"],
                     "choices": [], "usage": usage}
                self.wfile.write(f"data: {json.dumps(u)}\n\n".encode())
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()
            self.close_connection = True
            return
        self.send_json(200, {"id": "c", "object": "chat.completion", "created": 0, "model": body["model"],
                             "choices": [{"index": 0, "message": {"role": "assistant", "content": reply},
                                          "finish_reason": "stop"}], "usage": usage})

    def send_json(self, status, obj):
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def start_fake(name, broken):
    handler = type(name, (Fake,), {"name": name, "broken": broken, "calls": 0, "auth": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, handler


POLICY = """
[defaults]
timeouts = {{ connect = "1s", per_try = "4s", total = "20s" }}
retry = "quick"
breaker = "quick"
[upstreams.broken]
base_url = "http://127.0.0.1:{broken}/v1"
[upstreams.good]
base_url = "http://127.0.0.1:{good}/v1"
api_key = {{ env = "E2E_GOOD_KEY", prefixes = ["sk-"] }}
[models.flaky-model]
upstream = "broken"
upstream_model = "up-broken"
price = {{ input_per_mtok = 1.0, output_per_mtok = 2.0 }}
[models.steady-model]
upstream = "good"
upstream_model = "up-good"
price = {{ input_per_mtok = 1.0, output_per_mtok = 2.0 }}
[retry.quick]
max_attempts = 2
backoff = {{ kind = "constant", base = "5ms", max = "5ms", jitter = "none" }}
[breakers.quick]
consecutive_failures = 3
open_for = "200ms"
[[routes]]
name = "main"
targets = ["flaky-model", "steady-model"]
streaming = {{ first_byte = "2s", idle_chunk = "2s" }}
"""


def main():
    binary = os.environ.get("TOLLGATE_BIN", "target/debug/tollgate")
    broken_srv, broken = start_fake("broken", True)
    good_srv, good = start_fake("good", False)
    port = free_port()
    with tempfile.TemporaryDirectory() as d:
        policy = os.path.join(d, "policy.toml")
        with open(policy, "w") as f:
            f.write(POLICY.format(broken=broken_srv.server_port, good=good_srv.server_port))
        env = dict(os.environ, E2E_GOOD_KEY=GOOD_KEY, TOLLGATE_CALLER_KEYS=f"e2e={CALLER_KEY}")
        proc = subprocess.Popen([binary, "serve", "--policy", policy, "--listen", f"127.0.0.1:{port}"], env=env)
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.time() + 30
            while True:
                try:
                    urllib.request.urlopen(base + "/healthz", timeout=1).read()
                    break
                except OSError:
                    if proc.poll() is not None or time.time() > deadline:
                        raise SystemExit(f"tollgate serve did not start (exit {proc.poll()})")
                    time.sleep(0.1)
            run_client(base)
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=20)
        assert code == 0, f"tollgate serve exited {code} on SIGTERM"
    assert broken.calls > 0, "the failing upstream was never tried"
    assert all(a == f"Bearer {GOOD_KEY}" for a in good.auth), "the upstream key was not sent"
    assert all(a is None for a in broken.auth), "a key was sent to an upstream without api_key"
    print(f"e2e ok: broken upstream called {broken.calls}x, good {good.calls}x")


def run_client(base):
    client = openai.OpenAI(base_url=base + "/v1", api_key=CALLER_KEY, max_retries=0)
    models = sorted(m.id for m in client.models.list().data)
    assert models == ["flaky-model", "main", "steady-model"], models

    for i in range(20):
        prompt = f"plain question {i}"
        r = client.chat.completions.create(model="main", messages=[{"role": "user", "content": prompt}])
        assert r.choices[0].message.content == f"good/up-good: {prompt}", r
        assert r.usage.completion_tokens > 0

    for i in range(10):
        prompt = f"streamed question {i}"
        stream = client.chat.completions.create(
            model="auto", messages=[{"role": "user", "content": prompt}], stream=True)
        text = "".join(c.choices[0].delta.content or "" for c in stream)
        assert text == f"good/up-good: {prompt}", text

    stream = client.chat.completions.create(
        model="main", messages=[{"role": "user", "content": "with usage"}], stream=True,
        stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0

    # Errors come back as the openai package's typed exceptions.
    try:
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
        raise AssertionError("unknown model accepted")
    except openai.NotFoundError as e:
        assert e.body["code"] == "model_not_found", e.body
    bad = openai.OpenAI(base_url=base + "/v1", api_key="tk-wrong", max_retries=0)
    try:
        bad.chat.completions.create(model="main", messages=[{"role": "user", "content": "x"}])
        raise AssertionError("wrong caller key accepted")
    except openai.AuthenticationError as e:
        assert e.body["code"] == "invalid_api_key", e.body


if __name__ == "__main__":
    try:
        main()
    except AssertionError as e:
        print(f"e2e FAILED: {e}", file=sys.stderr)
        sys.exit(1)
