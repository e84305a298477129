"""Tiny random stand-ins of the pretrained models the paper profile loads, for plumbing tests only.

Each builder writes a randomly initialised model of the real architecture (shrunk) in the release format, at the
place the project's loading code looks for it (a Hugging Face cache, descript's cache, a weights file). Nothing
computed from a stand-in is a result. `python scripts/standins/make_all.py --out DIR` builds them all.
"""
