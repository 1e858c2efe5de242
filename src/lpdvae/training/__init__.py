"""Training internals: one module per concern, the loop in `loop.py`.

`lpdvae.steps.train` is the step (what a runner calls; it decides between this process and
`torchrun`); `worker` is one torchrun rank, which runs `loop.run_rank` directly; `distributed`,
`checkpoints`, `run_log`, `outputs`, `schedules` and `state` each own one idea the loop needs.
Nothing here imports `lpdvae.steps`.
"""
