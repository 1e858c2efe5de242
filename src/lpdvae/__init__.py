"""lpdvae: a versioned MLOps pipeline for a multitrack music VAE (Tham & Kim) on piano rolls."""

__version__ = "0.1.0"
