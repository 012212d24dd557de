"""What the trainer reads its batches from: `TrainData` (what `build_train_data` makes), or any object with these
members passed as `vlp.train.train(..., data=...)`."""
from __future__ import annotations

from typing import Iterator, Optional, Protocol, runtime_checkable

from vlp.data.batch import Batch


@runtime_checkable
class TrainingData(Protocol):
    # global samples and this rank's batches in one epoch; None: unknown (a duration in epochs then is refused)
    samples_per_epoch: Optional[int]
    batches_per_epoch: Optional[int]

    def batches(self, epoch: int, skip: int = 0) -> Iterator[Batch]:
        """This rank's batches of `epoch` after the first `skip` (a resumed run skips what it consumed); the same
        batches for the same arguments, however often it is called. A source whose epochs end in a dealt-out tail
        (`TrainData`) also takes `tail_start`, the position its last batch's `tail_start` named."""
        ...

    def will_read(self, epoch: int) -> None:
        """The run reads `epoch` after the current one: a chance to start reading it ahead (or nothing)."""
        ...


MEMBERS = ("samples_per_epoch", "batches_per_epoch", "batches", "will_read")  # TrainingData's, for the message


def check_training_data(data) -> None:
    """TypeError, in one line, naming what an object passed as `data` lacks of `TrainingData`."""
    missing = [name for name in MEMBERS if not hasattr(data, name)]
    if missing:
        raise TypeError(f"data: a {type(data).__name__} is not training data (vlp.data.TrainingData): it lacks "
                        f"{', '.join(missing)}")
