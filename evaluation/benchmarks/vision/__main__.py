"""`python -m evaluation.benchmarks.vision`: see evaluation.benchmarks.vision."""

from evaluation.benchmarks.vision.cli import bench_vision

if __name__ == "__main__":
    bench_vision(prog_name="python -m evaluation.benchmarks.vision")
