"""Typed recipe sections. Every field here is a recipe key; the loader rejects anything else.

Each subpackage reads only its own section (model → vlp.models, data → vlp.data, ...).
Field comments are the user-facing documentation of the key; `bounded("[low, high)", default)` declares the range a
numeric key must lie in (any finite number: "[-inf, inf]"), checked when the recipe is loaded.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Optional

from vlp.recipe.bounds import bounded
from vlp.recipe.duration import Duration

REQUIRED: Any = object()  # sentinel default for keys a recipe must set


@dataclass
class ModelConfig:
    # a tower registered with vlp.models.register_tower (its settings go in `config`); default: open_clip's
    # (`hf`/`timm`/`open_clip`, following the config)
    type: Optional[str] = None
    arch: Optional[str] = None  # an open_clip architecture name, e.g. "ViT-B-32" (exclusive with `config`)
    config: Optional[dict] = None  # inline open_clip model JSON (+ preprocess_cfg); HF names may be "pkg:MODULE"
    pretrained: Optional[str] = None  # local weights file (safetensors / weights_only .pt) or open_clip tag in the cache
    init_checkpoint: Optional[str] = None  # run dir, checkpoint, export, weights file, CLIP/SiglipModel folder
    lock_image: bool = False  # LiT: freeze the image tower
    # ... except the last N groups (1 = projection, 2 = + last block and norm, ...)
    lock_image_unlocked_layers: int = bounded("[0, inf)", 0)
    lock_image_freeze_bn: bool = True  # also freeze BatchNorm statistics of a locked (ResNet/timm) image tower
    lock_text: bool = False  # freeze the text tower
    # ... except the last N layer groups (1 = projection, 2 = + last layer, ...)
    lock_text_unlocked_layers: int = bounded("[0, inf)", 0)
    grad_checkpointing: bool = False  # recompute activations in backward (less memory, ~30% more compute)
    patch_dropout: float = bounded("[0, 1)", 0.0)  # FLIP: fraction of image patches dropped in training
    logit_scale_init: Optional[float] = bounded("[-inf, inf]", None)  # log t; default: objective's (log 1/0.07, log 10)
    logit_bias_init: Optional[float] = bounded("[-inf, inf]", None)  # default: objective's (-10 sigmoid, none softmax)
    max_logit_scale: float = bounded("(0, inf)", 100.0)  # t is clamped to this (OpenCLIP: 100)
    trim_text_padding: bool = True  # skip the padding after a batch's longest caption (exact for causal towers)


@dataclass
class SourceConfig:
    shards: str = REQUIRED  # path, brace range, http(s)/s3:// URL, pipe: command (trusted only); hf: dir or hub name
    # share of samples drawn from this source when mixed (normalised; needs resampled: true)
    weight: float = bounded("(0, inf)", 1.0)
    type: str = "webdataset"  # webdataset (or wds), hf, or a reader added with vlp.data.register_source
    split: str = "train"  # for type hf
    image_column: str = "image"  # for type hf
    caption_column: str = "text"  # for type hf
    streaming: bool = False  # for type hf


@dataclass
class DataConfig:
    train: Optional[str] = None  # shard spec(s); several sources joined with "::" as in OpenCLIP
    train_weights: Optional[str] = None  # "::"-separated sample shares for `train` (not per-shard, unlike OpenCLIP)
    sources: list[SourceConfig] = field(default_factory=list)  # alternative to train/train_weights
    # epoch size (rounded down to whole global batches); default: sizes.json
    num_samples: Optional[int] = bounded("[1, inf)", None)
    resampled: bool = False  # sample shards with replacement (infinite stream)
    shuffle_buffer: int = bounded("[0, inf)", 1000)  # raw samples per stream (held: streams/process × this); 0: none
    # Logical reading streams (global): batches depend on seed, epoch, global batch, streams and data only, never on
    # processes or workers. Must divide train.batch_size and be a multiple of the process count; None: gcd(batch, 8)
    streams: Optional[int] = bounded("[1, 4096]", None)
    workers: int = bounded("[0, inf)", 2)  # DataLoader workers per process (0 = in-process), each reads some streams
    image_key: str = "jpg;png;jpeg;webp"
    caption_key: str = "txt"  # or "json" with caption_field
    caption_field: Optional[str] = None  # JSON field holding the caption
    extra_caption_keys: list[str] = field(default_factory=list)  # "EXT" (caption per line) / "json:FIELD"; one drawn
    negative_key: Optional[str] = None  # hard-negative captions: "neg.txt" (one per line) or "json:FIELD" (a list)
    num_negatives: int = bounded("[1, inf)", 1)  # hard-negative captions used per sample
    label_key: Optional[str] = None  # integer label → Batch.labels: "EXT" ("cls"), a column, or "json:FIELD"
    captions: Literal["one", "all"] = "one"  # one drawn per sample, or all → Batch.captions (b, max_captions, L)
    # captions: all — main caption then extras, the rest dropped (default 5); means nothing with captions: one
    max_captions: Optional[int] = bounded("[1, 64]", None)
    max_image_pixels: int = bounded("[1, inf)", 4096 * 4096)  # larger images are rejected from their header
    # RandomResizedCrop scale and aspect-ratio ranges [low, high]
    augment_scale: list[float] = bounded("(0, 1]", lambda: [0.9, 1.0], length=2, ascending=True)
    augment_ratio: list[float] = bounded("(0, inf)", lambda: [0.75, 1.3333], length=2, ascending=True)
    # where training JPEGs are decoded: in the workers at reduced DCT scale (cpu), or by the trainer on its CUDA device
    # (gpu: nvJPEG, batched; workers only check the bytes; without CUDA it warns and decodes on the CPU)
    decode: Literal["cpu", "gpu"] = "cpu"


@dataclass
class RegularizerConfig:
    name: str = REQUIRED  # align | uniform | cross_uniform (see vlp/objectives/README.md)
    # added to the loss as weight × value; overrides a preset's weight for the same name (0 turns it off)
    weight: float = bounded("[0, inf)", 1.0)


@dataclass
class DistillConfig:
    # the frozen teacher: a run dir, checkpoint dir or exported folder (what `vlp eval --model` takes), or an
    # open_clip architecture name; it must preprocess images and tokenize captions as the student does
    teacher: str = REQUIRED
    pretrained: Optional[str] = None  # for an architecture name: local weights file or open_clip tag in the cache
    weight: float = bounded("[0, inf)", 1.0)  # loss = objective's loss + weight × distillation loss


# the one list of the cross-rank forms of the contrastive loss (each objective class declares those it supports)
GatherMode = Literal["global", "local_loss", "ring"]
RegularizerFeatures = Literal["local", "global"]  # the regularizers see this rank's or all-gathered features


@dataclass
class ObjectiveConfig:
    # softmax | sigmoid | hard_negative | dcl | clip_cua | clip_cuaxu | uniformity | masked_softmax | supcon | debiased
    # | macl | isogclr | multi_caption  (formulas: vlp/objectives/README.md)
    name: str = "softmax"
    params: dict = field(default_factory=dict)  # keyword arguments of the objective, e.g. {label_smoothing: 0.1}
    regularizers: list[RegularizerConfig] = field(default_factory=list)  # weighted terms added to the loss
    regularizer_features: RegularizerFeatures = "global"  # regularizers see this rank's or all-gathered features
    tiled: bool = False  # memory-efficient form without any B×B matrix (softmax and sigmoid, and presets on them)
    tile_size: int = bounded("[1, inf)", 1024)  # rows/columns per tile of the tiled form
    gather: GatherMode = "global"  # cross-rank form: whole loss per rank | own rows vs gathered (OpenCLIP local_loss) | ring of text features (sigmoid)
    distill: Optional[DistillConfig] = None  # add a teacher's soft targets to the loss (OpenCLIP --distill-model)


@dataclass
class OptimConfig:
    name: Literal["adamw"] = "adamw"  # the optimizer (AdamW)
    lr: float = bounded("(0, inf)", 5e-4)  # peak learning rate, reached at the end of warmup
    # on weight matrices only: not on gains, biases, embeddings or the logit scale/bias
    weight_decay: float = bounded("[0, inf)", 0.2)
    betas: list[float] = bounded("[0, 1)", lambda: [0.9, 0.98], length=2)  # AdamW (beta1, beta2)
    eps: float = bounded("(0, inf)", 1e-6)  # AdamW epsilon
    grad_clip: Optional[float] = bounded("(0, inf)", None)  # max global gradient norm (the norm is logged either way)


@dataclass
class ScheduleConfig:
    name: Literal["cosine", "constant", "linear"] = "cosine"  # decay of the lr after warmup
    warmup: Duration = bounded("[0, inf)", lambda: Duration.parse(0))  # linear warmup from ~0 to optim.lr
    min_lr_ratio: float = bounded("[0, 1]", 0.0)  # final lr as a fraction of optim.lr (cosine, linear)


@dataclass
class TrainConfig:
    # "1000 steps", "5M samples" or "3 epochs"; required to train
    duration: Optional[Duration] = bounded("(0, inf)", None)
    # GLOBAL contrastive batch; each of W processes gets batch_size / W (must divide)
    batch_size: int = bounded("[1, inf)", 128)
    # per process; < local batch: GradCache accumulation (keeps all negatives)
    micro_batch_size: Optional[int] = bounded("[1, inf)", None)
    precision: Literal["no", "fp16", "bf16"] = "no"  # mixed precision via accelerate (fp16 adds a loss scaler)
    # ddp: every process holds the whole model and optimizer; fsdp: FSDP2 shards parameters, gradients and optimizer
    # state over the processes (per transformer block; bf16 or no precision; no compile or in-training eval yet)
    strategy: Literal["ddp", "fsdp"] = "ddp"
    seed: int = bounded("[0, inf)", 0)  # weights init, data order, augmentation and per-step randomness follow it
    output_dir: str = "runs"  # the run directory is output_dir/run_name
    run_name: Optional[str] = None  # default: recipe file stem
    checkpoint_every: Optional[Duration] = bounded("(0, inf)", None)  # e.g. "500 steps"; default: end of run only
    keep_checkpoints: int = bounded("[1, inf)", 3)  # newest complete checkpoints kept; >= 2 allows fallback
    # fsspec URL of the run's remote copy (s3://bucket/runs/NAME): rank 0 uploads each checkpoint and the run's
    # records there in the background; `--resume latest` without a local checkpoint downloads the newest from it
    remote_dir: Optional[str] = None
    log_every: int = bounded("[1, inf)", 10)  # steps between metric records (values averaged over those steps)
    # non-finite loss/gradient steps are skipped; this many in a row stop the run (at the next log/checkpoint step)
    max_nonfinite_steps: int = bounded("[1, inf)", 5)
    compile: bool = False  # torch.compile the model
    ema_decay: Optional[float] = bounded("(0, 1)", None)  # keep an EMA of the weights (ema.safetensors), e.g. 0.999


@dataclass
class EvalDatasetConfig:
    name: str = REQUIRED  # the `dataset` field of the result record
    task: str = REQUIRED  # a registered evaluation task (vlp.evaluate.tasks): zeroshot | retrieval | your own
    path: str = REQUIRED  # CLIP_benchmark webdataset dir, image folder, or HF dataset (load_from_disk)
    type: Literal["wds", "imagefolder", "hf"] = "wds"  # CLIP_benchmark layout, DIR/[split/]CLASS/*.jpg, or HF dataset
    split: str = "test"  # sub-directory (wds, imagefolder) or DatasetDict split (hf)
    train_split: Optional[str] = None  # the split a task that fits on images reads (linear_probe), e.g. "train"
    classnames: Optional[str] = None  # "imagenet" (open_clip's list) or a .txt/.json file overriding the class names
    templates: Optional[str] = None  # "imagenet" (OpenAI's 80) or a .txt/.json file: {c} templates / per-class prompts
    image_column: str = "image"  # for type hf
    label_column: str = "label"  # for type hf zeroshot: ClassLabel (or a sequence of them for multi-label)
    caption_column: str = "text"  # for type hf retrieval: a caption or a list of captions per row
    max_samples: Optional[int] = bounded("[1, inf)", None)  # evaluate only the first N samples


@dataclass
class EvalConfig:
    datasets: list[EvalDatasetConfig] = field(default_factory=list)  # sets evaluated in training and by `vlp eval`
    every: Optional[Duration] = bounded("(0, inf)", None)  # in-training evaluation period; default: end of run only
    batch_size: int = bounded("[1, inf)", 256)  # images (and prompts/captions) encoded per forward pass
    workers: int = bounded("[0, inf)", 2)  # DataLoader workers decoding eval images (0 = in the evaluating process)
    recall_k: list[int] = bounded("[1, inf)", lambda: [1, 5, 10])  # retrieval Recall@k values reported
    geometry_max_samples: int = bounded("[2, inf)", 5000)  # geometry diagnostics use at most this many pairs
    pictures: bool = True  # each in-training evaluation draws its pictures (vlp.evaluate.pictures; ~1-2 s per set)


@dataclass
class ExportConfig:
    # written to RUN_DIR/export at the end of the run; none listed but push_to_hub set: `vlp export`'s default formats
    formats: list[Literal["open_clip", "transformers", "onnx"]] = field(default_factory=list)
    push_to_hub: Optional[str] = None  # ORG/NAME; token from HF_TOKEN or `hf auth login`; shard credentials redacted
    private: bool = True  # create the Hub repo private (as `vlp export` does unless --public)
    revision: Optional[str] = None  # Hub branch to push to (created when missing)
    license: str = "apache-2.0"  # license in the model card metadata


@dataclass
class LoggingConfig:
    # trackers besides RUN_DIR/metrics.jsonl (which is always written)
    trackers: list[Literal["tensorboard", "wandb"]] = field(default_factory=lambda: ["tensorboard"])
    wandb_project: Optional[str] = None  # W&B project (default: the run name); needs `pip install wandb`
    progress: bool = True  # progress bar with loss and throughput (rank 0)


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
    # Python modules imported before the recipe is checked, so that the towers, data sources, evaluation tasks and
    # objectives they register exist for `vlp train/eval/export` too (trusted code, like a `pipe:` shard spec)
    plugins: list[str] = field(default_factory=list)
    description: str = ""
