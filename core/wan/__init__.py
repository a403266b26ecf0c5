"""Wan2.1 components: the causal DiT, the streaming VAE, TAEHV and the checkpoint reader."""
