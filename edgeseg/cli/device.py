"""The commands a device runs too: eval, predict, build, verify, bench, run, doctor (no torch unless a .pt is given)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Tuple

import typer

from edgeseg.cli.app import BACKEND_HELP, DEVICE_HELP, EXIST_OK_HELP, MAX_THREADS, app, split_list
from edgeseg.core.errors import EdgesegError
from edgeseg.core.fileio import check_outputs


@app.command("eval")
def eval_(
    model: Path = typer.Argument(..., help="Model file (.pt, .onnx, .engine)."),
    data: str = typer.Option(..., "--data", help="Dataset: NAME:ROOT, a .toml, or a folder with dataset.toml."),
    split: str = typer.Option("val", "--split", help="Split, or several comma-separated (e.g. heldout,val): a table and a summary row each; --json and --plots then hold them by split."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Write metrics as JSON here."),
    plots: Optional[Path] = typer.Option(None, "--plots", help="Folder for the confusion-matrix and per-class IoU images (default: beside --json)."),
    backend: str = typer.Option("auto", "--backend", help=BACKEND_HELP),
    device: Optional[str] = typer.Option(None, "--device", help=DEVICE_HELP),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Only the first N images."),
    reference: Optional[Path] = typer.Option(None, "--reference", help="Compare with this reference model (e.g. the .pt it came from): deltas, agreement, worst images."),
    worst: int = typer.Option(4, "--worst", min=0, max=1000, help="With --reference: save this many most-different images side by side (in MODEL_NAME.worst/ beside --json)."),
    report: Optional[Path] = typer.Option(None, "--report", help="Write the scores, per-class IoU, confusion matrix (and with --reference the most different images) as one self-contained .html page."),
    exist_ok: bool = typer.Option(False, "--exist-ok", help=EXIST_OK_HELP),
) -> None:
    """Score a model on a labelled split: mIoU, per-class IoU, pixel and mean accuracy."""
    from edgeseg.evaluate.reports import EvalJob, eval_outputs, plot_folder, run_eval, run_eval_splits, run_fidelity, worst_folder
    from edgeseg.report import check_report_name

    splits = split_list(split) or ()
    if len(splits) > 1 and reference is not None:
        raise EdgesegError(f"--split {split}: --reference compares on one split; run it once per split")
    if reference is not None and plots is not None:
        raise EdgesegError(f"--plots {plots}: --reference draws no plots (its pictures go beside --json); leave --plots out")
    folder = plot_folder(plots, json_path) if reference is None else None
    worst_images = worst_folder(model, json_path, worst) if reference is not None else None
    check_outputs({**eval_outputs(json_path, plots, folder, splits, worst_images), "--report": report}, exist_ok,
                  inputs={"MODEL": model, "--reference": reference}, folders={"--json (worst images)"})  # fmt: skip
    check_report_name(report)
    job = EvalJob(model, data, split, backend, device, limit, json_path, folder, report)
    if len(splits) > 1:
        run_eval_splits(job, splits)
    elif reference is not None:
        run_fidelity(job, reference, worst)
    else:
        run_eval(job)


@app.command()
def predict(
    model: Path = typer.Argument(..., help="Model file (.pt, .onnx, .engine)."),
    source: str = typer.Argument(..., help="An image, a folder of images, or a glob."),
    out: Path = typer.Option(..., "--out", help="Folder for <stem>.png (class ids) and <stem>_overlay.jpg."),
    alpha: float = typer.Option(0.5, "--alpha", min=0.0, max=1.0, help="Overlay opacity."),
    backend: str = typer.Option("auto", "--backend", help=BACKEND_HELP),
    device: Optional[str] = typer.Option(None, "--device", help=DEVICE_HELP),
    exist_ok: bool = typer.Option(False, "--exist-ok", help="Write into a non-empty --out folder."),
    side_by_side: bool = typer.Option(False, "--side-by-side", help="Also write <stem>_side.jpg: the image beside its colour mask."),
) -> None:
    """Segment images: class-id PNGs at each image's size (palette PNGs: viewers show colours, pixels stay ids) and overlays with a legend."""
    from edgeseg.deploy.predict import PredictOptions, run_predict
    from edgeseg.core.images import list_images

    check_outputs({"--out": out}, exist_ok, inputs={"MODEL": model, "SOURCE": list_images(source)}, folders={"--out"})

    run_predict(model, source, out, PredictOptions(alpha, backend, device, exist_ok, side_by_side))


