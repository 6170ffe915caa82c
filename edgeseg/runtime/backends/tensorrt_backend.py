"""TensorRT backend: a serialized engine run with pycuda, through TensorRT's tensor-name API (8.5, 8.6, 10.x).

The engine's manifest (``<engine>.json``, written by ``edgeseg.build``) is checked before TensorRT
opens the file, so an engine from another TensorRT version or GPU fails with one line and the fix;
it also carries the ONNX model's edgeseg metadata, since an engine has no room for it.

The backend owns its CUDA context: it is made current only inside ``load``, ``infer`` and ``close``,
so the backend works from whichever thread calls it. Buffers are sized once for the largest batch:
pinned host memory, one stream, async copies in and out, CUDA events timing each stage.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgeseg.errors import EdgesegError
from edgeseg.meta import ModelMeta
from edgeseg.onnx_meta import parse_meta
from edgeseg.runtime.backends.base import Backend

GPU_DEVICES = ("auto", "cuda", "gpu", "tensorrt", "cpu")  # "cpu" is the CLI's default; an engine runs on the GPU anyway


class TensorRTBackend(Backend):
    name = "tensorrt"

    def __init__(self, path: Path, manifest: dict[str, Any], meta: ModelMeta, output_kind: str,
                 device_index: int, cuda_graph: bool = False) -> None:  # fmt: skip
        self.path, self.manifest, self.meta, self.output_kind = path, manifest, meta, output_kind
        self.stage_times: dict[str, float] = {}
        self._graphs: dict[int, tuple[Any, Any]] = {}
        self._cudart = _cuda_graph_api(path) if cuda_graph else None
        import pycuda.driver as cuda

        self._cuda = cuda
        cuda.init()
        self._context = cuda.Device(device_index).make_context()  # made current; popped when load is done
        try:
            self._open_engine()
            self._allocate()
        except BaseException:
            self._release()
            raise
        finally:
            if self._context is not None:
                self._context.pop()

    @classmethod
    def load(cls, path: Path, device: str = "cuda", cuda_graph: bool = False, **_: object) -> "TensorRTBackend":
        from edgeseg.build import require_tensorrt
        from edgeseg.engine_manifest import check_engine_manifest

        path = Path(path)
        require_tensorrt(str(path))
        manifest = check_engine_manifest(path)
        meta, extras = parse_meta(manifest.get("onnx_metadata") or {}, path)
        return cls(path, manifest, meta, extras["output_kind"], _device_index(device), bool(cuda_graph))

    # --- setup -------------------------------------------------------------------------
    def _open_engine(self) -> None:
        import tensorrt as trt

        self._trt = trt
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self._engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self._engine is None:
            raise EdgesegError(f"{self.path}: TensorRT could not load this engine (see its message above); "
                               "rebuild it here with `edgeseg export MODEL --engine`")  # fmt: skip
        self._execution = self._engine.create_execution_context()
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        inputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if n not in inputs]
        if len(inputs) != 1 or not outputs:
            raise EdgesegError(f"{self.path}: expected one input and an output, found {inputs} and {outputs}; "
                               "build engines with `edgeseg export --engine`")  # fmt: skip
        self.input_name, self.output_name = inputs[0], outputs[0]

    def _allocate(self) -> None:
        engine, trt, cuda = self._engine, self._trt, self._cuda
        input_shape = tuple(engine.get_tensor_shape(self.input_name))
        self.dynamic = input_shape[0] < 0
        if self.dynamic:
            self.max_batch = int(engine.get_tensor_profile_shape(self.input_name, 0)[2][0])
            self._execution.set_input_shape(self.input_name, (self.max_batch, *input_shape[1:]))
        else:
            self.max_batch = int(input_shape[0])
        self._sample_shape = input_shape[1:]
        self._batch_set = self.max_batch
        output_shape = tuple(self._execution.get_tensor_shape(self.output_name))
        input_dtype, output_dtype = (trt.nptype(engine.get_tensor_dtype(n)) for n in (self.input_name, self.output_name))
        self._host_in = cuda.pagelocked_empty((self.max_batch, *self._sample_shape), input_dtype)
        self._host_out = cuda.pagelocked_empty(output_shape, output_dtype)
        self._device_in = cuda.mem_alloc(self._host_in.nbytes)
        self._device_out = cuda.mem_alloc(self._host_out.nbytes)
        self._execution.set_tensor_address(self.input_name, int(self._device_in))
        self._execution.set_tensor_address(self.output_name, int(self._device_out))
        self._stream = cuda.Stream()
        self._events = [cuda.Event() for _ in range(4)]

    # --- inference -----------------------------------------------------------------------
    def infer(self, batch: np.ndarray) -> np.ndarray:
        count = batch.shape[0]
        if count > self.max_batch:
            raise EdgesegError(f"batch of {count}: {self.path.name} was built for at most {self.max_batch} images; "
                               "rebuild it with a larger --dynamic-batch")  # fmt: skip
        run_batch = count if self.dynamic else self.max_batch  # a fixed-batch engine always runs its whole batch
        self._context.push()
        try:
            if run_batch != self._batch_set:
                if not self._execution.set_input_shape(self.input_name, (run_batch, *self._sample_shape)):
                    raise EdgesegError(f"batch of {count}: {self.path.name} does not accept it (its profile is "
                                       f"{self.manifest.get('batch_range')})")  # fmt: skip
                self._batch_set = run_batch
            self._host_in[:count] = batch
            output = self._run(run_batch)[:count]
        finally:
            self._context.pop()
        return output.astype(np.uint8 if self.output_kind == "labels" else np.float32, copy=False)

    def _run(self, run_batch: int) -> np.ndarray:
        cuda, stream, events = self._cuda, self._stream, self._events
        host_in, host_out = self._host_in[:run_batch], self._host_out[:run_batch]
        events[0].record(stream)
        cuda.memcpy_htod_async(self._device_in, host_in, stream)
        events[1].record(stream)
        self._execute(run_batch)
        events[2].record(stream)
        cuda.memcpy_dtoh_async(host_out, self._device_out, stream)
        events[3].record(stream)
        stream.synchronize()
        self.stage_times = {"h2d_ms": events[1].time_since(events[0]), "compute_ms": events[2].time_since(events[1]),
                            "d2h_ms": events[3].time_since(events[2])}  # fmt: skip
        return host_out.copy()

    def _execute(self, run_batch: int) -> None:
        if self._cudart is None:
            if not self._execution.execute_async_v3(self._stream.handle):
                raise EdgesegError(f"{self.path.name}: TensorRT failed to run the engine (see its message above)")
            return
        _check(self._cudart, self._cudart.cudaGraphLaunch(self._graph_for(run_batch), self._stream.handle))

    def _graph_for(self, run_batch: int):
        """The engine's work for this batch size, captured once into a CUDA graph."""
        if run_batch not in self._graphs:
            cudart, handle = self._cudart, self._stream.handle
            self._execution.execute_async_v3(handle)  # TensorRT must run once for a shape before it is captured
            self._stream.synchronize()
            mode = cudart.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
            _check(cudart, cudart.cudaStreamBeginCapture(handle, mode))
            self._execution.execute_async_v3(handle)
            graph = _check(cudart, cudart.cudaStreamEndCapture(handle))
            self._graphs[run_batch] = (graph, _check(cudart, cudart.cudaGraphInstantiate(graph, 0)))
        return self._graphs[run_batch][1]

    # --- teardown ------------------------------------------------------------------------
    def close(self) -> None:
        if self._context is None:
            return
        self._context.push()
        self._release()

    def _release(self) -> None:
        """Free everything while the context is current, then pop and destroy the context."""
        for graph, graph_exec in self._graphs.values():
            self._cudart.cudaGraphExecDestroy(graph_exec)
            self._cudart.cudaGraphDestroy(graph)
        self._graphs = {}
        for name in ("_device_in", "_device_out"):
            allocation = getattr(self, name, None)
            if allocation is not None:
                allocation.free()
        for name in ("_host_in", "_host_out"):
            array = getattr(self, name, None)
            if array is not None and hasattr(array.base, "free"):
                array.base.free()
        for name in ("_events", "_stream", "_execution", "_engine", "_runtime", "_device_in", "_device_out",
                     "_host_in", "_host_out"):  # fmt: skip
            setattr(self, name, None)
        context, self._context = self._context, None
        context.pop()
        context.detach()

    def __del__(self) -> None:
        if getattr(self, "_context", None) is not None:
            try:
                self.close()
            except Exception:  # interpreter shutdown: CUDA may already be gone
                pass


def _device_index(device: str) -> int:
    kind, _, index = str(device).partition(":")
    if kind not in GPU_DEVICES or (index and not index.isdigit()):
        raise EdgesegError(f"--device {device}: a TensorRT engine runs on a GPU; pass --device cuda or cuda:N")
    return int(index or 0)


def _cuda_graph_api(path: Path):
    """CUDA runtime bindings for graph capture: pycuda has none, cuda-python does."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart
        except ImportError:
            raise EdgesegError(f"{path.name}: cuda_graph needs CUDA graph capture, which pycuda lacks; "
                               "pip install cuda-python, or run without cuda_graph") from None  # fmt: skip
    return cudart


def _check(cudart, result):
    """cuda-python returns (error, value...); raise on an error, else the value."""
    error, *values = result if isinstance(result, tuple) else (result,)
    if error != cudart.cudaError_t.cudaSuccess:
        raise EdgesegError(f"CUDA graph: {error}; run without cuda_graph")
    return values[0] if values else None
