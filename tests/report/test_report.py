"""The report stage on synthetic inputs: the page, the ordering sentences, the listening package, the summaries."""

from __future__ import annotations

import csv
import json
import re
from html import escape as html_escape

import numpy as np
import pytest
import soundfile as sf

from ssmttm.errors import UserFacingError
from ssmttm.report.paper import HEADLINES, compare, paper_ordering
from ssmttm.report.stage import ReportConfig, build_report
from tests.report import _fixtures as fx


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    inputs = fx.write_all(root)
    out = root / "report"
    result = build_report(
        inputs["generated"], inputs["evaluate"], out, ReportConfig(), 1234,
        runs=inputs["runs"], lm_plot=inputs["lm_plot"], codec=inputs["codec"],
    )  # fmt: skip
    return {"root": root, "inputs": inputs, "out": out, "result": result, "html": (out / "index.html").read_text()}


# ----------------------------------------------------------------------------------------------- paper ordering


def test_paper_ordering_at_its_steps_and_by_majority():
    assert paper_ordering("fd_openl3", 20_000, "lower").winner == "prefix_simba"  # 92.6 < 99.9
    assert paper_ordering("fd_openl3", 40_000, "lower").winner == "cross_transformer"  # 86.9 < 89.9
    majority = paper_ordering("fd_openl3", 150, "lower")  # not a paper step: 2 of 3 shared steps
    assert majority.winner == "prefix_simba" and "2 of the paper's 3" in majority.basis
    assert paper_ordering("kl_passt", 150, "lower").winner == "prefix_simba"
    assert paper_ordering("clap_score", 150, "higher").winner == "prefix_simba"


def _entry(value, low, high, status="ok"):
    return {"status": status, "value": value, "ci": [low, high], "n": 20, "better": "lower", "warning": "N = 3 < 10"}


FD = next(h for h in HEADLINES if h.metric == "fd_openl3")


@pytest.mark.parametrize(
    ("a", "b", "verdict", "phrase"),
    [
        (_entry(80, 78, 82), _entry(95, 93, 97), "holds", "holds; the 95% intervals do not overlap"),
        (_entry(99, 97, 101), _entry(80, 78, 82), "reversed", "is reversed: cross_transformer is better here"),
        (_entry(80, 70, 90), _entry(85, 75, 95), "cannot tell", "intervals overlap; the point estimates favour prefix"),
        (_entry(80, 78, 82, "unreliable"), _entry(95, 93, 97), "cannot tell", "prefix_simba's value is flagged"),
        ({"status": "not computed", "reason": "no weights"}, _entry(95, 93, 97), "cannot tell", "(no weights)"),
    ],
)
def test_comparison_verdicts(a, b, verdict, phrase):
    comparison = compare(FD, 20_000, a, b)
    assert comparison.verdict == verdict
    assert phrase in comparison.sentence()


# ----------------------------------------------------------------------------------------------- the page


def test_page_is_self_contained_and_every_link_resolves(built):
    html, out = built["html"], built["out"]
    assert "<style>" in html and '<link rel="stylesheet"' not in html
    sources = re.findall(r'(?:src|href)="([^"#]+)"', html)
    assert sources, "the page links nothing"
    for source in sources:
        assert not source.startswith(("/", "http:", "https:", "file:")), source
        assert (out / source).is_file(), f"{source} is linked but not in the report folder"
    audio = re.findall(r'<audio[^>]*src="([^"]+)"', html)
    # every caption: 4 reference variants + 2 backbones x 2 steps x 2 variants, less the one failed clip
    assert len(audio) == 3 * (4 + 8) - 1
    assert all(sf.info(str(out / a)).frames > 0 for a in audio)
    assert 'src="figures/metrics_vs_steps.png"' in html and 'src="figures/loss_curves.png"' in html


