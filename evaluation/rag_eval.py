"""Score the RAG pipeline on a QA file: retrieval by source, abstention, and RAGAS metrics.

Each question goes through the real pipeline (an `ask` callable, normally
`RagService.ask` as some principal), and its answer and cited chunks are scored:

- retrieval by source: the rank of the first citation whose `source` is the QA `source`
  (hit@1, hit@k, MRR@k), over documents best first;
- abstention: the share of unanswerable questions (empty `source`) the system declined,
  and the share of answerable ones it wrongly declined;
- RAGAS metrics that need no LLM: context precision and recall against the QA `quote`
  (the reference context; the reference answer when there is no quote), and the answer's
  string similarity, ROUGE-L and BLEU against the reference answer;
- with a judge (an OpenAI-compatible endpoint), the LLM-judged faithfulness, answer
  relevancy and context precision, asked for JSON-mode answers.

It does not ingest, tune or store anything; the CLI writes the JSON and the report.

RAGAS 0.4.3 notes: the string, ROUGE and BLEU metrics and the LLM metrics come from
`ragas.metrics.collections`; the non-LLM context metrics exist only in the legacy
`ragas.metrics` (its deprecation message points to collections, which lack them). Their
stock Levenshtein similarity compares a whole ~200-token chunk with a one-line quote and
scores ~0 even when the chunk contains the quote verbatim, so they are given a partial
match (rapidfuzz `partial_ratio`: the best-aligned window of the longer text) instead.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import re
import statistics
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rag.models import Answer

# Must be set before ragas is imported: it posts usage telemetry otherwise.
os.environ["RAGAS_DO_NOT_TRACK"] = "true"

log = logging.getLogger(__name__)

CONTEXT_MATCH_THRESHOLD = 0.8  # partial_ratio at which a retrieved chunk "contains" the quote
NON_LLM_METRICS = ("context_precision", "context_recall", "string_similarity", "rouge_l", "bleu")
LLM_METRICS = ("faithfulness", "answer_relevancy", "llm_context_precision")


class QAItem(BaseModel):
    """One line of a QA file (the format of handbook-qa-dev.jsonl)."""

    model_config = ConfigDict(extra="ignore")
    id: str
    question: str = Field(min_length=1)
    answer: str = ""  # the reference answer
    source: str = ""  # empty: the corpus does not answer it
    quote: str = ""  # the passage of `source` that answers it
    kind: str = ""
    department: str = ""

    @property
    def answerable(self) -> bool:
        return bool(self.source)


def load_qa(path: Path) -> list[QAItem]:
    """Read a QA JSONL file; a bad line is an error that names the file and line."""
    items: list[QAItem] = []
    seen: set[str] = set()
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
            if isinstance(raw, dict) and "id" in raw:
                raw["id"] = str(raw["id"])
            item = QAItem.model_validate(raw)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{n}: not valid JSON ({exc.msg})") from exc
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "line"
            raise ValueError(f"{path}:{n}: {where}: {first['msg']} (expected id, question, answer, source)") from exc
        if item.id in seen:
            raise ValueError(f"{path}:{n}: duplicate id '{item.id}'")
        seen.add(item.id)
        items.append(item)
    if not items:
        raise ValueError(f"{path}: no questions")
    return items


# --- judge --------------------------------------------------------------------------------
@dataclass
class Judge:
    """An LLM (and the embedder answer relevancy needs) that grades answers."""

    model: str
    base_url: str
    llm: Any  # ragas InstructorBaseRagasLLM
    embeddings: Any  # ragas BaseRagasEmbedding
    concurrency: int = 4


def make_judge(
    *,
    model: str,
    base_url: str,
    api_key: str | None,
    embed_query: Callable[[str], list[float]],
    timeout_s: float = 60.0,
) -> Judge:
    """A ragas judge on an OpenAI-compatible endpoint (instructor in JSON mode)."""
    from openai import AsyncOpenAI
    from ragas.embeddings import BaseRagasEmbedding
    from ragas.llms import llm_factory

    class _Embeddings(BaseRagasEmbedding):
        """loopline's own query embedder, as ragas wants it (answer relevancy compares questions)."""

        def embed_text(self, text: str, **kwargs: Any) -> list[float]:
            return list(embed_query(text))

        async def aembed_text(self, text: str, **kwargs: Any) -> list[float]:
            return await asyncio.to_thread(self.embed_text, text)

    client = AsyncOpenAI(base_url=base_url, api_key=api_key or "not-needed", timeout=timeout_s, max_retries=1)
    # For OpenAI clients ragas' llm_factory uses instructor's Mode.JSON: JSON-mode answers.
    llm = llm_factory(model, client=client)
    return Judge(model=model, base_url=base_url, llm=llm, embeddings=_Embeddings())


