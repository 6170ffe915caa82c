"""Training throughput of MobileNetV2-DeepLabv3+: images/s for forward + backward + optimizer step.

    python benchmarks/train_throughput.py                    # CPU, 360x480, batch 4
    python benchmarks/train_throughput.py --device cuda --amp --batch-size 16

Synthetic tensors, so the number is the model's cost alone (data loading is measured by
`edgeseg train`, which logs images/s per epoch). Prints a table, saves JSON under
benchmarks/results/.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import torch

from edgeseg.core.fileio import write_json
from edgeseg.model.network import build_model

RESULTS = Path(__file__).resolve().parent / "results"


def measure(device: str, batch_size: int, img_size: tuple[int, int], output_stride: int, amp: bool,
            iters: int, warmup: int) -> float:  # fmt: skip
    model = build_model(11, output_stride).to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    images = torch.rand(batch_size, 3, *img_size, device=device)
    labels = torch.randint(0, 11, (batch_size, *img_size), device=device)
    timings = []
    for step in range(warmup + iters):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        started = time.perf_counter()
        with torch.autocast(device.split(":")[0], dtype=torch.float16, enabled=amp):
            loss = torch.nn.functional.cross_entropy(model(images).float(), labels, ignore_index=11)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        if step >= warmup:
            timings.append(time.perf_counter() - started)
    return batch_size / (sum(timings) / len(timings))


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--img-size", type=int, nargs=2, default=(360, 480))
    parser.add_argument("--amp", action="store_true")
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for output_stride in (16, 8):
        rate = measure(args.device, args.batch_size, tuple(args.img_size), output_stride, args.amp, args.iters, args.warmup)
        rows.append({"output_stride": output_stride, "images_per_second": round(rate, 3)})
    for row in rows:
        row["ratio_to_first"] = round(row["images_per_second"] / rows[0]["images_per_second"], 3)
    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else cpu_name()
    result = {
        "benchmark": "train_throughput", "device": args.device, "device_name": device_name, "threads": args.threads,
        "batch_size": args.batch_size, "img_size": list(args.img_size), "amp": args.amp, "iters": args.iters,
        "torch": str(torch.__version__), "date": time.strftime("%Y-%m-%d"), "rows": rows,
    }  # fmt: skip
    print(f"training throughput, {args.device} ({device_name}), {args.threads} threads, batch {args.batch_size}, "
          f"{args.img_size[0]}x{args.img_size[1]}{', AMP' if args.amp else ''}")  # fmt: skip
    print("| output stride | images/s | ratio |\n|---|---|---|")
    for row in rows:
        print(f"| {row['output_stride']} | {row['images_per_second']:.2f} | {row['ratio_to_first']:.2f}x |")
    out = args.out or RESULTS / f"train_throughput_{args.device.split(':')[0]}.json"
    write_json(out, result)
    print(f"saved {out}")


if __name__ == "__main__":
    main()
