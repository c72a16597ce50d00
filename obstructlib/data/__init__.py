"""Datasets, dataset specs, samplers and perturbation stores.

Every dataset yields float images in [0, 1], shape ``(C, H, W)``: classification items are
``(image, label)``, caption items ``(image, caption, image_id)`` (one per image-caption pair).

Real datasets are fetched with :func:`fetch` (``obstruct data fetch NAME``), and the small
classification sets by their loaders on first use; all live under one root,
:func:`default_data_root`.

Example:
    >>> from obstructlib.data import load_dataset
    >>> train = load_dataset("synthetic-captions", split="train", num_train=50)
    >>> image, caption, image_id = train[0]
"""

from obstructlib.data import celeba, folders, vision  # noqa: F401  (import registers their datasets)
from obstructlib.data.base import (
    ArrayImageDataset,
    SizedDataset,
    dataset_info,
    dataset_kind,
    default_data_root,
    default_runs_root,
    fetch_many,
    list_datasets,
    load_dataset,
    register_dataset,
    to_float_image,
)
from obstructlib.data.captions import CaptionDataset, default_templates, templated_captions
from obstructlib.data.domains import STYLES, RestyledDataset, load_domain, restyle, split_style
from obstructlib.data.embedded import COLORS, DOMAINS, SHAPES, SUPERCLASSES, SyntheticShapes, generate_shapes
from obstructlib.data.fetchers import ensure_dataset, fetch
from obstructlib.data.labels import (
    RelabelledDataset,
    hacker_protocol,
    parse_protocol,
    protector_protocol,
    relabel,
    relabel_dataset,
    superclass_map,
)
from obstructlib.data.pairs import load_pairs
from obstructlib.data.protected import ProtectedDataset, ProtectedPairs
from obstructlib.data.sampler import EpisodeSampler, episode_labels
from obstructlib.data.store import PerturbationStore, export_protected
from obstructlib.data.tokens import insert_trigger, pair_collate, strip_tokens, tokenize_captions
from obstructlib.data.wrappers import (
    IndexedDataset,
    LabelledSubset,
    TransformDataset,
    labels_of,
    seeded_subset,
)

__all__ = [
    "COLORS",
    "DOMAINS",
    "SHAPES",
    "STYLES",
    "SUPERCLASSES",
    "ArrayImageDataset",
    "CaptionDataset",
    "EpisodeSampler",
    "IndexedDataset",
    "LabelledSubset",
    "PerturbationStore",
    "ProtectedDataset",
    "ProtectedPairs",
    "RelabelledDataset",
    "RestyledDataset",
    "SizedDataset",
    "SyntheticShapes",
    "TransformDataset",
    "dataset_info",
    "dataset_kind",
    "default_data_root",
    "default_runs_root",
    "ensure_dataset",
    "fetch",
    "fetch_many",
    "default_templates",
    "episode_labels",
    "export_protected",
    "generate_shapes",
    "insert_trigger",
    "labels_of",
    "list_datasets",
    "hacker_protocol",
    "load_dataset",
    "load_domain",
    "load_pairs",
    "pair_collate",
    "parse_protocol",
    "protector_protocol",
    "register_dataset",
    "relabel",
    "relabel_dataset",
    "restyle",
    "seeded_subset",
    "split_style",
    "strip_tokens",
    "superclass_map",
    "templated_captions",
    "to_float_image",
    "tokenize_captions",
]
