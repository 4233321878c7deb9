"""GPT-SoVITS's own files: its symbol table, its experiment folder, its weight files.

Written from the formats documented in docs/ARCHITECTURE.md ("GPT-SoVITS
interop"); no code of GPT-SoVITS is used. `symbols.json` is data: the phoneme
tables of GPT-SoVITS (MIT licence), source named inside the file.
"""


def upstream_epoch(epochs_done: int) -> int:
    """The epoch number in a GPT-SoVITS weights file name (-e<E> / _e<E>_): GPT-SoVITS counts
    epochs from 1 and names a file after the epoch it finished, so weights saved before the
    first epoch ended (a stop, max_steps) are named as epoch 1's, never e0."""
    return max(1, int(epochs_done))
