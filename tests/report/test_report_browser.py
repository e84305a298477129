"""The report in a real headless browser (Debian's Chromium via playwright): audio and images load, the table is
there, the page reads top down (summary first, no horizontal overflow, not-computed sentences collapsed, a
spectrogram beside every player, the prompt grid), the listening form exports its answers; a demo-sized report
builds well within the time limit.

The browser tests are skipped when /usr/bin/chromium (or $SSMTTM_CHROMIUM) or playwright is missing. Set
SSMTTM_REPORT_SCREENSHOT to a path to keep the screenshot (for the README, run `python -m ssmttm.report.browser
results/report/index.html --screenshot PATH` on the demo's report).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import time

import pytest

from ssmttm.report import browser
from ssmttm.report.stage import ReportConfig, build_report
from tests.report import _fixtures as fx

needs_browser = pytest.mark.skipif(
    not browser.chromium_available(),
    reason=f"{browser.CHROMIUM} not found: apt-get install -y --no-install-recommends chromium "
    "(scripts/setup_env.sh does it when run as root)",
)

BUILD_LIMIT_S = 30.0  # CPU seconds: the demo's report stage must stay well under this
# a run description with no place to break: the runs table is wider than any page and must scroll in its own box
WIDE_DESCRIPTION = "trained_on_" + "_".join(f"a_very_long_folder_name_{i}" for i in range(40))
VIEWPORT = {"width": 1280, "height": 900}


@pytest.fixture(scope="module")
def demo_sized(tmp_path_factory):
    """A report of 12 sets (2 backbones x 2 steps x 2 variants, 4 reference variants) x 8 captions of 3 s; one run's
    description makes the runs table far wider than the page."""
    root = tmp_path_factory.mktemp("browser")
    inputs = fx.write_all(root, n_captions=8, seconds=3.0)
    params = fx.params(
        prefix_simba={"backbone": "prefix_simba", "description": WIDE_DESCRIPTION},
        cross_transformer={"backbone": "cross_transformer"},
    )
    # CPU seconds of this process, not wall time: a busy machine (other tests, other work) must not fail the test
    start = time.process_time()
    build_report(
        inputs["generated"], inputs["evaluate"], root / "report", ReportConfig(), 1234,
        runs=inputs["runs"], lm_plot=inputs["lm_plot"], codec=inputs["codec"], params=params,
    )  # fmt: skip
    return root / "report", time.process_time() - start


@pytest.fixture(scope="module")
def context(tmp_path_factory):
    pytest.importorskip("playwright.sync_api", reason="playwright not installed: pip install -e '.[dev]'")
    driver, context = browser.launch(tmp_path_factory.mktemp("chromium-profile"))
    yield context
    browser.close(driver, context)


def test_demo_sized_report_builds_fast(demo_sized):
    _, seconds = demo_sized
    assert seconds < BUILD_LIMIT_S / 3, f"the report took {seconds:.1f} CPU s"


@needs_browser
def test_every_audio_and_image_loads_and_the_table_is_there(demo_sized, context, tmp_path):
    report, _ = demo_sized
    page = browser.open_page(context, report / "index.html")
    found = browser.inspect(page)
    assert found["audio"] == 8 * 12 - 1  # one generated clip failed
    assert found["audio_failed"] == []
    assert found["images"] == 2 + found["audio"] and found["images_failed"] == []  # figures, a spectrogram per clip
    assert found["tables"] >= 4
    table = page.locator("#table ~ div table").first
    assert table.is_visible() and "92.6" in table.inner_text()  # the paper's value beside ours
    page.close()


PAGE_FACTS = """() => {
  const h2 = Array.from(document.querySelectorAll('h2'));
  const summary = document.querySelector('section#summary');
  const boxes = Array.from(document.querySelectorAll('div.scroll'));
  const players = Array.from(document.querySelectorAll('audio')).map(a => {
    const img = a.parentElement.querySelector(':scope > img.spectrogram');
    return {src: a.getAttribute('src'), picture: img ? img.getAttribute('src') : null,
            loaded: !!img && img.complete && img.naturalWidth > 0};
  });
  const empty = Array.from(document.querySelectorAll('ul.sentences li'))
    .filter(li => li.textContent.includes('neither value was computed'))
    .map(li => { const d = li.closest('details'); return {collapsed: !!d && !d.open, visible: li.checkVisibility(),
                                                          box: d ? d.className : null}; });
  const grid = document.querySelector('table.prompt-grid');
  return {
    firstHeading: h2[0].id || h2[0].textContent, summaryInside: summary.contains(h2[0]),
    summaryAboveAll: h2.slice(1).every(h => h.getBoundingClientRect().top > summary.getBoundingClientRect().bottom),
    summaryItems: Array.from(summary.querySelectorAll('li')).map(li => li.textContent),
    pageWidth: document.documentElement.scrollWidth, viewWidth: window.innerWidth,
    widestBox: Math.max(...boxes.map(b => b.scrollWidth - b.clientWidth)),
    players: players, empty: empty,
    gridColumns: grid ? Array.from(grid.querySelectorAll('thead th')).slice(1).map(th => th.textContent) : null,
    gridRows: grid ? Array.from(grid.querySelectorAll('tbody tr')).map(tr => tr.querySelectorAll('td').length) : null,
    gridPlayers: grid ? grid.querySelectorAll('tbody td audio').length : 0,
    height: document.documentElement.scrollHeight,
  };
}"""


@needs_browser
def test_report_reads_top_down(demo_sized, context, tmp_path):
    """Summary first, no horizontal overflow, sentences without values collapsed, a spectrogram beside every player,
    and the prompt grid: one row per prompt, one column per system."""
    report, _ = demo_sized
    page = browser.open_page(context, report / "index.html")
    page.set_viewport_size(VIEWPORT)
    facts = page.evaluate(PAGE_FACTS)
    page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
    assert (tmp_path / "report.png").stat().st_size > 10_000

    assert facts["firstHeading"] == "Summary" and facts["summaryInside"] and facts["summaryAboveAll"]
    ran, headline, missing = facts["summaryItems"]
    assert ran.startswith("What ran: 2 system(s)") and "prefix_simba" in ran and "8 prompts" in ran
    # the last step's first paper metric with values; then every sentence's verdict
    assert headline.startswith(
        "Headline: Every run and baseline: reversed: FD OpenL3 (stable-audio-metrics) at step 40000"
    )
    assert "20 cannot tell (16 of them not computed)" in headline
    assert (
        missing.startswith("Not computed: ") and "kl_passt_sam" in missing and "fd_mfcc" in missing
    )  # fd_mfcc: no set
    assert "to enable: set evaluate.models.<model>.weights_path for passt" in missing

    assert facts["widestBox"] > 1000, "the deliberately wide runs table should overflow its own box"
    assert facts["pageWidth"] <= facts["viewWidth"], f"the page scrolls sideways: {facts['pageWidth']} px"

    players = facts["players"]
    assert len(players) == 8 * 12 - 1  # every clip once (one generation failed)
    assert [p for p in players if not p["loaded"]] == []
    assert all(p["picture"].startswith("spectrograms/") and p["picture"].endswith(".png") for p in players)

    assert len(facts["empty"]) >= 2  # KL PaSST (stable-audio-metrics): neither value, at both steps
    assert all(e["collapsed"] and not e["visible"] and e["box"] == "not-computed" for e in facts["empty"])

    assert facts["gridColumns"] == [
        "reference (original clip)",
        "codec reconstruction (all codebooks)",
        "cross_transformer · step 40000 · two_stage",
        "prefix_simba · step 40000 · two_stage",
    ]
    assert facts["gridRows"] == [4] * 8 and facts["gridPlayers"] == 4 * 8
    if os.environ.get("SSMTTM_REPORT_SCREENSHOT"):
        shutil.copyfile(tmp_path / "report.png", os.environ["SSMTTM_REPORT_SCREENSHOT"])
    page.close()


@needs_browser
def test_listening_form_plays_and_exports_answers(demo_sized, context):
    report, _ = demo_sized
    key = json.loads((report / "listening/answer_key.json").read_text())
    page = browser.open_page(context, report / "listening/rater/index.html")
    found = browser.inspect(page)
    assert found["audio"] == len(key["items"]) and found["audio_failed"] == []
    first = key["items"][0]["item"]
    assert key["items"][0]["trial"] == 1 and key["items"][0]["position"] == 1
    page.check(f'input[name="ovl-{first}"][value="4"]')
    page.check(f'input[name="rel-{first}"][value="2"]')
    page.fill("#rater", "tester")
    assert page.inner_text("#progress").startswith("1 of ")
    with page.expect_download() as download:
        page.click("#export-csv")
    rows = list(csv.DictReader(open(download.value.path(), encoding="utf-8")))
    assert len(rows) == len(key["items"])
    assert rows[0] == {"form": key["form_id"], "rater": "tester", "trial": "1", "item": first, "ovl": "4", "rel": "2"}
    assert all(r["ovl"] == "" for r in rows[1:])
    with page.expect_download() as download:
        page.click("#export-json")
    exported = json.loads(open(download.value.path(), encoding="utf-8").read())
    assert exported["form"] == key["form_id"] and exported["answers"][0]["ovl"] == 4
    page.reload()  # answers survive a reload (kept in the browser's storage)
    page.wait_for_function(browser.LOADED)
    assert page.is_checked(f'input[name="ovl-{first}"][value="4"]')
    page.close()
