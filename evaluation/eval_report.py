"""HTML pages of `loopline eval` results: what a person looks at before a change ships.

RAG: metric bars, hit rates by department and by question kind, score distributions (and
the top retrieval score of answerable vs unanswerable questions, which is what the
abstention threshold cuts), then the per-question table. Vision: per-class AP, the
confusion matrix, and the metrics of every registered version. A gate's checks come first
when there is one. The figures are built here; `shared.reporting` lays them out. Nothing
here computes a metric.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from evaluation.gates import GateResult
from shared.reporting import HtmlReport, new_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure

GOOD, BAD, NEUTRAL, LIGHT = "#2f81f7", "#cf222e", "#8c959f", "#9ecbff"
# Metrics where a lower value is better (drawn in red, labelled so).
LOWER_IS_BETTER = {"wrong_abstain_rate_answerable", "latency_p50_ms"}


def _annotate_barh(ax: Any, values: Sequence[float]) -> None:
    for i, v in enumerate(values):
        ax.text(min(v, 1.0) + 0.01, i, f"{v:.2f}", va="center", fontsize=9)


# --- RAG ------------------------------------------------------------------------------------
def rag_metric_bars(overall: dict[str, Any]) -> Figure:
    """One bar per 0..1 metric of the overall figures."""
    names = [k for k, v in overall.items() if isinstance(v, float) and 0.0 <= v <= 1.0 and k not in ("questions",)]
    values = [float(overall[k]) for k in names]
    fig = new_figure(7.5, 0.38 * len(names) + 1.0)
    ax = fig.add_subplot()
    colors = [BAD if n in LOWER_IS_BETTER else GOOD for n in names]
    labels = [f"{n} (lower is better)" if n in LOWER_IS_BETTER else n for n in names]
    ax.barh(range(len(names)), values, color=colors)
    ax.set_yticks(range(len(names)), labels)
    ax.invert_yaxis()
    ax.set_xlim(0, 1.12)
    ax.set_xlabel("score (0–1)")
    ax.grid(axis="x", alpha=0.3)
    _annotate_barh(ax, values)
    ax.set_title("Overall metrics")
    return fig


def rag_breakdown_bars(breakdown: dict[str, dict], *, top_k: int, what: str) -> Figure | None:
    """hit@1 and hit@k per group (department or kind); None when there is nothing to split."""
    groups = [g for g, m in breakdown.items() if m.get("answerable")]
    if len(groups) < 2:
        return None
    import numpy as np

    y = np.arange(len(groups))
    h1 = [breakdown[g].get("hit@1") or 0.0 for g in groups]
    hk = [breakdown[g].get(f"hit@{top_k}") or 0.0 for g in groups]
    fig = new_figure(7.5, 0.42 * len(groups) + 1.2)
    ax = fig.add_subplot()
    ax.barh(y - 0.2, hk, height=0.4, color=LIGHT, label=f"hit@{top_k}")
    ax.barh(y + 0.2, h1, height=0.4, color=GOOD, label="hit@1")
    ax.set_yticks(y, [f"{g} (n={breakdown[g]['answerable']})" for g in groups])
    ax.invert_yaxis()
    ax.set_xlim(0, 1.05)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(f"Retrieval hit rate by {what}")
    return fig


def rag_score_distributions(questions: Sequence[dict], *, min_relevance: float | None = None) -> Figure:
    """Per-question metric values (answerable questions) and top retrieval scores by answerability."""
    import numpy as np

    metrics = [
        m
        for m in (
            "context_precision",
            "context_recall",
            "string_similarity",
            "rouge_l",
            "bleu",
            "faithfulness",
            "answer_relevancy",
            "llm_context_precision",
        )
        if any(q.get(m) is not None for q in questions)
    ]
    fig = new_figure(9.0, 3.8)
    left, right = fig.subplots(1, 2, width_ratios=[3, 2])
    rng = np.random.default_rng(0)  # jitter only; fixed so the same data draws the same picture
    for i, m in enumerate(metrics):
        vals = [q[m] for q in questions if q.get(m) is not None]
        left.boxplot([vals], positions=[i], widths=0.5, showfliers=False)
        left.scatter(i + rng.uniform(-0.15, 0.15, len(vals)), vals, s=12, alpha=0.6, color=GOOD)
    left.set_xticks(range(len(metrics)), metrics, rotation=30, ha="right")
    left.set_ylim(-0.05, 1.05)
    left.set_title("Per-question scores (answerable)")
    left.grid(axis="y", alpha=0.3)

    answerable = [q["top_score"] or 0.0 for q in questions if q["answerable"]]
    unanswerable = [q["top_score"] or 0.0 for q in questions if not q["answerable"]]
    bins = np.linspace(0, 1, 21)
    right.hist(answerable, bins=bins, color=GOOD, alpha=0.7, label=f"answerable (n={len(answerable)})")
    if unanswerable:
        right.hist(unanswerable, bins=bins, color=BAD, alpha=0.7, label=f"unanswerable (n={len(unanswerable)})")
    if min_relevance is not None:
        right.axvline(min_relevance, color=NEUTRAL, ls="--", lw=1)
        right.text(min_relevance, right.get_ylim()[1] * 0.95, " min_relevance", fontsize=8, color=NEUTRAL, va="top")
    right.set_xlabel("top cited chunk score (0: none cited)")
    right.set_ylabel("questions")
    right.set_title("Top retrieval score")
    right.legend(fontsize=8, loc="best")
    return fig


def rag_report(
    result: dict[str, Any], *, gate: GateResult | None = None, generated_at: datetime | None = None
) -> HtmlReport:
    cfg, overall, questions = result["config"], result["overall"], result["questions"]
    top_k = int(cfg.get("top_k", 5))
    report = HtmlReport(f"RAG evaluation — {cfg.get('qa_file', 'QA set')}", generated_at=generated_at)
    judge = cfg.get("judge_model")
    report.paragraph(
        f"{overall['questions']} questions ({overall['answerable']} answerable, {overall['unanswerable']} unanswerable), "
        f"top-k {top_k}, answers by {cfg.get('answer_mode', 'the configured generator')}, as {cfg.get('user', 'local admin')}. "
        + (
            f"LLM-judged metrics by {judge} at {cfg.get('judge_base_url')}."
            if judge
            else "No judge endpoint configured: LLM-judged metrics (faithfulness, answer relevancy, context precision) not computed."
        )
    )
    if gate is not None:
        _gate_section(report, gate)
    report.heading("Overall")
    report.figure(rag_metric_bars(overall), "Retrieval, abstention and answer metrics; red bars are better when lower.")
    report.table([{"metric": k, "value": v} for k, v in overall.items()], ["metric", "value"])
    for key, what in (("department", "department"), ("kind", "question kind")):
        fig = rag_breakdown_bars(result.get("breakdown", {}).get(key, {}), top_k=top_k, what=what)
        if fig is not None:
            report.heading(f"By {what}", 3)
            report.figure(
                fig, f"Share of answerable questions whose source document is cited first / in the top {top_k}."
            )
    report.heading("Distributions")
    report.figure(
        rag_score_distributions(questions, min_relevance=cfg.get("min_relevance")),
        "Left: each dot is one answerable question. Right: where answerable and unanswerable questions fall; "
        "a question abstains when no chunk reaches min_relevance.",
    )
    report.heading("Questions")
    cols = [
        "id",
        "kind",
        "expected_source",
        "rank",
        "abstained",
        "top_score",
        "context_recall",
        "rouge_l",
        "string_similarity",
    ]
    cols += [m for m in ("faithfulness", "answer_relevancy") if any(q.get(m) is not None for q in questions)]
    cols += ["question", "answer"]
    rows = [{**q, "answer": _short(q["answer"], 160), "question": _short(q["question"], 120)} for q in questions]
    report.table(rows, cols)
    report.heading("Configuration", 3)
    report.table([{"setting": k, "value": v} for k, v in cfg.items()], ["setting", "value"])
    return report


# --- vision -----------------------------------------------------------------------------------
def class_ap_bars(per_class: dict[str, dict]) -> Figure:
    import numpy as np

    names = list(per_class)
    x = np.arange(len(names))
    fig = new_figure(7.5, 3.6)
    ax = fig.add_subplot()
    series = [
        ("ap50", "AP50", GOOD),
        ("ap50_95", "AP50-95", LIGHT),
        ("precision", "precision", "#1a7f37"),
        ("recall", "recall", "#bf8700"),
    ]
    width = 0.8 / len(series)
    for i, (key, label, color) in enumerate(series):
        vals = [per_class[n].get(key, 0.0) for n in names]
        bars = ax.bar(x + (i - (len(series) - 1) / 2) * width, vals, width, label=label, color=color)
        ax.bar_label(bars, fmt="%.2f", fontsize=7, padding=1)
    ax.set_xticks(x, names)
    ax.set_ylim(0, 1.25)  # room for the legend above bars that reach 1.0
    ax.set_yticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    ax.grid(axis="y", alpha=0.3)
    ax.legend(ncols=4, fontsize=8, loc="upper center")
    ax.set_title("Per-class accuracy")
    return fig


def confusion_heatmap(cm: dict[str, Any]) -> Figure:
    """Counts annotated; colour is the share of each true class (column), so rare classes show too."""
    import numpy as np

    names = cm["names"]
    m = np.asarray(cm["matrix"], dtype=float)
    col = m.sum(axis=0, keepdims=True)
    share = np.divide(m, col, out=np.zeros_like(m), where=col > 0)
    side = 1.0 + 0.9 * len(names)
    fig = new_figure(side + 1.6, side)
    ax = fig.add_subplot()
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            ax.text(
                j,
                i,
                f"{int(m[i, j])}",
                ha="center",
                va="center",
                fontsize=10,
                color="white" if share[i, j] > 0.6 else "#1f2328",
            )
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("true class")
    ax.set_ylabel("predicted class")
    ax.set_title(f"Confusion matrix (conf ≥ {cm.get('conf', 0.25):g})")
    fig.colorbar(im, ax=ax, label="share of the true class", shrink=0.8)
    return fig


def version_history_plot(history: Sequence[dict], *, current: str | None = None) -> Figure:
    """Recorded mAP of each registered version; production and the evaluated version marked."""
    versions = [h["version"] for h in history]
    x = list(range(len(versions)))
    fig = new_figure(7.5, 3.4)
    ax = fig.add_subplot()
    for key, color in (("mAP50", GOOD), ("mAP50-95", LIGHT)):
        ax.plot(
            x,
            [h.get(key) if h.get(key) is not None else float("nan") for h in history],
            marker="o",
            color=color,
            label=key,
        )
    for i, h in enumerate(history):
        if any(a.startswith("production") for a in h.get("aliases", [])):
            ax.axvline(i, color="#1a7f37", alpha=0.4, lw=6)
            ax.text(i, 1.02, "production", ha="center", fontsize=8, color="#1a7f37")
        if current is not None and h["version"] == current:
            ax.plot(
                [i],
                [h.get("mAP50") or 0.0],
                marker="o",
                ms=13,
                mfc="none",
                mec=BAD,
                mew=2,
                ls="none",
                label="evaluated",
            )
    ax.set_xticks(x, [f"v{v}" for v in versions])
    ax.set_xlim(-0.5, len(versions) - 0.5)
    ax.set_ylim(-0.05, 1.1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title("Recorded metrics of registered versions (each on its own validation data)")
    return fig


def vision_report(
    result: dict[str, Any],
    *,
    history: Sequence[dict] | None = None,
    gate: GateResult | None = None,
    generated_at: datetime | None = None,
) -> HtmlReport:
    report = HtmlReport(f"Detector evaluation — {result.get('label') or result['model']}", generated_at=generated_at)
    report.paragraph(f"Model {result['model']} on the {result['split']} split of {result.get('data', '')}.")
    if gate is not None:
        _gate_section(report, gate)
    report.heading("Overall")
    report.table([{k: result.get(k) for k in ("mAP50", "mAP50-95", "precision", "recall")}])
    if result.get("per_class"):
        report.figure(class_ap_bars(result["per_class"]), "AP at IoU 0.5 and 0.5–0.95, precision and recall per class.")
        report.table([{"class": k, **v} for k, v in result["per_class"].items()])
    if result.get("confusion_matrix"):
        report.heading("Confusion matrix")
        report.figure(
            confusion_heatmap(result["confusion_matrix"]),
            "Columns are true classes, rows predictions; 'background' is a missed object (bottom row) or a false detection (last column).",
        )
    if history:
        report.heading("Model versions")
        report.figure(
            version_history_plot(history, current=result.get("version")), "mAP recorded at each training run."
        )
        report.table(list(history))
    return report


# --- shared -------------------------------------------------------------------------------------
def _gate_section(report: HtmlReport, gate: GateResult) -> None:
    report.heading("Gate: " + ("passed" if gate.passed else "FAILED"))
    if gate.baseline_label:
        report.paragraph(f"Baseline: {gate.baseline_label}")
    report.table([c.model_dump() for c in gate.checks], ["metric", "value", "baseline", "status", "reason"])


def _short(text: str, n: int) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= n else text[: n - 1] + "…"
