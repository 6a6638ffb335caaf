"""The memory plan of one Emu3.5 guidance step on the cards robot workstations have, from the config.

    python -m emu_ros.bench.memory_plan [--views 4] [--step-area 262144] [--no-cfg] [--json FILE]

Computed, not measured (emu_ros/model/memory_plan.py says what is counted); `scripts/gpu_check.sh`
puts the peak measured on a lent GPU beside it. Each row says whether the step fits the card with
2 GiB left for the CUDA context and the allocator.
"""
from __future__ import annotations

import argparse
from typing import Optional, Sequence

from emu_ros.bench import write_json
from emu_ros.model.configuration_emu3 import preset_config
from emu_ros.model.memory_plan import StepShape, plan_step

#: (label, usable GiB per device, devices, quantize)
CARDS = [("1x H100 80 GB, bf16", 79.2, 1, None),
         ("2x 48 GB (layer split), bf16", 47.5, 2, None),
         ("4x 24 GB (layer split), bf16", 23.6, 4, None),
         ("1x 48 GB, int8 weights", 47.5, 1, "int8"),
         ("1x 32 GB, 4-bit NF4 weights", 31.8, 1, "nf4"),
         ("1x 24 GB, 4-bit NF4 weights", 23.6, 1, "nf4")]


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m emu_ros.bench.memory_plan", description=__doc__.split("\n")[0])
    p.add_argument("--config", default="full", choices=["full", "tiny"])
    p.add_argument("--views", type=int, default=4, help="camera views in the prompt")
    p.add_argument("--step-area", type=int, default=512 * 512, help="pixel area of the predicted step image")
    p.add_argument("--no-cfg", action="store_true", help="one row (no classifier-free guidance)")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    config = preset_config(args.config)
    base = StepShape(views=args.views, step_area=args.step_area, cfg_rows=1 if args.no_cfg else 2)
    rows = []
    print(f"Emu3.5 ({args.config}), one guidance step: {args.views} views, step image {args.step_area} px, "
          f"{'no CFG' if args.no_cfg else 'CFG (2 rows)'}; sequence {base.seq_len} tokens")
    print(f"{'card':38s} {'weights':>8s} {'KV':>6s} {'act':>6s} {'logits':>7s} {'per dev':>8s} {'card':>6s}  fits")
    for label, gib, devices, quant in CARDS:
        plan = plan_step(config, base, quantize=quant, devices=devices)
        fits = plan.fits(gib)
        split = f" (layers {'/'.join(map(str, plan.layer_counts))})" if devices > 1 else ""
        print(f"{label:38s} {plan.weights_gib:7.1f}G {plan.kv_cache_gib:5.1f}G {plan.activations_gib:5.1f}G "
              f"{plan.logits_gib:6.1f}G {plan.per_device_gib:7.1f}G {gib:5.1f}G  {'yes' if fits else 'NO'}{split}")
        rows.append({"card": label, "card_gib": gib, "fits": fits, **plan.__dict__})
    print("(computed from the config; 2 GiB of each card kept for the CUDA context and the allocator; 'per dev' is\n"
          " the fullest device of the balanced split load_lm uses, the end devices also hold embedding / lm_head)")
    if args.json:
        write_json(args.json, {"config": args.config, "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
