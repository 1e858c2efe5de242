"""The VAE: `vae` (MusicVAE, its heads, save and load)."""
