"""What the user drives: CLI, supervisor daemon, watchdog policies, dashboard."""

__version__ = "0.1.0"
