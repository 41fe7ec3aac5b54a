"""Forward + backward time of every registered seg_d2 loss on realistic shapes, and its ratio to the
plain loss Detectron2 uses on the same input (BCE for ROI masks, CE for semantic segmentation).

    python bench/bench_losses.py                      # 512 ROIs x 28x28 and an 8x19x512x1024 batch
    python bench/bench_losses.py --sem-shape 2 19 128 256 --repeats 5   # a quicker run
"""
import argparse
import time

import seg_d2  # noqa: F401  (before detectron2)
import torch
from torch.nn import functional as F

from seg_d2.losses import SEG_LOSS_REGISTRY, BCELoss, CombinedLoss, DiceLoss

IGNORE = 255


def time_backward(loss_fn, logits, target):
    """Seconds of one loss_fn(logits, target).backward()."""
    sync = torch.cuda.synchronize if logits.is_cuda else (lambda: None)
    logits.grad = None
    sync()
    start = time.perf_counter()
    loss_fn(logits, target).backward()
    sync()
    return time.perf_counter() - start


def best_times(loss_fn, baseline, logits, target, repeats):
    """Best-of-``repeats`` seconds of the loss and of the baseline, timed alternately after a warm-up,
    so that load from other processes hits both alike."""
    times = [(time_backward(loss_fn, logits, target), time_backward(baseline, logits, target))
             for _ in range(repeats + 1)][1:]
    return min(t for t, _ in times), min(b for _, b in times)


def candidates(mode):
    losses = {name: cls(mode=mode, ignore_index=IGNORE) for name, cls in sorted(SEG_LOSS_REGISTRY)}
    losses["BCELoss + 0.5*DiceLoss"] = CombinedLoss(
        [(BCELoss(mode, ignore_index=IGNORE), 1.0), (DiceLoss(mode, ignore_index=IGNORE), 0.5)]
    )
    return losses


def bench(title, mode, logits, target, baseline, repeats):
    print(f"\n{title}: logits {tuple(logits.shape)} on {logits.device}, best of {repeats}")
    print(f"  {'loss':<24} {'fwd+bwd ms':>11} {'plain ms':>9} {'x plain':>8}")
    for name, loss in candidates(mode).items():
        seconds, base = best_times(loss.to(logits.device), baseline, logits, target, repeats)
        print(f"  {name:<24} {seconds * 1e3:>11.2f} {base * 1e3:>9.2f} {seconds / base:>8.2f}", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per loss on the semantic batch")
    parser.add_argument("--roi-repeats", type=int, default=30, help="timed runs per loss on the (cheap) ROI batch")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: torch's default)")
    parser.add_argument("--rois", type=int, default=512)
    parser.add_argument("--roi-side", type=int, default=28)
    parser.add_argument("--sem-shape", type=int, nargs=4, default=(8, 19, 512, 1024), metavar=("N", "C", "H", "W"))
    args = parser.parse_args()
    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    side = args.roi_side
    logits = torch.randn(args.rois, side, side, device=device, requires_grad=True)
    target = (torch.rand(args.rois, side, side, device=device) > 0.7).float()
    plain_bce = F.binary_cross_entropy_with_logits
    bench("ROI mask head (binary)", "binary", logits, target, plain_bce, args.roi_repeats)

    n, c, h, w = args.sem_shape
    logits = torch.randn(n, c, h, w, device=device, requires_grad=True)
    labels = torch.randint(0, c, (n, h, w), device=device)
    labels[:, : h // 16] = IGNORE  # a band of ignored pixels, as void regions in Cityscapes
    plain_ce = lambda x, y: F.cross_entropy(x, y, ignore_index=IGNORE)  # noqa: E731
    bench("semantic head (multiclass)", "multiclass", logits, labels, plain_ce, args.repeats)


if __name__ == "__main__":
    main()
