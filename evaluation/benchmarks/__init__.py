"""loopline's benchmarks: RAG against a plain llama-index baseline, the edge detector against
ultralytics, the size of an edge-only install, and the cost of the Prometheus metrics.

Run from a checkout (`python -m evaluation.benchmarks --help` lists them); they are left out of
the wheel. Each measures and reports; none tunes a setting or picks a model.
"""
