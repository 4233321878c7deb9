"""Rates and limits shared by the workloads and the data pipeline (GPT-SoVITS v2 facts)."""

SAMPLE_RATE = 32_000  # Hz, s2 audio
HOP_LENGTH = 640  # samples per spectrogram frame -> 50 frames/s
FRAME_RATE = SAMPLE_RATE // HOP_LENGTH  # 50 Hz: linear spec and SSL features
TOKEN_RATE = 25  # Hz: semantic tokens (SSL projection halves 50 Hz)
N_FFT = 2048
WIN_LENGTH = 2048
N_MELS = 128
SPEC_BINS = N_FFT // 2 + 1  # 1025
SSL_DIM = 768  # chinese-hubert-base feature width
BERT_DIM = 1024
SEMANTIC_VOCAB = 1025  # 1024 codes + EOS/pad (1024)
SEMANTIC_EOS = 1024
PHONEME_VOCAB = 732  # v2+
# Phonemes per second of speech used for synthetic batches. GPT-SoVITS keeps
# 3-25 phonemes/s; read speech sits near 12 (10 s -> ~120 phonemes, S ~ 370).
PHONEMES_PER_SECOND = 12.0
MAX_SLICE_SECONDS = 54.0  # GPT-SoVITS drops longer clips (1350 tokens)
MIN_SLICE_SECONDS = 2.0  # `advisor prepare --slice-seconds` and `advisor slice --seconds` accept no less
MIN_CLIP_SECONDS = 0.6
SEGMENT_FRAMES = 32  # s2 decoder/discriminator segment: 32 frames = 20480 samples
