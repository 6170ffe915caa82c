"""One self-contained HTML page: sections of tables, inline SVG and images embedded as data: URIs.

No script, no font, no stylesheet or image from anywhere else: the page's own Content-Security-Policy
forbids every request, so it reads the same from file://, offline, on a laptop or on the device.
Standard library and OpenCV only (a Jetson has both).
"""

from __future__ import annotations

import base64
import html
import time
from pathlib import Path
from typing import Any, List, Optional, Sequence

import numpy as np

from edgeseg import __version__
from edgeseg.core.fileio import write_bytes

POLICY = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"
STYLE = """
body { margin: 0 auto; max-width: 1200px; padding: 0 20px 40px; font: 14px/1.45 system-ui, sans-serif; color: #1d2127; }
header { border-bottom: 2px solid #2b6cb0; margin-bottom: 8px; }
h1 { font-size: 22px; margin: 18px 0 2px; } h2 { font-size: 17px; margin: 26px 0 8px; color: #2b6cb0; }
.sub { color: #5b6470; margin: 0 0 10px; }
table { border-collapse: collapse; margin: 6px 0 10px; }
th, td { padding: 3px 9px; border-bottom: 1px solid #e2e5e9; text-align: left; vertical-align: top; }
th { background: #f2f4f7; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.pass { color: #1f7a35; font-weight: 600; } .fail { color: #b42318; font-weight: 600; }
.swatch { display: inline-block; width: 12px; height: 12px; border: 1px solid #888; vertical-align: -1px; margin-right: 5px; }
.classes { display: flex; flex-wrap: wrap; gap: 4px 16px; margin: 6px 0; }
.worst { display: grid; grid-template-columns: repeat(4, 1fr); gap: 6px; margin: 4px 0 16px; }
.worst figure { margin: 0; } .worst img { width: 100%; height: auto; display: block; border: 1px solid #ccd; }
figcaption { font-size: 12px; color: #5b6470; }
svg { max-width: 100%; height: auto; font-family: system-ui, sans-serif; }
.note { color: #5b6470; font-size: 13px; }
"""


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def percent(value: Optional[float], digits: int = 2) -> str:
    """A fraction as a percentage; "-" for none."""
    return "-" if value is None else f"{100 * value:.{digits}f}"


def points(value: Optional[float]) -> str:
    """A difference of fractions in percentage points, signed; "-" for none."""
    return "-" if value is None else f"{100 * value:+.2f}"


def verdict(passed: Optional[bool]) -> str:
    if passed is None:
        return "-"
    return '<span class="pass">passed</span>' if passed else '<span class="fail">FAILED</span>'


def table(header: Sequence[str], rows: Sequence[Sequence[Any]], numeric: Sequence[int] = (), raw: Sequence[int] = (),
          label: str = "") -> str:  # fmt: skip
    """An HTML table; cells in columns ``numeric`` align right, cells in ``raw`` are HTML already."""
    head = "".join(f"<th>{esc(name)}</th>" for name in header)
    head = f"<thead><tr>{head}</tr></thead>" if any(header) else ""  # a table of name and value needs no header
    body = []
    for row in rows:
        cells = []
        for index, cell in enumerate(row):
            text = cell if index in raw else esc(cell)
            cells.append(f'<td class="num">{text}</td>' if index in numeric else f"<td>{text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    aria = f' aria-label="{esc(label)}"' if label else ""
    return f"<table{aria}>{head}<tbody>{''.join(body)}</tbody></table>"


def swatch(colour: str) -> str:
    return f'<span class="swatch" style="background:{esc(colour)}"></span>'


def class_legend(classes: Sequence[str], colours: Sequence[str]) -> str:
    items = "".join(f"<span>{swatch(c)}{i}&nbsp;{esc(name)} <span class=\"note\">{esc(c)}</span></span>"
                    for i, (name, c) in enumerate(zip(classes, colours)))  # fmt: skip
    return f'<div class="classes">{items}</div>'


def hex_colours(palette: Sequence[Sequence[int]]) -> List[str]:
    """RGB triples as #rrggbb."""
    return ["#%02x%02x%02x" % tuple(int(v) for v in rgb[:3]) for rgb in palette]


def image(picture: np.ndarray, alt: str, kind: str = "png") -> str:
    """An <img> holding ``picture`` (BGR or single-channel) as a data: URI; PNG for flat colours, JPEG for photos."""
    import cv2

    params = [cv2.IMWRITE_JPEG_QUALITY, 85] if kind == "jpeg" else [cv2.IMWRITE_PNG_COMPRESSION, 6]
    ok, encoded = cv2.imencode(".jpg" if kind == "jpeg" else ".png", picture, params)
    if not ok:
        raise ValueError(f"OpenCV could not encode the {alt} picture")
    data = base64.b64encode(encoded.tobytes()).decode()
    height, width = picture.shape[:2]
    return f'<img alt="{esc(alt)}" width="{width}" height="{height}" src="data:image/{kind};base64,{data}">'


class Page:
    """A report page: a title, then sections in the order they are added."""

    def __init__(self, title: str, subtitle: str = "") -> None:
        self.title, self.subtitle = title, subtitle
        self.sections: List[str] = []

    def add(self, heading: str, *parts: str) -> None:
        anchor = "".join(c if c.isalnum() else "-" for c in heading.lower()).strip("-")
        self.sections.append(f'<section id="{esc(anchor)}"><h2>{esc(heading)}</h2>{"".join(parts)}</section>')

    def render(self) -> str:
        made = time.strftime("%Y-%m-%d %H:%M:%S %Z")
        return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
                f'<meta http-equiv="Content-Security-Policy" content="{POLICY}">'
                f'<meta name="viewport" content="width=device-width, initial-scale=1">'
                f"<title>{esc(self.title)}</title><style>{STYLE}</style></head>\n<body><header><h1>{esc(self.title)}</h1>"
                f'<p class="sub">{esc(self.subtitle)}{" · " if self.subtitle else ""}made {esc(made)} by edgeseg {esc(__version__)}</p>'
                f"</header>\n" + "\n".join(self.sections) + "\n</body></html>\n")  # fmt: skip


def write_report(path: Path, page: Page) -> Path:
    """Write the page under a temporary name, then rename it to ``path``."""
    return write_bytes(path, page.render().encode())
