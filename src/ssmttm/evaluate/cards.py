"""Metric values and metric cards: no number leaves the evaluate stage without the card that says how it was made.

A metric value in metrics.json is one of

    {"status": "ok", "value": v, "ci": [low, high], "n": n, "better": "lower" | "higher" | null}
    {"status": "unreliable", "value": v, "ci": [...], "n": n, "better": ..., "warning": "why not to trust it"}
    {"status": "not computed", "reason": "why, and how to enable it"}

"unreliable" is set where N is too small for the number to mean anything (fewer clips than `min_clips`, or a
Fréchet distance fitted on no more windows than the embedding has dimensions): the value is kept for inspection
but never shown bare. Every set has a card (`cards/<set>.json`, and `cards/<set>.md` to read) with, per metric:
implementation and version, model and weights sha256, layer, sample rate and resampler, mono/stereo, level
normalisation, window and hop, N, covariance estimator and Fréchet method, library versions; and, once per card,
the generated set (folder, counts, durations, seeds, sampling settings) and the reference set. Embedding metrics
also name their `family` (ssmttm.evaluate.families): `audiocraft` (fd_vggish, fd_openl3, kl_passt, clap_score,
fad_clap) or `stable_audio` (fd_openl3_sam, kl_passt_sam, clap_score_sam, stable-audio-metrics compatible, with its
`channels`); numbers of the same name in different families are different numbers.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ssmttm.artifacts import write_json, write_text
from ssmttm.evaluate.bootstrap import Estimate

OK = "ok"
UNRELIABLE = "unreliable"
NOT_COMPUTED = "not computed"
DIGITS = 6  # significant digits kept in metrics.json


def _round(value: float | None) -> float | None:
    return None if value is None else float(f"{value:.{DIGITS}g}")


def not_computed(reason: str) -> dict[str, Any]:
    return {"status": NOT_COMPUTED, "reason": reason}


def reported(estimate: Estimate, better: str | None, warnings: list[str] | None = None) -> dict[str, Any]:
    """A computed value with its interval; flagged `unreliable` when there are warnings about N."""
    entry: dict[str, Any] = {
        "status": UNRELIABLE if warnings else OK,
        "value": _round(estimate.value),
        "ci": [_round(estimate.ci_low), _round(estimate.ci_high)] if estimate.ci_low is not None else None,
        "n": estimate.n,
        "better": better,
    }
    if warnings:
        entry["warning"] = "; ".join(warnings)
    return entry


def small_n_warnings(
    n_clips: int, min_clips: int, n_windows: int | None = None, dim: int | None = None, what: str = "clips"
) -> list[str]:
    """Why a set-level number cannot be trusted at this N (empty when it can)."""
    warnings = []
    if n_clips < min_clips:
        warnings.append(f"N = {n_clips} {what} < {min_clips}: the interval is wide and the value is not comparable")
    if n_windows is not None and dim is not None and n_windows <= dim:
        warnings.append(
            f"{n_windows} windows <= {dim} dimensions: the covariance is rank-deficient and the Fréchet distance "
            "is dominated by small-N bias"
        )
    return warnings


def slug(name: str) -> str:
    """A set name as a file name: 'prefix_simba/step-0000150/two_stage' -> 'prefix_simba__step-0000150__two_stage'."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name.replace("/", "__")).strip("_") or "set"


def write_card(folder: str | Path, name: str, card: dict[str, Any]) -> str:
    """Write `cards/<slug>.json` and `.md` under `folder`; return the JSON's path relative to `folder`."""
    relative = f"cards/{slug(name)}.json"
    write_json(Path(folder) / relative, card)
    write_text(Path(folder) / f"cards/{slug(name)}.md", render_markdown(card))
    return relative


def _format_value(entry: dict[str, Any]) -> str:
    if entry.get("status") == NOT_COMPUTED:
        return f"not computed: {entry.get('reason', '')}"
    ci = entry.get("ci")
    text = f"{entry['value']:.4g}" + (f" [{ci[0]:.4g}, {ci[1]:.4g}]" if ci else " [no interval]")
    text += f" (N = {entry['n']})"
    if entry.get("status") == UNRELIABLE:
        text = f"UNRELIABLE {text}: {entry.get('warning', '')}"
    return text


def _format_field(value: Any) -> str:
    if isinstance(value, dict):
        return "; ".join(f"{k}: {_format_field(v)}" for k, v in value.items())
    if isinstance(value, list):
        return ", ".join(_format_field(v) for v in value) if len(value) <= 12 else f"{len(value)} items"
    return str(value)


def render_markdown(card: dict[str, Any]) -> str:
    """The card as a page to read: the sets, then each metric's value and how it was computed."""
    lines = [f"# Metric card: {card['set']['name']}", ""]
    if card.get("stand_in"):  # ssmttm.stand_ins: random stand-in weights somewhere upstream of these numbers
        lines += [f"**{card.get('note', 'computed with stand-in weights')}**", ""]
        lines += [f"- stand-in: {name}" for name in card.get("stand_ins", {})] + [""]
    for part in ("set", "reference"):
        lines.append(f"## {part.capitalize()}")
        lines += [f"- {key}: {_format_field(value)}" for key, value in card[part].items() if key != "caption_ids"]
        lines.append("")
    lines += ["## Common settings"] + [f"- {k}: {_format_field(v)}" for k, v in card["common"].items()] + [""]
    for metric, details in card["metrics"].items():
        lines.append(f"## {metric}")
        lines.append(f"- value: {_format_value(details['result'])}")
        lines += [f"- {key}: {_format_field(value)}" for key, value in details.items() if key != "result"]
        lines.append("")
    return "\n".join(lines)
