"""Hostile clients: each attack of ``bench/hostile_*.py`` runs while a well-behaved client measures itself.

The gateway runs the default ``syn4pse.yaml`` (its starter models), on a free port of 127.0.0.1, with the
server settings the attack modules ask for (``SERVER_SETTINGS``, e.g. remote fetch of local URLs). First a
quiet phase gives the baseline; then, for each attack (``ATTACKS``: a name and a function of the base URL
that runs the attack for a few seconds and raises if the server reacted wrongly; it runs in a child process,
so that the attacker's own work never pauses the measuring threads), the well-behaved client runs beside it:

- ``/health`` every 20 ms (p50, p99, worst; the target is a p99 under 100 ms),
- one loop each of a short chat answer, a transcription of a 3 s clip and a short speech, back to back.

After each attack: how long until every model's ``active`` count is back to 0, and the gateway's RSS
against the baseline. Ratios are against the quiet phase. The exit status is 1 if an attack raised, a
well-behaved request failed or a model stayed busy.

    .venv/bin/python bench/hostile.py [--only NAME ...] [--quiet-seconds 8]
"""

from __future__ import annotations

import argparse
import importlib
import multiprocessing
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml
from _common import REPO_ROOT, cpu_load, cpu_name, gateway_process, ratio

HEALTH_EVERY = 0.02
HEALTH_TARGET_P99_MS = 100.0
CHAT_BODY = {"model": "gpt-4o-mini", "max_tokens": 16, "temperature": 0,
             "messages": [{"role": "user", "content": "Name one colour."}]}
SPEECH_BODY = {"model": "tts-1", "voice": "alloy", "input": "The train leaves at seven.", "response_format": "wav"}
CLIP_TEXT = "The quick brown fox jumps over the lazy dog."


@dataclass
class Latencies:
    """What one kind of well-behaved request took, and how often it failed."""

    seconds: list[float] = field(default_factory=list)
    errors: int = 0

    def p(self, q: float) -> float:
        if not self.seconds:
            return float("nan")
        ordered = sorted(self.seconds)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class WellBehaved:
    """The client beside the attack: health probes and one loop per kind of request, each on a thread."""

    def __init__(self, base: str, clip: bytes) -> None:
        self._base = base
        self._clip = clip
        self._stop = threading.Event()
        self.kinds: dict[str, Latencies] = {k: Latencies() for k in ("health", "chat", "transcribe", "speech")}
        self._threads = [threading.Thread(target=self._loop, args=(kind,), daemon=True) for kind in self.kinds]

    def _request(self, http: httpx.Client, kind: str) -> bool:
        if kind == "health":
            return http.get(f"{self._base}/health").status_code == 200
        if kind == "chat":
            r = http.post(f"{self._base}/v1/chat/completions", json=CHAT_BODY)
            return r.status_code == 200 and bool(r.json()["choices"])
        if kind == "transcribe":
            r = http.post(f"{self._base}/v1/audio/transcriptions", data={"model": "whisper-1"},
                          files={"file": ("clip.wav", self._clip, "audio/wav")})
            return r.status_code == 200 and "fox" in r.json()["text"].lower()
        r = http.post(f"{self._base}/v1/audio/speech", json=SPEECH_BODY)
        return r.status_code == 200 and len(r.content) > 1000

    def _loop(self, kind: str) -> None:
        record = self.kinds[kind]
        with httpx.Client(timeout=120) as http:
            while not self._stop.is_set():
                start = time.perf_counter()
                try:
                    ok = self._request(http, kind)
                except httpx.HTTPError:
                    ok = False
                record.seconds.append(time.perf_counter() - start)
                record.errors += not ok
                self._stop.wait(HEALTH_EVERY if kind == "health" else 0.05)

    def __enter__(self) -> WellBehaved:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=180)


@dataclass
class Row:
    name: str
    kinds: dict[str, Latencies]
    recover_s: float
    rss_mib: float
    problem: str = ""


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def busy_models(base: str) -> dict[str, int]:
    models = httpx.get(f"{base}/admin/models", timeout=30).json()["data"]
    return {m["id"]: int(m["active"]) for m in models if int(m["active"])}


def time_to_idle(base: str, limit: float = 60.0) -> float:
    """Seconds until no model has a lease taken (``inf`` past ``limit``)."""
    start = time.perf_counter()
    while busy_models(base):
        if time.perf_counter() - start > limit:
            return float("inf")
        time.sleep(0.05)
    return time.perf_counter() - start


def load_attacks(only: list[str]) -> tuple[list[tuple[str, str]], dict[str, Any]]:
    """Every module's attacks as (module, attack name) — those named in ``only``, if given — and the
    modules' merged ``SERVER_SETTINGS``."""
    attacks: list[tuple[str, str]] = []
    settings: dict[str, Any] = {}
    for path in sorted(Path(__file__).parent.glob("hostile_*.py")):
        module = importlib.import_module(path.stem)
        settings.update(getattr(module, "SERVER_SETTINGS", {}))
        attacks += [(path.stem, name) for name, _ in module.ATTACKS if not only or name in only]
    return attacks, settings


