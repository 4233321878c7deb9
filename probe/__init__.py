"""Measuring: device inventory, memory backends (measured on CUDA, estimated on
the meta device, emulated budget on CPU), batch-size search, throughput,
VRAM-to-batch tables and the `plan` lookup. Imports nothing heavy at import time."""
