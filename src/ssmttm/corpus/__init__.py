"""Corpus stages, one module each: manifest (which tracks; user_manifest reads a user's own list), fetch (download
them), select (keep the usable ones: licence, decoding, length), segment (clips), caption (one caption per clip); with
licences, MTG-Jamendo, the demo corpus, vocal removal and the caption models they use."""
