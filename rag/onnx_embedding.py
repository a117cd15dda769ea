"""The bundled MiniLM through ONNX Runtime: exported once from the installed weights, then served
without torch.

Why: at 2 threads ONNX Runtime's transformer-optimized graph embeds about twice as fast as
torch, and dynamic INT8 about three times, with the same word pieces, mean pooling and L2
norm (evaluation/benchmarks/embedding_runtime.py measured every variant). INT8 keeps the
feed-forward output MatMuls in float: quantizing them too is faster still but moves vectors
(worst cosine to torch 0.976 instead of 0.991) and costs retrieval quality.

The export (torch + transformers, offline, about 15 s on 2 cores, in a child process) runs the
first time a process needs a file its cache folder lacks; the folder is keyed by the weights
and the exporter's versions, written atomically under a file lock, and shared by every home of
the user (~/.cache/loopline/embeddings unless LOOPLINE_EMBEDDING_CACHE says otherwise).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

log = logging.getLogger(__name__)

Precision = Literal["int8", "fp32"]
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
# Names of the exported BertModel's MatMuls by role; the transformer optimizer keeps them.
FFN_OUTPUT_MATMUL = r"/layer\.\d+/output/dense/"
EXPORT_PACKAGES = ("torch", "transformers", "onnx", "onnxruntime")


def default_cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "loopline" / "embeddings"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "-"


def cache_folder(root: Path, model_dir: Path) -> Path:
    """The folder of `root` for these weights and these exporter/optimizer versions."""
    weights = model_dir / "model.safetensors"
    key = hashlib.sha256()
    key.update(str(weights.stat().st_size).encode())
    with weights.open("rb") as fh:
        key.update(fh.read(1 << 20))
    key.update(json.dumps({p: _version(p) for p in EXPORT_PACKAGES}).encode())
    return root / key.hexdigest()[:16]


# --- building the files ---------------------------------------------------------------------
def export_plain(model_dir: Path, out: Path) -> None:
    """The BertModel to ONNX: ids, mask, token types -> last_hidden_state, dynamic batch and length.

    The TorchScript exporter with eager attention: its graph is the one ONNX Runtime's BERT
    fusions recognise. Pooling and normalisation stay in numpy, as sentence-transformers
    keeps them outside the transformer."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch
    import transformers
    from transformers import AutoModel

    transformers.utils.logging.disable_progress_bar()
    bert = AutoModel.from_pretrained(str(model_dir), attn_implementation="eager").eval()

    class LastHidden(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            return self.inner(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state

    dummy = tuple(torch.ones(2, 16, dtype=torch.long) for _ in INPUTS)
    axes = {name: {0: "batch", 1: "tokens"} for name in (*INPUTS, "last_hidden_state")}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on shapes that the dynamic axes already cover
        torch.onnx.export(
            LastHidden(bert),
            dummy,
            str(out),
            input_names=list(INPUTS),
            output_names=["last_hidden_state"],
            dynamic_axes=axes,
            opset_version=17,
            dynamo=False,
        )


def export_fused(plain: Path, out: Path, model_dir: Path) -> dict[str, int]:
    """ONNX Runtime's transformer optimizer over `plain` (fused attention, SkipLayerNorm, BiasGelu,
    EmbedLayerNorm); returns the counts of the fused operators."""
    from onnxruntime.transformers.optimizer import optimize_model

    config = json.loads((model_dir / "config.json").read_text())
    model = optimize_model(
        str(plain),
        model_type="bert",
        num_heads=int(config["num_attention_heads"]),
        hidden_size=int(config["hidden_size"]),
        opt_level=1,
        use_gpu=False,
    )
    model.save_model_to_file(str(out))
    return {k: v for k, v in model.get_fused_operator_statistics().items() if v}


def is_ffn_output(matmul: str) -> bool:
    return re.search(FFN_OUTPUT_MATMUL, matmul) is not None


def export_int8(
    source: Path,
    out: Path,
    *,
    op_types: Sequence[str] = ("MatMul", "Attention"),
    keep_float: Callable[[str], bool] = is_ffn_output,
    per_channel: bool = True,
) -> None:
    """Dynamic INT8 of `source`'s `op_types`, leaving the MatMuls whose names `keep_float` picks in float."""
    import onnx

    graph = onnx.load(str(source), load_external_data=False).graph
    excluded = [n.name for n in graph.node if n.op_type == "MatMul" and keep_float(n.name)]
    _quantize(source, out, op_types, excluded, per_channel)


def _quantize(source: Path, out: Path, op_types: Sequence[str], excluded: list[str], per_channel: bool) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(source),
        str(out),
        op_types_to_quantize=list(op_types),
        nodes_to_exclude=excluded,
        per_channel=per_channel,
        weight_type=QuantType.QInt8,
        # The fused graph's contrib ops defeat ONNX shape inference; their outputs are float.
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )


def _write_atomically(out: Path, build: Any) -> Any:
    """`build(tmp)` into a temporary file beside `out`, then renamed: readers never see half a model."""
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".onnx")
    os.close(fd)
    try:
        got = build(Path(tmp))
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide the file from the service's other users
        os.replace(tmp, out)
        return got
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def model_file(model_dir: Path, precision: Precision, cache_root: Path | None = None) -> Path:
    """The ONNX file of the packaged model at `precision`, exported into the cache if missing.

    The export runs in a child process: torch and the exporter's chatter stay out of the
    service, which then needs only onnxruntime and tokenizers in memory."""
    folder = cache_folder(cache_root or default_cache_root(), model_dir)
    final = folder / ("fused.onnx" if precision == "fp32" else f"{precision}.onnx")
    if final.exists():
        return final
    folder.mkdir(parents=True, exist_ok=True)
    log.info("exporting the bundled model to ONNX (%s) in %s, once: seconds to a minute", precision, folder)
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", __name__, str(model_dir), str(folder), precision]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0 or not final.exists():
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
        raise RuntimeError(f"exporting the embedding model to ONNX failed (exit {done.returncode}):\n{tail}")
    log.info("exported %s in %.1f s", final.name, time.perf_counter() - t0)
    return final


