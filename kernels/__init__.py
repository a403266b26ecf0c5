"""Triton kernels, each beside the plain PyTorch reference of the same function."""
