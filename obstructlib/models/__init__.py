"""Model factories: registered image classifiers and the open_clip adapter.

Classifiers (``create_model(name, num_classes)``) all share one shape,
``head(encoder(normalize(x)))`` on images in [0, 1]: ``resnet20``/``32``/``44``/``56``/``110``
(akamaster CIFAR ResNets), ``resnet18``, ``vgg11``, ``vgg16``, ``digits_cnn``, ``resnet12`` and
``small_vit``. CLIP models come from ``create_clip(name, pretrained)``: ``tiny-vit`` / ``tiny-rn``
on CPU, any open_clip architecture (``RN50``, ``ViT-B-32``) elsewhere.
"""

from obstructlib.models import small as _small  # noqa: F401  (registers digits_cnn, resnet12, small_vit)
from obstructlib.models.cifar_resnet import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    load_cifar_resnet,
)
from obstructlib.models.clip import TINY_CLIP_MODELS, ClipModel, create_clip, list_clip_models
from obstructlib.models.generator import ResnetGenerator
from obstructlib.models.registry import (
    ImageClassifier,
    Normalize,
    create_model,
    list_models,
    load_weights,
    register_model,
)
from obstructlib.models.surrogates import FeatureExtractor, create_surrogate, resolve_surrogate_pretrained

__all__ = [
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "TINY_CLIP_MODELS",
    "ClipModel",
    "FeatureExtractor",
    "ImageClassifier",
    "Normalize",
    "ResnetGenerator",
    "create_clip",
    "create_model",
    "create_surrogate",
    "list_clip_models",
    "list_models",
    "load_cifar_resnet",
    "load_weights",
    "register_model",
    "resolve_surrogate_pretrained",
]
