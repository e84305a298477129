"""The report stage on synthetic inputs: the page, the comparisons and their sentences, the listening package, the
summaries; the paper's matrix of named runs through the CLI."""

from __future__ import annotations

import csv
import json
import re
from html import escape as html_escape

import numpy as np
import pytest
import soundfile as sf
import yaml

from ssmttm.errors import UserFacingError
from ssmttm.report.paper import HEADLINES, Member, compare, paper_ordering
from ssmttm.report.stage import ReportConfig, build_report
from tests.report import _fixtures as fx


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    inputs = fx.write_all(root)
    out = root / "report"
    result = build_report(
        inputs["generated"], inputs["evaluate"], out, ReportConfig(), 1234,
        runs=inputs["runs"], lm_plot=inputs["lm_plot"], codec=inputs["codec"], params=fx.params(),
    )  # fmt: skip
    return {"root": root, "inputs": inputs, "out": out, "result": result, "html": (out / "index.html").read_text()}


# ----------------------------------------------------------------------------------------------- paper ordering


PAPER_PAIR = ("prefix_simba", "cross_transformer")


def test_paper_ordering_at_its_steps_and_by_majority():
    assert paper_ordering("fd_openl3_sam", 20_000, "lower", PAPER_PAIR).winner == "prefix_simba"  # 92.6 < 99.9
    assert paper_ordering("fd_openl3_sam", 40_000, "lower", PAPER_PAIR).winner == "cross_transformer"  # 86.9 < 89.9
    majority = paper_ordering("fd_openl3_sam", 150, "lower", PAPER_PAIR)  # not a paper step: 2 of 3 shared steps
    assert majority.winner == "prefix_simba" and "2 of the paper's 3" in majority.basis
    assert paper_ordering("kl_passt_sam", 150, "lower", PAPER_PAIR).winner == "prefix_simba"
    assert paper_ordering("clap_score_sam", 150, "higher", PAPER_PAIR).winner == "prefix_simba"
    assert paper_ordering("fd_openl3_sam", None, "lower", PAPER_PAIR).winner == "prefix_simba"  # a baseline's step


def _entry(value, low, high, status="ok"):
    return {"status": status, "value": value, "ci": [low, high], "n": 20, "better": "lower", "warning": "N = 3 < 10"}


FD = next(h for h in HEADLINES if h.metric == "fd_openl3_sam")
MEL = next(h for h in HEADLINES if h.metric == "fd_mel")


def _pair(a, b):
    return [Member("prefix_simba", "prefix_simba", a), Member("cross_transformer", "cross_transformer", b)]


@pytest.mark.parametrize(
    ("a", "b", "verdict", "phrase"),
    [
        (_entry(80, 78, 82), _entry(95, 93, 97), "holds", "holds; the 95% intervals do not overlap"),
        (_entry(99, 97, 101), _entry(80, 78, 82), "reversed", "is reversed: cross_transformer is better here"),
        (_entry(80, 70, 90), _entry(85, 75, 95), "cannot tell", "overlap; the point estimates favour prefix_simba"),
        (_entry(80, 78, 82, "unreliable"), _entry(95, 93, 97), "cannot tell", "prefix_simba's value is flagged"),
        ({"status": "not computed", "reason": "no weights"}, _entry(95, 93, 97), "cannot tell", "(no weights)"),
    ],
)
def test_comparison_verdicts(a, b, verdict, phrase):
    comparison = compare(FD, 20_000, _pair(a, b))
    assert comparison.verdict == verdict
    assert phrase in comparison.sentence()


def test_n_system_comparison_names_the_best_and_why_it_is_not_sure():
    """Three systems: the best is sure only when its interval overlaps no other's; else the overlapping ones are
    named. The paper's pair inside a larger comparison keeps its own verdict, and the best of all is said too."""
    a, b, c = _entry(80, 79, 81), _entry(90, 89, 91), _entry(70, 69, 71)
    three = [Member("a", None, a), Member("b", None, b), Member("c", None, c)]
    sure = compare(MEL, 20_000, three)
    assert (sure.verdict, sure.winner) == ("better", "c")
    assert "c is the best of 3; its 95% interval overlaps no other" in sure.sentence()
    close = compare(MEL, 20_000, [*three[:2], Member("c", None, _entry(79.5, 78.5, 80.5))])
    assert close.verdict == "cannot tell" and close.favoured == "c" and close.winner is None
    assert "cannot tell which of the 3 systems is best: the 95% intervals of c and a overlap" in close.sentence()
    missing = compare(MEL, 20_000, [*three[:2], Member("c", None, {"status": "not computed", "reason": "no weights"})])
    assert missing.verdict == "cannot tell" and "c's value was not computed (no weights)" in missing.sentence()
    with_paper = compare(FD, 20_000, [*_pair(a, b), Member("small", None, c)])
    assert with_paper.verdict == "holds" and with_paper.winner == "prefix_simba"  # the paper's pair: 80 < 90
    assert "Best of all 3: small; its interval overlaps no other." in with_paper.sentence()


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


