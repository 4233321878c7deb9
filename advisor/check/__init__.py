"""`advisor check DATA`: what is wrong with a voice dataset before hours are spent training on it.

DATA is a GPT-SoVITS experiment folder (logs/<exp>), a .list, or a dataset made
by `advisor prepare` (sources.py). Modules, in the order the data flows:
    sources.py     DATA -> clips to measure (+ lines the input itself drops)
    experiment.py  experiment-folder consistency: names per file, feature lengths, versions
    measure.py     one clip's audio -> duration, peak, clipping, loudness, SNR, silences, ...
    loudness.py    ITU-R BS.1770-4 integrated loudness (numpy)
    snr.py         WADA-SNR (Kim & Stern 2008)
    rules.py       measurements -> findings, per clip and against the dataset
    config.py      the thresholds (typed, validated)
    findings.py    Finding (clip, check, value, threshold, severity, reason)
    training.py    what it means for training: batch plan, watchdog, seed-guide advice
    result.py      run_check(): the whole pass, CheckResult (JSON)
    render.py      terminal table and the HTML page (histograms)
Audio is read only through trainer/data/audio.py; nothing under DATA is written.
"""
