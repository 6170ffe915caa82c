"""What each CLI command does, as plain functions (the CLI only parses and calls these)."""

from __future__ import annotations

from pathlib import Path

from edgeseg.errors import EdgesegError
from edgeseg.fileio import prepare_output_dir, write_json
from edgeseg.images import list_images, read_image, write_image


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
    if json_path is not None:
        write_json(json_path, report)
        print(f"metrics: {json_path}")
    plot_dir = plots or (json_path.parent if json_path is not None else None)
    if plot_dir is not None:
        _save_eval_plots(result, Path(plot_dir))
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
    """``eval --split a,b``: each split's table, then a summary row per split; --json holds the reports by split."""
    from edgeseg.data import SegmentationData, resolve_dataset

    if len(set(splits)) < len(splits):
        raise EdgesegError(f"--split {','.join(splits)}: names a split twice; list each once")
    spec = resolve_dataset(data)
    for name in splits:
        SegmentationData(spec, name, check=False)  # an unknown or empty split fails here, before any model runs
    plot_root = plots or (json_path.parent if json_path is not None else None)
    reports = {}
    for name in splits:
        folder = None if plot_root is None else Path(plot_root) / name
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
        if worst > 0 and json_path is not None:  # the pictures go beside the report
            folder = json_path.parent / f"{Path(model).name}.worst"
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


def _save_eval_plots(result, folder: Path) -> None:
    from edgeseg.plots import save_confusion_matrix, save_iou_bars

    folder.mkdir(parents=True, exist_ok=True)
    save_confusion_matrix(result.confusion.matrix, result.class_names, folder / "confusion_matrix.png")
    save_iou_bars(result.metrics.iou, result.class_names, folder / "per_class_iou.png")
    print(f"plots: {folder / 'confusion_matrix.png'}, {folder / 'per_class_iou.png'}")


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
        for path in images:
            image = read_image(path)
            labels = segmenter.segment(image)
            written.append(write_image(out / f"{path.stem}.png", labels))
            written.append(write_image(out / f"{path.stem}_overlay.jpg", segmenter.overlay(image, labels, alpha)))
            if side_by_side:
                panel = visualize.side_by_side(to_bgr8(image), segmenter.colorize(labels))
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
