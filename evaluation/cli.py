"""`loopline eval …`: score the RAG pipeline or a detector, write a report, enforce a gate.

Names and JSON fields are a contract used by outside checks: `eval rag` prints
{overall, questions: [{id, sources, answer, abstained, …}], config} and `eval vision`
the detector figures plus `confusion_matrix`; with `--gate`, a `gate` object is added and
a failed gate exits with code 3 after a table of the failed checks on stderr.
"""

from __future__ import annotations

import json
import logging
import sys
from contextlib import redirect_stdout
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from evaluation.gates import (
    GATE_FAILED_EXIT_CODE,
    Gate,
    GateResult,
    check_gate,
    load_gate,
)
from shared.config import Settings

log = logging.getLogger(__name__)


def _load_gate_or_fail(path: Path | None) -> Gate | None:
    if path is None:
        return None
    try:
        return load_gate(path)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc


def _finish(
    result: dict[str, Any],
    gate_result: GateResult | None,
    report_path: Path | None,
    report: Any,
    as_json: bool,
    text: str,
) -> None:
    """Write the report, print the result, and exit 3 when the gate failed."""
    if gate_result is not None:
        result["gate"] = gate_result.model_dump()
    if report_path is not None:
        written = report.write(report_path)
        click.echo(f"report: {written}", err=True)
    click.echo(json.dumps(result, default=str) if as_json else text)
    if gate_result is not None:
        if gate_result.passed:
            click.echo(f"gate passed ({len(gate_result.checks)} checks)", err=True)
        else:
            click.echo(f"GATE FAILED: {len(gate_result.failed)} of {len(gate_result.checks)} checks", err=True)
            click.echo(gate_result.table(only_failed=True), err=True)
            sys.exit(GATE_FAILED_EXIT_CODE)


@click.group("eval")
def eval_group() -> None:
    """Score the RAG pipeline and detectors, write HTML reports, gate changes on the scores."""


# --- rag ----------------------------------------------------------------------------------------
@eval_group.command("rag")
@click.option(
    "--qa",
    "qa_file",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="QA JSONL: id, question, answer (reference), source ('' if unanswerable), optional quote/kind/department.",
)
@click.option(
    "--report", "report_path", type=click.Path(dir_okay=False, path_type=Path), help="Write an HTML report here."
)
@click.option(
    "--gate",
    "gate_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Gate YAML; exit 3 when it fails.",
)
@click.option("--top-k", type=click.IntRange(1, 50), default=None, help="Chunks to retrieve (default LOOPLINE_TOP_K).")
@click.option("--user", default=None, help="Ask as this user (from the API keys file); default: local admin.")
@click.option("--no-judge", is_flag=True, help="Skip the LLM-judged metrics even when an endpoint is configured.")
@click.option("--json", "as_json", is_flag=True, help="Print the whole result as JSON.")
def rag_cmd(
    qa_file: Path,
    report_path: Path | None,
    gate_file: Path | None,
    top_k: int | None,
    user: str | None,
    no_judge: bool,
    as_json: bool,
) -> None:
    """Run a QA set through the real pipeline and score retrieval, abstention and answers (RAGAS)."""
    from evaluation.eval_report import rag_report
    from evaluation.rag_eval import evaluate_rag, load_qa, make_judge
    from rag.cli import (
        open_backend,  # the same local-or-running-service choice as `loopline rag ask`
    )
    from rag.models import Answer
    from shared.auth import KeyRegistry

    settings = Settings()
    try:
        items = load_qa(qa_file)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    gate = _load_gate_or_fail(gate_file)
    baseline = None
    if gate is not None and gate.baseline_file is not None:
        if not gate.baseline_file.exists():
            raise click.ClickException(
                f"baseline_file {gate.baseline_file} (from {gate_file}) does not exist; "
                f"store one with: loopline eval rag --qa {qa_file} --json > {gate.baseline_file}"
            )
        baseline = json.loads(gate.baseline_file.read_text(encoding="utf-8"))
    k = top_k or settings.top_k
    logging.getLogger("absl").setLevel(logging.WARNING)  # rouge_score's tokenizer notes

    with open_backend(settings) as (kind, backend):
        if kind == "remote":

            def ask(question: str) -> Answer:
                return Answer.model_validate(backend.ask(question, user, k))  # type: ignore[attr-defined]

            embed_query = None
        else:
            keys_file = settings.resolved_api_keys_file
            try:
                who = KeyRegistry.from_file(keys_file).principal_for(user, source=keys_file)
            except ValueError as exc:
                raise click.ClickException(str(exc)) from exc

            def ask(question: str) -> Answer:
                return backend.ask(question, who, top_k=k)  # type: ignore[attr-defined]

            embed_query = backend.query_embedder.embed_query  # type: ignore[attr-defined]
        judge = None
        judge_url = settings.judge_base_url or settings.llm_base_url
        if judge_url and not no_judge:
            model = settings.judge_model or settings.llm_model
            if not model:
                raise click.ClickException(
                    "a judge endpoint is configured but no model: set LOOPLINE_JUDGE_MODEL or LOOPLINE_LLM_MODEL"
                )
            if embed_query is None:
                from rag.embeddings import make_embedder

                embed_query = make_embedder(settings).embed_query
            key = settings.llm_api_key.get_secret_value() if settings.llm_api_key else None
            judge = make_judge(
                model=model, base_url=judge_url, api_key=key, embed_query=embed_query, timeout_s=settings.llm_timeout_s
            )
        click.echo(f"asking {len(items)} questions ({kind}) …", err=True)
        result = evaluate_rag(
            ask,
            items,
            top_k=k,
            judge=judge,
            config={
                "qa_file": str(qa_file),
                "home": str(settings.home),
                "user": user or "local admin",
                "answer_mode": "LLM " + settings.llm_model
                if settings.llm_base_url and settings.llm_model
                else "extractive",
                "hybrid": settings.hybrid,
                "min_relevance": settings.min_relevance,
                "embedding_model": settings.embedding_model,
            },
        )

    gate_result = None
    if gate is not None:
        label = str(gate.baseline_file) if baseline is not None else None
        gate_result = check_gate(result, gate, baseline, baseline_label=label)
    report = rag_report(result, gate=gate_result, generated_at=datetime.now(UTC)) if report_path else None
    o = result["overall"]
    text = "\n".join(f"{name:<32} {_fmt(value)}" for name, value in o.items())
    _finish(result, gate_result, report_path, report, as_json, text)


