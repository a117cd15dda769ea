"""Benchmark loopline's RAG against a plain llama-index baseline on the same documents.

    python -m evaluation.benchmarks.rag CORPUS_DIR --qa QA.jsonl [--max-docs N] [--out DIR] [--json]

One run copies a deterministic subset of the corpus into a scratch folder (every QA `source`
that exists, then other supported files in sorted order up to N) so both systems read
identical files, then measures, each system in its own spawned process (so peak RSS is that
process's own high-water mark):

- ingest: documents/s, chunks/s, peak RSS, model load time; for loopline also the re-ingest
  of the unchanged folder and the full/re-ingest ratio;
- retrieval on the QA questions: per-query latency p50/p95 (query embedding included),
  hit@1, hit@k and MRR@k by source file (scored by `evaluation.rag_eval`), for loopline
  hybrid (dense+BM25 RRF), loopline dense-only (the same index, queried without the sparse
  vector) and the baseline;
- abstention of loopline's answers on unanswerable questions (empty `source`), and the
  share of answerable questions wrongly abstained;
- pass/fail against the targets.

Modules: `corpus` (the subset and the scratch folder), `process` (a system in its own
process: threads, RSS, timed queries), `loopline` and `baseline` (the two systems),
`report` (figures, targets, the table), `cli` (the command).

A table goes to stdout (or JSON with --json); OUT/bench_rag.json and OUT/bench_rag.txt are
always written. It does not tune anything, never writes into the corpus, and copies no
corpus text into the repository: the subset lives in a scratch folder under /tmp at a fixed
path (the baseline embeds absolute file paths, so a random one would change its results),
emptied at exit unless --keep-tmp.
"""
