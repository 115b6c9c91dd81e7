"""Caller speech for voice-mode simulated calls: real audio from espeak-ng, generated once.

:func:`speak` turns a caller's line into a :class:`Clip` of int16 mono PCM at 16 or 48 kHz,
synthesised by the espeak-ng binary (Debian package ``espeak-ng``; it works offline) and
resampled from its 22.05 kHz by sox (package ``sox``). Clips are cached twice: in a bounded
in-process LRU, and on disk under ``cache_dir``, ``$OPENRTC_VOICE_CACHE`` or
``~/.cache/openrtc/voice``, one WAV file per clip named by a sha256 of the text, voice, speed,
sample rate and espeak-ng version.
:func:`prepare` generates a whole script's lines before calls start, so workers only read files
(a cache hit runs ``espeak-ng --version`` once per process for the key, and never sox).

espeak-ng output has digital silence at both ends (about 13 ms before, about 330 ms after a
sentence at 165 wpm); :meth:`Clip.speech_bounds` says where the speech itself starts and ends,
which is where a caller's turn latency is measured from.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import subprocess
import tempfile
import threading
import wave
from collections import OrderedDict
from collections.abc import Iterable
from functools import cache
from pathlib import Path

import attrs
import numpy as np
from livekit import rtc

logger = logging.getLogger("openrtc.voice")

SAMPLE_RATES = (16000, 48000)
"""The rates a clip can be made at: what livekit's audio input takes from a phone or a browser."""
CACHE_ENV = "OPENRTC_VOICE_CACHE"
"""The environment variable naming the disk cache folder when ``cache_dir`` is not given."""
ESPEAK = "espeak-ng"
SOX = "sox"
# espeak-ng speaks anything slower than 80 words a minute at 80, and past 450 no caller talks.
MIN_WPM, MAX_WPM = 80, 450
# A 10 ms window whose RMS is above this (int16 units, about -50 dBFS) holds speech. espeak-ng's
# padding is exact zeros and resampling only rings a few units into it; a breathy onset ("h") is
# about 200.
SPEECH_RMS = 100.0
# Bump when the bytes a key maps to change (resampler, file layout), so old files are not reused.
_FORMAT = 1
_TOOL_TIMEOUT_S = 60.0
# What the wave module writes before the frames of a plain PCM file.
_WAV_HEADER_BYTES = 44
# Clips kept in memory per process: about 11 minutes of 48 kHz speech.
_MEMORY_BUDGET_BYTES = 64 * 1024 * 1024


class VoiceUnavailable(RuntimeError):
    """espeak-ng is not installed, or it failed to speak a line."""


