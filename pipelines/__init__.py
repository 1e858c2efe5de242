"""The KFP v2 training pipeline of lpdvae and the commands to compile, run, upload and schedule it."""
