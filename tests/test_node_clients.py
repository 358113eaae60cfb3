"""The OpenAI Node SDK and the Vercel AI SDK against the gateway.

The cases live in tests/node/*.test.js (node's own test runner, packages pinned by its lockfile and
installed by ``bash .ci/install test``); each file runs here as one test against the shared gateway,
pointed at it only by ``OPENAI_BASE_URL``, so a failure names the file and prints which case failed.
A missing ``node`` or missing packages fail the run: these clients are part of what CI checks.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import Gateway

NODE_DIR = Path(__file__).parent / "node"
NODE_CASES = sorted(NODE_DIR.glob("*.test.js"))
MIN_NODE = 20


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.fail(f"node is not on PATH: the Node client tests need Node >= {MIN_NODE} (tests/node/package.json)")
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=True).stdout.strip()
    found = re.match(r"v(\d+)\.", version)
    if found is None or int(found.group(1)) < MIN_NODE:
        pytest.fail(f"node {version} is too old: the Node client tests need Node >= {MIN_NODE}")
    if not (NODE_DIR / "node_modules").is_dir():
        pytest.fail("tests/node/node_modules is missing: run `npm ci --prefix tests/node` (bash .ci/install test does)")
    return node


def test_node_cases_exist() -> None:
    assert {p.name for p in NODE_CASES} >= {"openai-sdk.test.js", "ai-sdk.test.js", "openai-sdk-responses.test.js",
                                             "ai-sdk-responses.test.js"}


# One file is a dozen model calls; on a loaded machine that can pass the suite's 600 s per test.
@pytest.mark.timeout(1200)
@pytest.mark.parametrize("case", NODE_CASES, ids=lambda p: p.name.removesuffix(".test.js"))
def test_node_client(gateway: Gateway, case: Path) -> None:
    node = _node()
    env = {**os.environ, "OPENAI_BASE_URL": f"{gateway.url}/v1", "OPENAI_API_KEY": "test-key"}
    proc = subprocess.run([node, "--test", "--test-reporter=spec", case.name], cwd=NODE_DIR, env=env,
                          capture_output=True, text=True, timeout=1150)
    output = proc.stdout + proc.stderr
    if proc.returncode != 0:
        pytest.fail(f"node --test {case.name} failed (exit {proc.returncode}):\n{output}", pytrace=False)
    assert re.search(r"^ℹ pass [1-9]", output, re.M) and re.search(r"^ℹ fail 0$", output, re.M), output
