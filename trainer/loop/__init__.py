"""The training loop and the modules only it uses (nothing outside imports them but the entry
points: advisor/child.py, tests, benchmarks). `train` is in loop.py; see docs/ARCHITECTURE.md."""

from trainer.loop.loop import train

__all__ = ["train"]