# --- scoring --------------------------------------------------------------------------------
_CITATION_MARK = re.compile(r"\s*\[\d+\]")  # "[1]": a pointer to a source, not a claim to judge
_MARKUP = re.compile(r"[*_`#>|]+")
_SPACE = re.compile(r"\s+")


def _normalise(text: str) -> str:
    return _SPACE.sub(" ", _MARKUP.sub(" ", text)).strip().lower()


def _partial_match_metric():
    """A legacy ragas string metric: 1.0 when one text contains the other, fuzzily."""
    from dataclasses import dataclass as _dc
    from dataclasses import field as _field

    from ragas.metrics.base import MetricType, SingleTurnMetric
    from rapidfuzz import fuzz

    @_dc
    class PartialMatch(SingleTurnMetric):
        name: str = "partial_match"
        _required_columns: dict = _field(default_factory=lambda: {MetricType.SINGLE_TURN: {"reference", "response"}})

        def init(self, run_config: Any) -> None:
            pass

        async def _single_turn_ascore(self, sample: Any, callbacks: Any) -> float:
            return fuzz.partial_ratio(_normalise(sample.reference or ""), _normalise(sample.response or "")) / 100.0

        async def _ascore(self, row: dict, callbacks: Any) -> float:
            from ragas.dataset_schema import SingleTurnSample

            return await self._single_turn_ascore(SingleTurnSample(**row), callbacks)

    return PartialMatch()


@dataclass
class _Metrics:
    """The ragas metric objects, built once per evaluation."""

    precision: Any
    recall: Any
    similarity: Any
    rouge: Any
    bleu: Any
    judge: Judge | None = None
    llm: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def build(cls, judge: Judge | None) -> _Metrics:
        from ragas.metrics.collections import (
            BleuScore,
            NonLLMStringSimilarity,
            RougeScore,
        )

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # no collections equivalent in 0.4.3
            from ragas.metrics import (
                NonLLMContextPrecisionWithReference,
                NonLLMContextRecall,
            )

        match = _partial_match_metric()
        recall = NonLLMContextRecall(threshold=CONTEXT_MATCH_THRESHOLD)
        recall._distance_measure = match  # its setter only takes rapidfuzz distance names
        m = cls(
            precision=NonLLMContextPrecisionWithReference(distance_measure=match, threshold=CONTEXT_MATCH_THRESHOLD),
            recall=recall,
            similarity=NonLLMStringSimilarity(),
            rouge=RougeScore(rouge_type="rougeL", mode="fmeasure"),
            bleu=BleuScore(),
            judge=judge,
        )
        if judge is not None:
            from ragas.metrics.collections import (
                AnswerRelevancy,
                ContextPrecision,
                Faithfulness,
            )

            m.llm = {
                "faithfulness": Faithfulness(llm=judge.llm),
                "answer_relevancy": AnswerRelevancy(llm=judge.llm, embeddings=judge.embeddings),
                "llm_context_precision": ContextPrecision(llm=judge.llm),
            }
        return m


