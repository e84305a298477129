"""Stand-in weights are labelled in what is computed from them (ssmttm.stand_ins), with scripts/standins' own label.

The whole chain (every stage of the paper DAG on the stand-ins) is checked by scripts/paper_test/check.py in
`make paper-test`; here: detection beside a file and in a Hugging Face cache, a stage's provenance (the pretrained
codec, from scripts/standins/dac44.py), inheritance from an artifact to a clip folder inside it, the metric card and
the report's banner, and that check.py names an unlabelled output.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from scripts.paper_test import check
from scripts.standins import common, dac44
from ssmttm import stand_ins
from ssmttm.codec.pretrained import PretrainedConfig
from ssmttm.codec.stage import CodecConfig, run_codec
from ssmttm.evaluate.cards import render_markdown
from ssmttm.report.banner import stand_in_banner

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def dac_stand_in(tmp_path_factory) -> Path:
    """The pretrained-codec stand-in as make_all.py writes it: descript's file name, STANDIN.txt beside it."""
    folder = tmp_path_factory.mktemp("home") / dac44.CACHE_SUBDIR
    path = dac44.build_tiny_dac44(folder, seed=0)
    common.write_label(folder, "pretrained codec (codec.mode: pretrained)", "DAC 44 kHz 8 kbps 0.0.1")
    return path


def _pretrained(path: Path) -> CodecConfig:
    return CodecConfig(mode="pretrained", pretrained=PretrainedConfig(path=str(path)))


def test_a_codec_from_the_stand_in_says_so_and_one_from_real_weights_does_not(dac_stand_in, tmp_path):
    run_codec(_pretrained(dac_stand_in), [], tmp_path / "a", 0)
    record = json.loads((tmp_path / "a/provenance.json").read_text())
    assert record["stand_in"] is True
    (label,) = record["stand_ins"].values()
    assert label == (dac_stand_in.parent / "STANDIN.txt").read_text().strip()
    assert "Nothing computed from it is a result" in label

    unlabelled = tmp_path / "real" / dac_stand_in.name  # the same bytes without the label: as real weights look
    unlabelled.parent.mkdir()
    shutil.copyfile(dac_stand_in, unlabelled)
    run_codec(_pretrained(unlabelled), [], tmp_path / "b", 0)
    record = json.loads((tmp_path / "b/provenance.json").read_text())
    assert "stand_in" not in record and "stand_ins" not in record


def test_a_hugging_face_repo_id_is_looked_up_in_the_hub_cache(tmp_path):
    hub = tmp_path / "hf"
    with common.hf_snapshot(hub, "org/tiny-model") as snapshot:
        (snapshot / "config.json").write_text("{}")
        common.write_label(snapshot, "caption model", "a big model")
    with common.hf_snapshot(hub, "org/real-model") as snapshot:
        (snapshot / "config.json").write_text("{}")
    code = (
        "import json; from ssmttm.stand_ins import hf_label; "
        "print(json.dumps([hf_label(r) for r in ('org/tiny-model', 'org/real-model', 'org/absent', 'not a repo!')]))"
    )
    env = {"HF_HUB_CACHE": str(hub), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    tiny, real, absent, invalid = json.loads(out)
    assert tiny.startswith("RANDOM STAND-IN for plumbing tests: caption model.") and "a big model" in tiny
    assert real is None and absent is None and invalid is None
    # a local folder (from_pretrained's other form): its own label, or none
    assert stand_ins.hf_label(common.snapshot_path(hub, "org/tiny-model")).startswith("RANDOM STAND-IN")
    assert stand_ins.hf_label(str(snapshot)) is None


def test_a_clip_folder_inherits_its_runs_label_and_labels_merge(tmp_path):
    run = tmp_path / "results/generate/prefix_simba"
    (run / "step-0000004/two_stage").mkdir(parents=True)
    fields = stand_ins.provenance_fields({"codec.pretrained": "label A"}, {"caption.model": None})
    (run / "provenance.json").write_text(json.dumps({"stage": "generate", **fields}))
    assert stand_ins.of_artifact(run / "step-0000004/two_stage") == {"codec.pretrained": "label A"}
    other = tmp_path / "data/tokenize"
    other.mkdir(parents=True)
    (other / "_manifest.json").write_text(json.dumps(stand_ins.provenance_fields({"text encoder x": "label B"})))
    merged = stand_ins.inherited([run, other, tmp_path / "absent", None])
    assert merged == {"codec.pretrained": "label A", "text encoder x": "label B"}
    assert stand_ins.provenance_fields({"x": None}) == {} and stand_ins.card_fields({}) == {}


def test_the_metric_card_and_the_report_say_not_a_result():
    parts = {"evaluate network vggish": "RANDOM STAND-IN for plumbing tests: VGGish.\nmore"}
    card = {
        **stand_ins.card_fields(parts),
        "set": {"name": "prefix_simba/step-0000004/two_stage"},
        "reference": {},
        "common": {},
        "metrics": {},
    }
    text = render_markdown(card)
    assert stand_ins.NOT_A_RESULT in text and "evaluate network vggish" in text
    banner = stand_in_banner(parts)
    assert 'id="stand-in-banner"' in banner and "evaluate network vggish" in banner and "more" not in banner
    assert stand_in_banner({}) == ""


def _labelled(path: Path, **record) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))


