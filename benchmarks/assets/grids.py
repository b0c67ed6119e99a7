"""Side-by-side sample grids for the model cards: (left, right, caption) cells, nearest-neighbour upscaled."""
from __future__ import annotations

import textwrap
from pathlib import Path

import torch
from PIL import Image, ImageDraw


def pair_grid(cells: list[tuple[torch.Tensor, torch.Tensor, str]], title: str, path: Path, side: int, cols: int,
              wrap: int) -> None:
    """Write the cells (CHW images in [0, 1]) ``cols`` to a row under a one-line title."""
    w, h = 2 * side + 8, side + 30
    grid = Image.new("RGB", (cols * w, (len(cells) + cols - 1) // cols * h + 20), "white")
    draw = ImageDraw.Draw(grid)
    draw.text((4, 4), title, fill="black")
    for k, (a, b, cap) in enumerate(cells):
        x, y = (k % cols) * w, (k // cols) * h + 20
        for j, img in enumerate((a, b)):
            arr = (img.permute(1, 2, 0).clamp(0, 1) * 255).round().byte().numpy()
            grid.paste(Image.fromarray(arr).resize((side, side), Image.Resampling.NEAREST), (x + j * side, y))
        draw.multiline_text((x + 2, y + side + 1), "\n".join(textwrap.wrap(cap, wrap)[:2]), fill="black", spacing=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path)