# --- vision -------------------------------------------------------------------------------------
@eval_group.command("vision")
@click.argument("model")
@click.option(
    "--data", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path), help="YOLO data.yaml."
)
@click.option("--split", default="val", type=click.Choice(["train", "val", "test"]), show_default=True)
@click.option(
    "--precision",
    default="pt",
    type=click.Choice(["pt", "fp32", "int8", "fp16"]),
    show_default=True,
    help="For a registered MODEL: its PyTorch weights or one of its exported ONNX variants.",
)
@click.option(
    "--conf", default=0.25, show_default=True, type=click.FloatRange(0, 1), help="Confidence of the confusion matrix."
)
@click.option(
    "--gate",
    "gate_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Gate YAML; exit 3 when it fails.",
)
@click.option(
    "--report", "report_path", type=click.Path(dir_okay=False, path_type=Path), help="Write an HTML report here."
)
@click.option("--json", "as_json", is_flag=True, help="Print the whole result as JSON.")
def vision_cmd(
    model: str,
    data: Path,
    split: str,
    precision: str,
    conf: float,
    gate_file: Path | None,
    report_path: Path | None,
    as_json: bool,
) -> None:
    """mAP, per-class figures and confusion matrix of MODEL (a version, an alias, a .pt or .onnx file)."""
    from evaluation.eval_report import vision_report
    from evaluation.model_eval import baseline_results, evaluate_model, version_history
    from vision.validation import open_registry, registry_exists, resolve_model
    from vision.yolo_env import prepare_ultralytics

    settings = Settings()
    gate = _load_gate_or_fail(gate_file)
    prepare_ultralytics(settings.home, settings.train_threads)
    registry = open_registry(settings) if registry_exists(settings) else None
    try:
        resolved = resolve_model(settings, model, precision=precision, registry=registry)
    except (LookupError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    with redirect_stdout(sys.stderr):  # ultralytics prints progress; stdout is for the result
        result = evaluate_model(settings, resolved, data, split=split, conf=conf)
        gate_result = None
        if gate is not None:
            baseline, label = None, "no registry"
            if gate.needs_baseline and registry is not None:
                baseline, label = baseline_results(
                    settings,
                    registry,
                    gate.baseline or "production",
                    mode=gate.baseline_eval,
                    data_yaml=data,
                    split=split,
                    current=resolved,
                    current_results=result,
                    precision=precision,
                )
            gate_result = check_gate(result, gate, baseline, baseline_label=label if gate.needs_baseline else None)
    history = version_history(registry) if registry is not None else None
    report = (
        vision_report(result, history=history, gate=gate_result, generated_at=datetime.now(UTC))
        if report_path
        else None
    )
    per = ", ".join(f"{k} {v['ap50']:.3f}" for k, v in result["per_class"].items())
    text = f"{resolved.label} on {split}: mAP50 {result['mAP50']:.3f}, mAP50-95 {result['mAP50-95']:.3f} ({per})"
    _finish(result, gate_result, report_path, report, as_json, text)


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
