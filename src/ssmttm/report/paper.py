"""The paper's numbers (PAPER.md section 8), the metrics the report leads with, and the ordering sentences.

The paper compares prefix_simba and cross_transformer (two-stage systems, MusicCaps captions) on FD, KL and CLAP at
20k, 40k, 100k and 400k training steps. Its FD is inferred to be OpenL3-based (stable-audio-metrics) and its KL
PaSST-based, so they sit beside our `fd_openl3` and `kl_passt`; its CLAP beside our `clap_score`.

A comparison says whether the paper's ordering of the two backbones holds in this run, and how sure we are: sure
only when both numbers are computed, neither is flagged unreliable (N too small) and their confidence intervals do
not overlap (two independent intervals that do not overlap: a conservative test); "cannot tell" otherwise, with why.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ssmttm.report.html import number
from ssmttm.report.inputs import OK, UNRELIABLE

PAIR = ("prefix_simba", "cross_transformer")
PAPER_SOURCE = (
    "PAPER.md section 8: values read off the paper's project-page figure (two-stage systems, MusicCaps captions); "
    "FD inferred OpenL3-based (stable-audio-metrics), KL inferred PaSST-based"
)
# metric -> the paper's value per backbone and training step (PAPER.md section 8)
PAPER_VALUES: dict[str, dict[str, dict[int, float]]] = {
    "fd_openl3": {
        "prefix_simba": {20_000: 92.6, 40_000: 89.9, 100_000: 75.0},
        "cross_transformer": {20_000: 99.9, 40_000: 86.9, 100_000: 83.6, 400_000: 71.9},
    },
    "kl_passt": {
        "prefix_simba": {20_000: 1.55, 40_000: 1.65, 100_000: 1.29},
        "cross_transformer": {20_000: 3.12, 40_000: 2.10, 100_000: 1.51, 400_000: 1.71},
    },
    "clap_score": {
        "prefix_simba": {20_000: 0.198, 40_000: 0.240, 100_000: 0.237},
        "cross_transformer": {20_000: 0.117, 40_000: 0.161, 100_000: 0.186, 400_000: 0.213},
    },
}
PAPER_STEPS = sorted({step for by_run in PAPER_VALUES.values() for steps in by_run.values() for step in steps})


@dataclass(frozen=True)
class Headline:
    metric: str
    title: str
    better: str | None  # "lower" | "higher" | None (no better direction: described, not ranked)
    paper_name: str | None = None  # the paper's name for it, when the paper reports it


# The table's columns and the figure's panels, paper metrics first. Every other metric is in the full table.
HEADLINES = [
    Headline("fd_openl3", "FD (OpenL3)", "lower", "FD"),
    Headline("kl_passt", "KL (PaSST)", "lower", "KL"),
    Headline("clap_score", "CLAP score", "higher", "CLAP"),
    Headline("fd_vggish", "FAD (VGGish)", "lower"),
    Headline("fad_clap", "FAD (CLAP)", "lower"),
    Headline("fd_mel", "FD log-mel", "lower"),
    Headline("fd_mfcc", "FD MFCC", "lower"),
    Headline("fd_chroma", "FD chroma", "lower"),
    Headline("tempo_acc1", "tempo accuracy", "higher"),
    Headline("key_score", "key score", "higher"),
    Headline("diversity", "diversity (dB)", None),
    Headline("repetition", "repetition", None),
]


def paper_value(metric: str, backbone: str, step: int | None) -> float | None:
    return PAPER_VALUES.get(metric, {}).get(backbone, {}).get(step) if step is not None else None


def _step_text(step: int) -> str:
    return f"{step // 1000}k" if step % 1000 == 0 else str(step)


@dataclass(frozen=True)
class PaperOrdering:
    winner: str | None  # the backbone the paper has better, None when it has no majority
    basis: str  # which of the paper's numbers that rests on


def paper_ordering(metric: str, step: int, better: str) -> PaperOrdering:
    """The paper's ordering of PAIR on `metric`: at `step` when the paper reports both there, else its majority."""
    values = PAPER_VALUES[metric]
    shared = sorted(set(values[PAIR[0]]) & set(values[PAIR[1]]))

    def winner_at(s: int) -> str | None:
        a, b = values[PAIR[0]][s], values[PAIR[1]][s]
        if a == b:
            return None
        return PAIR[0] if (a < b) == (better == "lower") else PAIR[1]

    if step in shared:
        return PaperOrdering(winner_at(step), f"at {_step_text(step)} steps in the paper")
    wins = {name: [s for s in shared if winner_at(s) == name] for name in PAIR}
    first, second = sorted(PAIR, key=lambda name: -len(wins[name]))
    steps = ", ".join(_step_text(s) for s in wins[first])
    if len(wins[first]) == len(wins[second]):
        return PaperOrdering(None, f"the paper has no majority over its {len(shared)} shared steps")
    return PaperOrdering(first, f"at {len(wins[first])} of the paper's {len(shared)} shared steps ({steps})")


# ----------------------------------------------------------------------------------------------- comparisons


