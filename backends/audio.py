"""Audio in and out of the gateway, with PyAV (FFmpeg's libraries) and no ffmpeg binary.

Uploads arrive in whatever container the client had (wav, mp3, m4a, ogg, webm, flac...) and engines
want float32 mono at one rate, so ``decode`` turns any of them into that; ``decode_raw`` does the same
for headerless streams whose encoding the client names (``linear16``, ``mulaw``, …). Synthesised speech
goes the other way through ``StreamEncoder``, which hands back encoded bytes as they become ready so a
response can stream while the engine is still speaking.

Every failure to read an upload is the client's: it becomes ``BadAudio``, never an av exception.
"""

from __future__ import annotations

import contextlib
import io
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np
import numpy.typing as npt

from backends.errors import BadAudio, BadOutputFormat, Part

__all__ = ["ENCODINGS", "FORMATS", "AudioTooLong", "StreamEncoder", "decode", "decode_channels", "decode_raw",
           "duration", "frame_bytes", "raw_to_mono"]

Samples = npt.NDArray[np.float32]

# Demuxers an upload may use. Without a list FFmpeg probes every demuxer it has, and some of them reach
# outside the bytes given: ``ffconcat`` opens files named in the upload, ``sdp`` listens on UDP ports.
_DEMUXERS = ",".join(("wav", "w64", "mp3", "aac", "flac", "ogg", "mov", "matroska", "aiff", "caf", "amr", "au",
                      "wv", "asf", "ac3", "eac3", "mpeg", "mpegts", "avi", "flv"))
# What PyAV raises on bad input: FFmpeg's errors, and ValueError for what it checks itself (a frame that
# no longer matches the resampler, undecodable metadata...).
_AV_ERRORS = (av.FFmpegError, ValueError)

# Headerless encodings, by the names clients give them: the numpy dtype of one sample.
_RAW_DTYPES = {"linear16": "<i2", "linear32": "<i4", "mulaw": "u1", "alaw": "u1"}
ENCODINGS: tuple[str, ...] = tuple(_RAW_DTYPES)
# First bytes of the containers that say what they are.
_MAGIC = (b"RIFF", b"RF64", b"OggS", b"fLaC", b"ID3", b"\x1a\x45\xdf\xa3", b"FORM", b"#!AMR")


def decode(data: bytes, *, sample_rate: int = 16000, mono: bool = True,
           max_seconds: float | None = None) -> Samples:
    """Decode an audio file of any common container to float32 in [-1, 1] at ``sample_rate``.

    Mono gives shape ``(n,)``, downmixed; otherwise ``(channels, n)``. A file that breaks off part-way
    gives what decoded before the break: a cut-off recording is still worth transcribing.
    ``max_seconds`` refuses decompression bombs (a few KB of FLAC silence can be hours long): it counts
    channels × seconds as frames are decoded, and decoding stops at the first frame past it.
    """
    if not data:
        raise BadAudio("The audio file is empty.")
    try:
        container = av.open(io.BytesIO(data), "r", container_options={"format_whitelist": _DEMUXERS},
                            metadata_errors="replace")
    except _AV_ERRORS as exc:
        raise BadAudio("The file is not audio in a supported format, or it is corrupt.") from exc
    with container:
        if not container.streams.audio:
            raise BadAudio("The file contains no audio stream.")
        return _resample(container.decode(container.streams.audio[0]), rate=sample_rate, mono=mono,
                         max_seconds=max_seconds)


def decode_raw(data: bytes, *, encoding: str, sample_rate: int, channels: int = 1, out_rate: int = 16000) -> Samples:
    """Decode headerless audio (``ENCODINGS``; channels interleaved) to float32 mono at ``out_rate``."""
    dtype = _RAW_DTYPES.get(encoding)
    if dtype is None:
        raise BadAudio(f"Unsupported encoding '{encoding}'; expected one of: {', '.join(ENCODINGS)}.")
    if sample_rate <= 0 or channels <= 0:
        raise BadAudio("The sample rate and the channel count must be positive.")
    frame_bytes = np.dtype(dtype).itemsize * channels
    if not data or len(data) % frame_bytes:
        raise BadAudio(f"Raw {encoding} audio with {channels} channel(s) must be a non-empty whole number "
                           f"of {frame_bytes}-byte frames; got {len(data)} bytes.")
    return _resample([_frame(raw_to_mono(data, encoding, channels), sample_rate)], rate=out_rate, mono=True)


