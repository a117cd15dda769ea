"""`make demo`: the main job on one machine with no servers.

Writes the fictional Fjordlight handbook, ingests it folder by folder with each folder's
reading groups (plus one broken file, reported as a dead letter), answers three questions
with citations, and shows that a user outside a group cannot get its documents' answers.
"""

from __future__ import annotations

import logging
import shutil
import sys
import time

import click

from rag.samples import DEMO_USERS, write_handbook
from rag.service import RagService
from shared.auth import KeyRegistry, Principal
from shared.config import Settings

QUESTIONS = [
    ("ada", "How many days of paid vacation do I get per year?"),
    ("ada", "How long before an unacknowledged page escalates to the secondary engineer?"),
    ("sol", "Who has to approve a discount of 25 percent?"),
]
RESTRICTED = "When are salary bands reviewed?"


def _show(who: str, answer) -> None:  # noqa: ANN001
    click.echo(click.style(f"\n[{who}] {answer.question}", bold=True))
    click.echo(f"  {answer.answer}")
    for c in answer.citations:
        section = f" — {c.section}" if c.section and c.section != c.title else ""
        click.echo(f"    [{c.n}] {c.source}: {c.title}{section} (score {c.score:.2f})")
    click.echo(f"  ({answer.mode} answer, {answer.timings.total_ms:.0f} ms{', ABSTAINED' if answer.abstained else ''})")


def main() -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    settings = Settings()
    home = settings.ensure_home()
    root = home / "demo-handbook"
    shutil.rmtree(root, ignore_errors=True)
    plan = write_handbook(root)
    (root / "public" / "scanned-contract.pdf").write_bytes(b"this was never a PDF\n")
    keys_file = settings.resolved_api_keys_file
    if not keys_file.exists():
        keys_file.write_text(DEMO_USERS)
        keys_file.chmod(0o600)
    keys = KeyRegistry.from_file(keys_file)

    click.echo(f"loopline demo — state in {home.resolve()} (Qdrant Edge + SQLite, no servers)")
    click.echo(
        f"answers: {'LLM at ' + settings.llm_base_url if settings.llm_base_url else 'extractive (no LLM endpoint configured)'}"
    )
    t0 = time.perf_counter()
    with RagService(settings) as svc:
        click.echo("\nIngesting the handbook:")
        for folder, groups in plan.items():
            run = svc.ingest(root / folder, groups)
            click.echo(
                f"  {folder:<11} groups={','.join(groups):<12} {run.status:<9} "
                f"+{run.added} ~{run.updated} ={run.unchanged} -{run.deleted} failed={run.failed} ({run.chunks} chunks)"
            )
            for dl in run.dead_letters:
                click.echo(f"    dead letter: {dl['path']}: {dl['reason']}")
        for user, question in QUESTIONS:
            _show(user, svc.ask(question, keys.user(user) or Principal(name=user)))
        click.echo(click.style("\nAccess control: the same question by two users", bold=True))
        for user in ("ada", "pia"):
            _show(user, svc.ask(RESTRICTED, keys.user(user) or Principal(name=user)))
    click.echo(f"\nDone in {time.perf_counter() - t0:.1f}s. Next: `loopline serve`, then see README for curl examples.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
