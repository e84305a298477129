"""Corpus stages: manifest (which tracks), fetch (download them), select (keep the usable ones), and what follows."""