@app.command("build")
def build_(
    bundle: Path = typer.Argument(..., help="The export bundle (the --out folder of `edgeseg export`), or one .onnx model."),
    precision: Optional[str] = typer.Option(None, "--precision", help="Comma-separated: fp16, int8, fp32 (default: the bundle's build precisions)."),
    int8_source: Optional[str] = typer.Option(None, "--int8-source", help="INT8 from the Q/DQ model (qdq, default), the calibration cache (cache) or the calibrated ranges (ranges); cache and ranges need TensorRT < 11."),
    workspace: Optional[int] = typer.Option(None, "--workspace", min=1, help="Builder scratch memory in MiB (default: the bundle's, else 1024)."),
    dla_core: Optional[int] = typer.Option(None, "--dla-core", min=0, help="Build for this DLA core, with GPU fallback (Jetson Xavier / AGX Orin)."),
    timing_cache: Optional[Path] = typer.Option(None, "--timing-cache", help="TensorRT timing cache file, read and updated (rebuilds get faster)."),
    batch: Optional[int] = typer.Option(None, "--batch", min=1, max=1024, help="Fixed batch size."),
    dynamic_batch: Optional[int] = typer.Option(None, "--dynamic-batch", min=1, max=1024, help="Dynamic batch up to MAX (the ONNX needs a dynamic batch axis)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Folder for the engines (default: beside the ONNX)."),
    device: Optional[str] = typer.Option(None, "--device", help="The GPU to build on: cuda or cuda:N (default cuda:0)."),
    exist_ok: bool = typer.Option(False, "--exist-ok", help="Replace engines (and their manifests) built before."),
) -> None:
    """Build TensorRT engines on this device from a bundle's ONNX models, with a manifest each (needs TensorRT, pycuda)."""
    from edgeseg.deploy.build import BuildOptions, build_bundle
    from edgeseg.runtime.backends.tensorrt_backend import gpu_index

    options = BuildOptions(precisions=split_list(precision), int8_source=int8_source, workspace_mib=workspace,
                           dla_core=dla_core, timing_cache=timing_cache, batch=batch, dynamic_batch=dynamic_batch,
                           out=out, device_index=gpu_index(device), exist_ok=exist_ok)  # fmt: skip
    engines = build_bundle(bundle, options)
    typer.echo("built: " + ", ".join(str(p) for p in engines))


@app.command("verify")
def verify_(
    model: Path = typer.Argument(..., help="Model file (.onnx, .engine, .pt) to check against the bundle's PyTorch reference labels, or a bundle folder: every model in it (its ONNX models and the engines built there; --backend picks among them)."),
    bundle: Optional[Path] = typer.Option(None, "--bundle", help="The export bundle (the --out folder of `edgeseg export`; default: the model's folder)."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Write the report as JSON here (for a bundle folder: {bundle, passed, models: [one report per model]})."),
    min_agreement: Optional[float] = typer.Option(None, "--min-agreement", min=0.0, max=1.0, help="Required share of pixels equal to the reference (default: the bundle's threshold for the model's precision)."),
    backend: str = typer.Option("auto", "--backend", help=BACKEND_HELP),
    device: Optional[str] = typer.Option(None, "--device", help=DEVICE_HELP),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, max=MAX_THREADS, help="CPU threads for the backend."),
    report_path: Optional[Path] = typer.Option(None, "--report", help="Write the result, per-class IoU, confusion matrix and least agreeing images (of every model verified) as one self-contained .html page."),
    exist_ok: bool = typer.Option(False, "--exist-ok", help=EXIST_OK_HELP),
) -> None:
    """Check a deployed model (or every model of a bundle) against the PyTorch reference labels in its bundle; exit 1 below the threshold."""
    from edgeseg.report import check_report_name
    from edgeseg.deploy.verify import VerifyOptions, failure_line, run_verify, run_verify_bundle

    check_outputs({"--json": json_path, "--report": report_path}, exist_ok, inputs={"MODEL": model, "--bundle": bundle})
    check_report_name(report_path)
    options = VerifyOptions(min_agreement, backend, device, threads, json_path, report_path)
    if model.is_dir():
        if bundle is not None:
            raise EdgesegError(f"--bundle {bundle}: MODEL {model} is a bundle folder already; pass the folder once")
        reports = run_verify_bundle(model, options)
    else:
        reports = [run_verify(model, bundle, options)]
    failed = [report for report in reports if not report.passed]
    for report in failed:
        typer.echo(failure_line(report), err=True)
    if failed:
        raise typer.Exit(1)