def build(model_dir: Path, folder: Path, precision: Precision) -> None:
    """Write what `folder` lacks for `precision`, under a file lock (another process may be at it)."""
    from filelock import FileLock

    fused, final = folder / "fused.onnx", folder / f"{precision}.onnx"
    with FileLock(str(folder / ".export.lock")):
        if not fused.exists():
            with tempfile.TemporaryDirectory(dir=folder) as scratch:
                plain = Path(scratch) / "plain.onnx"
                export_plain(model_dir, plain)
                stats = _write_atomically(fused, lambda tmp: export_fused(plain, tmp, model_dir))
            (folder / "fused-operators.json").write_text(json.dumps(stats))
        if precision != "fp32" and not final.exists():
            _write_atomically(final, lambda tmp: export_int8(fused, tmp))


# --- embedding ------------------------------------------------------------------------------
class OnnxEmbedder:
    """The Embedder port on an ONNX Runtime session: the torch path's word pieces, pooling and norm.

    Chunks are sorted by length and padded per batch to their longest, so short chunks do not
    pay for long ones. The session loads on the first embedding, like the torch path's model.
    """

    def __init__(
        self,
        model_dir: Path,
        *,
        base_name: str,
        precision: Precision = "int8",
        batch_size: int = 8,
        threads: int | None = None,
        cache_root: Path | None = None,
        onnx_file: Path | None = None,
    ) -> None:
        self.model_dir = model_dir
        self.onnx_file = onnx_file  # a given file instead of the cache's (the benchmark's variants)
        self.precision = precision
        # FP32 gives torch's vectors (cosine 1.0000), INT8 other ones: the collection must know.
        self.name = base_name if precision == "fp32" else f"{base_name}+onnx-{precision}"
        pooling = json.loads((model_dir / "1_Pooling" / "config.json").read_text())
        self.dim = int(pooling["word_embedding_dimension"])
        self.max_len = int(json.loads((model_dir / "sentence_bert_config.json").read_text())["max_seq_length"])
        self.batch_size = batch_size
        self.threads = threads
        self.cache_root = cache_root
        self.model_path: Path | None = None  # the file in use, once loaded
        self._sessions: dict[str, Any] = {}
        self._tokenizer: Any = None
        self._load_lock = threading.Lock()

    def _session(self, purpose: str) -> Any:
        """One session for batches of documents (`threads` threads) and one for single queries
        (one thread): a short query gains nothing from a second thread, and requests answered at
        once then run side by side instead of queueing on one pool. The query session does not
        spin between operators (ONNX Runtime's default), which with concurrent requests burns
        the cores the others need (8 concurrent queries ran 2.5x faster without); the document
        session, one caller at a time, keeps spinning (about 1.4x its throughput)."""
        with self._load_lock:
            if purpose not in self._sessions:
                import onnxruntime as ort

                path = self.model_path or self.onnx_file or model_file(self.model_dir, self.precision, self.cache_root)
                options = ort.SessionOptions()
                threads = 1 if purpose == "query" else self.threads
                if threads:
                    options.intra_op_num_threads = threads
                options.inter_op_num_threads = 1
                if purpose == "query":
                    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
                options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
                options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
                options.log_severity_level = 3
                self._sessions[purpose] = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
                self.model_path = path
                log.info("loaded %s (dim %d) for %s from %s", self.name, self.dim, purpose, path)
            return self._sessions[purpose]

    @property
    def tokenizer(self) -> Any:
        with self._load_lock:
            if self._tokenizer is None:
                from tokenizers import Tokenizer

                tokenizer = Tokenizer.from_file(str(self.model_dir / "tokenizer.json"))
                tokenizer.enable_truncation(max_length=self.max_len)
                tokenizer.no_padding()
                self._tokenizer = tokenizer
            return self._tokenizer

    def word_pieces(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self.tokenizer.encode_batch(list(texts))]

    def embed_array(self, texts: Sequence[str], *, purpose: str = "documents") -> Any:
        """Unit vectors as a float32 array, one row per text."""
        import numpy as np

        session = self._session(purpose)
        pieces = self.word_pieces(texts)
        lengths = np.array([len(p) for p in pieces])
        order = np.argsort(-lengths, kind="stable")
        out = np.empty((len(pieces), self.dim), dtype=np.float32)
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            ids = np.zeros((len(rows), int(lengths[rows].max())), dtype=np.int64)
            mask = np.zeros_like(ids)
            for r, i in enumerate(rows):
                ids[r, : lengths[i]] = pieces[i]
                mask[r, : lengths[i]] = 1
            (hidden,) = session.run(
                None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
            )
            weights = mask[:, :, None].astype(np.float32)
            pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
            pooled /= np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)
            out[rows] = pooled
        return out

    def embed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        if not texts:
            return []
        return self.embed_array(texts).tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.embed_array([text], purpose="query")[0].tolist()


if __name__ == "__main__":  # the export child of model_file: MODEL_DIR FOLDER PRECISION
    logging.basicConfig(level=logging.WARNING)
    build(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3])  # type: ignore[arg-type]
