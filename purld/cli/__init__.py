"""Entry points: purld-train, purld-eval, purld-anchors (Hydra apps on the same config tree)."""
