"""seg_d2's model parts; importing a module registers it in Detectron2's registries."""
from . import roi_heads  # noqa: F401
from . import backbone  # noqa: F401
from . import meta_arch  # noqa: F401
from . import sem_seg  # noqa: F401
from . import projects  # noqa: F401  (Detectron2 projects' heads with seg_d2 losses)
from . import fast_inference  # noqa: F401  (DefaultTrainer / DefaultPredictor models fold their norms)
