"""What each CLI command does, as plain functions (the CLI only parses and calls these)."""

from __future__ import annotations

from pathlib import Path

import importlib.util

from edgeseg.errors import EdgesegError
from edgeseg.fileio import Paths, prepare_output_dir, write_json
from edgeseg.images import list_images, read_image, write_image, write_label_png

PLOT_FILES = ("confusion_matrix.png", "per_class_iou.png")  # what eval draws into its plots folder


def plot_folder(plots: Path | None, json_path: Path | None) -> Path | None:
    """Where ``eval`` draws its plots: --plots, else beside --json; None for no plots.

    --plots without matplotlib is refused before any work; the default beside --json is left out,
    with a note, so that a machine without matplotlib (a device) still gets its --json.
    """
    if importlib.util.find_spec("matplotlib") is not None:
        return plots or (json_path.parent if json_path is not None else None)
    if plots is not None:
        raise EdgesegError(f"--plots {plots}: drawing the plots needs matplotlib, which is not installed; "
                           "pip install matplotlib, or leave --plots out")  # fmt: skip
    if json_path is not None:
        print("note: no plots beside --json: matplotlib is not installed (pip install matplotlib)")
    return None


def eval_outputs(json_path: Path | None, plots: Path | None, folder: Path | None, splits: tuple[str, ...],
                 worst_folder: Path | None) -> dict[str, Paths]:  # fmt: skip
    """Every file ``eval`` writes, by the flag that names it, for ``fileio.check_outputs``."""
    folders = [folder / name for name in splits] if folder is not None and len(splits) > 1 else [folder]
    plot_files = [f / name for f in folders if f is not None for name in PLOT_FILES]
    return {"--json": json_path, "--plots" if plots is not None else "--plots (beside --json)": plot_files,
            "--json (worst images)": worst_folder}  # fmt: skip


def worst_folder(model: Path, json_path: Path | None, worst: int) -> Path | None:
    """The folder of ``eval --reference``'s most different images: beside --json."""
    return json_path.parent / f"{Path(model).name}.worst" if worst > 0 and json_path is not None else None


def run_eval(
    model: Path,
    data: str,
    split: str,
    json_path: Path | None,
    plots: Path | None,
    backend: str = "auto",
    device: str | None = None,
    limit: int | None = None,
    report_path: Path | None = None,
) -> dict:
    from edgeseg.data import SegmentationData, resolve_dataset
    from edgeseg.evaluate import evaluate
    from edgeseg.metrics import format_table
    from edgeseg.runtime import Segmenter

    dataset = SegmentationData(resolve_dataset(data), split)
    with Segmenter.load(model, backend=backend, device=device) as segmenter:
        result = evaluate(segmenter, dataset, limit=limit)
    report = {"model": str(model), "dataset": dataset.spec.name, "split": split, **result.to_dict(),
              "confusion_matrix": result.confusion.matrix.tolist()}  # fmt: skip
    print(f"{model} on {dataset.spec.name} {split} ({result.num_images} images)")
    print(format_table(result.metrics, result.class_names))
    if plots is not None:
        _save_eval_plots(result, Path(plots), f"{_short(model)} on {dataset.spec.name} {split}")
    if json_path is not None:
        write_json(json_path, report)
        print(f"metrics: {json_path}")
    _write_eval_report(report_path, report, dataset.spec)
    return report


def run_eval_splits(
    model: Path,
    data: str,
    splits: tuple[str, ...],
    json_path: Path | None,
    plots: Path | None,
    backend: str = "auto",
    device: str | None = None,
    limit: int | None = None,
    report_path: Path | None = None,
) -> dict:
    """``eval --split a,b``: each split's table, then a summary row per split; --json holds the reports by split.
    ``plots``: the folder that gets a subfolder of plots per split (None: no plots)."""
    from edgeseg.data import SegmentationData, resolve_dataset

    if len(set(splits)) < len(splits):
        raise EdgesegError(f"--split {','.join(splits)}: names a split twice; list each once")
    spec = resolve_dataset(data)
    for name in splits:
        SegmentationData(spec, name, check=False)  # an unknown or empty split fails here, before any model runs
    reports = {}
    for name in splits:
        folder = None if plots is None else Path(plots) / name
        reports[name] = run_eval(model, data, name, None, folder, backend, device, limit)
        print()
    width = max(len("split"), *(len(name) for name in splits))
    print(f"{'split':<{width}}  {'images':>6}  {'mIoU %':>7}  {'pixel acc %':>11}  {'mean acc %':>10}")
    for name, report in reports.items():
        scores = [_percent(report[key]) for key in ("miou", "pixel_accuracy", "mean_accuracy")]
        print(f"{name:<{width}}  {report['num_images']:>6}  {scores[0]:>7}  {scores[1]:>11}  {scores[2]:>10}")
    combined = {"model": str(model), "dataset": spec.name, "splits": reports}
    if json_path is not None:
        write_json(json_path, combined)
        print(f"metrics: {json_path}")
    _write_eval_report(report_path, combined, spec)
    return combined


def _short(model: Path) -> str:
    """The model's file and folder, e.g. reference/best.pt: a plot's title, where best.pt alone says little."""
    return "/".join(Path(model).absolute().parts[-2:])


