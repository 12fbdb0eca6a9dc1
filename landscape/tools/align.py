"""Permutation alignment of two checkpoints: ``python -m landscape.align REF OTHER --out ALIGNED.safetensors``.

The checkpoint layer and command-line tool over :mod:`landscape.matching` (Git Re-Basin weight or
activation matching, Ainsworth et al. 2023; Entezari et al. 2022: ``landscape.weight_matching``,
``landscape.align``). The tool aligns OTHER to REF -- permutes OTHER's hidden units to
match REF's, which leaves its function unchanged -- prints the objective sum <theta_ref, P theta_other>
before and after, the iterations and seconds, and writes OTHER's checkpoint with its units permuted
atomically: every tensor, its masks permuted with its weights, its metadata kept (``kind`` included) plus
``aligned_to`` and ``alignment`` (docs/format.md section 3). ``--out`` never replaces an input or a file
that is not an earlier aligned checkpoint, and never lies inside a run (:mod:`core.artifacts.outputs`). As
the other landscape tools: ``--trust-code`` imports the model or data set a checkpoint names as
``PACKAGE.MODULE:CALLABLE``, ``--model``/``--dataset`` describe a plain ``.pt`` state_dict, ``--json`` writes
what is printed (:func:`alignment_json`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from core.artifacts.atomic import atomic_write_bytes
from core.artifacts.checkpoint import FORMAT, MASK_PREFIX, Checkpoint, build_model
from core.artifacts.outputs import Replaceable, check_outputs
from core.artifacts.serialize import dumps
from core.device import resolve_device
from core.errors import ArgumentParser, UserError, run_cli
from core.options import add_dataclass_arguments
from core.seeds import check_seed
from landscape.batches import DEFAULT_BATCH_SIZE, DEFAULT_BN_SAMPLES
from landscape.matching import METHOD_NAMES, METHODS, Alignment, align
from landscape.permutations import permute_state
from landscape.tools.artifacts import (
    CheckpointLike,
    EvalOptions,
    bn_subsample,
    checkpoint_data,
    describe_checkpoint,
    load_compatible,
)
from landscape.tools.cli import add_file_arguments, check_data_dir, open_checkpoint, write_json

__all__ = ["CheckpointAlignment", "align_checkpoints", "alignment_json", "format_alignment", "main", "save_aligned"]


@dataclass(frozen=True)
class CheckpointAlignment:
    """OTHER aligned to REF: ``checkpoint`` is OTHER's with its tensors and masks permuted."""

    reference: Checkpoint
    alignment: Alignment
    checkpoint: Checkpoint


def align_checkpoints(reference: CheckpointLike, other: CheckpointLike, *, method: str = "weights",
                      max_iter: int = 100, seed: int = 0, samples: int = DEFAULT_BN_SAMPLES, device: str = "cpu",
                      data_dir: str | None = None, trust_code: bool = False) -> CheckpointAlignment:
    """:func:`align` for two checkpoint files of one model (the command-line tool): activation matching runs
    on ``samples`` seeded training samples of the checkpoints' data set (read under ``data_dir``);
    ``trust_code`` is the consent to import a model or data set the checkpoints name as user code."""
    if method not in METHODS:
        raise UserError(f"--method must be one of {', '.join(METHODS)}, not {method!r}")
    ref, oth = load_compatible([reference, other], trust_code=trust_code)
    where = resolve_device(device)
    data = None
    if method == "activations":
        dataset = checkpoint_data(ref, where, data_dir)
        size = dataset.size("train")
        indices = bn_subsample(size, min(samples, size), seed)
        data = list(dataset.eval_batches("train", int(ref.config.get("eval_batch_size") or DEFAULT_BATCH_SIZE),
                                         indices))
    result = align(build_model(ref, where), build_model(oth, where), method=method, data=data,
                   masks=oth.masks or None, max_iter=max_iter, seed=seed)
    result = replace(result, seed=seed)  # activation matching's seed is that of its samples
    state = permute_state(oth.state, result.spec, result.permutations)
    masks = permute_state(oth.masks, result.spec, result.permutations)
    return CheckpointAlignment(ref, result, replace(oth, state=state, masks=masks))


