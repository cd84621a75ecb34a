"""``python -m ms_transfer.predict --ckpt RUN/best.ckpt IMG [IMG ...]``: class and probability per image."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Dict, List, Optional, Sequence, Union

import mindspore as ms
import numpy as np
from mindspore import nn

from .core.checkpoint_io import CheckpointError
from .core.config import ConfigError
from .core.flags import add_device, add_json, add_mode, plain, write_json
from .core.log import parse_args
from .models import load_run_checkpoint
from .mindspore_backend.context import set_context
from .core.data import Preprocess
from .core.tasks import check_classifier
from .mindspore_backend.data import load_image_for_eval


def softmax(logits: np.ndarray) -> np.ndarray:
    """Numerically stable softmax over the last axis."""
    z = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def predict_paths(net: nn.Cell, classes: Sequence[str], paths: Sequence[str], image_size: Union[int, Preprocess],
                  top_k: int = 1, resize_backend: str = "mindspore") -> List[Dict]:
    """Classify each image with the eval transform at ``image_size``; one dict per path, in order.

    Success: ``{"path", "class", "probability", "top": [{"class", "probability"}, ...]}`` (``top_k`` best,
    softmax probabilities). An unreadable image gives ``{"path", "error"}`` and the others still run.
    """
    top_k = max(1, min(int(top_k), len(classes)))
    net.set_train(False)
    results = []
    for path in paths:
        try:
            x = load_image_for_eval(path, image_size, resize_backend=resize_backend)
        except Exception as exc:  # missing, unreadable, truncated or not an image (Pillow/MindSpore errors)
            results.append({"path": str(path), "error": f"cannot read image ({type(exc).__name__}: {exc}); "
                                                        "check that the file exists and is a JPEG/PNG/BMP/WebP"})
            continue
        probs = softmax(net(ms.Tensor(x)).asnumpy()[0].astype(np.float64))
        order = np.argsort(-probs)[:top_k]
        top = [{"class": classes[i], "probability": float(probs[i])} for i in order]
        results.append({"path": str(path), **top[0], "top": top})
    return results


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m ms_transfer.predict`` (no side effects: docs/cli.md renders it)."""
    p = argparse.ArgumentParser(prog="python -m ms_transfer.predict", description=plain(__doc__))
    p.add_argument("--ckpt", required=True, help="training-run checkpoint (RUN/best.ckpt)")
    p.add_argument("images", nargs="+", metavar="IMG", help="image files (JPEG, PNG, BMP, WebP)")
    p.add_argument("--top-k", type=int, default=1, metavar="K",
                   help="show the K most probable classes per image (default: 1)")
    add_json(p, "the list of results")
    p.add_argument("--format", default="text", choices=["text", "json"],
                   help="what is printed on stdout: text (one line per image) or json (the list of results, "
                        "what a bare --json printed before it took a path)")
    add_mode(p, "pynative", why="a few images, one forward each: compiling the graph would cost more than it saves")
    add_device(p)
    return p


def _bare_json(argv: Sequence[str]) -> bool:
    """``--json`` followed by nothing or by another flag: the switch it was before it took a path (argparse's own
    error would not say what changed)."""
    return any(a == "--json" and (i + 1 == len(argv) or argv[i + 1].startswith("-")) for i, a in enumerate(argv))


def main(argv: Optional[Sequence[str]] = None) -> int:
    """CLI entry point: 0 if every image was classified, 2 (bad input) for a bad checkpoint or an image that cannot
    be read (the other images are still classified and shown)."""
    p = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if _bare_json(argv):
        p.error("--json now takes an output path (--json results.json); to print JSON use --format json")
    args = parse_args(p, argv)
    if args.top_k < 1:
        p.error(f"--top-k must be at least 1, got {args.top_k}")
    try:
        set_context(args.mode, args.device)
        net, weights = load_run_checkpoint(args.ckpt)
        check_classifier(weights.meta["arch"], args.ckpt)
    except (CheckpointError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    classes = weights.meta["classes"]
    backend = weights.meta.get("config", {}).get("resize_backend", "mindspore")  # what the run validated with
    pre = Preprocess.from_config({**weights.meta.get("config", {}), "arch": weights.meta["arch"]},
                                 weights.meta.get("image_size", 224))
    results = predict_paths(net, classes, args.images, pre, args.top_k, backend)
    if args.format == "json":
        print(json.dumps(results, indent=2))
    write_json(args.json, results)
    for r in results:
        if "error" in r:
            print(f"error: {r['path']}: {r['error']}", file=sys.stderr)
        elif args.format == "text":
            print(f"{r['path']}: " + ", ".join(f"{t['class']} ({t['probability']:.3f})" for t in r["top"]))
    return 2 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
