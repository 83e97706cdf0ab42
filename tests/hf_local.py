"""A Hugging Face dataset written by a test, laid out as a hub repository is (parquet files per
split under a subset's folder, a README whose card names the subset, its splits and their row
counts), so `datasets.load_dataset(folder, subset, split=...)` reads it through the code path a
hub id takes; and the same rows saved with `save_to_disk`."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import yaml


def png(pixels: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def write_hub_copy(root: Path, splits: dict[str, list[np.ndarray]], subset: str = "faces", labels: bool = True) -> Path:
    """`splits`: name → uint8 images ([H, W] or [H, W, 3]); rows get an `image`, an `index` (its
    position across the splits, in order) and a `label` (index mod 3)."""
    import datasets

    features = datasets.Features({"image": datasets.Image(), "index": datasets.Value("int64"),
                                  **({"label": datasets.ClassLabel(num_classes=3)} if labels else {})})  # fmt: skip
    card = {"configs": [{"config_name": subset, "data_files": []}], "dataset_info": {"config_name": subset, "splits": []}}
    start = 0
    for name, images in splits.items():
        rows = {"image": [{"bytes": png(im), "path": None} for im in images], "index": list(range(start, start + len(images)))}
        if labels:
            rows["label"] = [i % 3 for i in rows["index"]]
        start += len(images)
        (root / subset).mkdir(parents=True, exist_ok=True)
        datasets.Dataset.from_dict(rows, features=features).to_parquet(str(root / subset / f"{name}-00000-of-00001.parquet"))
        card["configs"][0]["data_files"].append({"split": name, "path": f"{subset}/{name}-*"})
        size = (root / subset / f"{name}-00000-of-00001.parquet").stat().st_size
        card["dataset_info"]["splits"].append({"name": name, "num_bytes": size, "num_examples": len(images)})
    (root / "README.md").write_text(f"---\n{yaml.safe_dump(card, sort_keys=False)}---\n")
    return root


def faces(n: int, h: int = 22, w: int = 18, seed: int = 0) -> list[np.ndarray]:
    """n RGB images h × w (portrait, as CelebA's 218 × 178), each a different random picture."""
    g = np.random.default_rng(seed)
    return [g.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n)]
