"""The listening-test package: shuffled anonymised clips, a rating form and a separate answer key.

    listening/rater/index.html     the form: one trial per caption, its clips in a shuffled order, each rated for
                                   overall quality (OVL) and relevance to the caption (REL) on 1-5 (MusicGen's two
                                   questions); answers are kept in the browser and exported with the download buttons
                                   as CSV or JSON
    listening/rater/clips/ID.wav   the clips, named by a random ID; loudness-normalised (BS.1770) so that level does
                                   not drive the ratings, with the peak kept below 0 dBFS
    listening/answer_key.json/.csv ID -> system, backbone, step, variant, caption and source file: never linked
                                   from the form, and outside the folder raters get
    listening/README.md            how to run the test and join answers with the key

Systems: each run's last checkpoint (or every checkpoint) in every generated variant, each baseline, plus two
anchors from the references, the original clip and its codec reconstruction (the ceiling and the codec floor).
Captions, trial order, clip order and IDs all come from one seeded generator, so the same inputs give the same
package.
"""

from __future__ import annotations

import csv
import io
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ssmttm.artifacts import stable_int, write_json, write_text
from ssmttm.report.html import esc, page
from ssmttm.report.inputs import REFERENCE_RUN, Generated, System

RATER_DIR = "rater"
CLIPS_DIR = "clips"
ANCHOR_VARIANTS = ("codec",)  # besides the reference itself
PEAK_LIMIT = 0.99  # largest |sample| after the loudness gain
SCALE = {
    "ovl": ("Overall quality", ("bad", "poor", "fair", "good", "excellent")),
    "rel": ("Relevance to the text", ("not at all", "a little", "partly", "mostly", "perfectly")),
}


@dataclass(frozen=True)
class Item:
    item: str  # anonymous ID, also the clip's file name
    trial: int  # 1-based; one trial per caption
    position: int  # 1-based place of the clip in its trial
    system: str
    role: str  # "generated" or "anchor"
    backbone: str
    step: int | None
    variant: str
    caption_id: str
    caption: str
    source: str
    gain_db: float | None  # loudness gain applied (None: copied as is)


def listening_systems(generated: Generated, checkpoints: str, reference_variant: str) -> list[System]:
    """The systems of the test: generated (last or every checkpoint per run; a baseline's sets), then the anchors."""
    chosen = []
    for run in generated.runs():
        own = [s for s in generated.systems if s.run == run]
        steps = {s.step for s in own if s.step is not None}
        last = max(steps) if steps else None
        chosen += [s for s in own if checkpoints == "all" or s.step == last]
    for variant in (reference_variant, *ANCHOR_VARIANTS):
        if variant in generated.references:
            chosen.append(generated.references[variant])
    return chosen


def _normalised_copy(source: Path, target: Path, lufs: float | None) -> float | None:
    """Copy `source` to `target` gain-normalised to `lufs` (peak kept under PEAK_LIMIT); the gain in dB."""
    if lufs is None:
        shutil.copyfile(source, target)
        return None
    import soundfile as sf

    from ssmttm.audio import write_wav
    from ssmttm.evaluate.features import integrated_loudness

    samples, rate = sf.read(str(source), dtype="float32", always_2d=True)  # (N, C)
    loudness = integrated_loudness(samples.mean(axis=1), rate)
    gain_db = 0.0 if loudness is None else lufs - loudness
    peak = float(np.max(np.abs(samples))) if samples.size else 0.0
    if peak > 0:
        gain_db = min(gain_db, 20.0 * np.log10(PEAK_LIMIT / peak))
    scaled = samples * np.float32(10.0 ** (gain_db / 20.0))
    write_wav(target, scaled.T if scaled.shape[1] > 1 else scaled[:, 0], rate)
    return round(float(gain_db), 3)


