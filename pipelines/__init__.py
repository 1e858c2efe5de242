"""The KFP v2 training pipeline of lpdvae and the commands that compile, run, upload and schedule it
(`python -m pipelines --help`)."""
