"""The trainer: loop.py (train(), in labelled sections), step.py (the GAN step object), state.py (save,
resume, init-from and the configs of a run), report.py (metrics.jsonl, the progress bar)."""