@attrs.frozen(kw_only=True)
class Clip:
    """One spoken line: int16 little-endian mono PCM at ``sample_rate``."""

    text: str
    sample_rate: int = attrs.field(validator=attrs.validators.gt(0))
    pcm: bytes = attrs.field(repr=False)

    @pcm.validator
    def _whole_samples(self, _attribute: attrs.Attribute[bytes], value: bytes) -> None:
        if len(value) % 2:
            raise ValueError(f"pcm holds {len(value)} bytes; int16 samples need an even count")

    @property
    def samples(self) -> int:
        return len(self.pcm) // 2

    @property
    def duration_s(self) -> float:
        return self.samples / self.sample_rate

    def frames(self, frame_ms: int = 20) -> list[rtc.AudioFrame]:
        """The clip as ``frame_ms`` frames, the way a microphone delivers it; the last frame is
        padded with silence to full length."""
        per_frame, remainder = divmod(self.sample_rate * frame_ms, 1000)
        if frame_ms <= 0 or remainder:
            raise ValueError(
                f"frame_ms={frame_ms} does not hold a whole number of samples at "
                f"{self.sample_rate} Hz; use 10 or 20"
            )
        frame_bytes = per_frame * 2
        padded = self.pcm + bytes(-len(self.pcm) % frame_bytes)
        return [
            rtc.AudioFrame(padded[start : start + frame_bytes], self.sample_rate, 1, per_frame)
            for start in range(0, len(padded), frame_bytes)
        ]

    def speech_bounds(self) -> tuple[float, float]:
        """Seconds from the clip's start to where speech starts and to where it ends: the first
        and last 10 ms window louder than :data:`SPEECH_RMS`."""
        window = self.sample_rate // 100
        count = -(-self.samples // window)
        samples = np.zeros(count * window, dtype=np.float64)
        samples[: self.samples] = np.frombuffer(self.pcm, dtype="<i2")
        rms = np.sqrt(np.mean(np.square(samples.reshape(count, window)), axis=1))
        loud = np.flatnonzero(rms > SPEECH_RMS)
        if not loud.size:
            raise ValueError(f"the clip of {_shorten(self.text)} holds no speech")
        start = int(loud[0]) * window / self.sample_rate
        end = min((int(loud[-1]) + 1) * window, self.samples) / self.sample_rate
        return start, end


def speak(
    text: str,
    *,
    sample_rate: int = 16000,
    voice: str = "en-us",
    words_per_minute: int = 165,
    cache_dir: Path | None = None,
) -> Clip:
    """``text`` spoken by espeak-ng, from the in-process cache, the disk cache or espeak-ng.

    ``voice`` is an espeak-ng voice (``espeak-ng --voices`` lists them; ``en-us+f3`` picks a
    variant). Raises :class:`VoiceUnavailable` when espeak-ng is missing or fails, and
    ``ValueError`` for an empty line, an unknown rate or a speed espeak-ng would not honour.
    """
    _check_options(text, sample_rate, voice, words_per_minute)
    executable = _require(ESPEAK, "speak the caller's lines")
    key = _cache_key(text, voice, words_per_minute, sample_rate, _espeak_version(executable))
    path = _cache_folder(cache_dir) / f"{key}.wav"
    # Keyed by the file, so prepare() for another folder still writes the clip there.
    clip = _memory.get(str(path))
    if clip is not None:
        return clip
    clip = _read_cached(path, text, sample_rate)
    if clip is None:
        sox = _require(SOX, f"resample {ESPEAK}'s output")
        clip = _synthesise(executable, sox, text, voice, words_per_minute, sample_rate)
        _write_cached(path, clip)
    _memory.put(str(path), clip)
    return clip


def prepare(
    texts: Iterable[str],
    *,
    sample_rate: int = 16000,
    voice: str = "en-us",
    words_per_minute: int = 165,
    cache_dir: Path | None = None,
) -> dict[str, Clip]:
    """Every line of ``texts`` spoken (see :func:`speak`) and on disk, keyed by its text: run it
    before calls start so the workers only read the cache."""
    return {
        text: speak(
            text,
            sample_rate=sample_rate,
            voice=voice,
            words_per_minute=words_per_minute,
            cache_dir=cache_dir,
        )
        for text in dict.fromkeys(texts)
    }


def clear_memory_cache() -> None:
    """Forget the clips held in this process; the disk cache stays."""
    _memory.clear()


def cache_folder(cache_dir: Path | None = None) -> Path:
    """The disk cache folder :func:`speak` uses for ``cache_dir``."""
    return _cache_folder(cache_dir)


# --------------------------------------------------------------------------------------------
# espeak-ng
# --------------------------------------------------------------------------------------------


def _check_options(text: str, sample_rate: int, voice: str, words_per_minute: int) -> None:
    if not text.strip():
        raise ValueError("text is empty; give the caller something to say")
    if "\0" in text:
        raise ValueError(f"text {_shorten(text)} holds a NUL character")
    if sample_rate not in SAMPLE_RATES:
        raise ValueError(f"sample_rate={sample_rate}; use one of {SAMPLE_RATES}")
    if not voice.strip() or "\0" in voice:
        raise ValueError(f"voice={voice!r}; name an espeak-ng voice such as 'en-us'")
    if not MIN_WPM <= words_per_minute <= MAX_WPM:
        raise ValueError(
            f"words_per_minute={words_per_minute}; espeak-ng speaks {MIN_WPM} to {MAX_WPM}"
        )


def _require(tool: str, purpose: str) -> str:
    found = shutil.which(tool)
    if found is None:
        raise VoiceUnavailable(
            f"{tool} is not on PATH; voice-mode calls need it to {purpose}: "
            f"install it (apt-get install {tool})"
        )
    return found


@cache
def _espeak_version(executable: str) -> str:
    """espeak-ng's version line, which names its data folder too: a key of every cached clip,
    so an upgrade or another install never serves audio it did not make."""
    try:
        done = subprocess.run(
            [executable, "--version"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=_TOOL_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise VoiceUnavailable(f"{executable} --version did not run: {exc}") from exc
    version = done.stdout.decode("utf-8", "replace").strip()
    if done.returncode or not version:
        raise VoiceUnavailable(
            f"{executable} --version failed (exit {done.returncode}): "
            f"{_stderr(done.stderr)}; reinstall it (apt-get install --reinstall espeak-ng)"
        )
    return version


def _synthesise(
    executable: str, sox: str, text: str, voice: str, words_per_minute: int, sample_rate: int
) -> Clip:
    # "--" ends the options, so a line such as "-5 degrees" is spoken, not parsed: without it
    # espeak-ng reports an invalid option and still exits 0. It speaks only the first argument.
    command = [executable, "-v", voice, "-s", str(words_per_minute), "--stdout", "--", text]
    logger.debug("speaking %s with %s", _shorten(text), " ".join(command[:-1]))
    try:
        done = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=_TOOL_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise VoiceUnavailable(f"{ESPEAK} did not speak {_shorten(text)}: {exc}") from exc
    if done.returncode:
        raise VoiceUnavailable(
            f"{ESPEAK} failed on {_shorten(text)} with voice {voice!r} "
            f"(exit {done.returncode}): {_stderr(done.stderr)}"
        )
    try:
        source_rate, pcm = _read_wav(done.stdout)
    except (wave.Error, EOFError, ValueError) as exc:
        raise VoiceUnavailable(
            f"{ESPEAK} gave no usable WAV for {_shorten(text)} ({exc}): {_stderr(done.stderr)}"
        ) from exc
    resampled = _resample(sox, pcm, source_rate, sample_rate)
    clip = Clip(text=text, sample_rate=sample_rate, pcm=resampled)
    try:
        clip.speech_bounds()
    except ValueError as exc:
        raise VoiceUnavailable(
            f"{ESPEAK} produced only silence for {_shorten(text)}; give the caller words to say"
        ) from exc
    return clip


def _read_wav(data: bytes) -> tuple[int, bytes]:
    """The rate and PCM of a mono int16 WAV. With --stdout espeak-ng cannot seek back to fill
    in the sizes, so its header claims about 2 GiB of frames: read to the end instead."""
    with wave.open(io.BytesIO(data), "rb") as wav:
        if wav.getnchannels() != 1 or wav.getsampwidth() != 2:
            raise ValueError(
                f"{wav.getnchannels()} channels of {wav.getsampwidth() * 8}-bit samples, "
                "not mono 16-bit"
            )
        rate = wav.getframerate()
        pcm = wav.readframes(wav.getnframes())
    if not pcm:
        raise ValueError("no samples")
    return rate, pcm[: len(pcm) - len(pcm) % 2]


def _resample(sox: str, pcm: bytes, source_rate: int, target_rate: int) -> bytes:
    """``pcm`` at ``target_rate``, by sox's very-high-quality rate effect without dither: the same
    bytes every time (livekit's soxr resampler dithers, so each run differs by a few LSB), exactly
    round(n * target / source) samples with no delay, in 5 to 12 ms for a 1.5 to 3.5 s line."""
    if source_rate == target_rate:
        return pcm
    raw = ["-t", "raw", "-e", "signed-integer", "-b", "16", "-c", "1", "-L"]
    command = [sox, "-D", *raw, "-r", str(source_rate), "-", *raw, "-r", str(target_rate), "-"]
    try:
        done = subprocess.run(
            [*command, "rate", "-v"],
            input=pcm,
            capture_output=True,
            timeout=_TOOL_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise VoiceUnavailable(f"{SOX} did not resample {ESPEAK}'s output: {exc}") from exc
    if done.returncode or not done.stdout:
        raise VoiceUnavailable(
            f"{SOX} failed to resample {source_rate} Hz to {target_rate} Hz "
            f"(exit {done.returncode}): {_stderr(done.stderr)}"
        )
    return done.stdout[: len(done.stdout) - len(done.stdout) % 2]


# --------------------------------------------------------------------------------------------
# caches
# --------------------------------------------------------------------------------------------


class _MemoryCache:
    """Least recently used clips up to a byte budget, shared by the threads of a process."""

    def __init__(self, budget_bytes: int) -> None:
        self._budget = budget_bytes
        self._clips: OrderedDict[str, Clip] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: str) -> Clip | None:
        with self._lock:
            clip = self._clips.get(key)
            if clip is not None:
                self._clips.move_to_end(key)
            return clip

    def put(self, key: str, clip: Clip) -> None:
        with self._lock:
            old = self._clips.pop(key, None)
            if old is not None:
                self._bytes -= len(old.pcm)
            if len(clip.pcm) > self._budget:
                return
            self._clips[key] = clip
            self._bytes += len(clip.pcm)
            while self._bytes > self._budget:
                _, evicted = self._clips.popitem(last=False)
                self._bytes -= len(evicted.pcm)

    def clear(self) -> None:
        with self._lock:
            self._clips.clear()
            self._bytes = 0


_memory = _MemoryCache(_MEMORY_BUDGET_BYTES)


def _cache_folder(cache_dir: Path | None) -> Path:
    return _configured_folder(cache_dir).absolute()


def _configured_folder(cache_dir: Path | None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    configured = os.environ.get(CACHE_ENV, "").strip()
    if configured:
        return Path(configured).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "openrtc" / "voice"


def _cache_key(text: str, voice: str, words_per_minute: int, sample_rate: int, espeak: str) -> str:
    material = {
        "format": _FORMAT,
        "text": text,
        "voice": voice,
        "wpm": words_per_minute,
        "rate": sample_rate,
        "espeak": espeak,
    }
    encoded = json.dumps(material, sort_keys=True, ensure_ascii=False).encode("utf-8")
    return hashlib.sha256(encoded).hexdigest()


def _read_cached(path: Path, text: str, sample_rate: int) -> Clip | None:
    """The clip stored at ``path``; None when there is none, or when the file is damaged (it is
    then made again and replaced)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        logger.warning("voice cache file %s unreadable (%s); speaking the line again", path, exc)
        return None
    try:
        with wave.open(io.BytesIO(data), "rb") as wav:
            params = wav.getparams()
            pcm = wav.readframes(params.nframes)
        shape = (params.nchannels, params.sampwidth, params.framerate)
        if shape != (1, 2, sample_rate):
            raise ValueError(f"{shape} is not mono 16-bit at {sample_rate} Hz")
        # A complete file is exactly the header and the frames it announces.
        if not pcm or len(pcm) != params.nframes * 2 or len(data) != _WAV_HEADER_BYTES + len(pcm):
            raise ValueError(f"{len(data)} bytes for {params.nframes} frames")
    except (wave.Error, EOFError, ValueError) as exc:
        logger.warning("voice cache file %s is damaged (%s); speaking the line again", path, exc)
        return None
    return Clip(text=text, sample_rate=sample_rate, pcm=pcm)


def _write_cached(path: Path, clip: Clip) -> None:
    """Store ``clip`` at ``path`` whole or not at all: written to a temporary file beside it, then
    renamed over it, so a process reading concurrently sees the old file or the new one."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(
            dir=path.parent, prefix=f".{path.stem[:16]}.", suffix=".tmp"
        )
    except OSError as exc:
        raise OSError(
            f"cannot write the voice cache in {path.parent} ({exc.strerror or exc}); set "
            f"{CACHE_ENV} or pass cache_dir= to a writable folder"
        ) from exc
    try:
        with os.fdopen(fd, "wb") as fh:
            # mkstemp makes the file private; workers running as another user read it too.
            os.fchmod(fh.fileno(), 0o644)
            with wave.open(fh, "wb") as wav:
                wav.setnchannels(1)
                wav.setsampwidth(2)
                wav.setframerate(clip.sample_rate)
                wav.writeframes(clip.pcm)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _shorten(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


def _stderr(raw: bytes) -> str:
    return raw.decode("utf-8", "replace").strip() or "no message on stderr"
