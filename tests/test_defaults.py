"""One source of defaults: the configs. Each notebook's `parameters` cell repeats them as literals
(papermill needs literals); built through `hyperdas.experiments.params`, they give the default configs."""

import pytest

from hyperdas.core.config import ModelConfig
from hyperdas.das.training import DASConfig
from hyperdas.experiments import params as P
from hyperdas.hyper.model import HyperDASConfig
from hyperdas.hyper.training import HyperTrainConfig
from hyperdas.profiles import notebook_defaults

TRAINING_NOTEBOOKS = ("00_target_model", "01_data", "02_baselines", "03_train_hyperdas", "04_leakage_ablations")
# notebook 04 trains short variants on purpose: 10x the learning rates, fewer validation pairs
NOTEBOOK_04_OWN = {"lr": 1e-3, "lr_rotation": 1e-2, "max_val_pairs": 30}


def differences(built, default) -> dict:
    return {k: v for k, v in built.to_dict().items() if v != default.to_dict()[k]}


@pytest.mark.parametrize("book", TRAINING_NOTEBOOKS)
def test_every_notebook_loads_the_default_model(book):
    assert differences(P.model_config(notebook_defaults(book)), ModelConfig()) == {}


def test_notebook_02_repeats_the_das_defaults():
    assert differences(P.das_config(notebook_defaults("02_baselines")), DASConfig()) == {}


def test_notebook_03_repeats_the_hyperdas_defaults():
    hyper, train = P.hyperdas_configs(notebook_defaults("03_train_hyperdas"))
    assert differences(hyper, HyperDASConfig()) == {}
    assert differences(train, HyperTrainConfig()) == {}


def test_notebook_04_differs_only_where_it_says_so():
    hyper, train = P.hyperdas_configs(notebook_defaults("04_leakage_ablations"))
    assert differences(hyper, HyperDASConfig()) == {}
    assert differences(train, HyperTrainConfig()) == NOTEBOOK_04_OWN


def test_a_left_out_parameter_takes_the_config_default():
    hyper, train = P.hyperdas_configs({"k": 4})
    assert hyper == HyperDASConfig(k=4) and train == HyperTrainConfig()
