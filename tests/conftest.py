import os
from pathlib import Path

import pytest
import torch

# Tests never reach the network: every Hub or torchvision download is served from files the tests make.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def dataset(tmp_path_factory) -> Path:
    """40 noise images of 16x16 in 4 classes, in Hub layout: the tiny runs' data (32 train, 8 validation)."""
    from helpers import hub_layout_folder, tiny_dataset

    return hub_layout_folder(tmp_path_factory.mktemp("data") / "ds", {"train": tiny_dataset(10, size=(16, 16))})
