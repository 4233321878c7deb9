"""Training: workloads (s1 GPT, s2 SoVITS), data, the loop, schedules, checkpoints.

Knows nothing of `advisor` or `probe`: they depend on it, never the reverse.
"""
