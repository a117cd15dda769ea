"""loopline's shared core: settings, metadata store, ingestion, monitoring and HTML reports.

Monitoring (`shared.monitoring`) is drift, freshness SLOs, pipeline runs, alerts and the
monitoring report; it needs numpy and httpx (the `rag` extra) and, for the report,
matplotlib (the `eval` extra). `shared` never imports a vertical (`rag`, `vision`), the edge
runtime or `evaluation`, and keeps its imports light; the edge runtime does not depend on it
at all (tests/test_layering.py checks the layers).
"""
