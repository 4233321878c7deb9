"""Data: from raw audio and a GPT-SoVITS `.list` to a prepared dataset, and back into batches.

listfile  parse a `.list` (path|speaker|language|text)
audio     decode, downmix, resample to 32 kHz, check, peak-normalise
slicer    cut long recordings at silences into pieces of at most S seconds
text      text -> phoneme ids (rule-based, offline; id layout documented there)
features  content features (768-dim, 50 Hz), semantic tokens (25 Hz), linear spectrogram
manifest  the dataset's manifest.json: schema, atomic writes
dataset   `prepare`: write the dataset folder, resumable, with a report of unused inputs
demo      a small synthetic speech-like dataset (offline)
loader    `PreparedDataset`, `bucketed_batches`: what the trainer reads
collate   padding samples into a batch (the pieces of each `Workload.collate`)
batches   `Batches`: the epoch's plan of optimiser steps, this rank's share, validation batches
"""
