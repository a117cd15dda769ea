"""loopline edge package."""
