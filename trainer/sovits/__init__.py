"""SoVITS v2 models (stage s2): generator, discriminator, losses, spectrograms.

Written from the published architecture facts (VITS, HiFi-GAN, GPT-SoVITS v2
sizes); see `config.py` for the sizes and `trainer/workloads/s2.py` for the step.
`spectral` has no torchaudio dependency, so the probe and advisor can import it.
"""
