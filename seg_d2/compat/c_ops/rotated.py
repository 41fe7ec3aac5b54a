"""placeholder until implemented"""
def box_iou_rotated(*a): raise NotImplementedError
nms_rotated=roi_align_rotated_backward=roi_align_rotated_forward=box_iou_rotated
def register_torch_ops(): pass