def format_value(entry: dict[str, Any]) -> str:
    """'0.123 [0.1, 0.15]' (or without an interval) for a computed entry."""
    ci = entry.get("ci")
    interval = f" [{number(ci[0])}, {number(ci[1])}]" if ci and None not in ci else " [no interval]"
    return number(entry["value"]) + interval


@dataclass(frozen=True)
class Comparison:
    metric: str
    title: str
    step: int
    verdict: str  # holds | reversed | cannot tell (paper metrics); better | cannot tell (the others)
    winner: str | None  # the backbone better in this run, when sure
    favoured: str | None  # the backbone the point estimates favour (sure or not)
    paper: PaperOrdering | None
    entries: tuple[dict[str, Any], dict[str, Any]]
    confidence_text: str = "95%"

    def sentence(self, note: Callable[[str], str] = lambda reason: f" ({reason})") -> str:
        """One sentence; `note(reason)` renders a not-computed or unreliable reason (a footnote mark in HTML)."""
        a, b = self.entries
        subject = f"{self.title} at step {self.step}"
        if self.paper is not None:
            if self.paper.winner is None:
                claim = f"the paper's ordering ({self.paper.basis})"
            else:
                claim = f"the paper's ordering ({self.paper.winner} better, {self.paper.basis})"
        else:
            claim = None
        problems = []
        missing = [name for name, e in zip(PAIR, (a, b), strict=True) if not _computed(e)]
        reasons = list(dict.fromkeys(str(e.get("reason", "")) for e in (a, b) if not _computed(e)))
        if len(missing) == 2 and len(reasons) == 1:
            problems.append(f"neither value was computed{note(reasons[0])}")
        else:
            problems += [f"{name}'s value was not computed{note(str(e.get('reason', '')))}"
                         for name, e in zip(PAIR, (a, b), strict=True) if not _computed(e)]  # fmt: skip
        flagged = [(name, str(e.get("warning") or "N too small")) for name, e in zip(PAIR, (a, b), strict=True)
                   if _computed(e) and e.get("status") == UNRELIABLE]  # fmt: skip
        if len(flagged) == 2 and flagged[0][1] == flagged[1][1]:
            problems.append(f"both values are flagged unreliable{note(flagged[0][1])}")
        else:
            problems += [f"{name}'s value is flagged unreliable{note(warning)}" for name, warning in flagged]
        values = ""
        if not missing:
            values = f" ({PAIR[0]} {format_value(a)} vs {PAIR[1]} {format_value(b)})"
        favour = f"; the point estimates favour {self.favoured}" if self.favoured else ""
        if self.verdict in ("holds", "reversed"):
            how = "holds" if self.verdict == "holds" else f"is reversed: {self.winner} is better here"
            return f"{subject}{values}: {claim} {how}; the {self.confidence_text} intervals do not overlap."
        if self.verdict == "better":
            return f"{subject}{values}: {self.winner} is better; the {self.confidence_text} intervals do not overlap."
        if claim is not None and self.paper is not None and self.paper.winner is None:
            why = "the paper itself gives no ordering"
        elif problems:
            why = "; ".join(problems)
        elif any(not e.get("ci") or None in e.get("ci", []) for e in (a, b)):
            why = "a value has no interval (fewer than 2 clips, or no bootstrap resamples)"
        else:
            why = f"the {self.confidence_text} intervals overlap"
        what = f"cannot tell whether {claim} holds" if claim else "cannot tell which backbone is better"
        return f"{subject}{values}: {what}: {why}{favour}."


def _computed(entry: dict[str, Any]) -> bool:
    return entry.get("status") in (OK, UNRELIABLE) and entry.get("value") is not None


def _overlap(a: dict[str, Any], b: dict[str, Any]) -> bool | None:
    ci_a, ci_b = a.get("ci"), b.get("ci")
    if not ci_a or not ci_b or None in ci_a or None in ci_b:
        return None
    return not (ci_a[1] < ci_b[0] or ci_b[1] < ci_a[0])


def compare(
    headline: Headline, step: int, a: dict[str, Any], b: dict[str, Any], confidence: float = 0.95
) -> Comparison:
    """Compare PAIR's entries `a`, `b` of one metric at one step (see the module docstring for "sure")."""
    better = next((e.get("better") for e in (a, b) if e.get("better")), headline.better) or "lower"
    ordering = paper_ordering(headline.metric, step, better) if headline.metric in PAPER_VALUES else None
    computed = _computed(a) and _computed(b)
    favoured = None
    if computed and a["value"] != b["value"]:
        favoured = PAIR[0] if (a["value"] < b["value"]) == (better == "lower") else PAIR[1]
    sure = computed and all(e.get("status") != UNRELIABLE for e in (a, b)) and _overlap(a, b) is False
    if sure and ordering is not None and ordering.winner is not None:
        verdict = "holds" if favoured == ordering.winner else "reversed"
    elif sure and ordering is None:
        verdict = "better"
    else:
        verdict = "cannot tell"
    return Comparison(
        headline.metric,
        headline.title,
        step,
        verdict,
        favoured if verdict != "cannot tell" else None,
        favoured,
        ordering,
        (a, b),
        f"{confidence:.0%}",
    )
