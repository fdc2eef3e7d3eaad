"""LightningDataModule: data preparation, splits and dataloaders in one reusable object."""
from __future__ import annotations

import inspect
import os
from typing import Any, Callable, Dict, Iterable, Mapping, Optional, Sequence, Sized, Union

from torch.utils.data import DataLoader, Dataset, IterableDataset

from trainer.hooks import DataHooks
from trainer.module import HyperparametersMixin


class LightningDataModule(DataHooks, HyperparametersMixin):
    """Override ``prepare_data``, ``setup`` and the ``*_dataloader`` methods."""

    name: Optional[str] = None
    CHECKPOINT_HYPER_PARAMS_KEY = "datamodule_hyper_parameters"
    CHECKPOINT_HYPER_PARAMS_NAME = "datamodule_hparams_name"
    CHECKPOINT_HYPER_PARAMS_TYPE = "datamodule_hparams_type"

    def __init__(self) -> None:
        super().__init__()
        self.trainer: Any = None
        self.prepare_data_per_node = True
        self.allow_zero_length_dataloader_with_multiple_devices = False

    @classmethod
    def from_datasets(
        cls,
        train_dataset: Optional[Union[Dataset, Iterable[Dataset]]] = None,
        val_dataset: Optional[Union[Dataset, Iterable[Dataset]]] = None,
        test_dataset: Optional[Union[Dataset, Iterable[Dataset]]] = None,
        predict_dataset: Optional[Union[Dataset, Iterable[Dataset]]] = None,
        batch_size: int = 1,
        num_workers: int = 0,
        **datamodule_kwargs: Any,
    ) -> "LightningDataModule":
        """A DataModule whose dataloaders wrap the given datasets (shuffled for training)."""

        def loader(ds: Dataset, shuffle: bool = False) -> DataLoader:
            shuffle &= not isinstance(ds, IterableDataset)
            # pin_memory=True as Lightning's (a user's test mocks DataLoader and checks these arguments)
            return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, num_workers=num_workers, pin_memory=True)

        def many(ds: Any, shuffle: bool = False) -> Any:
            # every torch Dataset in the (nested) collection becomes a loader; anything else stays as it is
            if isinstance(ds, Dataset):
                return loader(ds, shuffle)
            if isinstance(ds, Mapping):
                return {k: many(v, shuffle) for k, v in ds.items()}
            if isinstance(ds, (list, tuple)):
                return type(ds)(many(v, shuffle) for v in ds)
            return ds

        params = inspect.signature(cls.__init__).parameters
        accepts_kwargs = any(p.kind == inspect.Parameter.VAR_KEYWORD for p in params.values())
        special = {"batch_size": batch_size, "num_workers": num_workers}
        kwargs = {k: v for k, v in special.items() if accepts_kwargs or k in params}
        kwargs.update(datamodule_kwargs)
        datamodule = cls(**kwargs)
        if train_dataset is not None:
            datamodule.train_dataloader = lambda: many(train_dataset, shuffle=True)  # type: ignore[method-assign]
        if val_dataset is not None:
            datamodule.val_dataloader = lambda: many(val_dataset)  # type: ignore[method-assign]
        if test_dataset is not None:
            datamodule.test_dataloader = lambda: many(test_dataset)  # type: ignore[method-assign]
        if predict_dataset is not None:
            datamodule.predict_dataloader = lambda: many(predict_dataset)  # type: ignore[method-assign]
        return datamodule

    @classmethod
    def load_from_checkpoint(
        cls,
        checkpoint_path: Any,
        map_location: Any = None,
        hparams_file: Optional[str] = None,
        **kwargs: Any,
    ) -> "LightningDataModule":
        """Builds the datamodule from a checkpoint's ``datamodule_hyper_parameters`` (``hparams_file`` replaces
        them, ``kwargs`` override them) and restores its ``state_dict``, as Lightning does."""
        from trainer.core.saving import instantiate_from_checkpoint, read_checkpoint_for

        checkpoint = read_checkpoint_for(cls, checkpoint_path, map_location, hparams_file, kwargs)
        datamodule = instantiate_from_checkpoint(cls, checkpoint, kwargs)
        state = checkpoint.get(type(datamodule).__qualname__)
        if state is not None:
            datamodule.load_state_dict(state)
        return datamodule

    def __str__(self) -> str:
        """One line per loader method: ``{Train dataloader: size=16}``, ``{Validation dataloader: 1. size=8 ; 2.
        size=4}`` for several, ``size=NA`` for an unsized dataset, ``None`` where the method fails (Lightning's)."""
        return os.linesep.join(
            f"{{{label}: {_describe_loaders(getattr(self, method, None))}}}" for label, method in _LOADER_METHODS
        )

    def state_dict(self) -> Dict[str, Any]:
        return {}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        pass

    def on_exception(self, exception: BaseException) -> None:
        pass


_LOADER_METHODS = (
    ("Train dataloader", "train_dataloader"),
    ("Validation dataloader", "val_dataloader"),
    ("Test dataloader", "test_dataloader"),
    ("Predict dataloader", "predict_dataloader"),
)


def _describe_loaders(method: Optional[Callable[[], Any]]) -> str:
    """What ``str(datamodule)`` shows for one loader method: its datasets' sizes, or ``None``."""
    try:
        loaders = method()  # type: ignore[misc]
    except Exception:  # noqa: BLE001 - a loader that cannot be built (no setup yet, not implemented) shows as None
        return "None"
    if isinstance(loaders, DataLoader):
        return f"size={_dataset_size(loaders)}"
    if isinstance(loaders, Mapping):
        loaders = list(loaders.values())
    if isinstance(loaders, Sequence):
        return " ; ".join(
            f"{i}. size={_dataset_size(loader)}" if isinstance(loader, DataLoader) else "None"
            for i, loader in enumerate(loaders, start=1)
        )
    return "None"


def _dataset_size(loader: DataLoader) -> str:
    return str(len(loader.dataset)) if isinstance(loader.dataset, Sized) else "NA"
