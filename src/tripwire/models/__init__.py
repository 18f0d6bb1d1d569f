"""Reference classifiers (the model zoo) and their training.

Every model takes float images in [0, 1], N×C×H×W, and returns logits; input normalisation is
its first layer (`Normalize`). Layers have legible names (``conv1``, ``relu1``, ``fc1``, …) for
feature extraction by forward hooks.
"""

from tripwire.model_output import ModelOutputError, select_output
from tripwire.models.digest import weights_digest
from tripwire.models.info import ModelInfo, model_info
from tripwire.models.lenet import LeNet5
from tripwire.models.normalize import Normalize
from tripwire.models.resnet_cifar import ResNetCifar
from tripwire.models.small_cnn import SmallCNN
from tripwire.models.training import TrainResult, evaluate_accuracy, train_classifier
from tripwire.models.user import EntryPointError, load_user_model
from tripwire.models.vgg_cifar import VGG16Cifar
from tripwire.models.weights import load_weights, save_weights
from tripwire.models.zoo import (
    ModelNotTrainedError,
    Recipe,
    TrainingInProgressError,
    UnknownModelError,
    get_recipe,
    list_models,
    load_model,
    model_dir,
    read_card,
    recipe_matches,
    register_recipe,
    train_model,
    training_in_progress,
    training_split,
)

__all__ = [
    "EntryPointError",
    "LeNet5",
    "ModelInfo",
    "ModelNotTrainedError",
    "ModelOutputError",
    "Normalize",
    "Recipe",
    "ResNetCifar",
    "SmallCNN",
    "TrainResult",
    "TrainingInProgressError",
    "UnknownModelError",
    "VGG16Cifar",
    "evaluate_accuracy",
    "get_recipe",
    "list_models",
    "load_model",
    "load_user_model",
    "load_weights",
    "model_dir",
    "model_info",
    "read_card",
    "recipe_matches",
    "register_recipe",
    "save_weights",
    "select_output",
    "train_classifier",
    "train_model",
    "training_in_progress",
    "training_split",
    "weights_digest",
]
