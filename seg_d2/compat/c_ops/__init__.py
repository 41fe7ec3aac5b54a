"""PyTorch versions of every op in Detectron2's compiled extension ``detectron2._C``.

Same names, signatures and semantics as Detectron2 v0.6's C++/CUDA ops; installed as
``detectron2._C`` by :func:`seg_d2.compat.apply` only when the compiled extension is missing.
"""
from .coco_eval import COCOevalAccumulate, COCOevalEvaluateImages, InstanceAnnotation
from .deform_conv import (
    deform_conv_backward_filter,
    deform_conv_backward_input,
    deform_conv_forward,
    modulated_deform_conv_backward,
    modulated_deform_conv_forward,
)
from .rotated import (
    box_iou_rotated,
    nms_rotated,
    register_torch_ops,
    roi_align_rotated_backward,
    roi_align_rotated_forward,
)
from .version import get_compiler_version, get_cuda_version, has_cuda

IS_SEG_D2_COMPAT = True  # tells seg_d2.compat.has_compiled_ops() this is not the compiled extension
