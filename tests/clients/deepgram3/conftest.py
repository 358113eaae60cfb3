"""Deepgram's Python SDK v3 against a real gateway, with no network.

The SDK gets only the gateway's address on 127.0.0.1 (``DeepgramClientOptions(url=...)``), and
:func:`no_network` fails a test that tries to reach any host but 127.0.0.1. The gateway is the shared
``gateway`` fixture of tests/conftest.py, started from the project's environment (``SYN4PSE_SERVER_PYTHON``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # tests/: the gateway fixture and helpers

from recording import install_network_guard, no_network  # noqa: F401 (fixture)

os.environ["DEEPGRAM_API_KEY"] = "test"
os.environ.pop("DEEPGRAM_HOST", None)

install_network_guard()


from spoken import SPOKEN, similarity, speech_16k  # noqa: E402, F401 (fixture)
