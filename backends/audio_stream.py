"""Audio that arrives in pieces (a live WebSocket), decoded incrementally to 16 kHz mono float32.

Two shapes of input: headerless samples in a known encoding (``linear16``, ``linear32``, ``mulaw``,
``alaw``) with their rate and channel count, and containerised streams (WebM/Opus and Ogg/Opus from a
browser's MediaRecorder, WAV) that are demuxed as their bytes come in. One resampler lives for the
whole stream, so chunk boundaries leave no clicks.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Protocol

import av
import numpy as np
import numpy.typing as npt

from backends.audio import ENCODINGS, frame_bytes, raw_to_mono
from backends.errors import BadAudio, Part

__all__ = ["ContainerStreamDecoder", "RawStreamDecoder", "StreamDecoder"]

Samples = npt.NDArray[np.float32]
OUT_RATE = 16000


class StreamDecoder(Protocol):
    def feed(self, data: bytes) -> Samples:
        """Decode what ``data`` completes; samples may also arrive later (see ``on_samples``)."""
        ...

    def close(self) -> Samples:
        """End of input: the last samples."""
        ...


class _Resampler:
    """float32 mono at ``rate`` → float32 mono at 16 kHz, keeping its state across calls."""

    def __init__(self, rate: int) -> None:
        self._rate = rate
        self._resampler = av.AudioResampler(format="flt", layout="mono", rate=OUT_RATE)
        self._pts = 0

    def __call__(self, samples: Samples | None) -> Samples:
        if samples is None:
            frames = self._resampler.resample(None)
        else:
            if self._rate == OUT_RATE:
                return samples
            frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="flt", layout="mono")
            frame.sample_rate = self._rate
            frame.pts = self._pts
            self._pts += len(samples)
            frames = self._resampler.resample(frame)
        if not frames:
            return np.zeros(0, dtype=np.float32)
        return np.concatenate([f.to_ndarray().reshape(-1) for f in frames]).astype(np.float32, copy=False)


class RawStreamDecoder:
    """Headerless audio: whole frames are decoded as they complete; a partial frame waits."""

    def __init__(self, encoding: str, sample_rate: int, channels: int = 1) -> None:
        if encoding not in ENCODINGS:
            raise BadAudio(f"Unsupported encoding '{encoding}' for raw audio; expected one of: "
                           f"{', '.join(ENCODINGS)}.", part=Part.AUDIO_ENCODING)
        if not 1000 <= sample_rate <= 192000:
            raise BadAudio(f"sample_rate {sample_rate} is out of range.", part=Part.SAMPLE_RATE)
        if not 1 <= channels <= 32:
            raise BadAudio(f"channels {channels} is out of range.", part=Part.CHANNELS)
        self._encoding = encoding
        self._channels = channels
        self._frame_bytes = frame_bytes(encoding, channels)
        self._pending = b""
        self._resample = _Resampler(sample_rate)

    def feed(self, data: bytes) -> Samples:
        data = self._pending + data
        whole = len(data) - len(data) % self._frame_bytes
        self._pending = data[whole:]
        if not whole:
            return np.zeros(0, dtype=np.float32)
        return self._resample(raw_to_mono(data[:whole], self._encoding, self._channels))

    def close(self) -> Samples:
        return self._resample(None)


class _Pipe:
    """A blocking, read-only file for the demuxer thread, written from the event loop."""

    def __init__(self) -> None:
        self._chunks: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._buffer = b""
        self._eof = False

    def write(self, data: bytes | None) -> None:
        self._chunks.put(data)

    def read(self, size: int = -1) -> bytes:
        while not self._eof and (size < 0 or len(self._buffer) < size):
            chunk = self._chunks.get()
            if chunk is None:
                self._eof = True
            else:
                self._buffer += chunk
                if size >= 0 and self._buffer:
                    break  # hand the demuxer what there is; it asks again for more
        out = self._buffer if size < 0 else self._buffer[:size]
        self._buffer = self._buffer[len(out):]
        return out


class ContainerStreamDecoder:
    """A containerised stream (WebM, Ogg, WAV, …) demuxed on a thread as its bytes arrive.

    Decoded samples are handed to ``on_samples`` from that thread; ``on_error`` gets an
    :class:`BadAudio` if the bytes are not a stream this decoder can read.
    """

    _DEMUXERS = "matroska,webm,ogg,wav,mp3,flac,aac,mov,mp4"

    def __init__(self, on_samples: Callable[[Samples], None], on_error: Callable[[BadAudio], None]) -> None:
        self._pipe = _Pipe()
        self._on_samples = on_samples
        self._on_error = on_error
        self._thread = threading.Thread(target=self._run, name="live-demux", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            with av.open(self._pipe, "r", container_options={"format_whitelist": self._DEMUXERS}) as container:
                if not container.streams.audio:
                    raise BadAudio("The stream holds no audio.")
                stream = container.streams.audio[0]
                resampler = av.AudioResampler(format="flt", layout="mono", rate=OUT_RATE)
                for frame in container.decode(stream):
                    for out in resampler.resample(frame):
                        self._on_samples(out.to_ndarray().reshape(-1).astype(np.float32, copy=False))
                for out in resampler.resample(None):
                    self._on_samples(out.to_ndarray().reshape(-1).astype(np.float32, copy=False))
        except BadAudio as e:
            self._on_error(e)
        except (av.FFmpegError, EOFError, ValueError, OSError):
            self._on_error(BadAudio("The stream is not audio in a supported format, or it is corrupt."))

    def feed(self, data: bytes) -> Samples:
        self._pipe.write(data)
        return np.zeros(0, dtype=np.float32)

    def close(self) -> Samples:
        self._pipe.write(None)
        self._thread.join(timeout=10)
        return np.zeros(0, dtype=np.float32)
