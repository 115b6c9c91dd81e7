"""``openrtc simulate --voice``: what voice calls are asked to do, and their figures.

Per agent: what a caller hears (end of their speech to the agent's first audio, p50/p95 and
the worst), the turn detector's and the transcript's delays, the VAD's inference time per
call, the frames the caller's line delivered late or dropped, and barge-ins handled.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

import attrs
from rich import box
from rich.table import Table

from .measure import percentile

TURN_KEYS: Final = (
    "heard",
    "heard_latency_s",
    "end_of_turn_delay_s",
    "turn_waited_out",
    "transcription_delay_s",
    "speech_s",
    "reply_audio_s",
    "interrupted",
    "barged_in",
    "interrupted_reply",
)
"""What a voice turn's report adds to a text turn's, kept in ``--json``."""


@attrs.frozen
class VoiceSettings:
    """Voice calls: the caller's line rate, and whether the last line barges in."""

    sample_rate: int = 16000
    barge_in: bool = False
    """Each call's last line starts while the agent still speaks its previous reply."""

    def barge_in_lines(self, turns: int) -> tuple[int, ...]:
        return (turns - 1,) if self.barge_in and turns >= 2 else ()


VoiceCallData = tuple[str, Mapping[str, Any] | None, Sequence[Mapping[str, Any]]]
"""One call as the figures read it: its agent, its report's ``voice`` part, its turns."""


def per_agent(calls: Iterable[VoiceCallData]) -> dict[str, dict[str, Any]]:
    """The voice figures of each agent's calls (see the module's docstring)."""
    grouped: dict[str, list[VoiceCallData]] = defaultdict(list)
    for call in calls:
        if call[1] is not None:
            grouped[call[0]].append(call)
    figures: dict[str, dict[str, Any]] = {}
    for agent, group in sorted(grouped.items()):
        turns = [t for _, _, call_turns in group for t in call_turns]
        voices = [v for _, v, _ in group if v is not None]
        heard = _values(turns, "heard_latency_s")
        vad = [float(v["vad_inference_s"]) for v in voices if v.get("vad_inference_s") is not None]
        figures[agent] = {
            "calls": len(group),
            "turns": len(turns),
            "heard_latency_p50_s": _pct(heard, 50),
            "heard_latency_p95_s": _pct(heard, 95),
            "heard_latency_max_s": max(heard) if heard else None,
            "end_of_turn_delay_p50_s": _pct(_values(turns, "end_of_turn_delay_s"), 50),
            "end_of_turn_delay_p95_s": _pct(_values(turns, "end_of_turn_delay_s"), 95),
            "turns_waited_out": sum(1 for t in turns if t.get("turn_waited_out")),
            "transcription_delay_p50_s": _pct(_values(turns, "transcription_delay_s"), 50),
            "vad_inference_per_call_p50_s": _pct(vad, 50),
            "frames_sent": sum(int(v.get("frames_sent", 0)) for v in voices),
            "frames_late": sum(int(v.get("frames_late", 0)) for v in voices),
            "frames_dropped": sum(int(v.get("frames_dropped", 0)) for v in voices),
            "barge_ins": sum(int(v.get("barge_ins", 0)) for v in voices),
            "barge_ins_handled": sum(int(v.get("barge_ins_handled", 0)) for v in voices),
        }
    return figures


def _values(turns: Iterable[Mapping[str, Any]], key: str) -> list[float]:
    return [float(t[key]) for t in turns if isinstance(t.get(key), int | float)]


def _pct(values: list[float], p: float) -> float | None:
    return percentile(values, p) if values else None


def table(figures: Mapping[str, Mapping[str, Any]]) -> Table:
    """The voice figures per agent, in 80 columns: what the caller heard (p50, p95, worst),
    the turn end's delay (p50, and how many turns the detector left to wait out), the VAD's
    time per call, frames late and lost on the caller's line, barge-ins handled."""
    out = Table(
        title="voice: what the caller hears",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )
    out.add_column("agent", overflow="fold", min_width=7)
    for column in ("heard", "p95", "worst", "turn end", "waited", "VAD", "late/lost", "barge"):
        out.add_column(column, justify="right", no_wrap=True)
    for agent, f in figures.items():
        lost = f"[red]{f['frames_dropped']}[/red]" if f["frames_dropped"] else "0"
        out.add_row(
            agent,
            _ms(f["heard_latency_p50_s"]),
            _ms(f["heard_latency_p95_s"]),
            _ms(f["heard_latency_max_s"]),
            _ms(f["end_of_turn_delay_p50_s"]),
            f"{f['turns_waited_out']}/{f['turns']}",
            _ms(f["vad_inference_per_call_p50_s"]),
            f"{f['frames_late']}/{lost}",
            f"{f['barge_ins_handled']}/{f['barge_ins']}" if f["barge_ins"] else "-",
        )
    return out


def _ms(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds * 1000:.0f}ms" if seconds < 1 else f"{seconds:.2f}s"
