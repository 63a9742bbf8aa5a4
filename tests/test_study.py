"""Study: which models and datasets a config asks for, in which role."""

from dataclasses import dataclass

import pytest

from clip_robustness.names import imagenet_c_dataset_ids
from clip_robustness.workflow.study import ConfigError, Study


@dataclass
class _Entry:
    is_ood: bool


class _Datasets:
    """A registry of five labelled sets and two OOD sets (the real registry is tested in test_datasets_*)."""

    entries = {
        "imagenet_val": False,
        "imagenet_r": False,
        "imagenet_a": False,
        "imagenet_c_fog_1": False,
        "imagenet_c_fog_3": False,
        "textures": True,
        "sun": True,
    }

    def resolve(self, dataset_id):
        if dataset_id not in self.entries:
            raise KeyError(f"unknown dataset {dataset_id!r}")
        return _Entry(self.entries[dataset_id])


class _Models:
    ids = ["a", "b", "c"]

    def select(self, ids_or_all):
        return list(self.ids) if ids_or_all == "all" else list(ids_or_all)


def _config(**datasets):
    base = {
        "in_distribution": "imagenet_val",
        "test_conditions": ["imagenet_r", "imagenet_a"],
        "ood": ["textures", "sun"],
    }
    base.update(datasets)
    return {"models": "all", "datasets": base}


def test_imagenet_c_ids_are_corruption_major():
    assert imagenet_c_dataset_ids(["fog", "snow"], [1, 3]) == [
        "imagenet_c_fog_1",
        "imagenet_c_fog_3",
        "imagenet_c_snow_1",
        "imagenet_c_snow_3",
    ]


def test_dataset_ids_list_every_role_once_in_order():
    study = Study.from_config(
        _config(imagenet_c={"corruptions": ["fog"], "severities": [1, 3]}), _Datasets(), _Models()
    )
    assert study.dataset_ids == [
        "imagenet_val",
        "imagenet_r",
        "imagenet_a",
        "imagenet_c_fog_1",
        "imagenet_c_fog_3",
        "textures",
        "sun",
    ]
    assert study.test_conditions == ("imagenet_r", "imagenet_a", "imagenet_c_fog_1", "imagenet_c_fog_3")
    assert study.model_ids == ("a", "b", "c")


def test_unknown_dataset_is_named():
    with pytest.raises(KeyError, match="imagenet_q"):
        Study.from_config(_config(test_conditions=["imagenet_q"]), _Datasets(), _Models())


def test_ood_set_listed_as_test_condition_is_refused():
    with pytest.raises(ConfigError, match="'textures'.*OOD"):
        Study.from_config(_config(test_conditions=["textures"], ood=["sun"]), _Datasets(), _Models())


def test_labelled_set_listed_as_ood_is_refused():
    with pytest.raises(ConfigError, match="imagenet_r"):
        Study.from_config(_config(test_conditions=["imagenet_a"], ood=["imagenet_r"]), _Datasets(), _Models())
