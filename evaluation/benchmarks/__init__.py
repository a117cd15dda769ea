"""loopline's benchmarks: RAG against a plain llama-index baseline, the edge detector against
ultralytics, the size of an edge-only install, the cost of the Prometheus metrics, the API
under load (locust), jobs through each queue, and batch ingest on Ray.

Run from a checkout (`python -m evaluation.benchmarks --help` lists them); they are left out of
the wheel. Each measures and reports; none tunes a setting or picks a model.
"""