def build_package(
    generated: Generated,
    out: Path,
    seed: int,
    checkpoints: str,
    max_captions: int | None,
    loudness_lufs: float | None,
    reference_variant: str,
) -> dict[str, Any]:
    """Write the package under `out` (the report's `listening/`); returns its summary for the report."""
    systems = listening_systems(generated, checkpoints, reference_variant)
    rng = np.random.default_rng(stable_int("report-listening", seed) % 2**32)
    captions = sorted({cid for s in systems for cid, clip in s.clips.items() if clip.path is not None})
    if max_captions is not None and len(captions) > max_captions:
        captions = sorted(rng.choice(captions, size=max_captions, replace=False).tolist())
    order = [captions[i] for i in rng.permutation(len(captions))]
    clips_dir = out / RATER_DIR / CLIPS_DIR
    clips_dir.mkdir(parents=True)
    items: list[Item] = []
    used: set[str] = set()
    for trial, caption_id in enumerate(order, 1):
        present = [s for s in systems if caption_id in s.clips and s.clips[caption_id].path is not None]
        for position, index in enumerate(rng.permutation(len(present)), 1):
            system = present[index]
            clip = system.clips[caption_id]
            item = f"{int(rng.integers(0, 2**32)):08x}"
            while item in used:
                item = f"{int(rng.integers(0, 2**32)):08x}"
            used.add(item)
            assert clip.path is not None
            gain = _normalised_copy(clip.path, clips_dir / f"{item}.wav", loudness_lufs)
            anchor = system.run == REFERENCE_RUN
            items.append(
                Item(
                    item, trial, position, system.name, "anchor" if anchor else "generated", system.run,
                    system.step, system.variant, caption_id, clip.caption, str(clip.path), gain,
                )
            )  # fmt: skip
    form_id = f"{stable_int('report-listening-form', seed, *[i.item for i in items]) % 2**32:08x}"
    write_text(out / RATER_DIR / "index.html", render_form(items, form_id))
    key = {
        "form_id": form_id,
        "seed": seed,
        "loudness_lufs": loudness_lufs,
        "systems": [s.name for s in systems],
        "items": [asdict(i) for i in items],
    }
    write_json(out / "answer_key.json", key)
    write_text(out / "answer_key.csv", _csv([asdict(i) for i in items]))
    write_text(out / "README.md", _readme(len(items), len(order), systems, loudness_lufs))
    return {
        "form": f"{RATER_DIR}/index.html",
        "form_id": form_id,
        "n_items": len(items),
        "n_trials": len(order),
        "systems": [s.name for s in systems],
    }