def decode_channels(data: bytes, *, encoding: str | None = None, sample_rate: int | None = None, channels: int = 1,
                    split: bool = False, rate: int = 16000, max_seconds: float | None = None) -> list[Samples]:
    """The audio as mono tracks at ``rate``: one per channel with ``split``, else one downmix.

    With an ``encoding`` the bytes are headerless samples at ``sample_rate``, ``channels`` interleaved;
    bytes that open with a container's signature are read as the file they are all the same (a WAV sent
    as ``linear16``).
    """
    if encoding is None or _has_container(data):
        samples = decode(data, sample_rate=rate, mono=not split, max_seconds=max_seconds)
        return [samples] if samples.ndim == 1 else [np.ascontiguousarray(row) for row in samples]
    if encoding not in _RAW_DTYPES:
        raise BadAudio(f"Unsupported encoding '{encoding}'; expected one of: {', '.join(ENCODINGS)}.",
                       part=Part.AUDIO_ENCODING)
    if sample_rate is None:
        raise BadAudio(f"Raw {encoding} audio needs its sample rate.", part=Part.SAMPLE_RATE)
    width = frame_bytes(encoding, 1)
    if max_seconds is not None and len(data) / (width * sample_rate) > max_seconds:
        raise _too_long(max_seconds)  # channels × seconds
    if not split or channels == 1:
        return [decode_raw(data, encoding=encoding, sample_rate=sample_rate, channels=channels, out_rate=rate)]
    frame = width * channels
    if not data or len(data) % frame:
        raise BadAudio(f"{len(data)} bytes is not a whole number of {frame}-byte frames.")
    interleaved = np.frombuffer(data, dtype=np.uint8).reshape(-1, channels, width)
    return [decode_raw(interleaved[:, c, :].tobytes(), encoding=encoding, sample_rate=sample_rate, out_rate=rate)
            for c in range(channels)]


def _has_container(data: bytes) -> bool:
    """Whether the bytes open with the signature of a container (WAV, Ogg, FLAC, MP3, Matroska, MP4, …)."""
    return data.startswith(_MAGIC) or data[4:8] == b"ftyp"


def raw_to_mono(data: bytes, encoding: str, channels: int) -> Samples:
    """Whole frames of headerless ``encoding`` audio → float32 mono at the same rate (no checks)."""
    codes = np.frombuffer(data, dtype=_RAW_DTYPES[encoding])
    if encoding in ("mulaw", "alaw"):
        samples = _g711_table(encoding)[codes]
    else:
        samples = codes / np.float32(-float(np.iinfo(codes.dtype).min))
    mono: Samples = samples.astype(np.float32).reshape(-1, channels).mean(axis=1, dtype=np.float32)
    return mono


def frame_bytes(encoding: str, channels: int) -> int:
    """Bytes in one frame (a sample of every channel) of headerless ``encoding`` audio."""
    return np.dtype(_RAW_DTYPES[encoding]).itemsize * channels


def duration(samples: npt.NDArray[np.floating], sample_rate: int) -> float:
    """Seconds of audio in ``samples``, mono ``(n,)`` or ``(channels, n)``."""
    return float(samples.shape[-1] / sample_rate)


def _g711_table(law: str) -> Samples:
    """Float value of each of the 256 G.711 codes (ITU-T G.711, as FFmpeg's pcm_mulaw/pcm_alaw decode)."""
    codes = np.arange(256)
    if law == "mulaw":
        u = ~codes & 0xFF
        t = (((u & 0x0F) << 3) + 0x84) << ((u & 0x70) >> 4)
        linear = np.where(u & 0x80, 0x84 - t, t - 0x84)
    else:
        a = codes ^ 0x55
        seg = (a & 0x70) >> 4
        t = np.where(seg, ((a & 0x0F) * 2 + 33) << (seg + 2), ((a & 0x0F) * 2 + 1) << 3)
        linear = np.where(a & 0x80, t, -t)
    return (linear / 32768).astype(np.float32)


def _frame(samples: Samples, rate: int, pts: int = 0) -> av.AudioFrame:
    """Wrap mono float32 samples as a frame PyAV can resample."""
    frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="flt", layout="mono")
    frame.sample_rate = rate
    frame.pts = pts
    frame.time_base = Fraction(1, rate)
    return frame