def test_page_reads_top_down_without_a_browser(built):
    """The summary precedes every section; sentences without values sit in one collapsed block; every player has its
    spectrogram beside it; the prompt grid has a column per system (the browser test checks the layout)."""
    html = built["html"]
    assert html.index('<section id="summary">') < html.index('id="comparisons"') < html.index('id="audio"')
    assert html.index('<section id="summary">') == html.index("<h2") - len('<section id="summary">')
    collapsed = html[html.index('<details class="not-computed">') :]
    assert html.count("neither value was computed") == collapsed[: collapsed.index("</details>")].count(
        "neither value was computed"
    )
    players = re.findall(
        r'<figure class="player">(?:<figcaption>[^<]*</figcaption>)?(<audio[^>]*></audio>)?(<img[^>]*>)?', html
    )
    assert players and all(audio and 'class="spectrogram" src="spectrograms/' in img for audio, img in players if audio)
    grid = html[html.index('<table class="prompt-grid" data-systems="4">') :]
    grid = grid[: grid.index("</table>")]
    assert grid.count("<tr>") == 1 + 3 and grid.count("<audio") == 4 * 3  # header + 3 prompts; 4 systems each


def test_table_shows_paper_values_beside_ours_and_flags(built):
    html = built["html"]
    assert 'id="table"' in html
    for paper_value in ("92.6", "99.9", "71.9", "1.55", "0.198"):  # PAPER.md 8
        assert f"<td>{paper_value}</td>" in html
    table = html[html.index('id="table"') : html.index("Other variants and the references")]
    row = next(r for r in table.split("<tr>") if r.startswith("<td>prefix_simba</td><td>prefix_simba</td><td>20000"))
    assert '<span class="v">80</span>' in row and "<td>92.6</td>" in row  # our FD (stable-audio-metrics), the paper's
    assert html.count('class="paper-only"') == 3  # the paper's 100k of both, 400k of cross_transformer; not 20k/40k
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
    full = built["html"][built["html"].index('id="all-metrics"') :]
    assert "<td><code>fd_openl3_sam</code></td><td>stable-audio-metrics</td>" in full
    assert "<td><code>fd_openl3</code></td><td>audiocraft</td>" in full  # kept, labelled with its family
    assert "<td><code>fd_mel</code></td><td>ssmttm</td>" in full


def test_default_comparison_sentences(built):
    """Without report.comparisons: one comparison of every run; the paper's systems are the runs at its size."""
    (comparison,) = json.loads((built["out"] / "comparisons.json").read_text())
    assert comparison["title"] == "Every run and baseline" and comparison["schedule_warning"] is None
    assert [s["paper_system"] for s in comparison["systems"]] == ["prefix_simba", "cross_transformer"]
    sentences = {(c["metric"], c["step"]): c for c in comparison["sentences"]}
    assert sentences[("fd_openl3_sam", 20_000)]["verdict"] == "holds"
    assert sentences[("fd_openl3_sam", 40_000)]["verdict"] == "reversed"
    assert sentences[("kl_passt_sam", 20_000)]["verdict"] == "cannot tell"
    assert "neither value was computed" in sentences[("kl_passt_sam", 20_000)]["sentence"]
    assert sentences[("clap_score_sam", 20_000)]["verdict"] == "cannot tell"
    assert "both values are flagged unreliable" in sentences[("clap_score_sam", 20_000)]["sentence"]
    # the audiocraft FD is never held against the paper's numbers: a plain "better"
    assert sentences[("fd_openl3", 20_000)]["paper"] is None
    assert sentences[("fd_openl3", 20_000)]["verdict"] == "better"
    assert sentences[("fd_openl3", 20_000)]["winner"] == "cross_transformer"
    assert sentences[("fd_mel", 20_000)]["verdict"] == "cannot tell"
    assert sentences[("fd_chroma", 20_000)]["verdict"] == "better"
    assert sentences[("fd_chroma", 20_000)]["winner"] == "prefix_simba"
    assert sentences[("fd_chroma", 20_000)]["values"]["prefix_simba"]["value"] == 1.0
    assert built["result"]["ordering"] == {"holds": 1, "reversed": 1, "better": 4, "cannot_tell": 20}
    assert built["result"]["comparisons"]["Every run and baseline"]["same_lr_schedule"] is True
    assert "holds</b>: FD OpenL3 (stable-audio-metrics) at step 20000" in built["html"]


