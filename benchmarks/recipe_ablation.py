"""Training-recipe ablation on a held-out drive: one row per change, each scored on frames of a drive it never saw.

Each row is one `edgeseg train` run, from scratch, with the row's recipe added to the shared base command, trained on
CamVid's `train-heldout` split (drives 0001TP and 0016E5) with best.pt picked on `heldout` (all of drive 0006R0), then
scored per split by `edgeseg eval --split heldout,val`. The rows are cumulative: each keeps the previous row's winning
choices and changes one thing, so the deltas say what each change buys. Run folders are reused: a row whose run folder
holds a finished run is only scored, so the expensive part can be run by hand (or on another machine) with
the same commands and this script then fills in the table.

    .venv/bin/python benchmarks/recipe_ablation.py                       # every row, three at a time, on 2 cores
    .venv/bin/python benchmarks/recipe_ablation.py --rows C,S --score-only  # score finished runs only
    .venv/bin/python benchmarks/recipe_ablation.py --rows A,B --epochs 2 --runs runs/ablation-smoke

Writes benchmarks/results/recipe_ablation.json and the "recipe_ablation" section of benchmarks/RESULTS.md, with the
machine and its CPU flags.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from _results import ROOT, machine, markdown_table, save_json, update_section

DATA = "camvid:../shared/datasets/camvid"
BASE = [
    "--img-size", "360", "480", "--crop-size", "192", "256", "--batch-size", "8", "--optimizer", "adamw",
    "--lr", "1e-3", "--val-every", "5", "--workers", "1", "--seed", "0",
    "--train-split", "train-heldout", "--val-split", "heldout",
]  # fmt: skip
OLD_RECIPE = ["--class-weights", "median-freq", "--color-jitter", "0", "--ema", "0"]

RECIPE_C = ["--class-weights", "sqrt-median-freq", "--color-jitter", "1.0", "--ema", "0"]
RECIPE_G = [*RECIPE_C, "--scale-range", "0.75", "1.5"]  # the shipped reference's recipe


@dataclass(frozen=True)
class Row:
    change: str
    recipe: list[str]
    epochs: int = 30  # scaled by --epochs / 30, so a smoke run shortens every row alike
    base: str | None = None  # the row its delta is measured against (None: the previous row)
    after: str | None = None  # a row whose finished weights this one starts from


ROWS: dict[str, Row] = {
    "A": Row("old reference recipe (median-frequency weights, no colour jitter, no EMA)", OLD_RECIPE),
    "B": Row("A, square root of the median-frequency weights",
             ["--class-weights", "sqrt-median-freq", "--color-jitter", "0", "--ema", "0"]),
    "C": Row("B, colour jitter 1.0 (brightness, contrast, saturation, hue)", RECIPE_C),
    "D": Row("C, 50 epochs instead of 30", RECIPE_C, epochs=50),
    "E": Row("D, 75 epochs instead of 50", RECIPE_C, epochs=75, base="D"),
    "F": Row("D, online hard example mining (`--ohem`)", [*RECIPE_C, "--ohem"], epochs=50, base="D"),
    "G": Row("D, random scale 0.75 to 1.5 instead of 0.5 to 2.0 (`--scale-range 0.75 1.5`)",
             RECIPE_G, epochs=50, base="D"),
    "H": Row("G, no class weights (`--class-weights none`)",
             ["--class-weights", "none", *RECIPE_G[2:]], epochs=50, base="G"),
    "I": Row("G, label smoothing 0.1 (`--label-smoothing 0.1`)", [*RECIPE_G, "--label-smoothing", "0.1"],
             epochs=50, base="G"),
    "S": Row("C with the separable head (`--head separable`)", [*RECIPE_C, "--head", "separable"], base="C"),
    "SI": Row("S, 25 epochs started from row C's weights (`--init runs/ablation/C/best.pt`: its backbone and 1x1 layers)",
              [*RECIPE_C, "--head", "separable", "--init", "{runs}/C/best.pt"], epochs=25, base="C", after="C"),
}  # fmt: skip


def row_epochs(name: str, epochs: int) -> int:
    return max(1, round(ROWS[name].epochs * epochs / 30))


def train_command(name: str, runs: Path, epochs: int, data: str) -> list[str]:
    return [sys.executable, "-m", "edgeseg", "train", "--data", data, "--out", str(runs / name),
            "--epochs", str(row_epochs(name, epochs)), *BASE,
            *(flag.format(runs=runs) for flag in ROWS[name].recipe)]  # fmt: skip


def finished(folder: Path, epochs: int) -> bool:
    """The run logged its last epoch (best.pt alone appears at the first validation)."""
    log = folder / "log.csv"
    return log.is_file() and any(row["epoch"] == str(epochs) for row in csv.DictReader(log.open()))


def train_rows(names: list[str], runs: Path, epochs: int, data: str, parallel: int) -> None:
    """Train the rows without a best.pt, ``parallel`` at a time, each on cpu_count / parallel threads."""
    threads = str(max(1, (os.cpu_count() or 2) // parallel))
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    pending = [name for name in names if not finished(runs / name, row_epochs(name, epochs))]
    running: list[tuple[str, subprocess.Popen]] = []
    while pending or running:
        busy = {*pending, *(entry[0] for entry in running)}
        startable = [name for name in pending if ROWS[name].after not in busy]
        while startable and len(running) < parallel:
            name = startable.pop(0)
            pending.remove(name)
            runs.mkdir(parents=True, exist_ok=True)
            log = open(runs / f"{name}.out", "w")  # noqa: SIM115 - closed with the process
            resume = ["--resume", str(runs / name / "last.pt")] if (runs / name / "last.pt").is_file() else []
            command = train_command(name, runs, epochs, data) + resume
            running.append((name, subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)))
        time.sleep(5)
        for entry in list(running):
            if entry[1].poll() is not None:
                running.remove(entry)
                if entry[1].returncode != 0:
                    raise SystemExit(f"row {entry[0]}: training failed (exit {entry[1].returncode}); see {runs / entry[0]}.out")


def score_row(name: str, runs: Path, data: str) -> dict:
    """The row's best.pt on heldout and val, with its training log's time and best epoch."""
    folder = runs / name
    report_path = folder / "eval_splits.json"
    if not report_path.is_file():
        subprocess.run([sys.executable, "-m", "edgeseg", "eval", str(folder / "best.pt"), "--data", data,
                        "--split", "heldout,val", "--json", str(report_path)], cwd=ROOT, check=True,
                       stdout=subprocess.DEVNULL)  # fmt: skip
    splits = json.loads(report_path.read_text())["splits"]
    log = list(csv.DictReader((folder / "log.csv").open()))
    scored = [row for row in log if row["val_miou"]]
    best = max(scored, key=lambda row: float(row["val_miou"]))
    return {
        "row": name, "change": ROWS[name].change, "recipe": " ".join(ROWS[name].recipe).format(runs=runs),
        "epochs": len(log), "best_epoch": int(best["epoch"]),
        "train_seconds": round(sum(float(row["seconds"]) for row in log), 1),
        "heldout_miou": splits["heldout"]["miou"], "heldout_pixel_accuracy": splits["heldout"]["pixel_accuracy"],
        "val_miou": splits["val"]["miou"],
        "heldout_per_class": splits["heldout"]["per_class"],
    }  # fmt: skip


def render(rows: list[dict], info: dict) -> str:
    header = ["row", "change", "held-out mIoU %", "delta", "held-out pixel acc %", "val mIoU % (seen drive)",
              "best epoch", "train time"]  # fmt: skip
    table, scores = [], {}
    for index, row in enumerate(rows):
        base = ROWS[row["row"]].base or (rows[index - 1]["row"] if index else None)
        delta = f"{100 * (row['heldout_miou'] - scores[base]):+.2f} vs {base}" if base in scores else ""
        table.append([row["row"], row["change"], f"{100 * row['heldout_miou']:.2f}", delta,
                      f"{100 * row['heldout_pixel_accuracy']:.2f}", f"{100 * row['val_miou']:.2f}",
                      f"{row['best_epoch']} of {row['epochs']}", f"{row['train_seconds'] / 60:.0f} min"])  # fmt: skip
        scores[row["row"]] = row["heldout_miou"]
    classes = list(rows[0]["heldout_per_class"])
    per_class = markdown_table(["row", *classes], [
        [row["row"], *(f"{100 * row['heldout_per_class'][c]['iou']:.1f}" for c in classes)] for row in rows])
    return "\n\n".join([
        "## Training recipe ablation (held-out drive 0006R0)",
        f"Each row trains on `train-heldout` (drives 0001TP, 0016E5) and picks best.pt on `heldout` "
        f"(drive 0006R0, never trained on); `val` is drive 0016E5, which training sees, so it flatters. Base command: "
        f"`edgeseg train {' '.join(BASE)}`; rows add their recipe and epochs. Rows A to E are cumulative; F and G each "
        f"change one thing of D, H and I one thing of G (the shipped reference); S changes only C's head; SI does "
        f"too, but starts from row C's weights instead of from scratch. Train time is the run's own wall time: rows "
        f"A to D and F to SI at one thread, with two or three runs sharing the CPU's 2 cores (F to I also with "
        f"benchmark work beside them); row E alone, at two threads (1.5x the images a second). "
        f"Machine: {info['summary']}; CPU flags "
        f"{' '.join(info['cpu_flags']) or 'none of note'}.",
        markdown_table(header, table),
        "Held-out IoU per class (%):",
        per_class,
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default=",".join(ROWS), help="Comma-separated rows (default all).")
    parser.add_argument("--epochs", type=int, default=30, help="Epochs of a 30-epoch row (others scale alike).")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "ablation", help="Folder of the run folders.")
    parser.add_argument("--data", default=DATA)
    parser.add_argument("--parallel", type=int, default=3, help="Runs at a time (threads split between them).")
    parser.add_argument("--score-only", action="store_true", help="Only score rows that already have a best.pt.")
    args = parser.parse_args()
    names = args.rows.split(",")
    unknown = [name for name in names if name not in ROWS]
    if unknown:
        raise SystemExit(f"--rows: unknown {', '.join(unknown)}; choose from {', '.join(ROWS)}")
    if not args.score_only:
        train_rows(names, args.runs, args.epochs, args.data, args.parallel)
    rows = [score_row(name, args.runs, args.data) for name in names if (args.runs / name / "best.pt").is_file()]
    if not rows:
        raise SystemExit(f"no row has a best.pt under {args.runs}")
    info = machine(threads=1)
    report = {"benchmark": "recipe_ablation", "machine": info, "base": BASE, "rows": rows}
    save_json("recipe_ablation.json", report)
    markdown = render(rows, info)
    update_section("recipe_ablation", markdown)
    print(markdown)


if __name__ == "__main__":
    main()