def _csv(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]) if rows else ["item"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _readme(n_items: int, n_trials: int, systems: list[System], lufs: float | None) -> str:
    level = f"gain-normalised to {lufs} LUFS (BS.1770)" if lufs is not None else "as generated (no loudness gain)"
    listed = "\n".join(f"- {s.name}" for s in systems)
    return f"""# Listening test

{n_items} clips in {n_trials} trials (one per caption), {level}. Systems (their names are only in the key):

{listed}

1. Give raters the folder `{RATER_DIR}/` only (zip it): `{RATER_DIR}/index.html` plays the clips in a shuffled order
   and asks, for each, overall quality (OVL) and relevance to the caption (REL) on 1-5.
2. Raters press "Download CSV" (or JSON) and send the file back.
3. Join the answers with `answer_key.csv` on the column `item` to get each rating's system.

`answer_key.json` and `answer_key.csv` are never linked from the form; keep them away from raters.
"""


FORM_SCRIPT = """
const FORM = document.body.dataset.form;
const STORE = 'ssmttm-listening-' + FORM;
function answers() {
  const rows = [];
  document.querySelectorAll('.item').forEach(el => {
    const get = q => { const c = el.querySelector('input[name="' + q + '-' + el.dataset.item + '"]:checked');
                       return c ? Number(c.value) : null; };
    rows.push({trial: Number(el.dataset.trial), item: el.dataset.item, ovl: get('ovl'), rel: get('rel')});
  });
  return rows;
}
function save() {
  localStorage.setItem(STORE, JSON.stringify({rater: document.getElementById('rater').value, answers: answers()}));
  const done = answers().filter(r => r.ovl !== null && r.rel !== null).length;
  document.getElementById('progress').textContent = done + ' of ' + answers().length + ' clips rated';
}
function restore() {
  let state = null;
  try { state = JSON.parse(localStorage.getItem(STORE)); } catch (e) { state = null; }
  if (state) {
    document.getElementById('rater').value = state.rater || '';
    (state.answers || []).forEach(r => ['ovl', 'rel'].forEach(q => {
      if (r[q] === null) return;
      const c = document.querySelector('input[name="' + q + '-' + r.item + '"][value="' + r[q] + '"]');
      if (c) c.checked = true;
    }));
  }
  save();
}
function download(name, text, type) {
  const a = document.createElement('a');
  a.href = URL.createObjectURL(new Blob([text], {type: type}));
  a.download = name;
  document.body.appendChild(a); a.click(); a.remove();
}
function rater() { return document.getElementById('rater').value.trim() || 'anonymous'; }
function exportCsv() {
  const quote = v => '"' + String(v === null ? '' : v).replace(/"/g, '""') + '"';
  const lines = ['form,rater,trial,item,ovl,rel'];
  answers().forEach(r => lines.push([FORM, rater(), r.trial, r.item, r.ovl, r.rel].map(quote).join(',')));
  download('ratings-' + FORM + '-' + rater() + '.csv', lines.join('\\n') + '\\n', 'text/csv');
}
function exportJson() {
  const data = {form: FORM, rater: rater(), exported: new Date().toISOString(), answers: answers()};
  download('ratings-' + FORM + '-' + rater() + '.json', JSON.stringify(data, null, 1), 'application/json');
}
document.addEventListener('change', save);
document.getElementById('rater').addEventListener('input', save);
document.getElementById('export-csv').addEventListener('click', exportCsv);
document.getElementById('export-json').addEventListener('click', exportJson);
restore();
"""

FORM_CSS = """
body { font: 15px/1.5 system-ui, sans-serif; max-width: 900px; margin: 0 auto; padding: 1em 2em; color: #222; }
.trial { border-top: 2px solid #999; margin-top: 1.5em; padding-top: .5em; }
.caption { font-style: italic; font-size: 1.05em; }
.item { display: grid; grid-template-columns: 5em 280px 1fr; gap: .6em; align-items: center; padding: .4em 0;
        border-bottom: 1px solid #eee; }
fieldset { border: none; margin: 0; padding: 0; } legend { font-size: 12px; color: #555; padding: 0; }
label { margin-right: .7em; white-space: nowrap; } .bar { position: sticky; top: 0; background: #fff;
padding: .5em 0; border-bottom: 1px solid #ccc; } audio { width: 280px; }
"""


def _scale(question: str, item: str) -> str:
    title, labels = SCALE[question]
    options = "".join(
        f'<label><input type="radio" name="{question}-{item}" value="{v}"> {v} <small>{esc(t)}</small></label>'
        for v, t in enumerate(labels, 1)
    )
    return f"<fieldset><legend>{esc(title)} ({question.upper()})</legend>{options}</fieldset>"


def render_form(items: list[Item], form_id: str) -> str:
    trials: dict[int, list[Item]] = {}
    for item in items:
        trials.setdefault(item.trial, []).append(item)
    blocks = []
    for trial, members in sorted(trials.items()):
        rows = "".join(
            f'<div class="item" data-item="{esc(i.item)}" data-trial="{trial}"><b>Clip {i.position}</b>'
            f'<audio controls preload="metadata" src="{CLIPS_DIR}/{esc(i.item)}.wav"></audio>'
            f"<div>{_scale('ovl', i.item)}{_scale('rel', i.item)}</div></div>"
            for i in sorted(members, key=lambda m: m.position)
        )
        caption = f'<p class="caption">“{esc(members[0].caption)}”</p>'
        blocks.append(f'<section class="trial"><h2>Trial {trial}</h2>{caption}{rows}</section>')
    scales = "".join(
        f"<li><b>{esc(title)} ({q.upper()})</b>: " + ", ".join(f"{v} = {esc(t)}" for v, t in enumerate(labels, 1))
        + "</li>"
        for q, (title, labels) in SCALE.items()
    )  # fmt: skip
    body = f"""<h1>Listening test</h1>
<p>Each trial shows a text and several music clips made for it, in a random order. Listen to every clip (headphones,
a quiet room, the same volume throughout), then rate it on two questions:</p>
<ul>{scales}</ul>
<p>Relevance is about the text only; quality is about the sound only. Your answers stay in this browser until you
download them.</p>
<div class="bar"><label>Rater name or ID: <input id="rater" type="text" autocomplete="off"></label>
<button id="export-csv" type="button">Download CSV</button> <button id="export-json" type="button">Download JSON
</button> <span id="progress"></span></div>
{"".join(blocks)}"""
    shell = page("Listening test", body, css=FORM_CSS, script=FORM_SCRIPT)
    return shell.replace("<body>", f'<body data-form="{esc(form_id)}">', 1)
