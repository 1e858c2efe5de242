"""The project layout every local runner shares (dvc.yaml's outs, `lpdvae run --root`, audit)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Layout:
    """Where each step's output lands under a project root (the dvc.yaml layout)."""

    root: Path

    @property
    def raw(self) -> Path:
        return self.root / "data" / "raw"

    @property
    def validated(self) -> Path:
        return self.root / "data" / "validated"

    @property
    def data_docs(self) -> Path:
        return self.root / "reports" / "data_docs"

    @property
    def tensors(self) -> Path:
        return self.root / "data" / "tensors"

    @property
    def model(self) -> Path:
        return self.root / "models" / "vae"

    @property
    def eval(self) -> Path:
        return self.root / "reports" / "eval"

    @property
    def registered(self) -> Path:
        return self.root / "reports" / "registered.json"

    @property
    def register_report(self) -> Path:
        """register's report folder: promotion.json, the model card, the run summary."""
        return self.root / "reports" / "register"


CWD = Layout(Path("."))  # the commands' default folders: the dvc.yaml layout, relative paths
