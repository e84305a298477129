"""Sequence models: the Mamba2 mixer and its reference scans, attention, and the backbones built from them."""
