"""Typed recipe sections. Every field here is a recipe key; the loader rejects anything else.

Each subpackage reads only its own section (model → vlp.models, data → vlp.data, ...).
Field comments are the user-facing documentation of the key.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Optional

from vlp.recipe.duration import Duration

REQUIRED: Any = object()  # sentinel default for keys a recipe must set


@dataclass
class ModelConfig:
    arch: Optional[str] = None  # an open_clip architecture name, e.g. "ViT-B-32" (exclusive with `config`)
    config: Optional[dict] = None  # an inline open_clip model config: {embed_dim, vision_cfg, text_cfg}
    pretrained: Optional[str] = None  # local checkpoint file (safetensors) or open_clip pretrained tag in the cache
    init_checkpoint: Optional[str] = None  # vlp run dir / checkpoint to start from (weights only)
    lock_image: bool = False  # LiT: freeze the image tower
    lock_image_unlocked_layers: int = 0  # ... except the last N layer groups
    lock_image_freeze_bn: bool = True
    lock_text: bool = False  # freeze the text tower
    lock_text_unlocked_layers: int = 0
    grad_checkpointing: bool = False
    patch_dropout: float = 0.0  # FLIP: fraction of image patches dropped in training
    logit_scale_init: Optional[float] = None  # log of t; default comes from the objective (log 1/0.07, log 10)
    logit_bias_init: Optional[float] = None  # default comes from the objective (-10 for sigmoid)
    max_logit_scale: float = 100.0  # t is clamped to this (OpenCLIP: 100)


@dataclass
class SourceConfig:
    shards: str = REQUIRED  # webdataset spec: path, brace range, http(s):// URL, pipe: command (trusted input only)
    weight: float = 1.0  # sampling weight when several sources are mixed
    type: Literal["webdataset", "hf"] = "webdataset"
    split: str = "train"  # for type hf
    image_column: str = "image"  # for type hf
    caption_column: str = "text"  # for type hf
    streaming: bool = False  # for type hf


@dataclass
class DataConfig:
    train: Optional[str] = None  # shard spec(s); several sources joined with "::" as in OpenCLIP
    train_weights: Optional[str] = None  # "::"-separated weights matching `train`
    sources: list[SourceConfig] = field(default_factory=list)  # alternative to train/train_weights
    num_samples: Optional[int] = None  # epoch size; default: read from sizes.json next to the shards
    resampled: bool = False  # sample shards with replacement (infinite stream)
    shuffle_buffer: int = 1000  # samples; 0 disables
    workers: int = 2  # DataLoader workers per process
    image_key: str = "jpg;png;jpeg;webp"
    caption_key: str = "txt"  # or "json" with caption_field
    caption_field: Optional[str] = None  # JSON field holding the caption
    extra_caption_keys: list[str] = field(default_factory=list)  # alternatives; one drawn per sample
    negative_key: Optional[str] = None  # hard-negative captions: "neg.txt" (one per line) or a JSON field
    num_negatives: int = 1  # hard-negative captions used per sample
    max_image_pixels: int = 4096 * 4096  # larger images are rejected from their header, before decoding
    augment_scale: list[float] = field(default_factory=lambda: [0.9, 1.0])  # RandomResizedCrop scale
    augment_ratio: list[float] = field(default_factory=lambda: [0.75, 1.3333])  # RandomResizedCrop ratio


@dataclass
class RegularizerConfig:
    name: str = REQUIRED  # align | uniform | cross_uniform
    weight: float = 1.0


@dataclass
class ObjectiveConfig:
    name: str = "softmax"  # see `vlp.objectives.names()`
    params: dict = field(default_factory=dict)  # keyword arguments of the objective
    regularizers: list[RegularizerConfig] = field(default_factory=list)
    regularizer_features: Literal["local", "global"] = "global"  # features the regularizers see
    tiled: bool = False  # memory-efficient form (no B×B matrix)
    tile_size: int = 1024
    gather: Literal["global", "local_loss"] = "global"  # local_loss: OpenCLIP's local-loss + gather-with-grad


@dataclass
class OptimConfig:
    name: Literal["adamw"] = "adamw"
    lr: float = 5e-4
    weight_decay: float = 0.2  # not applied to gains, biases, embeddings or the logit scale/bias
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    eps: float = 1e-6
    grad_clip: Optional[float] = None  # max global grad norm


@dataclass
class ScheduleConfig:
    name: Literal["cosine", "constant", "linear"] = "cosine"
    warmup: Duration = field(default_factory=lambda: Duration.parse(0))
    min_lr_ratio: float = 0.0  # final lr as a fraction of optim.lr (cosine, linear)


@dataclass
class TrainConfig:
    duration: Optional[Duration] = None  # "1000 steps", "5M samples" or "3 epochs"; required to train
    batch_size: int = 128  # global contrastive batch, split over processes
    micro_batch_size: Optional[int] = None  # per process; < local batch enables GradCache accumulation
    precision: Literal["no", "fp16", "bf16"] = "no"
    seed: int = 0
    output_dir: str = "runs"
    run_name: Optional[str] = None  # default: recipe file stem
    checkpoint_every: Optional[Duration] = None  # e.g. "500 steps"; default: end of run only
    keep_checkpoints: int = 3
    log_every: int = 10  # steps
    max_nonfinite_steps: int = 5  # consecutive skipped steps before the run stops
    compile: bool = False  # torch.compile the model
    ema_decay: Optional[float] = None


@dataclass
class EvalDatasetConfig:
    name: str = REQUIRED
    task: Literal["zeroshot", "retrieval"] = REQUIRED
    path: str = REQUIRED  # CLIP_benchmark webdataset dir, image folder, or HF dataset (load_from_disk)
    type: Literal["wds", "imagefolder", "hf"] = "wds"
    split: str = "test"
    classnames: Optional[str] = None  # file overriding the dataset's class names
    templates: Optional[str] = None  # file overriding the dataset's prompt templates
    image_column: str = "image"  # for type hf
    label_column: str = "label"  # for type hf
    max_samples: Optional[int] = None


@dataclass
class EvalConfig:
    datasets: list[EvalDatasetConfig] = field(default_factory=list)
    every: Optional[Duration] = None  # in-training evaluation period; default: end of run only
    batch_size: int = 256
    recall_k: list[int] = field(default_factory=lambda: [1, 5, 10])


@dataclass
class ExportConfig:
    formats: list[Literal["open_clip", "transformers"]] = field(default_factory=list)  # written at end of run
    push_to_hub: Optional[str] = None  # ORG/NAME
    private: bool = True
    revision: Optional[str] = None
    license: str = "apache-2.0"


@dataclass
class LoggingConfig:
    trackers: list[Literal["tensorboard", "wandb"]] = field(default_factory=lambda: ["tensorboard"])
    wandb_project: Optional[str] = None
    progress: bool = True


@dataclass
class Recipe:
    model: ModelConfig = REQUIRED
    data: DataConfig = field(default_factory=DataConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    description: str = ""
