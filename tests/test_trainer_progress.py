"""Trainer progress reporting, TensorBoard run folders and atomic checkpoint writes (CPU, tiny model)."""

import io

import pytest
import torch

from mirpipe.models import trainer as trainer_mod
from mirpipe.models.trainer import Trainer, TrainerSettings, atomic_save
from mirpipe.storage.atomic import TMP_PREFIX, remove_leftovers


def test_atomic_save_goes_through_atomic_path(tmp_path, monkeypatch):
    seen = []
    real_save = torch.save

    def spy(obj, f, *a, **k):
        seen.append(f)
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", spy)
    atomic_save({"x": 1}, tmp_path / "sub" / "last.pt")
    assert torch.load(tmp_path / "sub" / "last.pt") == {"x": 1}
    assert seen[0].name.startswith(TMP_PREFIX) and seen[0].name.endswith("-last.pt") and seen[0].parent == tmp_path / "sub"
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["last.pt"]

    def torn(obj, f, *a, **k):
        open(f, "wb").write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", torn)
    with pytest.raises(OSError):
        atomic_save({"x": 2}, tmp_path / "sub" / "last.pt")
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["last.pt"]  # the temporary is gone, the old file stays
    monkeypatch.setattr(torch, "save", real_save)
    assert torch.load(tmp_path / "sub" / "last.pt") == {"x": 1}
    assert remove_leftovers(tmp_path) == 0
