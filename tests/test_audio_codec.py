"""backends.audio: decoding uploads of every common container, and streaming encoding of speech.

Pure and fast: test audio is synthesised here (sines, encoded with PyAV), no server, no files on disk
beyond pytest's tmp_path (the mp4 muxer needs to seek).
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt
import pytest

from backends import audio
from backends.audio import ENCODINGS, FORMATS, StreamEncoder, decode, decode_raw, duration
from backends.errors import BadAudio as InvalidAudio
from backends.errors import BadOutputFormat
from compat.errors import InvalidRequest
from gateway.errors import DEEPGRAM_FIELDS, Fields, from_domain

Signal = npt.NDArray[np.float32]


def tone(freq: float, rate: int, seconds: float, amplitude: float = 0.5) -> Signal:
    t = np.arange(round(rate * seconds)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def peak_hz(samples: npt.NDArray[np.floating], rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(samples.size)))
    return float(np.fft.rfftfreq(samples.size, 1 / rate)[spectrum.argmax()])


def encode_file(fmt: str, codec: str, rate: int, channels: Signal, *, path: Path | None = None,
                options: dict[str, str] | None = None) -> bytes:
    """Encode (channels, n) float32 into a container with PyAV, as a client's recorder would."""
    target: Path | io.BytesIO = path or io.BytesIO()
    with av.open(target, "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=rate, options=options)
        assert isinstance(stream, av.AudioStream)
        layout = "stereo" if len(channels) == 2 else "mono"
        stream.layout = layout
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(channels), format="fltp", layout=layout)
        frame.sample_rate = rate
        frame.pts = 0
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path.read_bytes() if path else target.getvalue()  # type: ignore[union-attr]


def stereo(freq: float, rate: int, seconds: float = 1.0) -> Signal:
    return np.stack([tone(freq, rate, seconds)] * 2)


# name -> (muxer, encoder, rate, channels, encoder options); one second of 1 kHz each.
CONTAINERS: dict[str, tuple[str, str, int, int, dict[str, str] | None]] = {
    "wav": ("wav", "pcm_s16le", 44100, 2, None),
    "mp3": ("mp3", "libmp3lame", 44100, 2, None),
    "m4a": ("mp4", "aac", 32000, 2, None),
    "ogg-opus": ("ogg", "libopus", 48000, 2, None),
    "webm-opus": ("webm", "libopus", 48000, 1, None),
    "ogg-vorbis": ("ogg", "vorbis", 22050, 2, {"strict": "experimental"}),
    "flac": ("flac", "flac", 22050, 1, None),
}


def container_file(name: str, tmp_path: Path, freq: float = 1000.0, seconds: float = 1.0) -> bytes:
    fmt, codec, rate, channels, options = CONTAINERS[name]
    signal = np.stack([tone(freq, rate, seconds)] * channels)
    path = tmp_path / "audio.m4a" if fmt == "mp4" else None
    return encode_file(fmt, codec, rate, signal, path=path, options=options)


@pytest.fixture(scope="module")
def wav_1s() -> bytes:
    return encode_file("wav", "pcm_s16le", 44100, stereo(1000, 44100))


@pytest.fixture(scope="module")
def mp3_1s() -> bytes:
    return encode_file("mp3", "libmp3lame", 44100, stereo(1000, 44100))


# --- decode -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(CONTAINERS))
def test_decode_any_container_to_mono_16k(name: str, tmp_path: Path) -> None:
    samples = decode(container_file(name, tmp_path))
    assert samples.dtype == np.float32
    assert samples.ndim == 1
    assert duration(samples, 16000) == pytest.approx(1.0, abs=0.05)
    assert np.abs(samples).max() <= 1.0
    assert np.abs(samples).max() == pytest.approx(0.5, abs=0.1)  # downmixing keeps the level
    assert peak_hz(samples, 16000) == pytest.approx(1000, abs=3)


