"""loopline vision package."""
