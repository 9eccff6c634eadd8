"""End to end across wire formats, with clients nobody here wrote: the official `openai`
package calls `tollgate serve` routed to an Anthropic and a Gemini upstream (plain and
streaming), and the official `anthropic` package calls the relay's `/v1/messages`
(plain and streaming), answered by an Anthropic, a Gemini and an OpenAI upstream.

The upstreams are the strict in-process fakes of `cargo run --example fake_upstreams`
(they reject what the real APIs reject: a wrong key header, a `system` role in Anthropic's
`messages`, a missing `max_tokens`, unknown fields), so a translation mistake fails here.

Run by scripts/e2e.sh (which builds tollgate and the example and installs the packages):
    TOLLGATE_BIN=target/debug/tollgate FAKES_BIN=target/debug/examples/fake_upstreams \
        python3 tests/e2e_providers.py
"""

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import anthropic
import openai

KEY = "e2e-provider-key"
CALLER_KEY = "tk-e2e-providers"

POLICY = """
[defaults]
timeouts = {{ connect = "1s", per_try = "5s", total = "20s" }}
[upstreams.claude]
base_url = "{anthropic}"
api = "anthropic"
api_key = {{ env = "E2E_PROVIDER_KEY" }}
[upstreams.google]
base_url = "{gemini}"
api = "gemini"
api_key = {{ env = "E2E_PROVIDER_KEY" }}
[upstreams.compatible]
base_url = "{openai}"
[models.sonnet]
upstream = "claude"
upstream_model = "claude-sonnet-4-5"
max_tokens = 1024
price = {{ input_per_mtok = 3.0, output_per_mtok = 15.0 }}
[models.flash]
upstream = "google"
upstream_model = "gemini-2.5-flash"
price = {{ input_per_mtok = 0.3, output_per_mtok = 2.5 }}
[models.mini]
upstream = "compatible"
upstream_model = "gpt-4.1-mini"
[[routes]]
name = "gemini"
when = {{ attr = "model", eq = "gemini" }}
targets = ["flash"]
[[routes]]
name = "openai"
when = {{ attr = "model", eq = "openai" }}
targets = ["mini"]
[[routes]]
name = "claude"
targets = ["sonnet"]
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_fakes(binary):
    proc = subprocess.Popen([binary], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    urls = {}
    while len(urls) < 3:
        line = proc.stdout.readline()
        if not line:
            raise SystemExit(f"fake_upstreams ended early (exit {proc.poll()})")
        name, url = line.split()
        urls[name] = url
    return proc, urls


def wait_healthy(base, proc):
    deadline = time.time() + 30
    while True:
        try:
            urllib.request.urlopen(base + "/healthz", timeout=1).read()
            return
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                raise SystemExit(f"tollgate serve did not start (exit {proc.poll()})")
            time.sleep(0.1)


def main():
    binary = os.environ.get("TOLLGATE_BIN", "target/debug/tollgate")
    fakes_bin = os.environ.get("FAKES_BIN", "target/debug/examples/fake_upstreams")
    fakes, urls = start_fakes(fakes_bin)
    port = free_port()
    try:
        with tempfile.TemporaryDirectory() as d:
            policy = os.path.join(d, "policy.toml")
            with open(policy, "w") as f:
                f.write(POLICY.format(**urls))
            env = dict(os.environ, E2E_PROVIDER_KEY=KEY, TOLLGATE_CALLER_KEYS=f"e2e={CALLER_KEY}")
            proc = subprocess.Popen(
                [binary, "serve", "--policy", policy, "--listen", f"127.0.0.1:{port}"], env=env)
            try:
                base = f"http://127.0.0.1:{port}"
                wait_healthy(base, proc)
                openai_client(base)
                anthropic_client(base)
            finally:
                proc.send_signal(signal.SIGTERM)
                code = proc.wait(timeout=20)
            assert code == 0, f"tollgate serve exited {code} on SIGTERM"
    finally:
        fakes.stdin.close()
        fakes.wait(timeout=10)
    print("e2e providers ok")


def openai_client(base):
    client = openai.OpenAI(base_url=base + "/v1", api_key=CALLER_KEY, max_retries=0)
    for route, prefix in [("claude", "anthropic/claude-sonnet-4-5"), ("gemini", "gemini/gemini-2.5-flash")]:
        msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": f"hello {route}"}]
        r = client.chat.completions.create(model=route, messages=msgs)
        assert r.choices[0].message.content == f"{prefix}: hello {route}", r
        assert r.choices[0].finish_reason == "stop", r
        assert r.usage.prompt_tokens > 0 and r.usage.completion_tokens > 0, r.usage
        stream = client.chat.completions.create(
            model=route, messages=msgs, stream=True, stream_options={"include_usage": True})
        chunks = list(stream)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == f"{prefix}: hello {route}", text
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0, chunks[-1]


def anthropic_client(base):
    client = anthropic.Anthropic(base_url=base, api_key=CALLER_KEY, max_retries=0)
    for route, prefix in [("claude", "anthropic/claude-sonnet-4-5"), ("gemini", "gemini/gemini-2.5-flash"),
                          ("openai", "openai/gpt-4.1-mini")]:
        r = client.messages.create(
            model=route, max_tokens=200, system="Be brief.",
            messages=[{"role": "user", "content": f"hi {route}"}])
        assert r.type == "message" and r.role == "assistant", r
        assert r.content[0].type == "text" and r.content[0].text == f"{prefix}: hi {route}", r
        assert r.stop_reason == "end_turn", r
        assert r.usage.output_tokens > 0, r.usage
        with client.messages.stream(
                model=route, max_tokens=200, messages=[{"role": "user", "content": f"stream {route}"}]) as s:
            text = "".join(s.text_stream)
            final = s.get_final_message()
        assert text == f"{prefix}: stream {route}", text
        assert final.usage.output_tokens > 0, final.usage
    # Errors come back as the anthropic package's typed exceptions.
    try:
        client.messages.create(model="no-such-model", max_tokens=10, messages=[{"role": "user", "content": "x"}])
        raise AssertionError("unknown model accepted")
    except anthropic.NotFoundError as e:
        assert e.body["type"] == "error" and e.body["error"]["type"] == "not_found_error", e.body
    bad = anthropic.Anthropic(base_url=base, api_key="tk-wrong", max_retries=0)
    try:
        bad.messages.create(model="claude", max_tokens=10, messages=[{"role": "user", "content": "x"}])
        raise AssertionError("wrong caller key accepted")
    except anthropic.AuthenticationError as e:
        assert e.body["error"]["type"] == "authentication_error", e.body


if __name__ == "__main__":
    try:
        main()
    except AssertionError as e:
        print(f"e2e providers FAILED: {e}", file=sys.stderr)
        sys.exit(1)