def _resample(frames: Iterable[av.AudioFrame], *, rate: int, mono: bool, max_seconds: float | None = None) -> Samples:
    """Resample frames to float32 at ``rate``; a decoder failing part-way keeps what came before it.

    The resampler is built from the first frame because only then is the channel layout certain. Its
    downmix is scaled to a gain of at most 1: FFmpeg's own adds 3 dB (L/√2 + R/√2), clipping loud stereo.
    """
    resampler: av.AudioResampler | None = None
    parts: list[Samples] = []
    decoded = 0.0
    """Seconds × channels decoded so far, counted before resampling: a bomb stops at its first frame past
    the limit, whatever the downmix makes of it."""
    try:
        for frame in frames:
            decoded += frame.samples * len(frame.layout.channels) / (frame.sample_rate or rate)
            if max_seconds is not None and decoded > max_seconds:
                parts.clear()  # the error's traceback holds this frame, and with it hours of samples
                raise _too_long(max_seconds)
            if resampler is None:
                # Packed samples: PyAV's planes of an 8-channel planar frame run one past the last channel,
                # and reading them crashes the process.
                resampler = av.AudioResampler(format="flt", layout="mono" if mono else frame.layout, rate=rate,
                                              options={"rematrix_maxval": "1.0"})
            parts += [_planes(out) for out in resampler.resample(frame)]
    except _AV_ERRORS:
        pass  # truncated or corrupt from here on: what decoded before stands, if anything did
    if resampler is not None:
        with contextlib.suppress(*_AV_ERRORS):
            parts += [_planes(out) for out in resampler.resample(None)]
    if not sum(part.shape[1] for part in parts):
        raise BadAudio("No audio could be decoded from the file; it may be truncated or corrupt.")
    samples = np.concatenate(parts, axis=1)
    parts.clear()  # one copy of the audio at a time, not two
    np.clip(samples, -1.0, 1.0, out=samples)
    return samples[0] if mono else samples


def _planes(frame: av.AudioFrame) -> Samples:
    """A packed float frame as ``(channels, n)``."""
    packed = np.asarray(frame.to_ndarray(), dtype=np.float32)
    return packed.reshape(-1, len(frame.layout.channels)).T


class AudioTooLong(BadAudio):
    """Audio that decodes to more than it may (channels × seconds): well-formed, but too much of it."""

    def __init__(self, max_seconds: float) -> None:
        super().__init__(f"The audio is longer than the {max_seconds:g} seconds allowed (all channels counted).")
        self.max_seconds = max_seconds


def _too_long(max_seconds: float) -> AudioTooLong:
    return AudioTooLong(max_seconds)


@dataclass(frozen=True)
class _Format:
    content_type: str
    muxer: str
    codecs: tuple[str, ...]  # encoder names to try, best first: wheels are built with different libraries
    options: tuple[tuple[str, str], ...] = ()
    bitrate: int | None = None  # when the codec's own default is poor for speech
    max_bitrate: int | None = None  # beyond what the codec takes for mono, a request gets this


# Raw formats go through FFmpeg's raw muxers too, so every format has the one code path.
_FORMATS = {
    "mp3": _Format("audio/mpeg", "mp3", ("libmp3lame", "mp3"), bitrate=64000),  # LAME picks 32 kb/s at 24 kHz
    # Ogg pages of 100 ms instead of the muxer's 1 s, so opus reaches the client without a second's wait.
    "opus": _Format("audio/ogg", "ogg", ("libopus", "opus"), (("page_duration", "100000"),), max_bitrate=256_000),
    "aac": _Format("audio/aac", "adts", ("aac", "libfdk_aac")),
    # No 8 KiB of padding after the header: it is there to be rewritten, and a stream is never rewritten.
    "flac": _Format("audio/flac", "flac", ("flac",), (("metadata_header_padding", "0"),)),
    "wav": _Format("audio/wav", "s16le", ("pcm_s16le",)),
    "pcm": _Format("audio/pcm", "s16le", ("pcm_s16le",)),
    "mulaw": _Format("audio/basic", "mulaw", ("pcm_mulaw",)),
    "alaw": _Format("audio/x-alaw-basic", "alaw", ("pcm_alaw",)),
}
FORMATS: tuple[str, ...] = tuple(_FORMATS)


