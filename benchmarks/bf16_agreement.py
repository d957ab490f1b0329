"""Where the fast bf16 path's labels differ from eager fp32, how near to a tie were the fp32 logits?

    .venv/bin/python benchmarks/bf16_agreement.py [--cases deeplabv3_resnet50 fcn_resnet50] [--train-steps 30 300]

The models, weights (a brief training on the synthetic shapes) and the 512x512 input are those of
``bench_inference.py``, so its agreement column can be read with this one beside it. For each case and training
length it prints the share of equal labels, the number of differing pixels, the fp32 top-two margin (logit of
the first class minus that of the second) at those pixels against the margin over all pixels, and the largest
|bf16 - fp32| logit difference at the differing pixels and over the whole image. Rounding flips a label only
where the margin is smaller than the rounding error, so differing pixels with tiny margins are ties that bf16
breaks the other way, not a wrong computation.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_inference import CASES, build_case  # noqa: E402
from machine_peak import machine_state  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=["deeplabv3_resnet50", "fcn_resnet50"], choices=CASES)
    parser.add_argument("--train-steps", type=int, nargs="+", default=[30, 300])
    parser.add_argument("--threads", type=int, default=2, help="as in the bench_inference.py run to compare with")
    parser.add_argument("--size", type=int, default=512)
    args = parser.parse_args()

    from pixelwise.data.synthetic import SyntheticShapes
    from pixelwise.data.transforms import build_transforms
    from pixelwise.infer.fast import optimize_for_cpu

    torch.set_num_threads(args.threads)
    print(machine_state("before"), flush=True)
    data = SyntheticShapes("val", build_transforms(False), num_images=1, image_size=args.size, seed=11)
    image = data[0][0][None]  # bench_inference.py's first input
    for case in args.cases:
        for steps in args.train_steps:
            _, _, model = build_case(case, steps, "cpu")
            with torch.inference_mode():
                reference = model(image).float()
                fast = optimize_for_cpu(model, image, torch.bfloat16)
                bf16 = fast(image.to(torch.bfloat16).contiguous(memory_format=torch.channels_last)).float()
            top_two = reference.topk(2, dim=1).values
            margin = top_two[:, 0] - top_two[:, 1]
            differ = reference.argmax(1) != bf16.argmax(1)
            error = (bf16 - reference).abs().amax(1)  # per pixel, over the classes
            line = (f"{case}, {steps} training steps, {args.threads} threads: labels equal "
                    f"{100 * (1 - differ.float().mean().item()):.3f}%, {int(differ.sum())} of {differ.numel()} "
                    f"pixels differ; fp32 margin median {margin.median().item():.3f} over all pixels")
            if differ.any():
                line += (f", at the differing ones median {margin[differ].median().item():.4f} and max "
                         f"{margin[differ].max().item():.4f}; max |bf16 - fp32| logit at the differing pixels "
                         f"{error[differ].max().item():.3f}")
            print(line + f", over the image {error.max().item():.3f}", flush=True)
    print(machine_state("after"))


if __name__ == "__main__":
    main()
