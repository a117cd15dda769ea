"""`python -m evaluation.benchmarks.rag`: see evaluation.benchmarks.rag."""

from evaluation.benchmarks.rag.cli import bench_rag

if __name__ == "__main__":
    bench_rag(prog_name="python -m evaluation.benchmarks.rag")