class _Sink:
    """A write-only file for a muxer. Having no seek, it makes muxers write a stream front to back."""

    def __init__(self, initial: bytes = b"") -> None:
        self._buffer = bytearray(initial)

    def write(self, data: bytes) -> int:
        self._buffer += data
        return len(data)

    def take(self) -> bytes:
        """Everything written since the last take."""
        data = bytes(self._buffer)
        self._buffer.clear()
        return data


def _wav_header(rate: int) -> bytes:
    """A 16-bit mono WAV header whose sizes say "unknown" (0xFFFFFFFF): the length is not known yet."""
    return struct.pack("<4sI4s4sIHHIIHH4sI", b"RIFF", 0xFFFFFFFF, b"WAVE", b"fmt ", 16, 1, 1, rate, rate * 2, 2, 16,
                       b"data", 0xFFFFFFFF)


class StreamEncoder:
    """Encode float32 mono chunks into one of ``FORMATS``, handing back bytes as soon as they exist.

    ``encode`` returns what is ready now (codecs hold back a frame or two; ogg holds back a page);
    ``finish`` flushes the rest. ``sample_rate`` is the rate actually encoded: ``output_rate`` when the
    codec allows it, else 48000 (opus allows only 48/24/16/12/8 kHz).
    """

    def __init__(self, fmt: str, *, input_rate: int, output_rate: int = 24000, bitrate: int | None = None) -> None:
        spec = _FORMATS.get(fmt)
        if spec is None:
            raise BadOutputFormat(fmt, FORMATS)
        codec = _encoder(spec.codecs)
        rates = codec.audio_rates
        self.sample_rate = output_rate if not rates or output_rate in rates else 48000
        self.content_type = spec.content_type
        self._input_rate = input_rate
        self._pts = 0
        self._sink = _Sink(_wav_header(self.sample_rate) if fmt == "wav" else b"")
        # flush_packets: hand each packet to the sink at once rather than filling a 32 KiB buffer first.
        self._container = av.open(self._sink, "w", format=spec.muxer,
                                  container_options={"flush_packets": "1", **dict(spec.options)})
        stream = self._container.add_stream(codec.name, rate=self.sample_rate)
        assert isinstance(stream, av.AudioStream)
        stream.layout = "mono"
        if bitrate := bitrate or spec.bitrate:
            stream.bit_rate = bitrate if spec.max_bitrate is None else min(bitrate, spec.max_bitrate)
        self._stream = stream
        self._container.start_encoding()  # headers out now, and a valid (empty) stream if nothing is fed
        # To the codec's own sample format, rate and frame size (aac 1024, opus 20 ms, mp3 576 or 1152).
        ctx = stream.codec_context
        self._resampler = av.AudioResampler(format=ctx.format, layout="mono", rate=ctx.sample_rate,
                                            frame_size=ctx.frame_size or None)
        self._finished = False

    def encode(self, samples: npt.NDArray[np.floating]) -> bytes:
        """Feed mono samples at ``input_rate``; returns the encoded bytes ready to send (maybe none yet)."""
        if self._finished:
            raise RuntimeError("StreamEncoder.encode() after finish()")
        chunk = np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0)
        if chunk.ndim != 1:
            raise ValueError(f"expected mono samples of shape (n,), got {chunk.shape}")
        if chunk.size:
            self._push(_frame(chunk, self._input_rate, self._pts))
            self._pts += chunk.size
        return self._sink.take()

    def finish(self) -> bytes:
        """Flush the resampler, the codec and the muxer; returns the last bytes of the stream."""
        if not self._finished:
            self._finished = True
            self._push(None)
            self._container.mux(self._stream.encode(None))
            self._container.close()
        return self._sink.take()

    def _push(self, frame: av.AudioFrame | None) -> None:
        for out in self._resampler.resample(frame):
            self._container.mux(self._stream.encode(out))


def _encoder(names: tuple[str, ...]) -> av.Codec:
    """The first of ``names`` this PyAV build can encode with."""
    for name in names:
        try:
            return av.Codec(name, "w")
        except _AV_ERRORS:  # UnknownCodecError is a ValueError
            continue
    raise RuntimeError(f"this PyAV build has none of the encoders {', '.join(names)}")
