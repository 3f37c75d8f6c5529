"""Curation by quality (issue 20): score samples (IFD with a local model; the LLM judge), embed
them, select the best diverse subset (Deita's greedy rule) and store it as a named selection.

Storage is datagen/storage/scores.py; defaults and each scorer's direction are in datagen/config.py.
"""
