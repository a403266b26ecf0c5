"""InSpatio-WorldFM: the PixArt-Σ frame model, its reference bank and the 1/2-step sampler."""
