"""The vision benchmark's verdict and table: the targets checked, the report rendered as text.

Targets: edge end-to-end <= 0.5x ultralytics' PyTorch predict at 2 threads (informational at
other thread counts), <= 0.8x ultralytics' ONNX predict (on ultralytics' own export; against
ultralytics running the edge's file, informational), pre+post <= 10% of session.run, and INT8
within one mAP50 point of FP32. It reads the report; it measures nothing.
"""

from __future__ import annotations

from typing import Any

from evaluation.benchmarks.vision.timing import PYTORCH_PATH, ULTRA_ONNX_PATH, ULTRA_SAME_FILE_PATH

TARGET_VS_PYTORCH = 0.5  # edge end-to-end / ultralytics PyTorch predict, at 2 threads
TARGET_VS_ULTRA_ONNX = 0.8  # edge end-to-end / ultralytics ONNX predict
TARGET_PREPOST_SHARE = 0.10  # (pre + post) / session.run
TARGET_INT8_MAP50_DROP = 0.01  # one mAP50 point


def check_targets(timing: dict[int, dict], accuracy: dict) -> list[dict]:
    rows = []
    for n, t in sorted(timing.items()):
        p = t["paths"]
        pt = p[PYTORCH_PATH]["median_ms"]
        uo = p[ULTRA_ONNX_PATH]["median_ms"]
        for variant in ("edge FP32", "edge INT8"):
            if variant not in p:
                continue
            e = p[variant]
            r1, r2 = e["median_ms"] / pt, e["median_ms"] / uo
            rows.append(
                {
                    "check": f"{variant} / PyTorch predict",
                    "threads": n,
                    "value": round(r1, 3),
                    "target": f"<= {TARGET_VS_PYTORCH}",
                    "binding": n == 2,
                    "pass": r1 <= TARGET_VS_PYTORCH,
                }
            )
            rows.append(
                {
                    "check": f"{variant} / ultralytics ONNX predict",
                    "threads": n,
                    "value": round(r2, 3),
                    "target": f"<= {TARGET_VS_ULTRA_ONNX}",
                    "binding": True,
                    "pass": r2 <= TARGET_VS_ULTRA_ONNX,
                }
            )
            if ULTRA_SAME_FILE_PATH in p:
                r3 = e["median_ms"] / p[ULTRA_SAME_FILE_PATH]["median_ms"]
                rows.append(
                    {
                        "check": f"{variant} / ultralytics ONNX predict on the edge's file",
                        "threads": n,
                        "value": round(r3, 3),
                        "target": f"<= {TARGET_VS_ULTRA_ONNX}",
                        "binding": False,
                        "pass": r3 <= TARGET_VS_ULTRA_ONNX,
                    }
                )
            share = e["prepost_share_of_run"]
            rows.append(
                {
                    "check": f"{variant} (pre+post) / session.run",
                    "threads": n,
                    "value": round(share, 3),
                    "target": f"<= {TARGET_PREPOST_SHARE}",
                    "binding": True,
                    "pass": share <= TARGET_PREPOST_SHARE,
                }
            )
    if "fp32" in accuracy and "int8" in accuracy:
        drop = accuracy["fp32"]["mAP50"] - accuracy["int8"]["mAP50"]
        rows.append(
            {
                "check": "mAP50 FP32 - INT8 (test)",
                "threads": None,
                "value": round(drop, 4),
                "target": f"<= {TARGET_INT8_MAP50_DROP}",
                "binding": True,
                "pass": drop <= TARGET_INT8_MAP50_DROP,
            }
        )
    return rows


def _table(head: list[str], rows: list[list[Any]]) -> list[str]:
    cells = [[str(c) for c in r] for r in [head, *rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cells[0], widths)), "  ".join("-" * w for w in widths)]
    return lines + ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in cells[1:]]


def _edge_vs_ultralytics(timing: dict) -> list[str]:
    """One row per edge variant and thread count: its median beside ultralytics' paths, as ratios."""
    rows = []
    for n, t in sorted(timing.items(), key=lambda kv: int(kv[0])):
        p = t["paths"]
        baselines = [p[PYTORCH_PATH]["median_ms"], p[ULTRA_ONNX_PATH]["median_ms"]]
        if ULTRA_SAME_FILE_PATH in p:
            baselines.append(p[ULTRA_SAME_FILE_PATH]["median_ms"])
        for name, e in p.items():
            if name.startswith("edge "):
                ms = e["median_ms"]
                ratios = [f"{b} ({ms / b:.2f}x)" for b in baselines]
                rows.append([n, name, ms, *ratios, f"{e['prepost_share_of_run'] * 100:.1f}%"])
    head = ["threads", "path", "edge ms", "PyTorch predict", "ultralytics ONNX predict"]
    if any(len(r) > 6 for r in rows):
        head.append("ultralytics ONNX, edge's file")
    return _table([*head, "pre+post/run"], rows)


