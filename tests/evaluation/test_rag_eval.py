"""RAG evaluation on the sample handbook: retrieval by source, abstention, RAGAS metrics, judge.

The pipeline is real (ingested handbook, bundled embedder, extractive answers); the judge is
a local OpenAI-compatible *test* server that grades by plain string rules, so the LLM-judged
path (ragas + instructor JSON mode) is exercised without a model.
"""

from __future__ import annotations

import json
import os
import re
import threading
from pathlib import Path

import pytest
from fastapi import FastAPI, Request

from evaluation.rag_eval import QAItem, evaluate_rag, load_qa, make_judge
from rag.models import Answer
from shared.auth import Principal

ADMIN = Principal(name="local-admin", admin=True)


def _run(service, items, who=ADMIN, **kw) -> dict:
    return evaluate_rag(lambda q: service.ask(q, who), items, top_k=5, **kw)


def test_offline_metrics_on_a_tiny_qa_set(indexed_home: Path, make_service, qa_file: Path) -> None:
    items = load_qa(qa_file)
    result = _run(make_service(home=indexed_home), items)
    rows = {q["id"]: q for q in result["questions"]}
    overall = result["overall"]

    # The contract of every question entry.
    for q in result["questions"]:
        assert {"id", "question", "sources", "answer", "abstained"} <= q.keys()
    assert [q["id"] for q in result["questions"]] == [i.id for i in items]

    answerable = [i for i in items if i.answerable]
    for item in answerable:
        row = rows[item.id]
        assert row["sources"][0] == item.source, item.id  # the handbook is small and unambiguous
        assert not row["abstained"]
        # The quote is verbatim in the source, so a cited chunk contains it.
        assert row["context_recall"] == 1.0, item.id
        assert 0 < row["context_precision"] <= 1
        for m in ("string_similarity", "rouge_l", "bleu"):
            assert 0 < row[m] <= 1, (item.id, m)
    for item in (i for i in items if not i.answerable):
        assert rows[item.id]["abstained"] and rows[item.id]["sources"] == []
        assert rows[item.id]["context_recall"] is None  # nothing to recall

    assert overall["answerable"] == len(answerable) and overall["unanswerable"] == len(items) - len(answerable)
    assert overall["hit@1"] == overall["hit@5"] == overall["mrr@5"] == 1.0
    assert overall["abstain_rate_unanswerable"] == 1.0
    assert overall["wrong_abstain_rate_answerable"] == 0.0
    assert overall["rouge_l"] == pytest.approx(
        sum(rows[i.id]["rouge_l"] for i in answerable) / len(answerable), abs=1e-4
    )
    assert result["breakdown"]["department"]["engineering"]["answerable"] == 1
    assert result["config"]["judge_model"] is None
    assert os.environ["RAGAS_DO_NOT_TRACK"] == "true"  # set before ragas was imported
    json.dumps(result, allow_nan=False)  # strict JSON: no NaN leaks out of ragas


def test_a_quote_from_another_document_is_not_recalled(indexed_home: Path, make_service, qa_file: Path) -> None:
    right = next(i for i in load_qa(qa_file) if i.id == "t1")
    wrong = right.model_copy(
        update={"id": "t1-wrong", "quote": "Economy class is the default for flights under six hours."}
    )
    rows = {q["id"]: q for q in _run(make_service(home=indexed_home), [right, wrong])["questions"]}
    assert rows["t1"]["context_recall"] == 1.0
    assert rows["t1-wrong"]["context_recall"] == 0.0
    assert rows["t1-wrong"]["context_precision"] < rows["t1"]["context_precision"]


def test_questions_are_answered_as_the_given_user(indexed_home: Path, make_service, qa_file: Path) -> None:
    """Someone outside engineering cannot be served the on-call page: a miss, not a leak."""
    items = [i for i in load_qa(qa_file) if i.id == "e1"]
    svc = make_service(home=indexed_home)
    as_admin = _run(svc, items)["questions"][0]
    as_sales = _run(svc, items, who=Principal(name="sol", groups=["sales"]))["questions"][0]
    assert as_admin["rank"] == 1
    assert as_sales["rank"] is None and "on-call.md" not in as_sales["sources"]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", r"qa\.jsonl:2: not valid JSON"),
        ('{"id": "x"}', r"qa\.jsonl:2: question: Field required"),
        ('{"id": "a", "question": "again?"}', r"qa\.jsonl:2: duplicate id 'a'"),
    ],
)
def test_a_bad_qa_line_is_reported_with_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "qa.jsonl"
    path.write_text('{"id": "a", "question": "fine?", "answer": "", "source": ""}\n' + line + "\n")
    with pytest.raises(ValueError, match=message):
        load_qa(path)


