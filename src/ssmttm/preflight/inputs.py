"""Check 2: the files a profile names as inputs exist and parse: the MTG-Jamendo TAR checksum list (every archive
the corpus needs must be listed), a user manifest, a caption file to import, the evaluation caption CSV.
"""

from __future__ import annotations

from ssmttm.errors import UserFacingError
from ssmttm.preflight.context import Context
from ssmttm.preflight.report import FAIL, PASS, Check

GROUP = "inputs"
MTG_ARCHIVES = 100  # raw_30s audio is split into 100 TARs (PAPER.md section 1)


def input_checks(ctx: Context) -> list[Check]:
    source = ctx.get("corpus.source", "demo")
    checks = []
    if source == "mtg_jamendo":
        checks.append(checksum_list_check(ctx))
    if source in ("demo", "manifest", "musiccaps"):
        checks.append(corpus_rows_check(ctx, source))
    if ctx.get("caption.mode") == "import":
        checks.append(file_check(ctx, "caption.import_path", "caption file to import"))
    if ctx.get("generate.captions") in ("musiccaps", "file"):
        checks.append(file_check(ctx, "generate.captions_path", "evaluation caption file"))
    return checks


def archive_indices(ctx: Context) -> list[int]:
    """The TAR indices the corpus reads: corpus.mtg_jamendo.tar_indices, or all of them."""
    chosen = ctx.get("corpus.mtg_jamendo.tar_indices")
    return sorted(set(chosen)) if chosen else list(range(MTG_ARCHIVES))


def checksum_list_check(ctx: Context) -> Check:
    from ssmttm.corpus.manifest import MtgJamendoConfig
    from ssmttm.corpus.mtg_jamendo import load_sha256_list, tar_name

    setting = "corpus.mtg_jamendo.tar_sha256_path"
    value = ctx.get(setting, MtgJamendoConfig.tar_sha256_path)
    path = ctx.path(value)
    fix = (
        f"set {setting} to the list `<sha256>  <name>` per line (the MTG-Jamendo repository's "
        "data/download/raw_30s_audio_sha256_tars.txt; relative paths are from the project root)"
    )
    try:
        sums = load_sha256_list(path)
    except UserFacingError as exc:
        return Check(GROUP, setting, FAIL, str(exc), fix)
    template = ctx.get("corpus.mtg_jamendo.tar_url_template", MtgJamendoConfig.tar_url_template)
    needed = [tar_name(template.format(index=i)) for i in archive_indices(ctx)]
    unlisted = [name for name in needed if name not in sums]
    if unlisted:
        shown = ", ".join(unlisted[:3]) + (f" and {len(unlisted) - 3} more" if len(unlisted) > 3 else "")
        return Check(GROUP, setting, FAIL, f"{path} lists no sha256 for {shown}", fix)
    return Check(GROUP, setting, PASS, f"{path}: {len(sums)} checksums, all {len(needed)} archives used are listed")


def corpus_rows_check(ctx: Context, source: str) -> Check:
    setting = {"demo": "corpus.source", "manifest": "corpus.manifest_path", "musiccaps": "corpus.musiccaps.csv_path"}
    rows = ctx.corpus_rows
    if isinstance(rows, UserFacingError):
        return Check(GROUP, setting[source], FAIL, str(rows), "fix the file (or the setting) named in the message")
    return Check(GROUP, setting[source], PASS, f"{len(rows or [])} tracks in the {source} corpus")


def file_check(ctx: Context, setting: str, what: str) -> Check:
    value = ctx.get(setting)
    if not value:
        return Check(GROUP, setting, FAIL, f"not set, but the profile needs a {what}", f"set {setting}")
    path = ctx.path(value)
    if not path.is_file():
        return Check(GROUP, setting, FAIL, f"{what} {path} not found", f"create it, or fix {setting}")
    return Check(GROUP, setting, PASS, f"{what} {path} ({path.stat().st_size:,} bytes)")
