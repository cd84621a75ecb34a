"""``python -m parity.pipeline``: the deterministic val pipeline, MindSpore vs torchvision, on real image files.

Both sides decode with Pillow (RGB), resize the shorter side to ``int(S*256/224)``, center-crop ``S`` and
normalise with the ImageNet constants. The report gives, per image, the max and mean absolute difference of
the two float32 ``3xSxS`` tensors in normalised units (one grey level is ``1/(255*std)`` ~ 0.0171-0.0175).

Where differences come from with ``--resize-backend mindspore`` (the default of ``ms_transfer``):

* interpolation: MindSpore's C++ ``vision.Resize`` is OpenCV-style bilinear (2x2 taps, no antialiasing);
  torchvision resizes PIL images with Pillow's bilinear *filter*, whose support grows with the downscale
  factor (antialiased). Downscaling therefore differs by up to tens of grey levels at edges and in fine
  texture (MindSpore aliases); upscaling and ~1:1 resizes differ by 1-2 grey levels (fixed-point rounding).
* crop offset: MindSpore's C++ ``CenterCrop`` takes ``floor((d-S)/2)``, torchvision ``round((d-S)/2)``
  (round-half-even): when ``d-S = 3 (mod 4)`` the crops are one pixel apart, which alone gives a mean
  difference of ~0.1 on textured images. The ``shift`` column shows it (MindSpore minus torchvision, x,y).
* size: MindSpore computes the long side as ``int(size / (w/h))`` (torchvision: ``int(size*long/short)``);
  rarely (e.g. a 212x146 image at size 73: 105 instead of 106) it is one pixel shorter. The ``resized`` column flags it.

``--resize-backend pil`` makes MindSpore resize and crop with Pillow and torchvision's arithmetic
(:class:`ms_transfer.core.data.PilResizeCenterCrop`); the tensors then agree to float32 rounding, and the exit code
is 1 if any difference exceeds :data:`ROUNDING_BOUND`. Otherwise it is a report and exits 0 (2 on bad input).
"""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from ms_transfer.core.flags import add_json, write_json
from ms_transfer.core.data import (IMAGENET_STD, RESIZE_BACKENDS, DatasetError, PathLike, PilResizeCenterCrop,
                                   check_resize_backend, eval_resize_size, resolve_data_root, scan_split)
from ms_transfer.mindspore_backend.data import load_image_for_eval

#: Largest difference two correct float32 normalisations of the same uint8 pixel may show.
#: torchvision computes ``(x/255 - m)/s``, MindSpore ``(x - 255m)/(255s)``: same value, other rounding.
#: With u = 2^-24 (float32 unit roundoff), |y| <= (1-0.406)/0.225 = 2.64 and s >= 0.224, a first-order
#: bound per side is: torch (rounding of x/255, of m and of the difference, each <= u on values <= 1,
#: divided by s: 3u/0.224 = 13.4u) + (rounding of s and of the quotient: 2 * 2.64u) = 18.7u; MindSpore
#: (255m rounded: m*u/s = 2.1u; difference, 255s and quotient: 3 * 2.64u) = 10u, a few u more if it
#: multiplies by a reciprocal. Together ~30u; the bound is 64u = 2^-18 ~ 3.8e-6 (16 float32 ulps of values
#: in [2, 4)). Measured: <= 8u (2 ulps). One grey level of difference before normalisation is
#: 1/(255*0.229) = 0.0171, ~4500x the bound, so any pixel that differs after the resize is caught.
ROUNDING_BOUND = 2.0 ** -18
#: one uint8 step in normalised units (smallest over the channels)
GREY_LEVEL = 1.0 / (255.0 * max(IMAGENET_STD))


def _ms_resized_size(width: int, height: int, resize: int) -> Tuple[int, int]:
    """``(width, height)`` that MindSpore's C++ ``vision.Resize(resize)`` produces for this image size."""
    import mindspore.dataset.vision as vision
    out = vision.Resize(resize)(np.zeros((height, width, 1), dtype=np.uint8))
    return int(out.shape[1]), int(out.shape[0])


