"""edgeseg bench on real models: the PyTorch checkpoint and its ONNX export, end to end and model only."""

import json

import pytest

from conftest import assert_one_line_error, run_cli
from edgeseg.deploy.bench import BenchOptions, benchmark_models, format_table, save_results
from edgeseg.core.errors import EdgesegError
from edgeseg.export.exporter import export_onnx
from edgeseg.core.sysinfo import environment


@pytest.fixture(scope="module")
def onnx_model(small_checkpoint, tmp_path_factory):
    return export_onnx(small_checkpoint, tmp_path_factory.mktemp("bench") / "m", verify=False).onnx_path


def test_two_backends_side_by_side(onnx_model, small_checkpoint, tmp_path):
    results = benchmark_models([onnx_model, small_checkpoint], BenchOptions(iters=6, warmup=1, threads=1, img_size=(120, 160)))
    assert [r.backend for r in results] == ["onnxruntime", "torch"] and results[0].ratio == 1.0
    for r in results:
        assert r.latency_ms["p50"] <= r.latency_ms["p99"] and r.latency_ms["mean"] > 0
        assert abs(sum(r.stages_ms.values()) - r.latency_ms["mean"]) < 1e-6 * r.latency_ms["mean"] + 1e-9
        assert r.throughput_fps == pytest.approx(1000 / r.latency_ms["mean"]) and r.peak_rss_mb > 10
    assert results[1].ratio == pytest.approx(results[1].latency_ms["mean"] / results[0].latency_ms["mean"])
    table = format_table(results)
    assert "model.fp32.onnx" in table and "small.pt" in table and "1.00x" in table
    save_results(results, environment(1), tmp_path / "r.json", tmp_path / "r.md")
    saved = json.loads((tmp_path / "r.json").read_text())
    assert len(saved["results"]) == 2 and saved["environment"]["threads"] == 1
    assert "Environment:" in (tmp_path / "r.md").read_text()


def test_model_only_and_batches(onnx_model, small_checkpoint):
    result = benchmark_models([small_checkpoint], BenchOptions(iters=3, warmup=0, batch_size=2, model_only=True))[0]
    assert result.mode == "model-only" and set(result.stages_ms) == {"inference"}
    assert result.throughput_fps == pytest.approx(2000 / result.latency_ms["mean"])
    with pytest.raises(EdgesegError, match="--batch-size 2"):
        benchmark_models([onnx_model], BenchOptions(iters=1, batch_size=2))  # exported for batch 1


@pytest.mark.parametrize("model_only", [True, False])
def test_two_streams_run_two_copies_at_once_and_count_both(onnx_model, model_only, monkeypatch):
    import threading

    from edgeseg.runtime.backends.onnxruntime_backend import OnnxRuntimeBackend

    seen = set()
    name = "infer" if model_only else "infer_for_labels"  # end to end runs what segment() runs
    infer = getattr(OnnxRuntimeBackend, name)

    def noting_thread(self, batch):
        seen.add((id(self), threading.get_ident()))
        return infer(self, batch)

    monkeypatch.setattr(OnnxRuntimeBackend, name, noting_thread)
    result = benchmark_models([onnx_model], BenchOptions(iters=4, warmup=0, threads=2, streams=2, model_only=model_only))[0]
    assert result.streams == 2 and "2 streams" in format_table([result])
    assert len({copy for copy, _ in seen}) == 2 and len({thread for _, thread in seen}) == 2
    assert result.throughput_fps > 0 and result.latency_ms["p50"] <= result.latency_ms["p99"]


def test_cli_bench(onnx_model, camvid, tmp_path):
    out = tmp_path / "bench.json"
    done = run_cli("bench", onnx_model, "--iters", "3", "--warmup", "1", "--threads", "1", "--data", f"camvid:{camvid}",
                   "--json", out)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "environment:" in done.stdout and "onnxruntime" in done.stdout
    assert json.loads(out.read_text())["results"][0]["iters"] == 3 and out.with_suffix(".md").is_file()
    assert_one_line_error(run_cli("bench", onnx_model, "--batch-size", "4"), "--batch-size 4")
    assert_one_line_error(run_cli("bench", tmp_path / "missing.onnx"), "missing.onnx")


def test_runtime_bad_inputs_are_one_line(onnx_model, camvid, tmp_path):
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(onnx_model.read_bytes()[: onnx_model.stat().st_size // 2])
    assert_one_line_error(run_cli("bench", truncated, "--iters", "1"), "truncated.onnx", "re-export")
    assert_one_line_error(run_cli("bench", onnx_model, "--iters", "1", "--device", "cuda"),
                          "--device cuda", "onnxruntime-gpu")  # fmt: skip
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    assert_one_line_error(run_cli("predict", onnx_model, empty, "--out", tmp_path / "p"), "empty.png")
    assert_one_line_error(run_cli("bench", onnx_model, "--iters", "0"), "--iters 0")
    assert_one_line_error(run_cli("bench", onnx_model, "--streams", "3", "--threads", "2"), "--streams 3", "--threads 2")