def test_check_names_each_unlabelled_output_and_each_stand_in_no_output_names(tmp_path):
    every = {f"{part}x": "RANDOM STAND-IN" for part in check.STAND_IN_PARTS}
    fields = stand_ins.card_fields(every)
    _labelled(tmp_path / "data/fetch/shard-00000/provenance.json", stage="fetch")  # upstream of every model
    for name in ("data/segment/shard-00000/provenance.json", "data/tokenize/_manifest.json", *check.NUMBERS_FILES):
        _labelled(tmp_path / name, **fields)
    _labelled(tmp_path / "results/evaluate/cards/a.json", **fields)
    (tmp_path / "results/evaluate/cards/a.md").write_text(render_markdown({**fields, **_empty_card()}))
    (tmp_path / "results/report/index.html").write_text(stand_in_banner(every))
    assert check.stand_in_problems(tmp_path) == []

    _labelled(tmp_path / "results/train_lm/prefix_simba/provenance.json", stage="train_lm")
    (tmp_path / "results/evaluate/cards/a.md").write_text(render_markdown(_empty_card()))
    (tmp_path / "results/report/index.html").write_text("<h1>report</h1>")
    problems = check.stand_in_problems(tmp_path)
    assert problems == [
        "results/train_lm/prefix_simba/provenance.json: derived from stand-in weights but has no stand_in label",
        f"results/evaluate/cards/a.md: metric card without '{stand_ins.NOT_A_RESULT}'",
        "results/report/index.html: no stand-in banner",
    ]
    _labelled(tmp_path / "results/report/metrics.json", **stand_ins.card_fields({"codec.pretrained x": "label"}))
    _labelled(tmp_path / "results/evaluate/metrics.json", **stand_ins.card_fields({"codec.pretrained x": "label"}))
    for name in ("data/segment/shard-00000/provenance.json", "data/tokenize/_manifest.json"):
        _labelled(tmp_path / name, **stand_ins.card_fields({"codec.pretrained x": "label"}))
    _labelled(tmp_path / "results/evaluate/cards/a.json", **stand_ins.card_fields({"codec.pretrained x": "label"}))
    missing = [p for p in check.stand_in_problems(tmp_path) if p.startswith("no output names")]
    assert len(missing) == len(check.STAND_IN_PARTS) - 1 and "'caption.model...'" in " ".join(missing)


def _empty_card() -> dict:
    return {"set": {"name": "a"}, "reference": {}, "common": {}, "metrics": {}}