def test_paper_values_follow_backbone_and_size_not_the_run_name(tmp_path, built):
    """The same clips and metrics, but the run named prefix_simba has 6 blocks and `ssm` is the 24-block one:
    the paper's prefix_simba is `ssm`; a stand-in declared in report.paper_stand_ins is marked as one."""
    inputs = built["inputs"]
    small = fx.params(
        prefix_simba={"backbone": "prefix_simba", "lm": {"n_layers": 6}},
        cross_transformer={"backbone": "cross_transformer"},
    )
    build_report(inputs["generated"], inputs["evaluate"], tmp_path / "small", ReportConfig(), 1234, params=small)
    (comparison,) = json.loads((tmp_path / "small/comparisons.json").read_text())
    assert [s["paper_system"] for s in comparison["systems"]] == [None, "cross_transformer"]
    fd = next(c for c in comparison["sentences"] if (c["metric"], c["step"]) == ("fd_openl3_sam", 20_000))
    assert fd["paper"] is None and fd["verdict"] == "better"  # one paper system only: no paper ordering to test
    html = (tmp_path / "small/index.html").read_text()
    assert "<td>prefix_simba</td><td>—</td><td>20000</td>" in html  # not the paper's prefix_simba: no paper value
    assert "6 blocks x 1024, 1 codebook(s)" in html

    cfg = ReportConfig(paper_stand_ins={"prefix_simba": "prefix_simba"})
    build_report(inputs["generated"], inputs["evaluate"], tmp_path / "stand_in", cfg, 1234, params=small)
    (comparison,) = json.loads((tmp_path / "stand_in/comparisons.json").read_text())
    assert comparison["systems"][0]["paper_system"] == "prefix_simba" and comparison["systems"][0]["stand_in"]
    assert "stands in for the paper&#x27;s prefix_simba" in (tmp_path / "stand_in/index.html").read_text()
    fd = next(c for c in comparison["sentences"] if (c["metric"], c["step"]) == ("fd_openl3_sam", 20_000))
    assert fd["verdict"] == "holds"  # the stand-in's ordering is tested, and the sentence says what it is
    assert "prefix_simba (ours: prefix_simba, a stand-in at another size) better" in fd["sentence"]
    # a run that is no longer of the stand-in's kind (an experiment swapped its backbone) is just a run: the report
    # still builds, says nothing about the paper's system for it, and the log says why
    mismatched = ReportConfig(paper_stand_ins={"prefix_simba": "cross_transformer"})
    build_report(inputs["generated"], inputs["evaluate"], tmp_path / "mismatch", mismatched, 1234, params=small)
    (comparison,) = json.loads((tmp_path / "mismatch/comparisons.json").read_text())
    assert comparison["systems"][0]["paper_system"] is None and not comparison["systems"][0]["stand_in"]


def test_dvc_summaries(built):
    out, result = built["out"], built["result"]
    assert json.loads((out / "metrics.json").read_text()) == result
    first = result["sets"]["prefix_simba/step-0020000/two_stage"]
    assert first["fd_openl3_sam"] == {"value": 80.0, "ci_low": 78.0, "ci_high": 82.0, "status": "ok"}
    assert first["kl_passt_sam"]["status"] == "not computed" and first["kl_passt_sam"]["value"] is None
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


# The demo's report section: its two tiny runs compared, standing in for the paper's 24-block systems.
DEMO_REPORT = {
    "comparisons": [{"title": "SSM against Transformer", "systems": ["prefix_simba", "cross_transformer"],
                     "claim": "SSM backbones beat the Transformer at the same steps"}],
    "paper_stand_ins": {"prefix_simba": "prefix_simba", "cross_transformer": "cross_transformer"},
}  # fmt: skip