def compare_val_pipelines(paths: Sequence[PathLike], image_size: int = 224, resize_backend: str = "mindspore"
                          ) -> Tuple[List[Dict], Dict]:
    """Run MindSpore's val transform (``resize_backend``) and torchvision's on each image and compare.

    Returns ``(rows, summary)``: one JSON-ready dict per image (``path``, original ``width``/``height``,
    ``scale`` = resized short side / original short side, ``resized`` and ``ms_resized`` sizes,
    ``shift`` of MindSpore's crop relative to torchvision's in pixels (x, y), ``max_abs``, ``mean_abs``)
    and a summary (``max_abs``, ``mean_abs`` over all values, ``median_max_abs``, ``worst``, ``bound``
    and ``passed`` for the ``pil`` backend, else ``None``). Raises :class:`DatasetError` for no paths.
    """
    from torch_reference.data import load_image_for_eval as torch_load_image_for_eval

    check_resize_backend(resize_backend)
    if not paths:
        raise DatasetError("No images to compare.")
    resize = eval_resize_size(image_size)
    geometry = PilResizeCenterCrop(resize, image_size)
    rows: List[Dict] = []
    for path in paths:
        with Image.open(path) as im:
            width, height = im.size
        ms = load_image_for_eval(path, image_size, resize_backend=resize_backend)
        tv = torch_load_image_for_eval(path, image_size)
        diff = np.abs(ms.astype(np.float64) - tv.astype(np.float64))
        tv_w, tv_h = geometry.output_size(width, height)
        if resize_backend == "pil":
            ms_w, ms_h, shift = tv_w, tv_h, (0, 0)
        else:  # C++ CenterCrop floors the offset, torchvision rounds it (see the module docstring)
            ms_w, ms_h = _ms_resized_size(width, height, resize)
            shift = ((ms_w - image_size) // 2 - int(round((tv_w - image_size) / 2.0)),
                     (ms_h - image_size) // 2 - int(round((tv_h - image_size) / 2.0)))
        rows.append({"path": str(path), "width": width, "height": height,
                     "scale": resize / min(width, height), "resized": [tv_w, tv_h], "ms_resized": [ms_w, ms_h],
                     "shift": list(shift), "max_abs": float(diff.max()), "mean_abs": float(diff.mean())})
    max_abs = [r["max_abs"] for r in rows]
    worst = rows[int(np.argmax(max_abs))]
    summary = {"images": len(rows), "image_size": image_size, "resize_backend": resize_backend,
               "max_abs": max(max_abs), "median_max_abs": float(np.median(max_abs)),
               # every tensor has the same size, so the mean of the per-image means is the overall mean
               "mean_abs": float(np.mean([r["mean_abs"] for r in rows])),
               "worst": worst["path"], "grey_level": GREY_LEVEL,
               "bound": ROUNDING_BOUND if resize_backend == "pil" else None,
               "passed": bool(max(max_abs) <= ROUNDING_BOUND) if resize_backend == "pil" else None}
    return rows, summary


def format_table(rows: Sequence[Dict], summary: Dict) -> str:
    """The per-image table and the overall line, as printed by the CLI."""
    names = [Path(r["path"]).name for r in rows]
    width = max([len("image")] + [len(n) for n in names])
    lines = [f"{'image':<{width}}  {'size':>9}  {'scale':>6}  {'resized':>9}  {'shift':>6}  {'max abs':>9}  "
             f"{'mean abs':>9}  {'max grey':>8}"]
    for name, r in zip(names, rows):
        resized = "{}x{}".format(*r["resized"]) + ("*" if r["ms_resized"] != r["resized"] else "")
        shift = "{},{}".format(*r["shift"])
        size = "{}x{}".format(r["width"], r["height"])
        lines.append(f"{name:<{width}}  {size:>9}  {r['scale']:>6.3f}  {resized:>9}  "
                     f"{shift:>6}  {r['max_abs']:>9.3g}  {r['mean_abs']:>9.3g}  {r['max_abs'] / GREY_LEVEL:>8.1f}")
    s = summary
    lines.append(f"overall ({s['images']} images, {s['image_size']} px, resize_backend={s['resize_backend']}): "
                 f"max abs {s['max_abs']:.3g} (median over images {s['median_max_abs']:.3g}), "
                 f"mean abs {s['mean_abs']:.3g}; one grey level = {GREY_LEVEL:.4f}")
    if s["bound"] is not None:
        lines.append(f"rounding bound {s['bound']:.3g}: {'PASS' if s['passed'] else 'FAIL'}")
    if any(r["ms_resized"] != r["resized"] for r in rows):
        lines.append("* MindSpore's resized size differs from torchvision's by a pixel")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m parity.pipeline",
                                description="Compare MindSpore's and torchvision's val pipelines on image files.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data-dir", type=Path, help="dataset root (ImageFolder layout): every image of --split")
    src.add_argument("--images", type=Path, nargs="+", metavar="FILE", help="image files")
    p.add_argument("--split", default="val", choices=["train", "val"], help="split of --data-dir (default: val)")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="compare only the first N images")
    p.add_argument("--image-size", type=int, default=224, help="the crop size of the val transform (default: 224)")
    p.add_argument("--resize-backend", default="mindspore", choices=RESIZE_BACKENDS,
                   help="MindSpore side's resize (torchvision always uses Pillow); with pil the run fails "
                        f"(exit 1) if any difference exceeds the rounding bound {ROUNDING_BOUND:.3g}")
    add_json(p, "the rows and the summary")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.image_size < 1:
        print("error: --image-size must be >= 1", file=sys.stderr)
        return 2
    try:
        if args.data_dir is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # skipped files are listed below instead
                samples, _, skipped = scan_split(resolve_data_root(args.data_dir), args.split)
            for path, reason in skipped:
                print(f"skipped {path}: {reason}", file=sys.stderr)
            paths = [p for p, _ in samples]
        else:
            paths = [str(p) for p in args.images]
        paths = paths[:args.limit] if args.limit else paths
        rows, summary = compare_val_pipelines(paths, args.image_size, args.resize_backend)
    except (DatasetError, OSError) as exc:  # bad folder, missing or unreadable image
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_table(rows, summary))
    write_json(args.json, {"rows": rows, "summary": summary})
    return 1 if summary["passed"] is False else 0


if __name__ == "__main__":
    sys.exit(main())
