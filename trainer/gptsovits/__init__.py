"""GPT-SoVITS's own files: its symbol table, its experiment folder, its weight files.

Written from the formats documented in docs/ARCHITECTURE.md ("GPT-SoVITS
interop"); no code of GPT-SoVITS is used. `symbols.json` is data: the phoneme
tables of GPT-SoVITS (MIT licence), source named inside the file.
"""