@pytest.mark.parametrize(
    ("report", "printed"),
    [
        # without comparisons or stand-ins: one comparison of every run; the demo's runs are tiny, so neither is
        # the paper's system and no paper ordering is tested
        ({}, "1 comparison(s): 6 better, 20 cannot_tell"),
        (DEMO_REPORT, "1 comparison(s): 1 holds, 1 reversed, 4 better, 20 cannot_tell"),
    ],
)
def test_cli(tmp_path, built, repo_root, capsys, report, printed):
    from ssmttm.cli import main

    params = yaml.safe_load((repo_root / "params.yaml").read_text())
    params["runs"] = {name: {"backbone": name} for name in fx.BACKBONES}
    params["report"] = {**{k: v for k, v in params["report"].items() if k not in DEMO_REPORT}, **report}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    inputs = built["inputs"]
    argv = ["report", "--params", str(tmp_path / "params.yaml"), "--evaluate", str(inputs["evaluate"])]
    argv += ["--generated", *map(str, inputs["generated"]), "--out", str(tmp_path / "report")]
    argv += ["--codec", str(inputs["codec"])]
    assert main(argv) == 0
    assert printed in capsys.readouterr().out
    assert (tmp_path / "report/index.html").is_file()


@pytest.fixture(scope="module")
def matrix(tmp_path_factory, repo_root):
    """The paper's matrix of comparisons, built through the CLI from a params file (tests/report/_fixtures.py)."""
    from ssmttm.cli import main

    root = tmp_path_factory.mktemp("matrix")
    inputs = fx.write_matrix(root, repo_root / "params.yaml")
    argv = ["report", "--params", str(inputs["params"]), "--evaluate", str(inputs["evaluate"]), "--out",
            str(root / "report"), "--generated", *map(str, inputs["generated"])]  # fmt: skip
    assert main(argv) == 0
    records = json.loads((root / "report/comparisons.json").read_text())
    return {
        "by_title": {r["title"]: r for r in records},
        "titles": [r["title"] for r in records],
        "html": (root / "report/index.html").read_text(),
        "metrics": json.loads((root / "report/metrics.json").read_text()),
    }


def _sentence(record, metric, step):
    return next(c for c in record["sentences"] if (c["metric"], c["step"]) == (metric, step))


def test_matrix_lays_out_every_named_comparison(matrix):
    assert matrix["titles"] == [c["title"] for c in fx.MATRIX_COMPARISONS]
    assert matrix["html"].count('<h3 id="comparison-') == len(fx.MATRIX_COMPARISONS)
    assert "Claim: <i>SSM backbones beat the Transformer at the same steps</i>" in matrix["html"]


def test_matrix_n_systems_absent_run_and_paper_mapping(matrix):
    record = matrix["by_title"]["SSM against Transformer"]
    systems = {s["system"]: s for s in record["systems"]}
    # prefix_mamba is declared in params but has no set: shown as not run, left out of the sentences
    assert "params define this run but the evaluate stage has no set of it" in systems["prefix_mamba"]["not_run"]
    assert "prefix_mamba" not in _sentence(record, "fd_openl3_sam", 20_000)["values"]
    assert matrix["metrics"]["comparisons"]["SSM against Transformer"]["not_run"] == 1
    assert '<span class="nc">not run</span>: params define this run' in matrix["html"]
    # the paper's prefix_simba is the 24-block ssm_full, not the 6-block run named prefix_simba
    assert systems["ssm_full"]["paper_system"] == "prefix_simba" and systems["prefix_simba"]["paper_system"] is None
    at_20k, at_40k = _sentence(record, "fd_openl3_sam", 20_000), _sentence(record, "fd_openl3_sam", 40_000)
    assert (at_20k["verdict"], at_20k["winner"]) == ("holds", "ssm_full")  # 80 < 95; the paper: 92.6 < 99.9
    claim = "the paper's ordering (prefix_simba (ours: ssm_full) better, at 20k steps in the paper) holds"
    assert claim in at_20k["sentence"]
    assert at_40k["verdict"] == "reversed"  # 70 < 90, the paper has cross_transformer better at 40k
    assert at_20k["best_of_all"] == {"favoured": "ssm_full", "sure": True}
    assert "Best of all 3: ssm_full" in at_20k["sentence"]
    assert set(at_20k["values"]) == {"ssm_full", "prefix_simba", "cross_transformer"}


def test_matrix_warns_when_runs_followed_different_lr_schedules(matrix):
    record = matrix["by_title"]["SSM against Transformer"]
    warning = record["schedule_warning"]
    assert warning.startswith("Warning: these runs followed different learning-rate schedules")
    assert "; cross_transformer: as_written: lr " in warning and ", 500 warm-up steps, cosine to 0.005 x lr" in warning
    assert "T = max_steps = 400000" in warning and "T = max_steps = 100000" in warning
    assert matrix["metrics"]["comparisons"]["SSM against Transformer"]["same_lr_schedule"] is False
    assert matrix["by_title"]["Small against full size"]["schedule_warning"] is None
    assert '<p class="warn">Warning: these runs followed different learning-rate schedules' in matrix["html"]