@app.command()
def bench(
    models: List[Path] = typer.Argument(..., help="Models to compare (.pt, .onnx, .engine); ratios are to the first."),
    backend: str = typer.Option("auto", "--backend", help="auto, torch, onnxruntime, tensorrt or openvino; comma-separated (e.g. onnxruntime,openvino) for one row per backend and model. ONNX Runtime's AMX rewrite of INT8 models (the variant column): EDGESEG_ORT_AMX=1, off by default."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda or tensorrt (ONNX Runtime providers), cuda for .pt/.engine (default: cuda when every model is an engine, else cpu)."),
    batch_size: int = typer.Option(1, "--batch-size", min=1, max=1024),
    iters: int = typer.Option(50, "--iters", min=1, help="Timed batches per model."),
    warmup: int = typer.Option(10, "--warmup", min=0, help="Untimed batches first."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, max=MAX_THREADS, help="CPU threads for the backend (default: the library's)."),
    img_size: Optional[Tuple[int, int]] = typer.Option(None, "--img-size", min=16, max=8192, help="Source image H W (default: the model's input size)."),
    data: Optional[str] = typer.Option(None, "--data", help="Use real val images of this dataset instead of a synthetic one."),
    model_only: bool = typer.Option(False, "--model-only", help="Time the backend alone, on a prepared input."),
    streams: int = typer.Option(1, "--streams", min=1, max=64, help="Copies of each model running --iters batches each at the same time, sharing --threads: the throughput of `edgeseg run`'s streams."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Results JSON (default: bench-<time>.json beside the first model, e.g. in its bundle)."),
    markdown: Optional[Path] = typer.Option(None, "--markdown", help="Markdown table (default: beside --json)."),
    exist_ok: bool = typer.Option(False, "--exist-ok", help=EXIST_OK_HELP),
) -> None:
    """Latency (mean, p50, p90, p99), throughput, per-stage times and peak memory, side by side."""
    from edgeseg.deploy.bench import BenchOptions, results_paths, run_bench

    json_path, markdown = results_paths(models, json_path, markdown)
    check_outputs({"--json": json_path, "--markdown": markdown}, exist_ok, inputs={"MODELS": list(models)})
    options = BenchOptions(backend=backend, device=device, batch_size=batch_size, iters=iters, warmup=warmup,
                           threads=threads, img_size=img_size, model_only=model_only, streams=streams)  # fmt: skip
    run_bench(models, options, data=data, json_path=json_path, markdown_path=markdown)


@app.command("run")
def run_(
    model: Path = typer.Argument(..., help="Model file (.pt, .onnx, .engine)."),
    camera: Optional[int] = typer.Option(None, "--camera", min=0, help="OpenCV camera index."),
    source: Optional[str] = typer.Option(None, "--source", help="/dev/videoN, csi://N, a video file, an image folder or glob, rtsp:// or http:// URL, or a GStreamer pipeline."),
    out: Optional[List[str]] = typer.Option(None, "--out", help="Output: a .mp4/.avi file, a folder, or http://HOST:PORT for a live view in a browser (loopback by default; any other address needs the printed token); repeat for several."),
    show: Optional[bool] = typer.Option(None, "--show/--no-show", help="Show a window (default: on when there is no --out)."),
    mode: str = typer.Option("overlay", "--mode", help="overlay, mask or side-by-side."),
    alpha: float = typer.Option(0.5, "--alpha", min=0.0, max=1.0, help="Overlay opacity."),
    legend: bool = typer.Option(True, "--legend/--no-legend", help="Draw the classes present."),
    hud: bool = typer.Option(True, "--hud/--no-hud", help="Draw FPS, model latency and capture-to-display latency."),
    ignore_class: Optional[List[str]] = typer.Option(None, "--ignore-class", help="A class name or id not to draw; repeat for several."),
    realtime: bool = typer.Option(False, "--realtime", help="Pace files and folders at their frame rate, dropping frames like a camera."),
    loop: bool = typer.Option(False, "--loop", help="Start a file or folder again at its end."),
    width: Optional[int] = typer.Option(None, "--width", min=1, max=8192, help="Frame width to ask the source for (files are resized)."),
    height: Optional[int] = typer.Option(None, "--height", min=1, max=8192, help="Frame height to ask the source for (files are resized)."),
    fps: Optional[float] = typer.Option(None, "--fps", min=0.1, max=1000.0, help="Frame rate to ask the camera for (and of image folders)."),
    max_frames: Optional[int] = typer.Option(None, "--max-frames", min=1, help="Stop after this many frames."),
    reconnect: int = typer.Option(5, "--reconnect", min=0, max=1000, help="Attempts to reopen a live source that drops."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Write the run's statistics here."),
    backend: str = typer.Option("auto", "--backend", help=BACKEND_HELP),
    device: Optional[str] = typer.Option(None, "--device", help=DEVICE_HELP),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, max=MAX_THREADS, help="CPU threads for the backend."),
    streams: Optional[int] = typer.Option(None, "--streams", min=1, max=64, help="Copies of the model running frames at once, sharing --threads: more FPS, each frame later. Default: 2 for a file or folder on a CPU, else 1."),
    exist_ok: bool = typer.Option(False, "--exist-ok", help="Replace an existing --out video (when the new one is finished) or --json; delete an --out folder's old frame_*.png first."),
    segment: Optional[float] = typer.Option(None, "--segment", min=1.0, max=86400.0, help="Cut video --out files into files of this many seconds (NAME_0000.mp4, ...): flat memory on recordings of days."),
) -> None:
    """Live segmentation of a camera, file, folder or stream into a window, video files, folders or a browser.

    SIGINT, SIGTERM and SIGHUP end it like q: every recording is closed under its final name.
    Exit code: 0 at the end of the input, on q or --max-frames; 130 SIGINT, 143 SIGTERM, 129 SIGHUP;
    2 for an error (a write failure included: then no file is left under the output's name).
    """
    from edgeseg.video import RunOptions, exit_code, run_session

    if (camera is None) == (source is None):
        raise EdgesegError("edgeseg run: pass exactly one of --camera N or --source URI")
    sinks = list(out or [])
    check_outputs({"--out": sinks, "--json": json_path}, exist_ok, inputs={"MODEL": model, "--source": source},
                  own_rules={"--out"})  # the sinks judge an existing --out themselves (segments, frame folders)
    if show or (show is None and not sinks):
        sinks.append("display://")
    options = RunOptions(backend=backend, device=device, threads=threads, streams=streams, width=width, height=height,
                         fps=fps, loop=loop, exist_ok=exist_ok, segment_seconds=segment, stats_json=json_path, mode=mode,
                         alpha=alpha, legend=legend, hud=hud, ignore_classes=ignore_class or (), realtime=realtime,
                         max_frames=max_frames, reconnect_attempts=reconnect)  # fmt: skip
    report = run_session(model, str(camera) if camera is not None else source, sinks, options)
    code = exit_code(report)
    if code and code != 130:  # 130 (SIGINT): the entry point says "interrupted" itself
        typer.echo(f"interrupted ({report['stopped_by']})", err=True)
    if code:
        raise typer.Exit(code)


@app.command()
def doctor(
    for_: Optional[str] = typer.Option(None, "--for", help="Exit 1 unless this machine can run it: trt, ort, cpu or camera (comma-separated)."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Write every fact found here as JSON."),
    exist_ok: bool = typer.Option(False, "--exist-ok", help=EXIST_OK_HELP),
) -> None:
    """What this machine can run: Python, numpy, OpenCV, ONNX Runtime, TensorRT, GPU, DLA, Jetson, cameras."""
    from edgeseg.deploy.doctor import run_doctor

    check_outputs({"--json": json_path}, exist_ok)

    code = run_doctor(for_, json_path)
    if code:
        raise typer.Exit(code)
