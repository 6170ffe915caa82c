"""TensorRT backend: a serialized engine run with pycuda, through TensorRT's tensor-name API (8.5 to 11.x).

The engine's manifest (``<engine>.json``, written by ``edgeseg build``) is checked before TensorRT
opens the file, against the GPU the backend runs on (``--device cuda:N``), so an engine from another
TensorRT version or GPU fails with one line and the fix; it also carries the ONNX model's edgeseg
metadata, since an engine has no room for it, and the DLA core it was built for.

CUDA work runs in the device's primary context (``edgeseg.runtime.trt.cuda``), made current only inside
``load``, ``infer`` and ``close``, so the backend works from whichever thread calls it. Buffers are sized
once for the largest batch: pinned host memory, one stream, async copies in and out, CUDA events timing
each stage. An ``--argmax`` engine outputs int32 class ids (see edgeseg/deploy/build.py); they become uint8 here.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Optional

import numpy as np

from edgeseg.core.errors import EdgesegError
from edgeseg.core.meta import ModelMeta
from edgeseg.core.onnx_meta import parse_meta
from edgeseg.runtime.backends.base import Backend
from edgeseg.runtime.trt.support import dla_problem, numpy_dtype

if TYPE_CHECKING:
    import tensorrt as trt

GPU_DEVICES = ("auto", "cuda", "gpu", "tensorrt")
REBUILD = "rebuild it here with `edgeseg build BUNDLE`"


class TensorRTBackend(Backend):
    name = "tensorrt"

    def __init__(self, path: Path, manifest: Dict[str, Any], meta: ModelMeta, output_kind: str, device_index: int) -> None:
        from edgeseg.runtime.trt.cuda import current, primary_context

        self.path, self.manifest, self.meta, self.output_kind = path, manifest, meta, output_kind
        self.device_index = device_index
        self.device = f"cuda:{device_index}"
        self.stage_times: Dict[str, float] = {}
        self._context: Optional[Any] = primary_context(device_index)
        try:
            with current(self._context):
                self._open_engine()
                self._allocate()
        except BaseException:
            self.close()
            raise

    @classmethod
    def load(cls, path: Path, device: Optional[str] = None) -> "TensorRTBackend":
        from edgeseg.runtime.trt.manifest import check_engine_manifest
        from edgeseg.runtime.trt.support import require_tensorrt

        path = Path(path)
        device_index = gpu_index(device)
        require_tensorrt(str(path))
        manifest = check_engine_manifest(path, device_index=device_index)
        meta, extras = parse_meta(manifest.get("onnx_metadata") or {}, path, fix=REBUILD)
        return cls(path, manifest, meta, extras["output_kind"], device_index)

    # --- setup -------------------------------------------------------------------------
    def _open_engine(self) -> None:
        import tensorrt as trt

        self._runtime: Optional[trt.Runtime] = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        dla_core = (self.manifest.get("build_flags") or {}).get("dla_core")
        if dla_core is not None:
            problem = dla_problem(int(dla_core), int(self._runtime.num_DLA_cores), flag=f"{self.path.name}: DLA core")
            if problem:
                raise EdgesegError(f"{problem.split(';')[0]}; {REBUILD} without --dla-core")
            self._runtime.DLA_core = int(dla_core)  # before deserializing: the engine runs on that core
        engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())  # None on failure (its docstring)
        if engine is None:
            raise EdgesegError(f"{self.path}: TensorRT could not load this engine (see its message above); {REBUILD}")
        self._engine: Optional[trt.ICudaEngine] = engine
        self._execution: Optional[trt.IExecutionContext] = execution_context(engine, self.path)
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if n not in inputs]
        if len(inputs) != 1 or len(outputs) != 1:
            raise EdgesegError(f"{self.path}: expected one input and one output, found {inputs} and {outputs}; "
                               "build engines with `edgeseg build`")  # fmt: skip
        self.input_name, self.output_name = inputs[0], outputs[0]

    def _allocate(self) -> None:
        import pycuda.driver as cuda

        engine, execution = self._engine, self._execution
        assert engine is not None and execution is not None
        input_shape = tuple(engine.get_tensor_shape(self.input_name))
        self.dynamic = input_shape[0] < 0
        if self.dynamic:
            self.max_batch = int(engine.get_tensor_profile_shape(self.input_name, 0)[2][0])
            execution.set_input_shape(self.input_name, (self.max_batch, *input_shape[1:]))
        else:
            self.max_batch = int(input_shape[0])
        self._sample_shape = input_shape[1:]
        self._batch_set = self.max_batch
        output_shape = tuple(execution.get_tensor_shape(self.output_name))
        input_dtype = numpy_dtype(engine.get_tensor_dtype(self.input_name))
        output_dtype = numpy_dtype(engine.get_tensor_dtype(self.output_name))
        self._host_in = cuda.pagelocked_empty((self.max_batch, *self._sample_shape), input_dtype)
        self._host_out = cuda.pagelocked_empty(output_shape, output_dtype)
        self._device_in = cuda.mem_alloc(self._host_in.nbytes)
        self._device_out = cuda.mem_alloc(self._host_out.nbytes)
        execution.set_tensor_address(self.input_name, int(self._device_in))
        execution.set_tensor_address(self.output_name, int(self._device_out))
        self._stream = cuda.Stream()
        self._events = [cuda.Event() for _ in range(4)]

    # --- inference -----------------------------------------------------------------------
    def infer(self, batch: np.ndarray) -> np.ndarray:
        from edgeseg.runtime.trt.cuda import current

        count = batch.shape[0]
        if count > self.max_batch:
            raise EdgesegError(f"batch of {count}: {self.path.name} was built for at most {self.max_batch} images; "
                               "rebuild it with a larger --dynamic-batch")  # fmt: skip
        if self._context is None or self._execution is None:
            raise EdgesegError(f"{self.path.name}: this backend is closed; load the engine again")
        run_batch = count if self.dynamic else self.max_batch  # a fixed-batch engine always runs its whole batch
        with current(self._context):
            if run_batch != self._batch_set:
                if not self._execution.set_input_shape(self.input_name, (run_batch, *self._sample_shape)):
                    raise EdgesegError(f"batch of {count}: {self.path.name} does not accept it (its profile is "
                                       f"{self.manifest.get('batch_range')})")  # fmt: skip
                self._batch_set = run_batch
            self._host_in[:count] = batch
            output = self._run(run_batch)[:count]
        return output.astype(np.uint8 if self.output_kind == "labels" else np.float32, copy=False)

    def _run(self, run_batch: int) -> np.ndarray:
        import pycuda.driver as cuda

        stream, events, execution = self._stream, self._events, self._execution
        assert execution is not None
        host_in, host_out = self._host_in[:run_batch], self._host_out[:run_batch]
        events[0].record(stream)
        cuda.memcpy_htod_async(self._device_in, host_in, stream)
        events[1].record(stream)
        if not execution.execute_async_v3(stream.handle):
            raise EdgesegError(f"{self.path.name}: TensorRT failed to run the engine (see its message above)")
        events[2].record(stream)
        cuda.memcpy_dtoh_async(host_out, self._device_out, stream)
        events[3].record(stream)
        stream.synchronize()
        self.stage_times = {"h2d_ms": events[1].time_since(events[0]), "compute_ms": events[2].time_since(events[1]),
                            "d2h_ms": events[3].time_since(events[2])}  # fmt: skip
        return host_out.copy()

    # --- teardown ------------------------------------------------------------------------
    def close(self) -> None:
        """Free the engine and buffers inside the primary context; the context itself stays for other backends."""
        context, self._context = getattr(self, "_context", None), None
        if context is None:
            return
        from edgeseg.runtime.trt.cuda import current

        with current(context):
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
                setattr(self, name, None)  # TensorRT objects are destroyed here, while the context is current

    def __del__(self) -> None:
        if getattr(self, "_context", None) is not None:
            try:
                self.close()
            except Exception:  # interpreter shutdown: CUDA may already be gone
                pass


def execution_context(engine: "trt.ICudaEngine", path: Path) -> "trt.IExecutionContext":
    """The engine's execution context; one line when TensorRT returns none, as it does when the context's device
    memory cannot be allocated (NVIDIA/TensorRT#3017; NVIDIA's samples check for it, sampleInference.cpp in 10.3)."""
    execution = engine.create_execution_context()
    if execution is None:
        raise EdgesegError(f"{path}: TensorRT could not create an execution context for this engine (see its message "
                           "above; usually too little free GPU memory): close other GPU programs, or rebuild it for a "
                           "smaller --batch or --dynamic-batch")  # fmt: skip
    return execution


def gpu_index(device: Optional[str]) -> int:
    """N of ``cuda:N`` (0 for cuda, auto or none given); one line for ``cpu`` or anything else."""
    if device is None:
        return 0
    kind, _, index = str(device).partition(":")
    if kind == "cpu":
        raise EdgesegError(f"--device {device}: a TensorRT engine runs on an NVIDIA GPU; pass --device cuda "
                           "(or cuda:N), or run the bundle's .onnx model on the CPU")  # fmt: skip
    if kind not in GPU_DEVICES or (index and not index.isdigit()):
        raise EdgesegError(f"--device {device}: a TensorRT engine runs on a GPU; pass --device cuda or cuda:N")
    return int(index or 0)
