"""loopline evaluation package."""