def _input(report: dict) -> str:
    export = report.get("export") or {}
    hw = export.get("input_hw", {}).get("fp32")
    ultra = (export.get("ultralytics_fp32") or {}).get("input_hw")
    theirs = f" (ultralytics ONNX predict: its own {ultra[1]}x{ultra[0]} export)" if ultra else ""
    return f"; exported input {hw[1]}x{hw[0]}{theirs}" if hw else ""


def render(report: dict) -> str:
    m = report["machine"]
    flags = ", ".join(f for f, on in m.get("cpu_flags", {}).items() if on)
    out = [
        f"machine: {m.get('cpu_model')} x{m.get('cpu_count')} ({flags}); {m.get('int8_note', '')}",
        "versions: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items()),
        (
            f"dataset: {report['dataset']['images']} images; test frames timed: {report['frames']['count']} "
            f"({report['frames']['shape']}), imgsz {report['imgsz']}{_input(report)}"
        ),
    ]
    tr = report.get("training")
    if tr:
        out.append(
            f"training: {tr.get('epochs')} epochs in {tr.get('seconds')} s "
            f"({(tr.get('curve') or {}).get('seconds_per_epoch')} s/epoch incl. per-epoch val); val mAP50 {tr.get('val_mAP50')}"
        )
    out += ["", "accuracy on the test split:"]
    acc = report["accuracy"]
    out += _table(
        ["model", "mAP50", "mAP50-95", "precision", "recall", "size MB"],
        [[k, a["mAP50"], a["mAP50-95"], a["precision"], a["recall"], a.get("size_mb", "")] for k, a in acc.items()],
    )
    for n, t in sorted(report["timing"].items(), key=lambda kv: int(kv[0])):
        frames = t["paths"][next(iter(t["paths"]))]["frames"]
        title = (
            f"latency per frame, {n} thread(s) (ms; {frames} timed frames per path; "
            f"others' CPU share max {t.get('others_cpu_share_max')}):"
        )
        out += ["", title]
        rows = []
        for name, p in t["paths"].items():
            rows.append(
                [
                    name,
                    ",".join(map(str, p.get("torch_threads", []))),
                    p["median_ms"],
                    p["p95_ms"],
                    p["fps"],
                    p.get("pre_median_ms", ""),
                    p.get("run_median_ms", ""),
                    p.get("post_median_ms", ""),
                    f"{p['prepost_share_of_run'] * 100:.1f}%" if "prepost_share_of_run" in p else "",
                ]
            )
        out += _table(["path", "torch thr", "median", "p95", "fps", "pre", "session.run", "post", "pre+post/run"], rows)
        for prec, b in t["bare_session_run"].items():
            out.append(f"  bare session.run {prec}: median {b['median_ms']} ms, p95 {b['p95_ms']} ms")
    out += [
        "",
        "edge runtime vs ultralytics, median ms per frame (edge's time as a multiple of each path's); targets at "
        f"2 threads: <= {TARGET_VS_PYTORCH}x PyTorch, <= {TARGET_VS_ULTRA_ONNX}x ultralytics ONNX, "
        f"pre+post <= {TARGET_PREPOST_SHARE:.0%} of session.run:",
    ]
    out += _edge_vs_ultralytics(report["timing"])
    out += ["", "targets:"]
    out += _table(
        ["check", "threads", "value", "target", "pass"],
        [
            [
                c["check"],
                c["threads"] if c["threads"] is not None else "-",
                c["value"],
                c["target"],
                ("PASS" if c["pass"] else "MISS") + ("" if c["binding"] else " (info)"),
            ]
            for c in report["targets"]
        ],
    )
    notes = report.get("notes", [])
    if notes:
        out += ["", "notes:"] + [f"- {n}" for n in notes]
    out.append("")
    out.append(f"phase seconds: {report['seconds']}; JSON: {report['json']}")
    return "\n".join(out)
