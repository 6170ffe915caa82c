"""``edgeseg eval``'s work: a model scored on one split or several, or against a reference model, with its
tables, --json, plots and --report (the CLI only parses and calls these)."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, replace
from pathlib import Path

from edgeseg.core.errors import EdgesegError
from edgeseg.core.fileio import Paths, write_json

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


@dataclass(frozen=True)
class EvalJob:
    """What ``edgeseg eval`` scores, how it runs the model, and where its reports go (None: not written).
    ``plots`` is the folder the plots go into (``plot_folder``); with several splits, a subfolder each."""

    model: Path
    data: str
    split: str = "val"
    backend: str = "auto"
    device: str | None = None
    limit: int | None = None
    json_path: Path | None = None
    plots: Path | None = None
    report_path: Path | None = None


def run_eval(job: EvalJob) -> dict:
    """``eval``: the model on one split against its ground truth."""
    from edgeseg.core.metrics import format_table
    from edgeseg.data import SegmentationData, resolve_dataset
    from edgeseg.evaluate.scoring import evaluate
    from edgeseg.runtime import Segmenter

    dataset = SegmentationData(resolve_dataset(job.data), job.split)
    with Segmenter.load(job.model, backend=job.backend, device=job.device) as segmenter:
        result = evaluate(segmenter, dataset, limit=job.limit)
    report = {"model": str(job.model), "dataset": dataset.spec.name, "split": job.split, **result.to_dict(),
              "confusion_matrix": result.confusion.matrix.tolist()}  # fmt: skip
    print(f"{job.model} on {dataset.spec.name} {job.split} ({result.num_images} images)")
    print(format_table(result.metrics, result.class_names))
    if job.plots is not None:
        _save_eval_plots(result, Path(job.plots), f"{_short(job.model)} on {dataset.spec.name} {job.split}")
    if job.json_path is not None:
        write_json(job.json_path, report)
        print(f"metrics: {job.json_path}")
    _write_eval_report(job.report_path, report, dataset.spec)
    return report


def run_eval_splits(job: EvalJob, splits: tuple[str, ...]) -> dict:
    """``eval --split a,b``: each split's table, then a summary row per split; --json holds the reports by split."""
    from edgeseg.data import SegmentationData, resolve_dataset

    if len(set(splits)) < len(splits):
        raise EdgesegError(f"--split {','.join(splits)}: names a split twice; list each once")
    spec = resolve_dataset(job.data)
    for name in splits:
        SegmentationData(spec, name, check=False)  # an unknown or empty split fails here, before any model runs
    reports = {}
    for name in splits:
        folder = None if job.plots is None else Path(job.plots) / name
        reports[name] = run_eval(replace(job, split=name, json_path=None, plots=folder, report_path=None))
        print()
    width = max(len("split"), *(len(name) for name in splits))
    print(f"{'split':<{width}}  {'images':>6}  {'mIoU %':>7}  {'pixel acc %':>11}  {'mean acc %':>10}")
    for name, report in reports.items():
        scores = [_percent(report[key]) for key in ("miou", "pixel_accuracy", "mean_accuracy")]
        print(f"{name:<{width}}  {report['num_images']:>6}  {scores[0]:>7}  {scores[1]:>11}  {scores[2]:>10}")
    combined = {"model": str(job.model), "dataset": spec.name, "splits": reports}
    if job.json_path is not None:
        write_json(job.json_path, combined)
        print(f"metrics: {job.json_path}")
    _write_eval_report(job.report_path, combined, spec)
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


def run_fidelity(job: EvalJob, reference: Path, worst: int = 4) -> dict:
    """``eval MODEL --reference REF``: both against ground truth, and MODEL against REF's predictions;
    the ``worst`` most different images beside --json."""
    from edgeseg.data import SegmentationData, resolve_dataset
    from edgeseg.evaluate.fidelity import compare_to_reference, format_fidelity, reference_predictions
    from edgeseg.runtime import Segmenter

    dataset = SegmentationData(resolve_dataset(job.data), job.split)
    with Segmenter.load(reference, device=job.device) as ref_model:
        ref = reference_predictions(ref_model, dataset, str(reference), job.limit)
    with Segmenter.load(job.model, backend=job.backend, device=job.device) as deployed:
        result = compare_to_reference(deployed, ref, dataset, str(job.model), worst)
        images = _save_worst(job, worst, (result, deployed, ref, dataset))
        pictures = _worst_pictures(job, (result, deployed, ref, dataset))
    class_names = tuple(dataset.spec.classes)
    print(f"{job.model} against {reference} on {dataset.spec.name} {job.split} ({result.num_images} images)")
    print(format_fidelity([result], class_names))
    report = {"dataset": dataset.spec.name, "split": job.split, **result.to_dict(class_names),
              "worst_images": [str(p) for p in images]}  # fmt: skip
    if images:
        print(f"most different images (image | reference | model | difference): {images[0].parent}")
    if job.json_path is not None:
        write_json(job.json_path, report)
        print(f"fidelity: {job.json_path}")
    if job.report_path is not None:
        from edgeseg.report import Legend, fidelity_page, write_report

        write_report(job.report_path, fidelity_page(report, Legend(dataset.spec.classes, dataset.spec.palette), pictures))
        print(f"report: {job.report_path}")
    return report


def _save_worst(job: EvalJob, worst: int, compared: tuple) -> list[Path]:
    """The most different images, side by side, in ``worst_folder`` (none without --json); an earlier run's go first."""
    from edgeseg.evaluate.fidelity import save_worst_images

    folder = worst_folder(job.model, job.json_path, worst)
    if folder is None:
        return []
    for old in folder.glob("worst_*.jpg") if folder.is_dir() else ():  # --exist-ok: never mixed with new ones
        old.unlink()
    return save_worst_images(*compared, folder)


def _worst_pictures(job: EvalJob, compared: tuple) -> list:
    from edgeseg.evaluate.fidelity import worst_pictures

    return worst_pictures(*compared) if job.report_path is not None else []


def _save_eval_plots(result, folder: Path, subject: str) -> None:
    """``subject`` (model, data set and split) titles each plot."""
    from edgeseg.evaluate.plots import save_confusion_matrix, save_iou_bars

    confusion, iou = (folder / name for name in PLOT_FILES)
    folder.mkdir(parents=True, exist_ok=True)
    save_confusion_matrix(result.confusion.matrix, result.class_names, confusion, subject)
    save_iou_bars(result.metrics.iou, result.class_names, iou, subject)
    print(f"plots: {confusion}, {iou}")