# --- the LLM-judged metrics against a local test judge -----------------------------------------
JUDGE_MODEL = "test-judge-model"
FABRICATED = "Employees receive 99 days of paid vacation and a free sailboat."


def _decode_input(prompt: str) -> dict:
    """The JSON input ragas appended to its prompt ('… input: {…}\nOutput:')."""
    start = prompt.rindex("input: ") + len("input: ")
    obj, _ = json.JSONDecoder().raw_decode(prompt[start:])
    return obj


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", text.lower()))


def _judge_reply(system: str, prompt: str) -> dict:
    """Grade like a strict, literal judge: a statement is faithful when the context contains it."""
    schema, _ = json.JSONDecoder().raw_decode(system[system.index("{") :])
    data = _decode_input(prompt)
    title = schema["title"]
    if title == "StatementGeneratorOutput":
        return {"statements": [s.strip() for s in re.split(r"(?<=\.)\s+", data["answer"]) if s.strip()]}
    if title == "NLIStatementOutput":
        context = " ".join(data["context"].split()).lower()
        return {
            "statements": [
                {
                    "statement": s,
                    "reason": "literal check",
                    "verdict": int(" ".join(s.split()).lower().rstrip(".") in context),
                }
                for s in data["statements"]
            ]
        }
    if title == "AnswerRelevanceOutput":
        return {"question": data["response"], "noncommittal": 0}
    if title == "ContextPrecisionOutput":
        return {"reason": "word overlap", "verdict": int(len(_words(data["answer"]) & _words(data["context"])) >= 3)}
    raise AssertionError(f"unexpected structured output {title}")


@pytest.fixture
def judge_server():
    from live_server import serve_in_thread

    seen: list[dict] = []
    lock = threading.Lock()
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def completions(request: Request) -> dict:
        body = await request.json()
        with lock:
            seen.append(body)
        system = next(m["content"] for m in body["messages"] if m["role"] == "system")
        user = "\n".join(m["content"] for m in body["messages"] if m["role"] == "user")
        content = json.dumps(_judge_reply(system, user))
        return {
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "created": 0,
            "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }

    with serve_in_thread(app) as url:
        yield f"{url}/v1", seen


def test_llm_judged_metrics_through_an_openai_compatible_judge(
    indexed_home: Path, make_service, embedder, judge_server
) -> None:
    base_url, seen = judge_server
    svc = make_service(home=indexed_home)
    items = [
        QAItem(
            id="grounded",
            question="How many days of paid vacation does every employee receive?",
            answer="27 days per calendar year.",
            source="benefits/time-off.md",
        ),
        QAItem(
            id="made-up",
            question="How many days of paid vacation does every employee receive?",
            answer="27 days per calendar year.",
            source="benefits/time-off.md",
        ),
    ]

    def ask(question: str, calls: list[int] = [0]) -> Answer:  # noqa: B006 - counts the calls
        a = svc.ask(question, ADMIN)
        calls[0] += 1
        return a if calls[0] == 1 else a.model_copy(update={"answer": FABRICATED})  # the second answer is invented

    judge = make_judge(model=JUDGE_MODEL, base_url=base_url, api_key=None, embed_query=embedder.embed_query)
    result = evaluate_rag(ask, items, top_k=5, judge=judge)
    rows = {q["id"]: q for q in result["questions"]}

    assert rows["grounded"]["faithfulness"] == 1.0  # extractive: every sentence is in a cited chunk
    assert rows["made-up"]["faithfulness"] == 0.0
    assert rows["grounded"]["llm_context_precision"] > 0
    assert rows["grounded"]["answer_relevancy"] > rows["made-up"]["answer_relevancy"]
    assert result["overall"]["judge_errors"] == 0
    assert result["config"]["judge_model"] == JUDGE_MODEL
    # Every judgement asked the endpoint's model for a JSON-mode answer.
    assert seen and all(b["model"] == JUDGE_MODEL and b.get("response_format") == {"type": "json_object"} for b in seen)
