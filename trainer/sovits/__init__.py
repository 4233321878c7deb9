"""SoVITS models (stage s2): the v2 family's generator, discriminator, losses, spectrograms,
and v3 / v4's SynthesizerTrnV3 (`v3.py`: the v2 text side + the DiT of `dit.py`, trained by
the flow matching of `cfm.py`, with peft LoRA from `lora.py`).

Written from the published architecture facts (VITS, HiFi-GAN, F5-TTS's DiT, GPT-SoVITS
sizes); see `config.py` for the sizes and `trainer/workloads/s2.py` / `s2v3.py` for the steps.
`spectral` has no torchaudio dependency, so the probe and advisor can import it.
"""
