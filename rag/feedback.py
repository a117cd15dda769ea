"""Users' ratings of answers: rag's `feedback` table and a small store on the metadata database.

The table lives on the shared declarative `Base`, so the metadata database's migrations
(shared/metadata/migrations/) create and change it; this module never creates tables. It
imports only SQLAlchemy and the shared core, so the migrations can load it without
llama-index. What is done with a rating beyond storing it (drift of `feedback_rating`) is
the service's business, not this module's.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, DateTime, Integer, String, Text, delete, select
from sqlalchemy.orm import Mapped, mapped_column

from shared.metadata.store import MetadataStore
from shared.metadata.tables import Base, utcnow


class Feedback(Base):
    """A user's rating of an answer."""

    __tablename__ = "feedback"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user: Mapped[str] = mapped_column(String(128))
    question: Mapped[str] = mapped_column(Text)
    answer: Mapped[str] = mapped_column(Text, default="")
    rating: Mapped[int] = mapped_column(Integer)
    comment: Mapped[str] = mapped_column(Text, default="")
    extra: Mapped[dict] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class FeedbackStore:
    """Feedback rows in a metadata store's database (its engine and sessions)."""

    def __init__(self, store: MetadataStore) -> None:
        self.store = store

    def add(
        self, *, user: str, question: str, answer: str, rating: int, comment: str = "", extra: dict | None = None
    ) -> int:
        """Store one rating; returns its id."""
        with self.store.session() as s, s.begin():
            fb = Feedback(
                user=user, question=question, answer=answer, rating=rating, comment=comment, extra=extra or {}
            )
            s.add(fb)
            s.flush()
            return fb.id

    def recent(self, limit: int = 100) -> list[Feedback]:
        """The newest ratings first."""
        with self.store.session() as s:
            return list(s.scalars(select(Feedback).order_by(Feedback.id.desc()).limit(limit)))

    def purge(self) -> None:
        """Delete every rating (tests)."""
        with self.store.session() as s, s.begin():
            s.execute(delete(Feedback))