def test_table_shows_paper_values_beside_ours_and_flags(built):
    html = built["html"]
    assert 'id="table"' in html
    for paper_value in ("92.6", "99.9", "71.9", "1.55", "0.198"):  # PAPER.md 8
        assert f"<td>{paper_value}</td>" in html
    assert "⚠ N too small" in html and html_escape(fx.SMALL_N) in html  # the flag and its note, never a bare number
    assert html.count('class="nc">not computed') >= 8 and fx.NO_WEIGHTS in html
    assert "not_finite: NaN or infinite samples" in html  # the failed clip is listed
    assert "single_stage skipped" in html


def test_no_metric_of_the_evaluate_stage_is_hidden(built):
    evaluation = json.loads((built["inputs"]["evaluate"] / "metrics.json").read_text())
    names = set(evaluation["reference"]["metrics"])
    for entry in evaluation["sets"].values():
        names |= set(entry["metrics"])
        assert entry["card"].replace(".json", ".md") in built["html"]  # each set links its card
    for name in names:
        assert f"<code>{name}</code>" in built["html"], name


def test_ordering_sentences(built):
    comparisons = {(c["metric"], c["step"]): c for c in json.loads((built["out"] / "comparisons.json").read_text())}
    assert comparisons[("fd_openl3", 20_000)]["verdict"] == "holds"
    assert comparisons[("fd_openl3", 40_000)]["verdict"] == "reversed"
    assert comparisons[("kl_passt", 20_000)]["verdict"] == "cannot tell"
    assert "neither value was computed" in comparisons[("kl_passt", 20_000)]["sentence"]
    assert comparisons[("clap_score", 20_000)]["verdict"] == "cannot tell"
    assert comparisons[("fd_mel", 20_000)]["verdict"] == "cannot tell"
    assert comparisons[("fd_chroma", 20_000)] == {**comparisons[("fd_chroma", 20_000)], "verdict": "better",
                                                  "winner": "prefix_simba"}  # fmt: skip
    assert built["result"]["ordering"] == {"holds": 1, "reversed": 1, "better": 2, "cannot_tell": 16}
    assert "holds</b>: FD (OpenL3) at step 20000" in built["html"]


def test_dvc_summaries(built):
    out, result = built["out"], built["result"]
    assert json.loads((out / "metrics.json").read_text()) == result
    first = result["sets"]["prefix_simba/step-0020000/two_stage"]
    assert first["fd_openl3"] == {"value": 80.0, "ci_low": 78.0, "ci_high": 82.0, "status": "ok"}
    assert first["kl_passt"]["status"] == "not computed" and first["kl_passt"]["value"] is None
    assert result["sets"]["cross_transformer/step-0040000/codebook1_only"]["n_clips"] == 2
    rows = list(csv.DictReader((out / "plots/metrics_vs_steps.csv").open()))
    assert {r["metric"] for r in rows} == {h.metric for h in HEADLINES} and len(rows) == len(HEADLINES) * 8
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["stage"] == "report" and provenance["inputs"]["evaluate"]["sha256"]


# ----------------------------------------------------------------------------------------------- listening test


def test_listening_package(built):
    folder = built["out"] / "listening"
    key = json.loads((folder / "answer_key.json").read_text())
    items = key["items"]
    # last checkpoint of each backbone x 2 variants, plus the reference and codec anchors; one clip failed
    assert len(key["systems"]) == 6 and len(items) == 3 * 6 - 1
    clips = sorted(p.stem for p in (folder / "rater/clips").iterdir())
    assert clips == sorted(i["item"] for i in items)
    form = (folder / "rater/index.html").read_text()
    assert "answer_key" not in form and "prefix_simba" not in form and "reference" not in form.lower()
    assert form.count('type="radio"') == 2 * 5 * len(items)
    assert "Download CSV" in form and "Download JSON" in form
    for trial in {i["trial"] for i in items}:  # each trial: one caption, positions 1..n
        members = [i for i in items if i["trial"] == trial]
        assert len({i["caption_id"] for i in members}) == 1
        assert sorted(i["position"] for i in members) == list(range(1, len(members) + 1))
    anchor = next(i for i in items if i["system"] == "reference/original")
    samples, rate = sf.read(str(folder / "rater/clips" / f"{anchor['item']}.wav"))
    from ssmttm.evaluate.features import integrated_loudness

    assert abs(integrated_loudness(samples, rate) - (-23.0)) < 0.5 or np.max(np.abs(samples)) > 0.98
    assert 'href="listening/rater/index.html"' in built["html"] and 'href="listening/answer_key' not in built["html"]


