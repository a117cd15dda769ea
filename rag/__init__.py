"""loopline rag package."""
