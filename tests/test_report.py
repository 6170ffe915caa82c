"""The HTML reports of export, eval and verify: real exports and CLI runs, the pages opened from
file:// in a real headless Chromium with no network."""

from __future__ import annotations

import base64
import json
import re
import shutil
from html.parser import HTMLParser

import cv2
import numpy as np
import pytest

import browser as chromium
from conftest import assert_one_line_error, run_cli
from edgeseg.report.html import percent, points

pytestmark = pytest.mark.slow


class Tables(HTMLParser):
    """Every table's cells as text (by aria-label), and every <img>'s src."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.images: list[str] = []
        self._table: list[list[str]] | None = None
        self._cell: list[str] | None = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self._table = self.tables.setdefault(attrs.get("aria-label", f"table{len(self.tables)}"), [])
        elif tag == "tr" and self._table is not None:
            self._table.append([])
        elif tag in ("td", "th") and self._table is not None:
            self._cell = []
        elif tag == "img":
            self.images.append(attrs["src"])

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None and self._table is not None:
            self._table[-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def _rows(page: Tables, label: str) -> dict[str, list[str]]:
    """A table's rows by their first cell."""
    return {row[0]: row[1:] for row in page.tables[label] if row}


def _decodes(src: str) -> bool:
    assert src.startswith("data:image/"), src[:40]
    data = base64.b64decode(src.split(",", 1)[1])
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) is not None


def test_export_writes_a_report_that_holds_export_and_fidelity_json(int8_bundle):
    report = int8_bundle / "report.html"
    page = Tables(report.read_text())
    manifest = json.loads((int8_bundle / "export.json").read_text())
    fidelity = json.loads((int8_bundle / "fidelity.json").read_text())
    model = _rows(page, "model")
    assert model["checkpoint sha256"] == [manifest["checkpoint_sha256"]] and model["input size (H x W)"] == ["96 x 128"]
    assert model["MACs"] == [f"{manifest['complexity']['macs'] / 1e9:.2f} G"]
    assert model["parameters"] == [f"{manifest['complexity']['params'] / 1e6:.2f} M"]
    precisions = _rows(page, "precisions")
    assert list(precisions) == ["model", "model.fp32.onnx", "model.fp16.onnx", "model.int8.qdq.onnx", "model.int8.qdq.fp16.onnx", "model.int8.onnx"]
    for entry in fidelity["models"]:
        row = precisions[entry["model"]]
        precision = row[0]
        bar = manifest["thresholds"][precision]["min_agreement"]
        assert row[1:3] == [percent(entry["miou"]), points(entry["miou_delta"])], entry["model"]
        assert row[4:7] == [percent(entry["pixel_agreement"], 3), f"≥ {percent(bar)}",
                            "passed" if entry["pixel_agreement"] >= bar else "FAILED"]  # fmt: skip
        worst = min((v, k) for k, v in entry["class_iou_delta"].items() if v is not None)
        assert row[3] == f"{worst[1]} {points(worst[0])}"
    deltas = _rows(page, "per-class IoU change")
    reference = fidelity["models"][0]["reference_metrics"]["per_class"]
    for name in manifest["classes"]:
        assert deltas[name] == [percent(reference[name]["iou"])] + [points(m["class_iou_delta"][name]) for m in fidelity["models"]]
    matrix = np.array(fidelity["models"][-1]["confusion_matrix"])
    assert matrix.shape == (11, 11) and matrix.sum() == fidelity["models"][-1]["model_metrics"]["num_pixels"]
    text = report.read_text()
    assert text.count("<rect") > 11 * 11 and "Confusion matrix: model.int8.onnx" in text
    assert len(page.images) == 4 * 2 * 4  # FP16 and the three INT8 models, 2 images each: input, reference, deployed, difference
    assert all(_decodes(src) for src in page.images)
    assert not re.search(r"(src|href)=\"(?!data:)", text) and "<script" not in text  # nothing to fetch, nothing to run


def test_export_report_in_chromium_from_file_with_no_network(browser, int8_bundle, tmp_path):
    report = shutil.copy(int8_bundle / "report.html", tmp_path / "report.html")  # alone: nothing beside it is needed
    browser.get(report.as_uri())
    assert browser.title.startswith("edgeseg export")
    decoded = browser.execute_script("return [...document.images].map(i => i.complete && i.naturalWidth > 0)")
    assert len(decoded) == 4 * 2 * 4 and all(decoded)
    assert browser.execute_script("return document.querySelectorAll('svg').length") == 2
    page = chromium.screenshot(browser)
    cv2.imwrite(str(tmp_path / "report.png"), page)
    assert chromium.not_blank(page)
    assert chromium.console_errors(browser) == []
    requested = chromium.requested_urls(browser)
    assert requested and all(url.startswith(("file://", "data:")) for url in requested), requested


