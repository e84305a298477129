"""The paper's numbers (PAPER.md section 8), the metrics the report leads with, and the comparison sentences.

The paper compares prefix_simba and cross_transformer (two-stage systems, MusicCaps captions) on FD, KL and CLAP at
20k, 40k, 100k and 400k training steps. Its FD is inferred to be OpenL3-based and its KL PaSST-based, computed with
Stability-AI's stable-audio-metrics, so they sit beside our stable-audio-metrics family (`fd_openl3_sam`,
`kl_passt_sam`, `clap_score_sam`); the audiocraft family (`fd_openl3`, `kl_passt`, `clap_score`, `fd_vggish`,
`fad_clap`) is computed differently and is never set beside the paper's numbers.

The paper's values belong to the paper's *systems* (PAPER_SYSTEMS: a backbone at the paper's size), not to run
names: ssmttm.report.runs maps a run to a paper system by its backbone and size.

A comparison of N systems on one metric at one step names the best point estimate and says how sure that is: sure
only when every value is computed, none is flagged unreliable (N too small) and the best one's confidence interval
overlaps no other's (independent intervals that do not overlap: a conservative test); "cannot tell" otherwise, with
why. Where two or more of the systems are the paper's systems, the verdict is whether the paper's ordering of them
holds (holds / reversed / cannot tell); otherwise which system is better (better / cannot tell).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ssmttm.report.html import number
from ssmttm.report.inputs import OK, UNRELIABLE

PAPER_SOURCE = (
    "PAPER.md section 8: values read off the paper's project-page figure (two-stage systems, MusicCaps captions); "
    "FD inferred OpenL3-based and KL PaSST-based (stable-audio-metrics), set beside our stable-audio-metrics family"
)
PAPER_VARIANT = "two_stage"  # the paper's figure shows two-stage systems only


@dataclass(frozen=True)
class PaperSystem:
    """A system of the paper's figure: a backbone at the paper's size (PAPER.md 4)."""

    backbone: str
    n_layers: int
    d_model: int
    n_codebooks: int = 1


PAPER_SYSTEMS = {
    "prefix_simba": PaperSystem("prefix_simba", n_layers=24, d_model=1024),  # the released model, 281.04 M
    "cross_transformer": PaperSystem("cross_transformer", n_layers=24, d_model=1024),  # MusicGen-small-like, 305.1 M
}
# metric -> the paper's value per paper system and training step (PAPER.md section 8)
PAPER_VALUES: dict[str, dict[str, dict[int, float]]] = {
    "fd_openl3_sam": {
        "prefix_simba": {20_000: 92.6, 40_000: 89.9, 100_000: 75.0},
        "cross_transformer": {20_000: 99.9, 40_000: 86.9, 100_000: 83.6, 400_000: 71.9},
    },
    "kl_passt_sam": {
        "prefix_simba": {20_000: 1.55, 40_000: 1.65, 100_000: 1.29},
        "cross_transformer": {20_000: 3.12, 40_000: 2.10, 100_000: 1.51, 400_000: 1.71},
    },
    "clap_score_sam": {
        "prefix_simba": {20_000: 0.198, 40_000: 0.240, 100_000: 0.237},
        "cross_transformer": {20_000: 0.117, 40_000: 0.161, 100_000: 0.186, 400_000: 0.213},
    },
}
# Public baselines' own published numbers (PAPER.md 8: the audiocraft model card, MusicCaps), keyed by weights name
MODEL_CARD_VALUES = {"facebook/musicgen-small": "model card (MusicCaps): FAD_vggish 4.88, KL_passt 1.42, CLAP 0.27"}
PAPER_STEPS = sorted({step for by_run in PAPER_VALUES.values() for steps in by_run.values() for step in steps})

# Metric families: which implementation a number comes from (the full table labels every metric with its family).
STABLE_AUDIO_METRICS, AUDIOCRAFT, OWN = "stable-audio-metrics", "audiocraft", "ssmttm"
AUDIOCRAFT_METRICS = ("fd_openl3", "kl_passt", "clap_score", "fd_vggish", "fad_clap")
FAMILY_ORDER = (STABLE_AUDIO_METRICS, AUDIOCRAFT, OWN)


def metric_family(metric: str) -> str:
    base = metric.removesuffix("_split_half")
    if base.endswith("_sam"):
        return STABLE_AUDIO_METRICS
    return AUDIOCRAFT if base in AUDIOCRAFT_METRICS else OWN


@dataclass(frozen=True)
class Headline:
    metric: str
    title: str
    better: str | None  # "lower" | "higher" | None (no better direction: described, not ranked)
    paper_name: str | None = None  # the paper's name for it, when the paper reports it

    @property
    def family(self) -> str:
        return metric_family(self.metric)


# The table's columns and the figure's panels, paper metrics first. Every other metric is in the full table.
HEADLINES = [
    Headline("fd_openl3_sam", "FD OpenL3 (stable-audio-metrics)", "lower", "FD"),
    Headline("kl_passt_sam", "KL PaSST (stable-audio-metrics)", "lower", "KL"),
    Headline("clap_score_sam", "CLAP score (stable-audio-metrics)", "higher", "CLAP"),
    Headline("fd_openl3", "FD OpenL3 (audiocraft)", "lower"),
    Headline("kl_passt", "KL PaSST (audiocraft)", "lower"),
    Headline("clap_score", "CLAP score (audiocraft)", "higher"),
    Headline("fd_vggish", "FAD VGGish (audiocraft)", "lower"),
    Headline("fad_clap", "FAD CLAP (audiocraft)", "lower"),
    Headline("fd_mel", "FD log-mel", "lower"),
    Headline("fd_mfcc", "FD MFCC", "lower"),
    Headline("fd_chroma", "FD chroma", "lower"),
    Headline("tempo_acc1", "tempo accuracy", "higher"),
    Headline("key_score", "key score", "higher"),
    Headline("diversity", "diversity (dB)", None),
    Headline("repetition", "repetition", None),
]


def paper_value(metric: str, paper_system: str | None, step: int | None) -> float | None:
    if paper_system is None or step is None:
        return None
    return PAPER_VALUES.get(metric, {}).get(paper_system, {}).get(step)


def step_text(step: int) -> str:
    return f"{step // 1000}k" if step % 1000 == 0 and step >= 1000 else str(step)


@dataclass(frozen=True)
class PaperOrdering:
    winner: str | None  # the paper system the paper has best, None when it gives no ordering
    basis: str  # which of the paper's numbers that rests on


def paper_ordering(metric: str, step: int | None, better: str, systems: Sequence[str]) -> PaperOrdering:
    """The paper's best of `systems` (paper system names) on `metric`: at `step` when the paper reports them all
    there, else the one best at most of the steps where the paper reports them all."""
    values = PAPER_VALUES[metric]
    systems = [s for s in dict.fromkeys(systems) if s in values]
    shared = sorted(set.intersection(*(set(values[s]) for s in systems))) if systems else []

    def winner_at(at: int) -> str | None:
        by_system = {s: values[s][at] for s in systems}
        best = (min if better == "lower" else max)(by_system.values())
        winners = [s for s, v in by_system.items() if v == best]
        return winners[0] if len(winners) == 1 else None

    if step in shared:
        return PaperOrdering(winner_at(step), f"at {step_text(step)} steps in the paper")
    if not shared:
        return PaperOrdering(None, "the paper reports these systems at no common step")
    ranked = Counter(w for s in shared if (w := winner_at(s)) is not None).most_common()
    if not ranked or (len(ranked) > 1 and ranked[0][1] == ranked[1][1]):
        return PaperOrdering(None, f"the paper has no majority over its {len(shared)} shared steps")
    first, wins = ranked[0]
    steps = ", ".join(step_text(s) for s in shared if winner_at(s) == first)
    return PaperOrdering(first, f"at {wins} of the paper's {len(shared)} shared steps ({steps})")


# ----------------------------------------------------------------------------------------------- comparisons


def format_value(entry: dict[str, Any]) -> str:
    """'0.123 [0.1, 0.15]' (or without an interval) for a computed entry."""
    ci = entry.get("ci")
    interval = f" [{number(ci[0])}, {number(ci[1])}]" if ci and None not in ci else " [no interval]"
    return number(entry["value"]) + interval


@dataclass(frozen=True)
class Member:
    """One system of a comparison at one step: its label, the paper system it is (if any), its metric entry."""

    label: str
    paper_system: str | None
    entry: dict[str, Any]
    stand_in: bool = False  # the paper system's backbone at another size (report.paper_stand_ins)


@dataclass(frozen=True)
class Ranking:
    """The best of some members on one metric, and whether that is sure (see the module docstring)."""

    labels: tuple[str, ...]
    favoured: str | None  # the best point estimate (sure or not); None when fewer than 2 values or a tie
    sure: bool
    problems: tuple[tuple[str, str | None], ...]  # (text, note reason) why it is not sure


def _computed(entry: dict[str, Any]) -> bool:
    return entry.get("status") in (OK, UNRELIABLE) and entry.get("value") is not None


def _interval(entry: dict[str, Any]) -> tuple[float, float] | None:
    ci = entry.get("ci")
    return (float(ci[0]), float(ci[1])) if ci and None not in ci else None


def _both(n: int, two: str, more: str) -> str:
    return two if n == 2 else more


def rank(members: Sequence[Member], better: str, confidence_text: str) -> Ranking:
    labels = tuple(m.label for m in members)
    computed = [m for m in members if _computed(m.entry)]
    favoured = None
    if len(computed) >= 2:
        sign = 1.0 if better == "lower" else -1.0
        best = min(sign * float(m.entry["value"]) for m in computed)
        leaders = [m for m in computed if sign * float(m.entry["value"]) == best]
        favoured = leaders[0].label if len(leaders) == 1 else None
    problems: list[tuple[str, str | None]] = []
    missing = [m for m in members if not _computed(m.entry)]
    reasons = list(dict.fromkeys(str(m.entry.get("reason", "")) for m in missing))
    if missing and len(missing) == len(members) and len(reasons) == 1:
        problems.append((_both(len(members), "neither value was computed", "no value was computed"), reasons[0]))
    else:
        problems += [(f"{m.label}'s value was not computed", str(m.entry.get("reason", ""))) for m in missing]
    flagged = [(m.label, str(m.entry.get("warning") or "N too small")) for m in computed
               if m.entry.get("status") == UNRELIABLE]  # fmt: skip
    if len(flagged) >= 2 and len(flagged) == len(members) and len({w for _, w in flagged}) == 1:
        every = _both(len(flagged), "both values are", "all values are")
        problems.append((f"{every} flagged unreliable", flagged[0][1]))
    else:
        problems += [(f"{label}'s value is flagged unreliable", warning) for label, warning in flagged]
    if not problems and favoured is None and len(computed) >= 2:
        problems.append(("the best values are tied", None))
    if not problems and favoured is not None:
        intervals = {m.label: _interval(m.entry) for m in computed}
        best_interval = intervals[favoured]
        if best_interval is None or any(interval is None for interval in intervals.values()):
            problems.append(("a value has no interval (fewer than 2 clips, or no bootstrap resamples)", None))
        else:
            low, high = best_interval
            overlapping = [
                label
                for label, interval in intervals.items()
                if label != favoured and interval is not None and not (high < interval[0] or interval[1] < low)
            ]
            if overlapping:
                text = f"the {confidence_text} intervals of {favoured} and {', '.join(overlapping)} overlap"
                problems.append((text, None))
    return Ranking(labels, favoured, favoured is not None and not problems, tuple(problems))


@dataclass(frozen=True)
class Comparison:
    metric: str
    title: str
    step: int | None  # None: systems without checkpoint steps (baselines) only
    verdict: str  # holds | reversed | cannot tell (paper metrics); better | cannot tell (the others)
    winner: str | None  # the system better in this run, when sure
    favoured: str | None  # the system the point estimates favour (sure or not)
    paper: PaperOrdering | None
    members: tuple[Member, ...]
    overall: Ranking  # over every member
    paper_ranking: Ranking | None = None  # over the paper's systems only (when the paper orders them)
    confidence_text: str = "95%"

    @property
    def entries(self) -> tuple[dict[str, Any], ...]:
        return tuple(m.entry for m in self.members)

    @property
    def nothing_computed(self) -> bool:
        """No system has a value: the sentence only says why (weights absent, ...), never which is better."""
        return not any(_computed(m.entry) for m in self.members)

    def _paper_label(self, paper_system: str) -> str:
        ours = next((m for m in self.members if m.paper_system == paper_system), None)
        if ours is None:
            return paper_system
        if ours.stand_in:
            return f"{paper_system} (ours: {ours.label}, a stand-in at another size)"
        return paper_system if ours.label == paper_system else f"{paper_system} (ours: {ours.label})"

    def sentence(self, note: Callable[[str], str] = lambda reason: f" ({reason})") -> str:
        """One sentence; `note(reason)` renders a not-computed or unreliable reason (a footnote mark in HTML)."""
        subject = self.title if self.step is None else f"{self.title} at step {self.step}"
        shown = [f"{m.label} {format_value(m.entry)}" for m in self.members if _computed(m.entry)]
        values = f" ({' vs '.join(shown)})" if shown else ""

        def why(ranking: Ranking) -> str:
            return "; ".join(text + (note(reason) if reason else "") for text, reason in ranking.problems)

        def favour(ranking: Ranking) -> str:
            return f"; the point estimates favour {ranking.favoured}" if ranking.favoured else ""

        overall = self.overall
        n = len(self.members)
        sure_text = f"{self.confidence_text} intervals do not overlap"
        if self.paper is not None and self.paper_ranking is not None:
            if self.paper.winner is None:
                claim = f"the paper's ordering ({self.paper.basis})"
            else:
                claim = f"the paper's ordering ({self._paper_label(self.paper.winner)} better, {self.paper.basis})"
            if self.verdict == "holds":
                text = f"{subject}{values}: {claim} holds; the {self.confidence_text} intervals do not overlap."
            elif self.verdict == "reversed":
                text = (
                    f"{subject}{values}: {claim} is reversed: {self.winner} is better here; the "
                    f"{self.confidence_text} intervals do not overlap."
                )
            else:
                reason = "the paper itself gives no ordering" if self.paper.winner is None else why(self.paper_ranking)
                text = f"{subject}{values}: cannot tell whether {claim} holds: {reason}{favour(self.paper_ranking)}."
            if len(self.paper_ranking.labels) < n and shown:  # more systems than the paper's: the best of all
                if overall.sure:
                    text += f" Best of all {n}: {overall.favoured}; its interval overlaps no other."
                else:
                    text += f" Best of all {n}: cannot tell: {why(overall)}{favour(overall)}."
            return text
        if self.verdict == "better":
            if n == 2:
                return f"{subject}{values}: {self.winner} is better; the {sure_text}."
            return (
                f"{subject}{values}: {self.winner} is the best of {n}; its {self.confidence_text} interval overlaps "
                "no other."
            )
        what = "which system is better" if n == 2 else f"which of the {n} systems is best"
        return f"{subject}{values}: cannot tell {what}: {why(overall)}{favour(overall)}."


def compare(headline: Headline, step: int | None, members: Sequence[Member], confidence: float = 0.95) -> Comparison:
    """Compare `members` (2 or more systems) on one metric at one step (see the module docstring for "sure")."""
    members = tuple(members)
    better = next((m.entry.get("better") for m in members if m.entry.get("better")), headline.better) or "lower"
    confidence_text = f"{confidence:.0%}"
    overall = rank(members, better, confidence_text)
    # the paper's systems among the members: the first member that is each paper system
    paper_members: dict[str, Member] = {}
    for member in members:
        if member.paper_system and member.paper_system in PAPER_VALUES.get(headline.metric, {}):
            paper_members.setdefault(member.paper_system, member)
    ordering, paper_ranking = None, None
    if len(paper_members) >= 2:
        ordering = paper_ordering(headline.metric, step, better, list(paper_members))
        paper_ranking = rank(list(paper_members.values()), better, confidence_text)
    if ordering is not None and paper_ranking is not None:
        favoured = paper_ranking.favoured
        if paper_ranking.sure and ordering.winner is not None:
            winner_label = paper_members[ordering.winner].label
            verdict = "holds" if favoured == winner_label else "reversed"
        else:
            verdict = "cannot tell"
    else:
        favoured = overall.favoured
        verdict = "better" if overall.sure else "cannot tell"
    winner = favoured if verdict != "cannot tell" else None
    return Comparison(
        headline.metric, headline.title, step, verdict, winner, favoured, ordering, members, overall, paper_ranking,
        confidence_text,
    )  # fmt: skip
