"""Caller speech from the real espeak-ng: real audio, framed like a microphone, cached on disk.

Without espeak-ng and sox on PATH the tests that need them are skipped, unless
``OPENRTC_REQUIRE_VOICE=1`` (CI sets it), when they fail.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from openrtc_testing import voice_clips
from openrtc_testing.voice_clips import Clip, VoiceUnavailable, prepare, speak

BOOKING = "Hi, I'd like to book a table for two tomorrow evening."
SHORT = "Thanks, bye."


@pytest.fixture(autouse=True)
def _fresh_memory() -> Iterator[None]:
    voice_clips.clear_memory_cache()
    yield
    voice_clips.clear_memory_cache()


class CountingEspeak:
    """The real espeak-ng behind a script that logs each run, first on PATH."""

    def __init__(self, real: str, folder: Path) -> None:
        folder.mkdir()
        self.log = folder / "runs.log"
        self.log.touch()
        script = folder / "espeak-ng"
        script.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> "{self.log}"\nexec "{real}" "$@"\n')
        script.chmod(0o755)
        self.path = f"{folder}{os.pathsep}{os.environ['PATH']}"
        # A PATH with this espeak-ng and nothing else: no sox.
        self.alone = str(folder)

    def syntheses(self) -> int:
        """How many times it was asked for speech (not for its version)."""
        return sum("--stdout" in line for line in self.log.read_text().splitlines())


@pytest.fixture
def counting(espeak_ng: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CountingEspeak:
    wrapper = CountingEspeak(espeak_ng, tmp_path / "bin")
    monkeypatch.setenv("PATH", wrapper.path)
    return wrapper


def speak_in_processes(count: int, text: str, cache: Path, *, path: str) -> list[str]:
    """The sha256 of the PCM each of ``count`` Python processes, started together, gets from
    speak(text) with this cache folder and PATH."""
    code = (
        "import hashlib, sys\n"
        "from pathlib import Path\n"
        "from openrtc_testing.voice_clips import speak\n"
        "clip = speak(sys.argv[1], cache_dir=Path(sys.argv[2]))\n"
        "print(hashlib.sha256(clip.pcm).hexdigest())\n"
    )
    children = [
        subprocess.Popen(
            [sys.executable, "-c", code, text, str(cache)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PATH": path},
        )
        for _ in range(count)
    ]
    digests = []
    for child in children:
        out, err = child.communicate(timeout=60)
        assert child.returncode == 0, err
        digests.append(out.strip())
    return digests


def samples_of(clip: Clip) -> np.ndarray:
    return np.frombuffer(clip.pcm, dtype="<i2").astype(np.float64)


# --------------------------------------------------------------------------------------------
# the audio
# --------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("espeak_ng")
@pytest.mark.parametrize("rate", [16000, 48000])
def test_a_clip_is_real_speech_with_its_padding_located(rate: int, tmp_path: Path) -> None:
    clip = speak(BOOKING, sample_rate=rate, cache_dir=tmp_path)

    assert (clip.text, clip.sample_rate) == (BOOKING, rate)
    assert clip.samples == len(clip.pcm) // 2
    assert clip.duration_s == pytest.approx(clip.samples / rate)
    # 11 words at 165 words a minute is 4 s of talk; espeak-ng is a little quicker than that.
    start, end = clip.speech_bounds()
    assert 2.0 < end - start < 6.0
    # espeak-ng pads with silence, a little before and about a third of a second after.
    assert 0.0 <= start < 0.1
    assert 0.1 < clip.duration_s - end < 1.0
    samples = samples_of(clip)
    speech = samples[round(start * rate) : round(end * rate)]
    assert np.sqrt(np.mean(speech**2)) > 1000.0
    assert np.abs(samples[round(end * rate) + rate // 100 :]).max() < 100.0
    # Speech spreads its energy over many frequencies; a tone puts nearly all of it in one.
    spectrum = np.abs(np.fft.rfft(speech)) ** 2
    assert spectrum.max() < 0.05 * spectrum.sum()


@pytest.mark.usefixtures("espeak_ng")
def test_both_rates_hold_the_same_speech(tmp_path: Path) -> None:
    narrow = speak(SHORT, sample_rate=16000, cache_dir=tmp_path)
    wide = speak(SHORT, sample_rate=48000, cache_dir=tmp_path)

    assert wide.duration_s == pytest.approx(narrow.duration_s, abs=1e-4)
    assert wide.speech_bounds() == pytest.approx(narrow.speech_bounds(), abs=0.011)
    # Decimated to 16 kHz, the 48 kHz clip follows the 16 kHz one.
    a, b = samples_of(narrow), samples_of(wide)[::3][: narrow.samples]
    assert np.corrcoef(a, b)[0, 1] > 0.9


@pytest.mark.usefixtures("espeak_ng")
@pytest.mark.parametrize(("rate", "frame_ms", "per_frame"), [(16000, 20, 320), (48000, 10, 480)])
def test_frames_are_whole_microphone_frames(
    rate: int, frame_ms: int, per_frame: int, tmp_path: Path
) -> None:
    clip = speak(SHORT, sample_rate=rate, cache_dir=tmp_path)

    frames = clip.frames(frame_ms)

    assert len(frames) == -(-clip.samples // per_frame)
    assert {(f.sample_rate, f.num_channels, f.samples_per_channel) for f in frames} == {
        (rate, 1, per_frame)
    }
    joined = b"".join(bytes(f.data.cast("B")) for f in frames)
    assert joined[: len(clip.pcm)] == clip.pcm
    assert set(joined[len(clip.pcm) :]) <= {0}
    assert len(clip.frames()) == -(-clip.samples // (rate // 50))


def test_frames_need_a_whole_number_of_samples() -> None:
    clip = Clip(text="x", sample_rate=16000, pcm=bytes(640))
    with pytest.raises(ValueError, match="frame_ms=0"):
        clip.frames(0)
    assert len(Clip(text="x", sample_rate=22050, pcm=bytes(882)).frames(20)) == 1
    with pytest.raises(ValueError, match="whole number of samples at 22050 Hz"):
        Clip(text="x", sample_rate=22050, pcm=bytes(882)).frames(10)


def test_a_silent_clip_has_no_speech_bounds() -> None:
    with pytest.raises(ValueError, match="holds no speech"):
        Clip(text="shh", sample_rate=16000, pcm=bytes(3200)).speech_bounds()


@pytest.mark.usefixtures("espeak_ng")
@pytest.mark.parametrize("text", ["-5 degrees outside", "--help me please"])
def test_a_line_starting_with_a_dash_is_spoken(text: str, tmp_path: Path) -> None:
    clip = speak(text, cache_dir=tmp_path)

    start, end = clip.speech_bounds()
    assert end - start > 0.8


# --------------------------------------------------------------------------------------------
# the caches
# --------------------------------------------------------------------------------------------


def test_a_cached_clip_is_read_back_without_espeak(
    counting: CountingEspeak, tmp_path: Path
) -> None:
    cache = tmp_path / "voice"
    first = speak(SHORT, cache_dir=cache)
    assert counting.syntheses() == 1
    assert speak(SHORT, cache_dir=cache) is first

    voice_clips.clear_memory_cache()
    again = speak(SHORT, cache_dir=cache)

    assert again == first
    assert counting.syntheses() == 1
    (path,) = cache.iterdir()
    assert path.suffix == ".wav"
    assert path.stat().st_mode & 0o444 == 0o444

    # Another process, as a worker would be, reads the same file, without needing sox.
    assert speak_in_processes(1, SHORT, cache, path=counting.alone) == [
        hashlib.sha256(first.pcm).hexdigest()
    ]
    assert counting.syntheses() == 1


def test_processes_speaking_the_same_line_at_once_share_one_whole_file(
    counting: CountingEspeak, tmp_path: Path
) -> None:
    cache = tmp_path / "voice"
    digests = speak_in_processes(4, BOOKING, cache, path=counting.path)

    assert len(set(digests)) == 1
    # Each may have spoken it; every one renamed a whole file into place, and none is left over.
    spoken = counting.syntheses()
    assert 1 <= spoken <= 4
    assert [p.suffix for p in cache.iterdir()] == [".wav"]
    assert hashlib.sha256(speak(BOOKING, cache_dir=cache).pcm).hexdigest() == digests[0]
    assert counting.syntheses() == spoken


def test_each_rate_voice_and_speed_is_its_own_clip(
    counting: CountingEspeak, tmp_path: Path
) -> None:
    base = speak(SHORT, cache_dir=tmp_path)
    slow = speak(SHORT, words_per_minute=120, cache_dir=tmp_path)
    other = speak(SHORT, voice="en-gb", cache_dir=tmp_path)

    assert slow.duration_s > base.duration_s + 0.2
    assert other.pcm != base.pcm
    assert counting.syntheses() == 3
    assert len(list(tmp_path.glob("*.wav"))) == 3


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda data: data[: len(data) // 2], id="truncated"),
        pytest.param(lambda data: b"", id="empty"),
        pytest.param(lambda data: b"not a wav file at all", id="garbage"),
        pytest.param(lambda data: data + b"\0" * 10, id="trailing-bytes"),
    ],
)
def test_a_damaged_cache_file_is_made_again(
    damage: Callable[[bytes], bytes], counting: CountingEspeak, tmp_path: Path
) -> None:
    first = speak(SHORT, cache_dir=tmp_path)
    (path,) = tmp_path.glob("*.wav")
    good = path.read_bytes()
    path.write_bytes(damage(good))
    voice_clips.clear_memory_cache()

    again = speak(SHORT, cache_dir=tmp_path)

    assert again == first
    assert counting.syntheses() == 2
    assert path.read_bytes() == good


def test_prepare_speaks_each_distinct_line_once(counting: CountingEspeak, tmp_path: Path) -> None:
    clips = prepare(["Hello?", SHORT, "Hello?"], sample_rate=48000, cache_dir=tmp_path)

    assert list(clips) == ["Hello?", SHORT]
    assert {clip.sample_rate for clip in clips.values()} == {48000}
    assert counting.syntheses() == 2
    assert len(list(tmp_path.glob("*.wav"))) == 2


@pytest.mark.usefixtures("espeak_ng")
def test_the_cache_folder_comes_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENRTC_VOICE_CACHE", str(tmp_path / "from-env"))

    speak("Hello?")

    assert voice_clips.cache_folder() == tmp_path / "from-env"
    assert len(list((tmp_path / "from-env").glob("*.wav"))) == 1


def test_the_memory_cache_keeps_the_recently_used_within_its_budget() -> None:
    cache = voice_clips._MemoryCache(budget_bytes=300)
    clips = {name: Clip(text=name, sample_rate=16000, pcm=bytes(100)) for name in "abcd"}
    for name in "abc":
        cache.put(name, clips[name])
    assert cache.get("a") is clips["a"]

    cache.put("d", clips["d"])

    assert cache.get("b") is None
    assert [cache.get(name) for name in "acd"] == [clips["a"], clips["c"], clips["d"]]
    cache.put("huge", Clip(text="huge", sample_rate=16000, pcm=bytes(400)))
    assert cache.get("huge") is None
    assert cache.get("d") is clips["d"]


# --------------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------------


def test_missing_espeak_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))

    with pytest.raises(VoiceUnavailable, match=r"apt-get install espeak-ng"):
        speak(SHORT, cache_dir=tmp_path / "voice")
    assert not (tmp_path / "voice").exists()


def test_missing_sox_says_what_to_install(
    counting: CountingEspeak, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", counting.alone)

    with pytest.raises(VoiceUnavailable, match=r"apt-get install sox"):
        speak(SHORT, cache_dir=tmp_path)
    assert counting.syntheses() == 0


@pytest.mark.usefixtures("espeak_ng")
def test_an_espeak_failure_carries_its_message_and_the_line(tmp_path: Path) -> None:
    line = "A rather long caller line that goes on and on about the booking it wants to make."

    with pytest.raises(VoiceUnavailable) as failure:
        speak(line, voice="nosuchvoice", cache_dir=tmp_path)

    message = str(failure.value)
    assert "voice does not exist" in message
    assert "'nosuchvoice'" in message
    assert "'A rather long caller line" in message
    assert line not in message
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"text": "  "}, "text is empty"),
        ({"sample_rate": 22050}, r"use one of \(16000, 48000\)"),
        ({"words_per_minute": 1000}, "espeak-ng speaks 80 to 450"),
        ({"voice": ""}, "name an espeak-ng voice"),
    ],
)
def test_unusable_options_are_refused_before_espeak_runs(
    options: dict[str, object], match: str, tmp_path: Path
) -> None:
    arguments: dict[str, object] = {"text": SHORT, "cache_dir": tmp_path, **options}
    with pytest.raises(ValueError, match=match):
        speak(**arguments)  # type: ignore[arg-type]