def test_report_shows_bench_results_put_in_the_bundle(int8_bundle, camvid, tmp_path):
    """``bench`` writes bench-<time>.json into the bundle by default; the export page and ``verify --report`` show it."""
    from edgeseg.data import resolve_dataset
    from edgeseg.report import Legend, export_page

    bundle = shutil.copytree(int8_bundle, tmp_path / "bundle")
    done = run_cli("bench", bundle / "model.fp32.onnx", bundle / "model.int8.onnx", "--iters", "3", "--warmup", "1",
                   "--threads", "1")  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    [written] = bundle.glob("bench-*.json")
    results = json.loads(written.read_text())["results"]
    expected = [f"{r['latency_ms']['mean']:.2f}" for r in results]
    spec = resolve_dataset(f"camvid:{camvid}")
    latency = _rows(Tables(export_page(bundle, Legend(spec.classes, spec.palette)).render()), "latency")
    assert [latency[r["model"].split("/")[-1]][4] for r in results] == expected
    verified = run_cli("verify", bundle / "model.int8.onnx", "--threads", "1", "--report", tmp_path / "verify.html")
    assert verified.returncode == 0, verified.stderr[-2000:]
    latency = _rows(Tables((tmp_path / "verify.html").read_text()), "latency")
    assert [latency[r["model"].split("/")[-1]][4] for r in results] == expected


def test_verify_report(int8_bundle, browser, tmp_path):
    path = tmp_path / "verify.html"
    done = run_cli("verify", int8_bundle / "model.int8.onnx", "--threads", "1", "--json", tmp_path / "v.json", "--report", path)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((tmp_path / "v.json").read_text())
    page = Tables(path.read_text())
    rows = _rows(page, "verify")
    assert rows["pixel agreement %"] == [percent(result["agreement"], 3)] and rows["verdict"] == ["passed"]
    ious = _rows(page, "per-class IoU vs reference")
    assert all(ious[name][0] == percent(iou) for name, iou in result["class_iou_vs_reference"].items())
    assert len(page.images) == 3 * 4 and all(_decodes(src) for src in page.images)
    browser.get(path.as_uri())
    assert all(browser.execute_script("return [...document.images].map(i => i.naturalWidth > 0)"))
    assert chromium.console_errors(browser) == []
    again = run_cli("verify", int8_bundle / "model.int8.onnx", "--report", path)
    assert_one_line_error(again, f"--report {path}", "file exists", "--exist-ok")
    assert run_cli("verify", int8_bundle / "model.int8.onnx", "--report", path, "--exist-ok").returncode == 0


def test_eval_report_one_and_several_splits(video_model, camvid, tmp_path):
    path = tmp_path / "eval.html"
    done = run_cli("eval", video_model, "--data", f"camvid:{camvid}", "--split", "val,heldout", "--limit", "2",
                   "--json", tmp_path / "eval.json", "--report", path)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((tmp_path / "eval.json").read_text())
    page = Tables(path.read_text())
    scores = _rows(page, "scores")
    for split in ("val", "heldout"):
        assert scores[split] == [str(result["splits"][split]["num_images"]), percent(result["splits"][split]["miou"]),
                                 percent(result["splits"][split]["pixel_accuracy"]), percent(result["splits"][split]["mean_accuracy"])]  # fmt: skip
        matrix = np.array(result["splits"][split]["confusion_matrix"])
        assert matrix.shape == (11, 11) and matrix.sum() == result["splits"][split]["num_pixels"]
    assert path.read_text().count("Confusion matrix: ") == 2


def test_eval_against_a_reference_shows_the_worst_images(video_model, small_checkpoint, camvid, tmp_path):
    path = tmp_path / "fidelity.html"
    done = run_cli("eval", video_model, "--data", f"camvid:{camvid}", "--split", "val", "--limit", "3", "--reference",
                   small_checkpoint, "--worst", "2", "--report", path)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    page = Tables(path.read_text())
    assert len(page.images) == 2 * 4 and all(_decodes(src) for src in page.images)
    assert str(video_model) in _rows(page, "fidelity")


def test_report_paths_are_checked_before_any_work(video_model, camvid, tmp_path):
    data = f"camvid:{camvid}"
    assert_one_line_error(run_cli("eval", video_model, "--data", data, "--report", tmp_path / "r.json"), "--report", ".html")
    both = tmp_path / "same.html"
    assert_one_line_error(run_cli("eval", video_model, "--data", data, "--json", both, "--report", both),
                          f"--report {both}", "--json", "same file")  # fmt: skip
    (tmp_path / "folder.html").mkdir()
    assert_one_line_error(run_cli("eval", video_model, "--data", data, "--report", tmp_path / "folder.html"), "--report")
