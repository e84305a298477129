"""Second stage: the DiscoDiff-style coarse-to-fine latent diffusion refiner (PAPER.md section 6)."""
