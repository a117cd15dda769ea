"""loopline's shared core: settings, metadata store, ingestion and (later) monitoring.

It never imports a vertical (`rag`, `vision`) and keeps its imports light so the edge
runtime can depend on it without pulling torch or llama-index.
"""
