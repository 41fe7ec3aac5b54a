"""One training sample through a mapper: a failure names the sample, or (DATALOADER.SKIP_BAD_SAMPLES) skips it.

A mapper's exception says what went wrong ("image file is truncated") but not with which of thousands of files;
hours into a run that is what the user needs. :func:`map_or_skip` re-raises it as :class:`SampleError` naming the
dataset dict's ``file_name`` and ``image_id``, or, when asked to skip, returns what the loader needs to skip the
sample deterministically, count it and list it at the end of training.
"""

__all__ = ["SampleError", "describe_sample", "map_or_skip"]


class SampleError(RuntimeError):
    """A mapper failed on one dataset dict; the message names its file and image id. (One message argument only:
    PyTorch re-creates the exception from its message when it comes from a DataLoader worker.)"""


def describe_sample(dataset_dict):
    """``file_name (image_id ...)`` of a dataset dict (or of a ``skipped`` entry), for messages."""
    name = dataset_dict.get("file_name") or "<no file_name>"
    image_id = dataset_dict.get("image_id")
    return name if image_id is None else f"{name} (image_id {image_id})"  # semantic datasets often have no id


def map_or_skip(mapper, dataset_dict, skip_bad_samples):
    """``(mapped, None)``, or ``(None, skipped)`` for a sample to leave out of training.

    ``skipped`` is ``{"file_name", "image_id", "reason"}``. A sample is left out when the mapper returns None
    (Detectron2's convention for "drop this sample") or, with ``skip_bad_samples``, when it raises; without it,
    the exception is re-raised as :class:`SampleError` naming the sample.
    """
    sample = {"file_name": dataset_dict.get("file_name"), "image_id": dataset_dict.get("image_id")}  # mappers may pop keys
    try:
        mapped = mapper(dataset_dict)
    except Exception as e:  # any failure of reading or mapping this one sample
        reason = f"{type(e).__name__}: {e}"
        if not skip_bad_samples:
            raise SampleError(f"{describe_sample(sample)}: {reason}") from e
    else:
        if mapped is not None:
            return mapped, None
        reason = "the mapper returned None"
    return None, {**sample, "reason": reason}
