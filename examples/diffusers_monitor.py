"""A plain diffusers training loop, stopped by raydiff's memorization monitor.

A UNet2DModel with DDPMScheduler learns the first N 8×8 digits that ship with scikit-learn. Every
`--every` steps DDIM generates 128 samples from fixed noise, and MemorizationMonitor measures the
fraction that copy a training image; the loop stops at memorization onset, and prints which
training images were copied, when first and how often (the monitor's ledger).

    pip install -e ".[diffusers]"
    python examples/diffusers_monitor.py --n 16
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel
from sklearn.datasets import load_digits

from raydiff.monitor import MemorizationMonitor


@torch.no_grad()
def generate(model: UNet2DModel, sampler: DDIMScheduler, noise: torch.Tensor) -> torch.Tensor:
    model.eval()
    x = noise.clone()
    for t in sampler.timesteps:
        x = sampler.step(model(x, t).sample, t, x).prev_sample
    model.train()
    return x.clamp(-1, 1)


def main(argv: list[str] | None = None) -> int | None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=16, help="training images")
    p.add_argument("--steps", type=int, default=5000, help="the most training steps")
    p.add_argument("--every", type=int, default=100, help="steps between memorization tests")
    args = p.parse_args(argv)
    torch.manual_seed(0)

    images = torch.tensor(load_digits().images[: args.n], dtype=torch.float32)[:, None] / 8 - 1  # [N, 1, 8, 8] in [-1, 1]
    model = UNet2DModel(
        sample_size=8, in_channels=1, out_channels=1, block_out_channels=(32, 64), layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=8,
    )  # fmt: skip
    noise_schedule = DDPMScheduler(num_train_timesteps=1000)
    sampler = DDIMScheduler(num_train_timesteps=1000)
    sampler.set_timesteps(25)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    monitor = MemorizationMonitor(images)  # the same range as the samples: [-1, 1]
    fixed_noise = torch.randn(128, 1, 8, 8, generator=torch.Generator().manual_seed(1))

    for step in range(1, args.steps + 1):
        x0 = images[torch.randint(0, len(images), (64,))]  # [B, 1, 8, 8]
        noise = torch.randn_like(x0)
        t = torch.randint(0, noise_schedule.config.num_train_timesteps, (len(x0),))
        loss = F.mse_loss(model(noise_schedule.add_noise(x0, noise, t), t).sample, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % args.every == 0:
            r = monitor.evaluate(generate(model, sampler, fixed_noise), step)
            print(f"step {step:5d}  loss {loss.item():.4f}  f_mem {r.f_mem:.3f} [{r.lo:.3f}, {r.hi:.3f}]", flush=True)
            if r.stop:
                print(f"memorization onset at step {r.onset_step}: stopping")
                break
    else:
        print(f"no memorization onset within {args.steps} steps")
    copied = monitor.ledger()  # [image, first_step, copies]: training images copied, in order of first copy
    print(f"training images copied: {len(copied)} of {args.n}")
    if len(copied):
        print(copied.to_string(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