def _write_eval_report(path: Path | None, report: dict, spec) -> None:
    """``eval --report``: the scores, per-class IoU and confusion matrix of each split on one page."""
    if path is None:
        return
    import numpy as np

    from edgeseg.report import Legend, eval_page, write_report

    splits = report.get("splits") or {report["split"]: report}
    confusions = {name: np.array(split["confusion_matrix"]) for name, split in splits.items()}
    write_report(path, eval_page(report, Legend(spec.classes, spec.palette), confusions))
    print(f"report: {path}")


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}"


def run_fidelity(
    model: Path,
    reference: Path,
    data: str,
    split: str,
    json_path: Path | None,
    backend: str = "auto",
    device: str | None = None,
    limit: int | None = None,
    worst: int = 4,
    report_path: Path | None = None,
) -> dict:
    """``eval MODEL --reference REF``: both against ground truth, and MODEL against REF's predictions."""
    from edgeseg.data import SegmentationData, resolve_dataset
    from edgeseg.fidelity import compare_to_reference, format_fidelity, reference_predictions, save_worst_images, worst_pictures
    from edgeseg.runtime import Segmenter

    dataset = SegmentationData(resolve_dataset(data), split)
    with Segmenter.load(reference, device=device) as ref_model:
        ref = reference_predictions(ref_model, dataset, str(reference), limit)
    with Segmenter.load(model, backend=backend, device=device) as deployed:
        result = compare_to_reference(deployed, ref, dataset, str(model), worst)
        images = []
        folder = worst_folder(model, json_path, worst)
        if folder is not None:  # the pictures go beside the report
            for old in folder.glob("worst_*.jpg") if folder.is_dir() else ():  # --exist-ok: never mixed with new ones
                old.unlink()
            images = save_worst_images(result, deployed, ref, dataset, folder)
        pictures = worst_pictures(result, deployed, ref, dataset) if report_path is not None else []
    class_names = tuple(dataset.spec.classes)
    print(f"{model} against {reference} on {dataset.spec.name} {split} ({result.num_images} images)")
    print(format_fidelity([result], class_names))
    report = {"dataset": dataset.spec.name, "split": split, **result.to_dict(class_names),
              "worst_images": [str(p) for p in images]}  # fmt: skip
    if images:
        print(f"most different images (image | reference | model | difference): {images[0].parent}")
    if json_path is not None:
        write_json(json_path, report)
        print(f"fidelity: {json_path}")
    if report_path is not None:
        from edgeseg.report import Legend, fidelity_page, write_report

        write_report(report_path, fidelity_page(report, Legend(dataset.spec.classes, dataset.spec.palette), pictures))
        print(f"report: {report_path}")
    return report


def _save_eval_plots(result, folder: Path, subject: str) -> None:
    """``subject`` (model, data set and split) titles each plot."""
    from edgeseg.plots import save_confusion_matrix, save_iou_bars

    confusion, iou = (folder / name for name in PLOT_FILES)
    folder.mkdir(parents=True, exist_ok=True)
    save_confusion_matrix(result.confusion.matrix, result.class_names, confusion, subject)
    save_iou_bars(result.metrics.iou, result.class_names, iou, subject)
    print(f"plots: {confusion}, {iou}")


def run_predict(
    model: Path,
    source: str,
    out: Path,
    alpha: float = 0.5,
    backend: str = "auto",
    device: str | None = None,
    exist_ok: bool = False,
    side_by_side: bool = False,
) -> list[Path]:
    from edgeseg.runtime import Segmenter, visualize
    from edgeseg.runtime.preprocess import to_bgr8

    images = list_images(source)
    written = []
    with Segmenter.load(model, backend=backend, device=device) as segmenter:
        prepare_output_dir(out, exist_ok, flag="--out")
        meta = segmenter.meta
        for path in images:
            image = read_image(path)
            labels = segmenter.segment(image)
            written.append(write_label_png(out / f"{path.stem}.png", labels, meta.palette))
            overlay = segmenter.overlay(image, labels, alpha)
            visualize.draw_legend(overlay, labels, meta.classes, segmenter.lut_bgr)
            written.append(write_image(out / f"{path.stem}_overlay.jpg", overlay))
            if side_by_side:
                panel = visualize.side_by_side(to_bgr8(image), segmenter.colorize(labels))
                visualize.draw_legend(panel, labels, meta.classes, segmenter.lut_bgr)
                written.append(write_image(out / f"{path.stem}_side.jpg", panel))
    print(f"{len(images)} images segmented into {out}")
    return written


def run_import_seed(
    checkpoint: Path, num_classes: int, out: Path, data: str | None, img_size: tuple[int, int], output_stride: int
) -> Path:
    from edgeseg.checkpoint import import_seed

    options: dict = {}
    if data is not None:
        from edgeseg.data import resolve_dataset

        spec = resolve_dataset(data)
        if spec.num_classes != num_classes:
            raise EdgesegError(
                f"--data {data}: has {spec.num_classes} classes but --num-classes is {num_classes}; make them agree"
            )
        options = {"classes": tuple(spec.classes), "palette": tuple(spec.palette), "ignore_index": spec.ignore_index}
    path = import_seed(checkpoint, num_classes, out, input_size=tuple(img_size), output_stride=output_stride, **options)
    print(f"edgeseg checkpoint: {path}")
    return path
