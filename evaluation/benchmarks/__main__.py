"""`python -m evaluation.benchmarks`: one group over the benchmarks (each also runs alone)."""

from __future__ import annotations

import click

from evaluation.benchmarks.api_load import api_load
from evaluation.benchmarks.edge_size import edge_size
from evaluation.benchmarks.embedding_runtime import embedding_runtime
from evaluation.benchmarks.metrics_overhead import metrics_overhead
from evaluation.benchmarks.queue_throughput import queue_throughput
from evaluation.benchmarks.rag.cli import bench_rag
from evaluation.benchmarks.ray_ingest import ray_ingest
from evaluation.benchmarks.vision.cli import bench_vision


@click.group()
def benchmarks() -> None:
    """loopline's benchmarks, run from a checkout (also: python -m evaluation.benchmarks.NAME)."""


benchmarks.add_command(bench_rag, "rag")
benchmarks.add_command(bench_vision, "vision")
benchmarks.add_command(edge_size, "edge-size")
benchmarks.add_command(embedding_runtime, "embedding-runtime")
benchmarks.add_command(api_load, "api-load")
benchmarks.add_command(metrics_overhead, "metrics-overhead")
benchmarks.add_command(queue_throughput, "queue")
benchmarks.add_command(ray_ingest, "ray-ingest")

if __name__ == "__main__":
    benchmarks(prog_name="python -m evaluation.benchmarks")
