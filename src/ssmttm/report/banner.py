"""The banner at the top of the report when any number on the page comes from stand-in weights (ssmttm.stand_ins)."""

from __future__ import annotations

from collections.abc import Mapping

from ssmttm.report.html import esc
from ssmttm.stand_ins import NOT_A_RESULT


def stand_in_banner(parts: Mapping[str, str]) -> str:
    """A red box naming every stand-in part upstream of the page (model -> STANDIN.txt text); "" when none."""
    if not parts:
        return ""
    items = "".join(f"<li><b>{esc(name)}</b>: {esc(text.splitlines()[0])}</li>" for name, text in parts.items())
    return (
        '<div id="stand-in-banner" style="border:3px solid #b00;background:#fee;padding:0.6em 1em;margin:0 0 1em">'
        f"<p><b>STAND-IN WEIGHTS: every number, figure and clip on this page was {esc(NOT_A_RESULT)}.</b> "
        "These parts used random stand-ins (scripts/standins/), not the real pretrained models:</p>"
        f"<ul>{items}</ul></div>"
    )
