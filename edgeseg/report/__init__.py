"""Self-contained HTML reports of edgeseg's proofs: one file each, readable offline and from file://.

``export`` writes report.html into the bundle; ``eval --report FILE.html`` and ``verify --report
FILE.html`` write one too. Images are embedded as data: URIs, charts are inline SVG, and there is no
script or font: no matplotlib and no torch, so a Jetson writes the same page (``verify --report``).
"""

from edgeseg.report.html import Page, write_report
from edgeseg.report.proofs import (Legend, VerifiedModel, WorstImage, check_report_name, eval_page, export_page, fidelity_page,
                                   verify_page, worst_image)  # fmt: skip

__all__ = ["Legend", "Page", "VerifiedModel", "WorstImage", "check_report_name", "eval_page", "export_page", "fidelity_page",
           "verify_page", "worst_image", "write_report"]