def _aligned_metadata(path: str | Path) -> dict[str, str] | None:
    """The metadata of a SWAMP checkpoint file, or None if ``path`` is none."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
    except Exception:  # safetensors raises several error types for a file that is not one
        return None
    return meta if meta.get("format") == FORMAT else None


def save_aligned(path: str | Path, aligned: CheckpointAlignment) -> None:
    """Write the aligned checkpoint atomically: OTHER's metadata (``kind`` and all), plus ``aligned_to`` (the
    reference as given) and ``alignment`` (JSON of :meth:`Alignment.summary`)."""
    meta = _aligned_metadata(aligned.checkpoint.path)
    if meta is None:
        raise UserError(f"{aligned.checkpoint.path} is not a SWAMP checkpoint file; only those can be written aligned")
    meta = {**meta, "aligned_to": aligned.reference.path, "alignment": json.dumps(aligned.alignment.summary())}
    tensors = {**aligned.checkpoint.state,
               **{MASK_PREFIX + k: m.to(torch.float32) for k, m in aligned.checkpoint.masks.items()}}
    atomic_write_bytes(path, dumps(tensors, meta))


def format_alignment(result: Alignment) -> str:
    """The objective before and after, the iterations and the groups, as the tool prints them."""
    return (f"{METHOD_NAMES[result.method]} (Ainsworth et al. 2023) of {len(result.spec.groups)} groups of "
            f"hidden units ({sum(g.size for g in result.spec.groups)} units)\n"
            f"objective sum <theta_ref, P theta_other>: before {result.objectives[0]:.6f}, after "
            f"{result.objectives[-1]:.6f} ({result.iterations} iteration{'s' if result.iterations != 1 else ''})")


def alignment_json(aligned: CheckpointAlignment, out: str | Path, seconds: float) -> dict:
    """What ``--json`` writes: the two checkpoints, the aligned one, :meth:`Alignment.to_json` and the seconds."""
    return {"reference": str(aligned.reference.path), "other": str(aligned.checkpoint.path), "out": str(out),
            "groups": len(aligned.alignment.spec.groups), "alignment": aligned.alignment.to_json(), "seconds": seconds}


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="python -m landscape.align",
        description="Permute the hidden units of OTHER to match REF (Git Re-Basin weight or activation matching, "
                    "Ainsworth et al. 2023) and write the aligned checkpoint; the function OTHER computes is "
                    "unchanged.")
    parser.add_argument("reference", metavar="REF", help="the checkpoint to align to")
    parser.add_argument("other", metavar="OTHER", help="the checkpoint whose hidden units are permuted")
    parser.add_argument("--out", type=Path, required=True, metavar="ALIGNED.safetensors",
                        help="where the aligned checkpoint is written")
    parser.add_argument("--method", choices=METHODS, default="weights", help="weights or activations (default "
                        "weights)")
    parser.add_argument("--max-iter", type=int, default=100, metavar="N", help="most weight-matching iterations "
                        "(default 100)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the order of the groups and of the "
                        "activation samples (default 0)")
    parser.add_argument("--samples", type=int, default=DEFAULT_BN_SAMPLES, metavar="N",
                        help=f"training samples of activation matching (default {DEFAULT_BN_SAMPLES})")
    add_dataclass_arguments(parser, EvalOptions, only=("device", "data_dir", "trust_code"))
    add_file_arguments(parser, plot=False)
    return parser


def _is_aligned_checkpoint(path: Path) -> bool:
    return "aligned_to" in (_aligned_metadata(path) or {})


ALIGNED = Replaceable("aligned checkpoint", _is_aligned_checkpoint)  # what --out may replace: this tool's output


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    inputs = [args.reference, args.other]
    check_outputs({"--out": args.out, "--json": args.json}, inputs, {"--out": ALIGNED, "--json": {"alignment"}})
    if args.max_iter < 1 or args.samples < 1:
        raise UserError("--max-iter and --samples must be at least 1")
    check_data_dir(args.data_dir)
    check_seed(args.seed)
    reference, other = (open_checkpoint(p, args) for p in inputs)
    if other.kind == "plain":
        raise UserError(f"OTHER {other.path} is a plain PyTorch file, but the aligned OTHER is written as a SWAMP "
                        "checkpoint with OTHER's metadata: give a SWAMP checkpoint as OTHER (REF may be a plain "
                        "state_dict)")
    start = time.perf_counter()
    aligned = align_checkpoints(reference, other, method=args.method, max_iter=args.max_iter, seed=args.seed,
                                samples=args.samples, device=args.device, data_dir=args.data_dir)
    seconds = time.perf_counter() - start
    print(f"reference: {aligned.reference.path} ({describe_checkpoint(aligned.reference)})")
    print(f"other:     {aligned.checkpoint.path} ({describe_checkpoint(aligned.checkpoint)})")
    print(f"{format_alignment(aligned.alignment)}, {seconds:.2f} s")
    save_aligned(args.out, aligned)
    print(f"wrote {args.out}")
    if args.json is not None:
        write_json(args.json, alignment_json(aligned, args.out, seconds))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
