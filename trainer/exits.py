"""Exit codes of every process the project starts: the one list (trainer, child, supervisor, CLI)."""

OK = 0
BAD_INPUT = 2  # a one-line error on stderr (bad flag, config, data or file): retrying cannot help
DOES_NOT_FIT = 3  # `advisor train`: the watchdog stopped because even micro-batch 1 runs out of memory
OOM = 75  # the trainer ran out of memory outside the loop's recovery (the supervisor restarts it smaller)
INTERRUPTED = 130  # Ctrl-C / SIGINT that could not end in a clean stop (128 + SIGINT)