def test_decode_keeps_channels_apart_and_resamples() -> None:
    left, right = tone(440, 44100, 1.0), tone(1000, 44100, 1.0)
    data = encode_file("wav", "pcm_s16le", 44100, np.stack([left, right]))
    both = decode(data, sample_rate=8000, mono=False)
    assert both.shape == (2, 8000)
    assert both.dtype == np.float32
    assert peak_hz(both[0], 8000) == pytest.approx(440, abs=2)
    assert peak_hz(both[1], 8000) == pytest.approx(1000, abs=2)
    mono = decode(data, sample_rate=22050)
    assert mono.shape == (22050,)


def test_decode_clips_to_unit_range() -> None:
    loud = np.stack([tone(200, 16000, 0.5, amplitude=1.0)])
    data = encode_file("flac", "flac", 16000, loud)
    samples = decode(data, sample_rate=44100)  # upsampling overshoots a full-scale sine
    assert samples.max() <= 1.0
    assert samples.min() >= -1.0


@pytest.mark.parametrize("name", ["wav", "mp3", "flac", "ogg-opus"])
def test_decode_truncated_file_returns_what_decodes(name: str, tmp_path: Path) -> None:
    data = container_file(name, tmp_path, seconds=4.0)
    samples = decode(data[: len(data) // 2])
    assert 1.0 < duration(samples, 16000) < 3.0
    assert peak_hz(samples, 16000) == pytest.approx(1000, abs=3)


def test_decode_refuses_audio_over_max_seconds(wav_1s: bytes) -> None:
    assert duration(decode(wav_1s, max_seconds=2), 16000) == pytest.approx(1.0, abs=0.01)
    with pytest.raises(InvalidAudio, match="longer than"):
        decode(wav_1s, max_seconds=0.5)


def png_1x1() -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00\x00\x00\x00")) + chunk(b"IEND", b""))


NOT_AUDIO: dict[str, Callable[[bytes, bytes], bytes]] = {
    "empty": lambda wav, mp3: b"",
    "text": lambda wav, mp3: b"hello world",
    "png": lambda wav, mp3: png_1x1(),
    "random": lambda wav, mp3: np.random.default_rng(7).bytes(4096),
    "wav-40-bytes": lambda wav, mp3: wav[:40],
    "mp3-40-bytes": lambda wav, mp3: mp3[:40],
}


@pytest.mark.parametrize("name", list(NOT_AUDIO))
def test_decode_rejects_what_is_not_audio(name: str, wav_1s: bytes, mp3_1s: bytes) -> None:
    with pytest.raises(InvalidAudio) as caught:
        decode(NOT_AUDIO[name](wav_1s, mp3_1s))
    wire = from_domain(caught.value, Fields(input="file"))
    assert (wire.status, wire.code, wire.param) == (400, "invalid_audio", "file")


def test_invalid_audio_is_named_by_each_endpoint() -> None:
    error = InvalidAudio("bad")
    assert isinstance(from_domain(error, Fields(input="file")), InvalidRequest)
    assert from_domain(error, Fields(input="file")).param == "file"
    assert from_domain(error, DEEPGRAM_FIELDS).message == "failed to process audio: corrupt or unsupported data"


def test_decode_rejects_a_container_without_audio() -> None:
    with av.open(buffer := io.BytesIO(), "w", format="matroska") as container:
        stream = container.add_stream("mjpeg", rate=1)
        assert isinstance(stream, av.VideoStream)
        stream.width, stream.height, stream.pix_fmt = 16, 16, "yuvj420p"
        image = av.VideoFrame.from_ndarray(np.zeros((16, 16, 3), np.uint8), format="rgb24")
        container.mux(stream.encode(image.reformat(format="yuvj420p")))
        container.mux(stream.encode(None))
    with pytest.raises(InvalidAudio, match="no audio stream"):
        decode(buffer.getvalue())


def test_decode_does_not_follow_references_out_of_the_upload(
        wav_1s: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # FFmpeg's concat demuxer would read the file it names: an upload must not reach the disk.
    (tmp_path / "secret.wav").write_bytes(wav_1s)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InvalidAudio):
        decode(b"ffconcat version 1.0\nfile secret.wav\n")


# --- decode_raw -------------------------------------------------------------------------------------


def test_decode_raw_linear16_stereo_downmixed_and_resampled() -> None:
    signal = tone(440, 8000, 1.0)
    pcm = np.round(np.repeat(signal, 2) * 32767).astype("<i2").tobytes()  # interleaved L R L R
    samples = decode_raw(pcm, encoding="linear16", sample_rate=8000, channels=2)
    assert samples.dtype == np.float32
    assert duration(samples, 16000) == pytest.approx(1.0, abs=0.01)
    assert np.abs(samples).max() == pytest.approx(0.5, abs=0.02)
    assert peak_hz(samples, 16000) == pytest.approx(440, abs=2)


def test_decode_raw_linear32_is_signed_int() -> None:
    signal = tone(1000, 16000, 0.5)
    pcm = np.round(signal * (2**31 - 1)).astype("<i4").tobytes()
    samples = decode_raw(pcm, encoding="linear32", sample_rate=16000, out_rate=16000)
    np.testing.assert_allclose(samples, signal, atol=1e-6)


@pytest.mark.parametrize(("encoding", "codec"), [("mulaw", "pcm_mulaw"), ("alaw", "pcm_alaw")])
def test_decode_raw_g711_matches_ffmpeg(encoding: str, codec: str) -> None:
    every_code = bytes(range(256))
    ctx = av.CodecContext.create(codec, "r")
    assert isinstance(ctx, av.AudioCodecContext)
    ctx.sample_rate = 8000
    ctx.layout = "mono"
    (frame,) = ctx.decode(av.Packet(every_code))
    expected = frame.to_ndarray()[0] / 32768
    got = decode_raw(every_code, encoding=encoding, sample_rate=8000, out_rate=8000)
    np.testing.assert_array_equal(got, expected.astype(np.float32))


@pytest.mark.parametrize(
    ("data", "kwargs", "message"),
    [
        (b"\x00\x00", {"encoding": "opus"}, "Unsupported encoding"),
        (b"\x00\x00\x00", {"encoding": "linear16"}, "whole number"),
        (b"\x00" * 6, {"encoding": "linear16", "channels": 2}, "whole number"),
        (b"\x00" * 6, {"encoding": "linear32"}, "whole number"),
        (b"", {"encoding": "mulaw"}, "non-empty"),
        (b"\x00\x00", {"encoding": "linear16", "channels": 0}, "positive"),
    ],
)
def test_decode_raw_rejects(data: bytes, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidAudio, match=message):
        decode_raw(data, sample_rate=8000, **kwargs)  # type: ignore[arg-type]


# --- StreamEncoder ----------------------------------------------------------------------------------

CONTENT_TYPES = {
    "mp3": "audio/mpeg", "opus": "audio/ogg", "aac": "audio/aac", "flac": "audio/flac", "wav": "audio/wav",
    "pcm": "audio/pcm", "mulaw": "audio/basic", "alaw": "audio/x-alaw-basic",
}
RAW = {"pcm": "linear16", "mulaw": "mulaw", "alaw": "alaw"}
SPEECH = tone(440, 22050, 2.0)


def decode_output(fmt: str, data: bytes, rate: int) -> Signal:
    if fmt in RAW:
        return decode_raw(data, encoding=RAW[fmt], sample_rate=rate)
    return decode(data)


def encode_in_chunks(fmt: str, sizes: list[int], **kwargs: int) -> tuple[StreamEncoder, list[bytes]]:
    encoder = StreamEncoder(fmt, input_rate=22050, **kwargs)
    outputs, start, i = [], 0, 0
    while start < SPEECH.size:
        outputs.append(encoder.encode(SPEECH[start:start + sizes[i % len(sizes)]]))
        start += sizes[i % len(sizes)]
        i += 1
    outputs.append(encoder.finish())
    return encoder, outputs


def test_formats_and_encodings_are_the_documented_ones() -> None:
    assert set(FORMATS) == set(CONTENT_TYPES)
    assert set(ENCODINGS) == {"linear16", "linear32", "mulaw", "alaw"}


@pytest.mark.parametrize("fmt", list(CONTENT_TYPES))
def test_stream_encoder_round_trip(fmt: str) -> None:
    encoder, outputs = encode_in_chunks(fmt, [2205])  # 100 ms
    assert encoder.content_type == CONTENT_TYPES[fmt]
    assert encoder.sample_rate == 24000
    assert sum(map(len, outputs[:10])) > 0  # bytes flow during the first second, not only at the end
    samples = decode_output(fmt, b"".join(outputs), encoder.sample_rate)
    assert duration(samples, 16000) == pytest.approx(2.0, abs=0.1)  # codecs pad a frame or so
    assert peak_hz(samples, 16000) == pytest.approx(440, abs=3)


@pytest.mark.parametrize("fmt", list(CONTENT_TYPES))
def test_stream_encoder_first_second_comes_out_at_once(fmt: str) -> None:
    encoder = StreamEncoder(fmt, input_rate=22050)
    first = encoder.encode(SPEECH[:22050])
    assert len(first) > 1000  # audio, not only a container header
    assert encoder.encode(SPEECH[22050:])
    assert isinstance(encoder.finish(), bytes)


@pytest.mark.parametrize("fmt", list(CONTENT_TYPES))
def test_stream_encoder_small_and_odd_chunks(fmt: str) -> None:
    encoder, outputs = encode_in_chunks(fmt, [441, 1, 997, 0, 2205, 13])  # 20 ms, one sample, empty...
    samples = decode_output(fmt, b"".join(outputs), encoder.sample_rate)
    assert duration(samples, 16000) == pytest.approx(2.0, abs=0.1)
    assert peak_hz(samples, 16000) == pytest.approx(440, abs=3)


def test_pcm_is_headerless_s16le_at_output_rate() -> None:
    _, outputs = encode_in_chunks("pcm", [2205])
    data = b"".join(outputs)
    assert len(data) == 2 * 24000 * 2
    pcm = np.frombuffer(data, "<i2") / 32768
    assert peak_hz(pcm, 24000) == pytest.approx(440, abs=1)
    assert np.abs(pcm).max() == pytest.approx(0.5, abs=0.01)


def test_wav_is_streamable_with_unknown_sizes() -> None:
    _, outputs = encode_in_chunks("wav", [2205])
    data = b"".join(outputs)
    assert outputs[0].startswith(b"RIFF")
    riff, riff_size, wave, fmt, fmt_size, pcm, channels, rate, byte_rate, align, bits, tag, data_size = \
        struct.unpack("<4sI4s4sIHHIIHH4sI", data[:44])
    assert (riff, wave, fmt, tag) == (b"RIFF", b"WAVE", b"fmt ", b"data")
    assert riff_size == data_size == 0xFFFFFFFF
    assert (fmt_size, pcm, channels, rate, byte_rate, align, bits) == (16, 1, 1, 24000, 48000, 2, 16)
    assert len(data) == 44 + 2 * 24000 * 2


def test_stream_encoder_rates_and_bitrate() -> None:
    assert StreamEncoder("opus", input_rate=22050, output_rate=22050).sample_rate == 48000
    assert StreamEncoder("opus", input_rate=22050, output_rate=16000).sample_rate == 16000
    assert StreamEncoder("mp3", input_rate=22050, output_rate=16000).sample_rate == 16000
    assert StreamEncoder("pcm", input_rate=22050, output_rate=8000).sample_rate == 8000
    _, low = encode_in_chunks("mp3", [2205], bitrate=32000)
    _, high = encode_in_chunks("mp3", [2205], bitrate=128000)
    assert 3 * sum(map(len, low)) < sum(map(len, high))


def test_encoder_names_fall_back_to_what_the_wheel_has() -> None:
    assert audio._encoder(("libfdk_aac", "aac")).name == "aac"
    assert audio._encoder(("mp3",)).name in {"libmp3lame", "mp3"}
    with pytest.raises(RuntimeError, match="none of the encoders"):
        audio._encoder(("no_such_codec",))


def test_stream_encoder_misuse() -> None:
    with pytest.raises(BadOutputFormat, match="Unsupported audio format"):
        StreamEncoder("ogg", input_rate=22050)
    encoder = StreamEncoder("mp3", input_rate=22050)
    with pytest.raises(ValueError, match="mono"):
        encoder.encode(np.zeros((2, 100), np.float32))
    assert encoder.finish()  # nothing fed: still a well-formed (empty) stream
    assert encoder.finish() == b""
    with pytest.raises(RuntimeError):
        encoder.encode(SPEECH[:100])
