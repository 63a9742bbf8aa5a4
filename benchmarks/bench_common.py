"""What the logits benchmarks share (a helper, not a command): their common options, a random zero-shot head, and the
forward rate of a model alone (the ceiling each end-to-end figure is compared with)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def add_run_arguments(parser: argparse.ArgumentParser, *, batch_size: int, forward_batches: int) -> None:
    """The options every logits benchmark takes: device, autocast precision, batch size, forward batches, CPU threads,
    the temp folder and the output folder."""
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--precision", choices=["bf16", "fp16", "fp32"], default="bf16", help="autocast on CUDA (CPU: fp32)"
    )
    parser.add_argument("--batch-size", type=int, default=batch_size)
    parser.add_argument(
        "--forward-batches", type=int, default=forward_batches, help="batches timed for the forward figure"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--workdir", type=Path, default=None, help="folder for the temp folder (default: the system's)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out")


def apply_threads(args: argparse.Namespace) -> None:
    """``--threads``: torch's CPU threads, when given."""
    if args.threads:
        torch.set_num_threads(args.threads)


def random_head(row: dict, folder: Path) -> Path | None:
    """A random zero-shot head (unit-norm columns, logit scale 100) for a zero-shot (open_clip) model; None otherwise."""
    from clip_robustness.models.adapters import is_zero_shot

    if not is_zero_shot(row):
        return None
    import open_clip

    from clip_robustness.models.adapters.text_head import ZeroShotHead
    from clip_robustness.models.zero_shot import save_head

    embed_dim = int(open_clip.get_model_config(row["architecture"])["embed_dim"])
    weights = torch.nn.functional.normalize(torch.randn(embed_dim, 1000), dim=0)
    head = ZeroShotHead(
        weights=weights, logit_scale=100.0, prompt_set="openai", n_templates=80, model_id=row["model_id"]
    )
    return save_head(head, folder / "head.pt")


def forward_rate(
    row: dict,
    head_path: Path | None,
    device: str,
    precision_name: str,
    batch_size: int,
    batches: int,
    input_size: tuple[int, int] | None = None,
) -> tuple[float, float]:
    """Images/s of the model alone (the pipeline's final-layer call: float32 head, zero-shot head for zero-shot
    models) on random float batches already on ``device``, the first batch not timed; and the seconds its build took.
    ``input_size``: ``(H, W)`` of the batches (default: the built model's own)."""
    from clip_robustness.logits.loop import apply_tf32, resolve_precision
    from clip_robustness.models.adapters import row_adapter
    from clip_robustness.models.build import build_model
    from clip_robustness.models.zero_shot import load_head

    start = time.perf_counter()
    model, _, info = build_model(row, device)
    build_s = time.perf_counter() - start
    classifier = row_adapter(row).classifier(model, None if head_path is None else load_head(head_path))
    precision = resolve_precision(precision_name, True, device)
    apply_tf32(precision)
    shape = info["input_size"] if input_size is None else (3, *input_size)
    x = torch.randn(batch_size, *shape, device=device)
    autocast = torch.autocast(
        device_type=torch.device(device).type,
        dtype=precision.amp_dtype or torch.float32,
        enabled=precision.amp_dtype is not None,
    )

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    with torch.no_grad(), autocast:
        classifier(x)  # warm-up
        sync()
        start = time.perf_counter()
        for _ in range(batches):
            classifier(x).float()
        sync()
    return batches * batch_size / (time.perf_counter() - start), build_s
