"""attngan-fast: AttnGAN with fused Triton and CUDA kernels."""

__version__ = "0.1.0"
