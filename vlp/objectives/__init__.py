"""Training objectives, built by name from the recipe: see README.md in this folder for formulas and papers.

Call as `objective(image_features, text_features, logit_scale=t, logit_bias=b, samples=batch)` with L2-normalised
features local to the rank and `batch` the `vlp.data.Batch` they embed (the fields the objective `reads`); the result
is a dict with "loss" (to backprop) and every component term, all equal to their single-process values on the global
batch.
"""
from vlp.objectives import (coca, dcl, false_negatives, hard_negative, isogclr, macl, multi_caption,  # noqa: F401
                            regularizers, sigmoid, softmax)  # (registration)
from vlp.objectives.base import Objective
from vlp.objectives.builder import build, build_from_config, check
from vlp.objectives.composite import PRESETS, Composite
from vlp.objectives.dcl import DecoupledLoss
from vlp.objectives.hard_negative import HardNegativeLoss
from vlp.objectives.registry import (check_params, get, get_regularizer, names, recipe_parameters, register,
                                     register_regularizer, regularizer_names)
from vlp.objectives.sigmoid import SigmoidLoss
from vlp.objectives.softmax import SoftmaxLoss

__all__ = ["Objective", "Composite", "SoftmaxLoss", "SigmoidLoss", "HardNegativeLoss", "DecoupledLoss", "PRESETS",
           "build", "build_from_config", "check", "check_params", "recipe_parameters", "get", "get_regularizer",
           "names", "regularizer_names", "register", "register_regularizer"]
