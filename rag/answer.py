"""Answers from retrieved chunks: an LLM with numbered sources, or extractive sentences.

With an OpenAI-compatible endpoint configured, the LLM gets a grounded prompt whose sources
are numbered and must be cited as [n]. Without one, the best sentences of the top chunks
are quoted with their citations. Either way, when nothing relevant enough was retrieved
the answer says so instead of guessing.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Sequence
from functools import lru_cache
from typing import Protocol

from rag.models import Citation
from rag.retrieval import Retrieved

log = logging.getLogger(__name__)

ABSTAIN_TEXT = "I could not find an answer to this in the documents you have access to."
LLM_ABSTAIN = "I cannot find this in the documents."
SYSTEM_PROMPT = (
    "You answer employees' questions using only the numbered sources provided. "
    "Cite every claim with the number of its source in square brackets, like [1] or [2][3]. "
    "If the sources do not contain the answer, reply exactly: I cannot find this in the documents. "
    "Be concise."
)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(*\[])|\n{2,}|\n(?=\s*(?:[-*]|\d+[.)])\s)")
_WORD = re.compile(r"[a-z0-9]+")
_STOP = frozenset(
    "a an and are as at be by can do does for from has have how i if in is it its me my of on or "
    "our should so that the their them there these they this to up was we what when where which "
    "who why will with would you your".split()
)


def llm_abstained(text: str) -> bool:
    """Did the model answer with the agreed 'not in the sources' sentence?"""
    return text.strip().lower().startswith(LLM_ABSTAIN.lower().rstrip("."))


class Generator(Protocol):
    mode: str

    def generate(self, question: str, citations: Sequence[Citation]) -> str: ...

    def stream(self, question: str, citations: Sequence[Citation]) -> Iterator[str]: ...


def make_citations(chunks: Sequence[Retrieved]) -> list[Citation]:
    out = []
    for i, r in enumerate(chunks, start=1):
        p = r.hit.payload
        text = str(p.get("text", ""))
        out.append(
            Citation(
                n=i,
                source=str(p.get("source", "")),
                title=str(p.get("title", "")),
                section=str(p.get("section", "")),
                score=round(r.relevance, 4),
                text=text,
                snippet=text[:300] + ("…" if len(text) > 300 else ""),
                doc_id=str(p.get("doc_id", "")),
            )
        )
    return out


@lru_cache(maxsize=1)
def _stemmer():  # noqa: ANN202
    from nltk.stem import PorterStemmer  # pure Python, no data download

    return PorterStemmer()


@lru_cache(maxsize=65536)
def _stem(word: str) -> str:
    """Porter is pure Python and was a sixth of an answer's CPU; a handbook's words repeat."""
    return _stemmer().stem(word)


def _terms(text: str) -> set[str]:
    return {_stem(w) for w in _WORD.findall(text.lower()) if w not in _STOP and len(w) > 1}


def split_sentences(text: str) -> list[str]:
    parts = (" ".join(s.split()).strip(" -*#>") for s in _SENTENCE_END.split(text))
    return [p for p in parts if len(p) > 15]


class ExtractiveGenerator:
    """The no-LLM mode: quote the sentences that share most terms with the question."""

    mode = "extractive"

    def __init__(self, max_sentences: int = 2, max_chars: int = 600) -> None:
        self.max_sentences = max_sentences
        self.max_chars = max_chars

    def generate(self, question: str, citations: Sequence[Citation]) -> str:
        q = _terms(question)
        scored: list[tuple[float, int, int, str]] = []
        for c in citations:
            for j, sent in enumerate(split_sentences(c.text)):
                overlap = len(q & _terms(sent)) / (len(q) or 1)
                # Prefer better-ranked chunks and earlier sentences when overlap ties.
                score = overlap + 0.15 * c.score - 0.02 * (c.n - 1) - 0.001 * j
                scored.append((score, c.n, j, sent))
        if not scored:
            return citations[0].snippet + f" [{citations[0].n}]"
        ranked = sorted(scored, key=lambda t: -t[0])
        # Further sentences must be nearly as good as the best one, or they are noise.
        best = [t for t in ranked[: self.max_sentences] if t[0] >= ranked[0][0] - 0.25]
        best.sort(key=lambda t: (t[1], t[2]))
        out, used = [], 0
        for _, n, _, sent in best:
            if out and used + len(sent) > self.max_chars:
                break
            out.append(f"{sent} [{n}]")
            used += len(sent)
        return " ".join(out)

    def stream(self, question: str, citations: Sequence[Citation]) -> Iterator[str]:
        yield self.generate(question, citations)


class LLMGenerator:
    """An OpenAI-compatible chat endpoint through llama-index's OpenAILike."""

    mode = "llm"

    def __init__(self, *, model: str, base_url: str, api_key: str | None, timeout_s: float = 60.0) -> None:
        from llama_index.llms.openai_like import OpenAILike

        self.model = model
        self.llm = OpenAILike(
            model=model,
            api_base=base_url,
            api_key=api_key or "unused",
            is_chat_model=True,
            context_window=8192,
            timeout=timeout_s,
            max_retries=1,
        )

    def _messages(self, question: str, citations: Sequence[Citation]) -> list:
        from llama_index.core.llms import ChatMessage

        sources = "\n\n".join(
            f"[{c.n}] {c.title}{' — ' + c.section if c.section else ''} ({c.source})\n{c.text}" for c in citations
        )
        return [
            ChatMessage(role="system", content=SYSTEM_PROMPT),
            ChatMessage(role="user", content=f"Sources:\n\n{sources}\n\nQuestion: {question}"),
        ]

    def generate(self, question: str, citations: Sequence[Citation]) -> str:
        resp = self.llm.chat(self._messages(question, citations))
        return (resp.message.content or "").strip()

    def stream(self, question: str, citations: Sequence[Citation]) -> Iterator[str]:
        for part in self.llm.stream_chat(self._messages(question, citations)):
            if part.delta:
                yield part.delta
