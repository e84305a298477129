"""Check 5: the fetch stage's sources answer from this machine.

MTG-Jamendo: the metadata and licence files and the first TAR the corpus reads. A manifest (user, MusicCaps): an
evenly spaced sample of its URLs; local ones (file:, pkg://) must exist, and need no network. HTTP URLs get a HEAD
request with a short timeout (a GET of one byte where a server refuses HEAD): no body is downloaded.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from typing import Any

from ssmttm.preflight.context import Context
from ssmttm.preflight.inputs import archive_indices
from ssmttm.preflight.report import FAIL, PASS, SKIP, Check

GROUP = "network"
HEAD_REFUSED = (403, 405, 501)  # servers that answer HEAD with these often serve GET
OFFLINE_HINT = (
    "check the URL and this node's internet access; compute nodes are often offline: run the fetch jobs where there "
    "is internet (a login or data-transfer node), or fetch there and copy data/fetch"
)


def probe_url(url: str, timeout_s: float) -> str | None:
    """None when `url` answers with a success status; otherwise why not. Reads no body."""
    from ssmttm.corpus.mtg_jamendo import USER_AGENT

    headers = {"User-Agent": USER_AGENT}
    try:
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers, method="HEAD"), timeout=timeout_s):
                return None
        except urllib.error.HTTPError as exc:
            if exc.code not in HEAD_REFUSED:
                raise
        ranged = urllib.request.Request(url, headers={**headers, "Range": "bytes=0-0"})
        with urllib.request.urlopen(ranged, timeout=timeout_s):
            return None
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code} {exc.reason}"
    except urllib.error.URLError as exc:
        return f"unreachable ({exc.reason})"
    except (TimeoutError, OSError) as exc:
        return f"unreachable ({type(exc).__name__}: {exc})"


def local_url_problem(url: str, ctx: Context) -> str | None:
    """None when a local URL (file:, file://, pkg://) names an existing non-empty file; otherwise why not."""
    from ssmttm.corpus.fetch import ItemError, check_local_file
    from ssmttm.corpus.urls import resolve_url
    from ssmttm.errors import UserFacingError

    try:
        check_local_file(resolve_url(url, ctx.root))
    except (ItemError, UserFacingError) as exc:
        return str(exc)
    return None


def network_checks(ctx: Context, enabled: bool = True, timeout_s: float = 10.0, sample: int = 5) -> list[Check]:
    source = ctx.get("corpus.source", "demo")
    if source == "mtg_jamendo":
        return mtg_checks(ctx, timeout_s) if enabled else [skipped("corpus.mtg_jamendo")]
    rows = ctx.corpus_rows
    if not isinstance(rows, list):
        return [Check(GROUP, "corpus", SKIP, "no manifest rows to sample (see the inputs check)")]
    check = url_sample_check(ctx, source, sample_rows(rows, sample), enabled, timeout_s)
    if source == "demo" and check.status == PASS:
        check.detail = "not needed: the embedded demo corpus is read from the installed wheel; " + check.detail
    return [check]


def skipped(name: str) -> Check:
    return Check(GROUP, name, SKIP, "skipped (--skip-network): the fetch stage's sources were not tried")


def mtg_checks(ctx: Context, timeout_s: float) -> list[Check]:
    from ssmttm.corpus.manifest import MtgJamendoConfig

    defaults = MtgJamendoConfig()
    template = ctx.get("corpus.mtg_jamendo.tar_url_template", defaults.tar_url_template)
    urls = {
        "corpus.mtg_jamendo.metadata_url": ctx.get("corpus.mtg_jamendo.metadata_url", defaults.metadata_url),
        "corpus.mtg_jamendo.licenses_url": ctx.get("corpus.mtg_jamendo.licenses_url", defaults.licenses_url),
        "corpus.mtg_jamendo.tar_url_template": template.format(index=archive_indices(ctx)[0]),
    }
    return [url_check(name, url, timeout_s) for name, url in urls.items()]


def url_check(name: str, url: str, timeout_s: float) -> Check:
    problem = probe_url(url, timeout_s)
    if problem:
        return Check(GROUP, name, FAIL, f"{url}: {problem}", OFFLINE_HINT)
    return Check(GROUP, name, PASS, f"{url} answers")


def sample_rows(rows: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    """`n` rows spread evenly over the list (its first and last included), so one bad region is likely seen."""
    if len(rows) <= n:
        return list(rows)
    step = (len(rows) - 1) / max(n - 1, 1)
    return [rows[round(i * step)] for i in range(n)]


def scheme_problem(url: str, allow_file_urls: bool) -> str | None:
    """The fetch stage's own refusal of a URL scheme (file: URLs need fetch.allow_file_urls), or None."""
    from ssmttm.corpus.fetch import ItemError, check_scheme

    try:
        check_scheme(url, allow_file_urls)
    except ItemError as exc:
        return str(exc)
    return None


def row_problem(ctx: Context, url: str, enabled: bool, timeout_s: float) -> tuple[str | None, str]:
    """(why the fetch stage would not get `url`, or None; how it was checked: "local", "remote" or "skipped")."""
    from ssmttm.corpus.urls import is_local

    refused = scheme_problem(url, bool(ctx.get("fetch.allow_file_urls", False)))
    if refused:
        return refused, "local" if is_local(url) else "remote"
    if is_local(url):
        return local_url_problem(url, ctx), "local"
    if not enabled:
        return None, "skipped"
    return probe_url(url, timeout_s), "remote"


def url_sample_check(ctx: Context, source: str, rows: list[dict[str, Any]], enabled: bool, timeout_s: float) -> Check:
    name = f"corpus.{source} URLs"
    problems, kinds = [], []
    for row in rows:
        problem, kind = row_problem(ctx, row["url"], enabled, timeout_s)
        kinds.append(kind)
        if problem:
            problems.append(f"{row['id']} ({row['url']}): {problem}")
    checked = f"{len(rows)} of the manifest's URLs sampled"
    if "skipped" in kinds:
        checked += f" ({kinds.count('skipped')} remote ones not tried: --skip-network)"
    if problems:
        fix = OFFLINE_HINT if "remote" in kinds else "fix the manifest's paths (or fetch.allow_file_urls)"
        return Check(GROUP, name, FAIL, f"{checked}; failing: " + "; ".join(problems), fix)
    remote = kinds.count("remote")
    where = f"{remote} over the network" if remote else "local files, no network needed"
    return Check(GROUP, name, PASS, f"{checked}, all reachable ({where})")
