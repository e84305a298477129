"""The report's audio: each clip copied beside the page with its mel spectrogram, the prompt grid, the other sets.

    audio/<set>/<caption>.wav           a copy of the generated clip
    spectrograms/<set>/<caption>.png    its mel spectrogram (ssmttm.report.spectrogram)

The prompt grid lays prompts out as the paper's project page does: one row per prompt, one column per system (the
reference clip, its codec reconstruction, each run's last checkpoint in the table's variant, each baseline), each
cell a player above its spectrogram. Every other set (earlier checkpoints, other variants, other references) follows,
one collapsed block per prompt, so that each clip is on the page exactly once.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ssmttm.evaluate.cards import slug
from ssmttm.progress import progress
from ssmttm.report.html import esc
from ssmttm.report.inputs import REFERENCE_RUN, Generated, System
from ssmttm.report.sections import reference_label
from ssmttm.report.spectrogram import mel_spectrogram_png


@dataclass(frozen=True)
class Media:
    """A clip's files, relative to the page."""

    audio: str
    spectrogram: str


def label_of(system: System) -> str:
    return reference_label(system.variant) if system.run == REFERENCE_RUN else system.label


def copy_media(generated: Generated, captions: list[str], out: Path) -> dict[tuple[str, str], Media]:
    """Copy the page's clips under out/audio/ and draw their spectrograms under out/spectrograms/;
    {(set name, caption id): Media}."""
    import soundfile as sf

    media: dict[tuple[str, str], Media] = {}
    systems = [*generated.references.values(), *generated.systems]
    for system in progress(systems, "report: audio and spectrograms", unit="set"):
        for caption_id in captions:
            clip = system.clips.get(caption_id)
            if clip is None or clip.path is None:
                continue
            stem = f"{slug(system.name)}/{slug(caption_id)}"
            audio, picture = f"audio/{stem}{clip.path.suffix or '.wav'}", f"spectrograms/{stem}.png"
            (out / audio).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(clip.path, out / audio)
            samples, rate = sf.read(str(clip.path), dtype="float32", always_2d=True)  # (T, channels)
            mel_spectrogram_png(samples.T, rate, out / picture)
            media[(system.name, caption_id)] = Media(audio, picture)
    return media


def player(
    system: System, caption_id: str, media: Mapping[tuple[str, str], Media], label: str, caption: bool = True
) -> str:
    """A figure: the label (unless a column header gives it), the player and its spectrogram, or why there is no
    clip."""
    clip = system.clips.get(caption_id)
    files = media.get((system.name, caption_id))
    if clip is None:
        inside = '<span class="n">no clip for this prompt</span>'
    elif clip.path is None:
        inside = f'<span class="failed">failed: {esc(clip.reason)}</span>'
    elif files is None:
        inside = '<span class="n">not on the page (report.page_max_captions)</span>'
    else:
        title = f"{label}: {caption_id}"
        inside = (
            f'<audio controls preload="metadata" src="{esc(files.audio)}" title="{esc(title)}"></audio>'
            f'<img class="spectrogram" src="{esc(files.spectrogram)}" alt="mel spectrogram of {esc(title)}" '
            'title="mel spectrogram: time left to right, low to high frequencies bottom to top">'
        )
    shown = f"<figcaption>{esc(label)}</figcaption>" if caption else ""
    return f'<figure class="player">{shown}{inside}</figure>'


def grid_systems(generated: Generated, table_variant: str, reference_variant: str) -> list[System]:
    """The grid's columns: the reference clip, its codec reconstruction, then each run at its last checkpoint in
    `table_variant` (its last checkpoint's first variant when it has none) and each baseline's sets."""
    columns = [generated.references[v] for v in (reference_variant, "codec") if v in generated.references]
    for run in generated.runs():
        own = [s for s in generated.systems if s.run == run]
        steps = [s.step for s in own if s.step is not None]
        if not steps:  # a baseline: every set it has
            columns += own
            continue
        last = [s for s in own if s.step == max(steps)]
        columns.append(next((s for s in last if s.variant == table_variant), last[0]))
    return columns


def prompt_grid(
    generated: Generated,
    media: Mapping[tuple[str, str], Media],
    captions: list[str],
    table_variant: str,
    reference_variant: str,
) -> str:
    columns = grid_systems(generated, table_variant, reference_variant)
    texts = generated.captions()
    head = "".join(f"<th>{esc(label_of(s))}</th>" for s in columns)
    rows = []
    for caption_id in captions:
        cells = "".join(f"<td>{player(s, caption_id, media, label_of(s), caption=False)}</td>" for s in columns)
        prompt = f'<th class="prompt"><code>{esc(caption_id)}</code><br>“{esc(texts[caption_id])}”</th>'
        rows.append(f"<tr>{prompt}{cells}</tr>")
    return (
        f'<div class="scroll"><table class="prompt-grid" data-systems="{len(columns)}"><thead><tr><th>prompt</th>'
        f"{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
    )


def audio_section(
    generated: Generated,
    media: Mapping[tuple[str, str], Media],
    captions: list[str],
    table_variant: str,
    reference_variant: str,
) -> str:
    """The prompt grid, then every other set per prompt (collapsed)."""
    parts = ['<h2 id="audio">Audio</h2>']
    every = generated.captions()
    if len(captions) < len(every):
        parts.append(f"<p>{len(captions)} of {len(every)} prompts (report.page_max_captions).</p>")
    parts.append(
        "<p>One prompt per row, one system per column, as on the paper's project page: each player sits above the "
        "clip's mel spectrogram (time left to right, low frequencies at the bottom, 80 dB below the clip's peak in "
        "black).</p>"
    )
    parts.append(prompt_grid(generated, media, captions, table_variant, reference_variant))
    shown = {s.name for s in grid_systems(generated, table_variant, reference_variant)}
    order = [reference_variant, "codec"] + sorted(set(generated.references) - {reference_variant, "codec"})
    rest = [generated.references[v] for v in order if v in generated.references] + generated.systems
    rest = [s for s in rest if s.name not in shown]
    if not rest:
        return "".join(parts)
    parts.append(f'<h3 id="audio-other">Every other set ({len(rest)}), per prompt</h3>')
    for caption_id in captions:
        players = "".join(player(s, caption_id, media, label_of(s)) for s in rest)
        parts.append(
            f'<details class="caption-block"><summary><code>{esc(caption_id)}</code> “{esc(every[caption_id])}” '
            f'({len(rest)} sets)</summary><div class="players">{players}</div></details>'
        )
    return "".join(parts)