def _attack_child(module: str, name: str, base: str, failures: Any) -> None:
    """One attack, in a process of its own: building a body of a million members, or decoding a big
    answer, holds the interpreter of the process that does it, and the well-behaved client must not
    pay for the attacker's work, only for the gateway's."""
    run = dict(importlib.import_module(module).ATTACKS)[name]
    try:
        run(base)
    except Exception as error:  # reported by the parent, as the attack's problem
        failures.put(f"{type(error).__name__}: {error}")


def in_own_process(module: str, name: str, base: str) -> None:
    """Run the attack ``name`` of ``module`` in a child process; raise what it raised."""
    context = multiprocessing.get_context("spawn")
    failures = context.Queue()
    child = context.Process(target=_attack_child, args=(module, name, base, failures), daemon=True)
    child.start()
    child.join()
    if not failures.empty():
        raise AssertionError(failures.get())
    if child.exitcode != 0:
        raise AssertionError(f"the attack's process exited with {child.exitcode}")


def config_text(settings: dict[str, Any]) -> str:
    config = yaml.safe_load((REPO_ROOT / "syn4pse.yaml").read_text())
    config["server"].update({"log_level": "warning", **settings})
    return yaml.safe_dump(config, sort_keys=False)


def spoken_clip(base: str) -> bytes:
    body = {**SPEECH_BODY, "input": CLIP_TEXT}
    r = httpx.post(f"{base}/v1/audio/speech", json=body, timeout=120)
    r.raise_for_status()
    return r.content


def measure(base: str, pid: int, clip: bytes, name: str, work: Callable[[], None]) -> Row:
    problem = ""
    with WellBehaved(base, clip) as client:
        try:
            work()
        except Exception as error:  # an attack that was not refused as it should be: reported, not fatal
            problem = f"{type(error).__name__}: {error}"
    recover = time_to_idle(base)
    if recover == float("inf"):
        problem = problem or f"models still busy: {busy_models(base)}"
    return Row(name, client.kinds, recover, rss_mib(pid), problem)


def report(rows: list[Row]) -> None:
    quiet = rows[0]
    print(f"\nCPU: {cpu_name()} | load {cpu_load()}")
    print(f"{'phase':<28}{'health p50/p99/max ms':>24}{'p99 ratio':>10}"
          f"{'chat p50 s':>11}{'stt p50 s':>10}{'tts p50 s':>10}{'errors':>8}{'idle after s':>13}{'RSS MiB':>9}")
    for row in rows:
        h = row.kinds["health"]
        errors = sum(k.errors for k in row.kinds.values())
        health = f"{h.p(0.5) * 1e3:.1f}/{h.p(0.99) * 1e3:.1f}/{max(h.seconds, default=0) * 1e3:.0f}"
        print(f"{row.name:<28}{health:>24}{ratio(h.p(0.99), quiet.kinds['health'].p(0.99)):>10}"
              f"{row.kinds['chat'].p(0.5):>11.2f}{row.kinds['transcribe'].p(0.5):>10.2f}"
              f"{row.kinds['speech'].p(0.5):>10.2f}{errors:>8}{row.recover_s:>13.2f}"
              f"{row.rss_mib:>7.0f} ({ratio(row.rss_mib, quiet.rss_mib)})")
    over = [r.name for r in rows if r.kinds["health"].p(0.99) * 1e3 > HEALTH_TARGET_P99_MS]
    print(f"/health p99 over {HEALTH_TARGET_P99_MS:.0f} ms: {', '.join(over) or 'none'}")
    for row in rows:
        if row.problem:
            print(f"PROBLEM {row.name}: {row.problem}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", default=[], help="attack names to run (default: all)")
    parser.add_argument("--quiet-seconds", type=float, default=8.0, help="length of the baseline phase")
    args = parser.parse_args()
    attacks, settings = load_attacks(args.only)
    with tempfile.TemporaryDirectory(prefix="syn4pse-hostile-") as tmp, \
            gateway_process(Path(tmp), config_text(settings)) as gw:
        clip = spoken_clip(gw.base)
        measure(gw.base, gw.proc.pid, clip, "warm-up", lambda: time.sleep(3))
        rows = [measure(gw.base, gw.proc.pid, clip, "quiet", lambda: time.sleep(args.quiet_seconds))]
        for module, name in attacks:
            print(f"attack: {name}", file=sys.stderr)
            rows.append(measure(gw.base, gw.proc.pid, clip, name,
                                lambda m=module, n=name: in_own_process(m, n, gw.base)))
    report(rows)
    failed = [r for r in rows if r.problem or any(k.errors for k in r.kinds.values())]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

