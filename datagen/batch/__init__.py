"""Batch mode: the same self-instruct run through OpenAI's Batch API (see batch/run.py)."""
