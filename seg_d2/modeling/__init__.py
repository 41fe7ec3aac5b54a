"""seg_d2's model parts; importing a module registers it in Detectron2's registries."""
from . import backbone  # noqa: F401
from . import meta_arch  # noqa: F401
from . import sem_seg  # noqa: F401
