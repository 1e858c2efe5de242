"""Training internals: one module per concern, the loop in `loop.py`.

`lpdvae.steps.train` is the step (what a runner calls); `launcher` decides between this
process and `torchrun`; `distributed`, `checkpoints`, `tracking_log` and `schedules` each own
one idea the loop needs.
"""