def test_matrix_size_stage_and_variant_pairs(matrix):
    small = _sentence(matrix["by_title"]["Small against full size"], "fd_openl3_sam", 20_000)
    assert (small["verdict"], small["winner"], small["paper"]) == ("better", "ssm_full", None)
    stages = matrix["by_title"]["Single stage against two stage"]
    assert [(s["system"], s["variant"]) for s in stages["systems"]] == [
        ("single_stage_simba:single_stage", "single_stage"), ("ssm_full:two_stage", "two_stage"),
    ]  # fmt: skip
    assert _sentence(stages, "fd_openl3_sam", 40_000)["winner"] == "ssm_full:two_stage"
    assert "9 codebook(s)" in matrix["html"]


def test_matrix_baseline_without_steps_is_compared_at_every_step(matrix):
    record = matrix["by_title"]["Ours against MusicGen"]
    baseline = next(s for s in record["systems"] if s["system"] == "musicgen_small")
    assert baseline["variant"] == "pretrained" and baseline["steps"] == [] and baseline["kind"] == "baseline"
    assert record["steps"] == [20_000, 40_000]
    for step in record["steps"]:
        fd = _sentence(record, "fd_openl3_sam", step)
        assert fd["values"]["musicgen_small"]["value"] == fx.MATRIX_BASELINE_FD
        assert fd["best_of_all"] == {"favoured": "musicgen_small", "sure": True}
    assert "model card (MusicCaps): FAD_vggish 4.88" in matrix["html"]
    # a baseline whose weights are absent: not run, with generate's reason and the command that fetches them
    medium = next(s for s in record["systems"] if s["system"] == "musicgen_medium")
    assert medium["not_run"] == (
        "params define this baseline but the evaluate stage has no set of it; generate says: not computed: "
        f"{fx.NO_MUSICGEN}; to fetch the weights: hf download facebook/musicgen-medium"
    )


def test_matrix_unknown_system_is_not_run_not_skipped(matrix):
    record = matrix["by_title"]["A typo"]
    (ghost,) = [s for s in record["systems"] if s["system"] == "ghost"]
    assert ghost["not_run"] == "params define no run or baseline of this name and the evaluate stage has no set of it"
    assert record["problem"] == "1 of its 2 systems were run: nothing to compare." and record["sentences"] == []


def test_bad_comparisons_are_user_errors(tmp_path, built):
    inputs = built["inputs"]
    for comparisons, message in (
        ([{"title": "one", "systems": ["prefix_simba"]}], "name at least two systems"),
        ([{"title": "x", "systems": ["a", "b"]}, {"title": "x", "systems": ["a", "b"]}], "already titled 'x'"),
        ([{"title": "x", "systems": ["a:", "b"]}], "is not `run` or `run:variant`"),
    ):
        cfg = ReportConfig(comparisons=comparisons)
        with pytest.raises(UserFacingError, match=message):
            build_report(inputs["generated"], inputs["evaluate"], tmp_path / "out", cfg, 1234)
    assert not (tmp_path / "out").exists()


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


def test_a_pretrained_codec_has_no_held_out_scores_and_says_so(tmp_path):
    """The paper profile's codec is DAC 44 kHz as released: its folder has codec.json, not a trained metrics.json."""
    from ssmttm.report.inputs import read_codec
    from ssmttm.report.sections import codec_section

    folder = tmp_path / "codec"
    folder.mkdir()
    source = {"model_type": "44khz"}
    identity = {"model": "dac", "model_kwargs": {}, "n_codebooks": 9, "sample_rate": 44100, "source": source}
    (folder / "codec.json").write_text(json.dumps(identity))
    codec, file = read_codec(folder)
    assert codec == identity and file == str(folder / "codec.json")

    class NoReferenceSets:  # an evaluation without codec-floor sets
        def set_of(self, run, step, variant):
            return None

    html = codec_section(codec, NoReferenceSets(), None)
    assert "Pretrained codec (44khz, 9 codebooks at 44100 Hz)" in html
    (folder / "metrics.json").write_text(json.dumps({"heldout": {}}))
    assert read_codec(folder)[1] == str(folder / "metrics.json")  # a trained codec's held-out scores come first
    with pytest.raises(UserFacingError, match="neither metrics.json nor codec.json"):
        read_codec(tmp_path / "nowhere")