async def _score_offline(m: _Metrics, item: QAItem, answer: str, contexts: list[str]) -> dict[str, float | None]:
    from ragas.dataset_schema import SingleTurnSample

    reference_contexts = [item.quote or item.answer]
    out: dict[str, float | None] = {}
    if contexts:
        sample = SingleTurnSample(
            user_input=item.question, retrieved_contexts=contexts, reference_contexts=reference_contexts
        )
        out["context_precision"] = _finite(await m.precision.single_turn_ascore(sample))
        out["context_recall"] = _finite(await m.recall.single_turn_ascore(sample))
    else:  # nothing retrieved (abstained): nothing relevant was found
        out["context_precision"] = 0.0
        out["context_recall"] = 0.0
    ref, resp = item.answer, answer or ""
    if ref:
        out["string_similarity"] = _finite((await m.similarity.ascore(reference=ref, response=resp)).value)
        out["rouge_l"] = _finite((await m.rouge.ascore(reference=ref, response=resp)).value)
        out["bleu"] = _finite((await m.bleu.ascore(reference=ref, response=resp)).value)
    else:
        out.update(string_similarity=None, rouge_l=None, bleu=None)
    return out


async def _score_llm(m: _Metrics, item: QAItem, answer: str, contexts: list[str], sem: asyncio.Semaphore) -> dict:
    out: dict[str, float | None] = dict.fromkeys(LLM_METRICS)
    errors: list[str] = []
    calls = {
        "faithfulness": lambda: m.llm["faithfulness"].ascore(
            user_input=item.question, response=answer, retrieved_contexts=contexts
        ),
        "answer_relevancy": lambda: m.llm["answer_relevancy"].ascore(user_input=item.question, response=answer),
        "llm_context_precision": lambda: m.llm["llm_context_precision"].ascore(
            user_input=item.question, reference=item.answer or item.quote, retrieved_contexts=contexts
        ),
    }
    for name, call in calls.items():
        async with sem:
            try:
                out[name] = _finite((await call()).value)
            except Exception as exc:  # noqa: BLE001 - one failed judgement must not sink the run
                log.warning("judge failed on %s for %s: %s", name, item.id, exc)
                errors.append(f"{name}: {type(exc).__name__}: {str(exc)[:200]}")
    if errors:
        out["judge_errors"] = errors  # type: ignore[assignment]
    return out


# --- aggregation ------------------------------------------------------------------------------
def _finite(value: Any) -> float | None:
    """A score as a float, or None when there is none (ragas returns NaN for "no statements")."""
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def rank_of(sources: Sequence[str], expected: str) -> int | None:
    """The 1-based rank of `expected` in `sources` (documents best first); None when absent."""
    for i, s in enumerate(sources, start=1):
        if s == expected:
            return i
    return None


def retrieval_scores(ranks: Sequence[int | None], top_k: int) -> dict[str, float | None]:
    """hit@1, hit@k and MRR@k over the ranks of answerable questions (None: not retrieved).

    Each is None when there are no ranks. The benchmarks score their retrievals with it too.
    """
    n = len(ranks)
    return {
        "hit@1": _ratio(sum(r == 1 for r in ranks), n),
        f"hit@{top_k}": _ratio(sum(r is not None and r <= top_k for r in ranks), n),
        f"mrr@{top_k}": round(sum(1 / r for r in ranks if r) / n, 4) if n else None,
    }


def _mean(values: Sequence[float | None]) -> float | None:
    vals = [float(v) for v in values if v is not None]
    return round(statistics.fmean(vals), 4) if vals else None


