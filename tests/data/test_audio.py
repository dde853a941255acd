"""Unit tests of wavegen.data.audio: quantization, chunking, resampling, streaming decode."""

import math

import numpy as np
import pytest

from wavegen.data import audio

from helpers import chunk_array, num_chunks, tone, write_audio


@pytest.mark.parametrize("bits", [8, 10, 16])
def test_mulaw_round_trip_error_is_within_half_a_step(bits):
    mu = 2**bits - 1
    x = np.linspace(-1, 1, 200_001, dtype=np.float32)
    q = audio.mulaw_encode(x, bits)
    assert q.dtype == audio.bins_dtype(bits)
    assert q.min() == 0 and q.max() == mu
    err = np.abs(audio.mulaw_decode(q, bits) - x)
    # Half a code is 1/mu in the companded domain; mapped back to amplitude at |x| that
    # is at most (1 + mu|x|) (e^(ln(1+mu)/mu) - 1) / mu.
    bound = (1.0 + mu * np.abs(x)) * math.expm1(math.log1p(mu) / mu) / mu * 1.001 + 1e-6
    assert np.all(err <= bound)
    # Small signals are resolved far more finely than by linear binning of the same bits.
    small = np.abs(x) < 0.01
    assert err[small].max() < 0.5 * 2.0 / mu


@pytest.mark.parametrize("quantization", ["mulaw", "linear"])
@pytest.mark.parametrize("bits", [8, 16])
def test_every_code_decodes_and_re_encodes_to_itself(quantization, bits):
    codes = np.arange(2**bits).astype(audio.bins_dtype(bits))
    x = audio.dequantize(codes, quantization, bits)
    assert np.all(np.diff(x) > 0)  # monotonic
    assert x.min() >= -1.0 and x.max() <= 1.0
    np.testing.assert_array_equal(audio.quantize(x, quantization, bits), codes)


def test_linear_round_trip_and_clipping():
    x = np.linspace(-1.5, 1.5, 10_001, dtype=np.float32)
    back = audio.linear_decode(audio.linear_encode(x, 8), 8)
    inside = np.abs(x) <= 1
    assert np.abs(back[inside] - x[inside]).max() <= 1.0 / 255 + 1e-6
    assert back[x > 1].min() == pytest.approx(1.0) and back[x < -1].max() == pytest.approx(-1.0)


def test_bad_quantization_settings_are_refused():
    with pytest.raises(ValueError, match="quantization"):
        audio.quantize(np.zeros(3), "alaw", 8)
    with pytest.raises(ValueError, match="bits"):
        audio.bins_dtype(17)


@pytest.mark.parametrize("chunk,context", [(100, 30), (64, 0), (50, 49)])
def test_streaming_chunker_equals_whole_array_chunking(chunk, context):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, 1234).astype(np.uint8)
    chunker = audio.Chunker(chunk, context)
    got, i = [], 0
    while i < len(x):  # pushes of random sizes, some empty, some longer than a chunk
        n = int(rng.integers(0, 3 * chunk))
        got.extend(chunker.push(x[i:i + n]))
        i += n
    want = chunk_array(x, chunk, context)
    assert len(got) == len(want) == num_chunks(len(x), chunk, context)
    np.testing.assert_array_equal(np.stack(got), want)


def test_chunks_cover_every_target_once_with_full_context():
    chunk, context = 100, 30
    stride = chunk - context
    x = np.arange(1000) % 256
    chunks = chunk_array(x.astype(np.uint8), chunk, context)
    targets = np.concatenate([c[context:] for c in chunks])
    # Targets are exactly samples [context, context + n*stride), each once, in order.
    np.testing.assert_array_equal(targets, x[context:context + len(chunks) * stride])
    for k in range(1, len(chunks)):  # a chunk's context is the audio just before it
        np.testing.assert_array_equal(chunks[k][:context], chunks[k - 1][-context:])
    # The dropped tail is shorter than one chunk's targets.
    assert len(x) - (context + len(chunks) * stride) < stride


def test_context_must_be_smaller_than_chunk():
    with pytest.raises(ValueError, match="context_samples"):
        audio.Chunker(100, 100)


def _peak_hz(x, sr):
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return np.fft.rfftfreq(len(x), 1 / sr)[np.argmax(spec)]


@pytest.mark.parametrize("in_rate", [44100, 48000, 22050, 8000])
def test_resampling_a_sine_keeps_its_frequency(in_rate):
    freq = 1234.5
    x = tone(2.0, in_rate, freq=freq)[:, 0]
    y = audio.resample(x, in_rate, 16000)
    assert len(y) == pytest.approx(2.0 * 16000, abs=2)
    assert _peak_hz(y, 16000) == pytest.approx(freq, abs=1.0)
    # The streaming resampler gives the same signal as the whole-array one.
    rs = audio.StreamResampler(in_rate, 16000)
    streamed = np.concatenate([rs.process(x[i:i + 3000]) for i in range(0, len(x), 3000)]
                              + [rs.flush()])
    np.testing.assert_allclose(streamed, y, atol=1e-4)


def test_decode_mixes_all_channels_down(tmp_path):
    sr = 16000
    left = tone(1.0, sr, 440, amp=0.4)[:, 0]
    right = tone(1.0, sr, 660, amp=0.2, seed=1)[:, 0]
    path = write_audio(tmp_path / "st.wav", np.stack([left, right], 1), sr)
    y = audio.load_audio(path, sr)
    np.testing.assert_allclose(y, (left + right) / 2, atol=2e-4)


@pytest.mark.parametrize("ext", [".wav", ".flac", ".ogg", ".mp3"])
def test_every_format_decodes_to_the_right_length(tmp_path, ext):
    path = write_audio(tmp_path / f"a{ext}", tone(1.5, 44100, channels=2), 44100)
    y = audio.load_audio(path, 16000)
    assert abs(len(y) - 24000) < 0.01 * 24000
    assert _peak_hz(y, 16000) == pytest.approx(440, abs=2)


def test_undecodable_input_names_the_file(tmp_path):
    path = tmp_path / "noise.flac"
    path.write_bytes(np.random.default_rng(0).bytes(4000))
    with pytest.raises(audio.AudioDecodeError, match="noise.flac"):
        audio.load_audio(str(path), 16000)


def test_write_wav_is_16_bit_pcm(tmp_path):
    import soundfile as sf

    path = str(tmp_path / "o.wav")
    audio.write_wav(path, np.array([0.0, 0.5, -1.5], np.float32), 16000)
    info = sf.info(path)
    assert (info.samplerate, info.subtype, info.frames) == (16000, "PCM_16", 3)
    np.testing.assert_allclose(sf.read(path)[0], [0.0, 0.5, -1.0], atol=1e-4)
