#!/usr/bin/env python
"""Train and evaluate any seg_d2 / Detectron2 config, on one or many processes.

    python tools/train_net.py --config-file configs/builtin/panoptic_fpn_R18_demo.yaml
    python tools/train_net.py --config-file ... --eval-only MODEL.WEIGHTS output/model_final.pth
    python tools/train_net.py --config-file ... --num-gpus 2      # 2 processes (GPUs, or CPU processes)
    torchrun --nproc_per_node 2 tools/train_net.py --config-file ...
    python tools/train_net.py --config-file ... --resume   # after a kill: continues exactly (docs/fault_tolerance.md)
"""
import seg_d2  # noqa: F401  (first: makes Detectron2 whole and registers seg_d2)

from detectron2.engine import default_argument_parser
from detectron2.evaluation import verify_results
from detectron2.utils import comm

from seg_d2.engine import Trainer, launch, setup_cfg
from seg_d2.engine.checkpoint import FaultTolerantCheckpointer


def main(args):
    cfg = setup_cfg(args.config_file, args.opts, args)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        FaultTolerantCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        results = Trainer.test(cfg, model)
        if comm.is_main_process():
            verify_results(cfg, results)
        return results
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


if __name__ == "__main__":
    args = default_argument_parser().parse_args()
    launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(args,))
