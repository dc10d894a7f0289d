"""Model configs small enough to train in a test: shared by the training and reinforcement tests."""

from __future__ import annotations

# An MCi0-shaped student with 1-block stages and a 1-layer text transformer, at 32×32 pixels.
TINY_MCI = {
    "embed_dim": 8,
    "vision_cfg": {"timm_model_name": "fastvit_mci0", "image_size": 32,
                   "timm_model_kwargs": {"layers": [1, 1, 1, 1], "embed_dims": [8, 8, 16, 32]}},
    "text_cfg": {"context_length": 12, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1},
    "custom_text": True,
    "preprocess_cfg": {"size": 32, "mean": [0, 0, 0], "std": [1, 1, 1], "interpolation": "bilinear"},
}