def _ratio(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def summarise(questions: Sequence[dict], top_k: int) -> dict[str, Any]:
    """Overall figures of per-question rows (also used per department and per kind)."""
    ans = [q for q in questions if q["answerable"]]
    un = [q for q in questions if not q["answerable"]]
    ranks = [q["rank"] for q in ans]
    out: dict[str, Any] = {
        "questions": len(questions),
        "answerable": len(ans),
        "unanswerable": len(un),
        **retrieval_scores(ranks, top_k),
        "abstain_rate_unanswerable": _ratio(sum(q["abstained"] for q in un), len(un)),
        "wrong_abstain_rate_answerable": _ratio(sum(q["abstained"] for q in ans), len(ans)),
    }
    for name in NON_LLM_METRICS + LLM_METRICS:
        values = [q.get(name) for q in ans]
        if any(v is not None for v in values):
            out[name] = _mean(values)
    latencies = sorted(q["latency_ms"] for q in questions)
    if latencies:
        out["latency_p50_ms"] = round(statistics.median(latencies), 1)
    return out


def _breakdown(questions: Sequence[dict], key: str, top_k: int) -> dict[str, dict]:
    groups: dict[str, list[dict]] = {}
    for q in questions:
        if q.get(key):
            groups.setdefault(q[key], []).append(q)
    return {name: summarise(rows, top_k) for name, rows in sorted(groups.items())}


# --- the evaluation -----------------------------------------------------------------------------
def evaluate_rag(
    ask: Callable[[str], Answer],
    items: Sequence[QAItem],
    *,
    top_k: int,
    judge: Judge | None = None,
    config: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run every question through `ask` and score it; returns {overall, questions, breakdown, config}.

    `ask(question)` is the real pipeline as some principal (e.g. `lambda q: service.ask(q, who)`).
    """
    answered: list[tuple[QAItem, Answer]] = []
    for n, item in enumerate(items, start=1):
        answered.append((item, ask(item.question)))
        log.info("asked %d/%d (%s)", n, len(items), item.id)

    metrics = _Metrics.build(judge)

    async def score_all() -> list[dict]:
        sem = asyncio.Semaphore(judge.concurrency if judge else 1)

        async def one(item: QAItem, a: Answer) -> dict:
            contexts = [c.text for c in a.citations]
            if not item.answerable:  # abstention is its score; the text metrics do not apply
                return dict.fromkeys(NON_LLM_METRICS + (LLM_METRICS if judge else ()))
            row = await _score_offline(metrics, item, a.answer, contexts)
            if judge is not None:
                row.update(dict.fromkeys(LLM_METRICS))
                if not a.abstained and contexts:
                    row.update(await _score_llm(metrics, item, _CITATION_MARK.sub("", a.answer).strip(), contexts, sem))
            return row

        return await asyncio.gather(*(one(i, a) for i, a in answered))

    scores = asyncio.run(score_all())

    questions = []
    for (item, a), score in zip(answered, scores, strict=True):
        sources: list[str] = []
        for c in a.citations:
            if c.source not in sources:
                sources.append(c.source)
        rank = rank_of(sources, item.source) if item.answerable else None
        questions.append(
            {
                "id": item.id,
                "question": item.question,
                "kind": item.kind,
                "department": item.department,
                "answerable": item.answerable,
                "expected_source": item.source,
                "sources": sources,
                "top_score": max((c.score for c in a.citations), default=None),
                "answer": a.answer,
                "mode": a.mode,
                "abstained": a.abstained,
                "rank": rank,
                "hit@1": None if not item.answerable else rank == 1,
                f"hit@{top_k}": None if not item.answerable else rank is not None and rank <= top_k,
                "reciprocal_rank": None if not item.answerable else (1 / rank if rank else 0.0),
                "latency_ms": a.timings.total_ms,
                **score,
            }
        )
    overall = summarise(questions, top_k)
    if judge is not None:
        overall["judge_errors"] = sum(len(q.get("judge_errors", [])) for q in questions)
    return {
        "overall": overall,
        "questions": questions,
        "breakdown": {
            "department": _breakdown(questions, "department", top_k),
            "kind": _breakdown(questions, "kind", top_k),
        },
        "config": {
            "top_k": top_k,
            "ranking": "documents in order of their best cited chunk; a hit is a citation whose source is the QA source",
            "context_reference": "QA quote (the reference answer where there is none)",
            "context_match": f"rapidfuzz partial_ratio >= {CONTEXT_MATCH_THRESHOLD} (ragas NonLLMContextPrecisionWithReference / NonLLMContextRecall)",
            "answer_metrics": "ragas NonLLMStringSimilarity (Levenshtein), RougeScore (rougeL F1), BleuScore vs the reference answer",
            "judge_model": judge.model if judge else None,
            "judge_base_url": judge.base_url if judge else None,
            "ragas": _version("ragas"),
            **(config or {}),
        },
    }


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None