def test_listening_package_is_seeded(tmp_path, built):
    inputs = built["inputs"]
    cfg = ReportConfig(listening_loudness_lufs=None, listening_max_captions=2)
    keys = []
    for seed, name in ((1234, "a"), (1234, "b"), (99, "c")):
        build_report(inputs["generated"], inputs["evaluate"], tmp_path / name, cfg, seed)
        keys.append(json.loads((tmp_path / name / "listening/answer_key.json").read_text()))
    assert keys[0] == keys[1]
    assert [i["item"] for i in keys[0]["items"]] != [i["item"] for i in keys[2]["items"]]
    assert len({i["caption_id"] for i in keys[0]["items"]}) == 2
    assert (tmp_path / "a/figures/metrics_vs_steps.png").read_bytes() == (
        tmp_path / "b/figures/metrics_vs_steps.png"
    ).read_bytes()
    assert "No training runs given" in (tmp_path / "a/index.html").read_text()


# ----------------------------------------------------------------------------------------------- errors and CLI


def test_missing_inputs_are_user_errors(tmp_path, built):
    with pytest.raises(UserFacingError, match="run `ssmttm evaluate` first"):
        build_report(built["inputs"]["generated"], tmp_path / "nowhere", tmp_path / "out", ReportConfig(), 0)
    with pytest.raises(UserFacingError, match="run `ssmttm generate` first"):
        (tmp_path / "empty").mkdir()
        build_report([tmp_path / "empty"], built["inputs"]["evaluate"], tmp_path / "out", ReportConfig(), 0)
    assert not (tmp_path / "out").exists()


def test_cli(tmp_path, built, repo_root, capsys):
    from ssmttm.cli import main

    inputs = built["inputs"]
    argv = ["report", "--params", str(repo_root / "params.yaml"), "--evaluate", str(inputs["evaluate"])]
    argv += ["--generated", *map(str, inputs["generated"]), "--out", str(tmp_path / "report")]
    argv += ["--codec", str(inputs["codec"])]
    assert main(argv) == 0
    assert "ordering: 1 holds, 1 reversed, 2 better, 16 cannot_tell" in capsys.readouterr().out
    assert (tmp_path / "report/index.html").is_file()


def test_report_reads_what_the_evaluate_stage_writes(tmp_path):
    """The contract with ssmttm.evaluate.stage: its real output, every set and metric on the page."""
    from ssmttm.evaluate.stage import EvaluateConfig, evaluate

    generate = fx.write_generate(tmp_path, n_captions=3, seconds=1.0)
    evaluation = evaluate(
        {b: generate / b for b in fx.BACKBONES}, generate / "reference", EvaluateConfig(bootstrap_resamples=20),
        tmp_path / "evaluate", 1234,
    )  # fmt: skip
    result = build_report([generate], tmp_path / "evaluate", tmp_path / "report", ReportConfig(), 1234)
    html = (tmp_path / "report/index.html").read_text()
    assert set(result["sets"]) == set(evaluation["sets"]) | {"reference/original"}
    for entry in evaluation["sets"].values():
        assert entry["card"].replace(".json", ".md") in html
        for metric, value in entry["metrics"].items():
            assert f"<code>{metric}</code>" in html
            if value["status"] == "not computed":
                assert html_escape(value["reason"]) in html
    assert html.count("⚠ N too small") > 10  # 3 clips < min_clips: flagged everywhere, never bare
    assert result["ordering"]["holds"] == result["ordering"]["reversed"] == 0  # nothing sure at N = 3
