"""Distribution strategy, precision and XLA, chosen per device.

One CPU box, several GPUs, several hosts or a TPU: the same `model.fit` code runs
under the `tf.distribute` strategy picked here. What changes with the strategy is
where the input comes from (`Workers`: each worker reads its share) and who writes
the run directory (only the chief).
"""

from __future__ import annotations

import dataclasses
import functools
import glob
import json
import os

from keras_bert_lite.config import STRATEGIES
from keras_bert_lite.errors import KblError


def get_strategy(name: str = "auto", tpu: str | None = None):
    """A tf.distribute strategy by name.

    Args:
        name: "auto" (TPU when one is attached, several GPUs mirrored, else the
            default), "default", "mirrored" (all local GPUs, or all logical CPUs),
            "multiworker" (`MultiWorkerMirroredStrategy`, cluster from `TF_CONFIG`)
            or "tpu".
        tpu: the TPU to connect to (a name or grpc:// address); None finds the
            local one (TPU VMs) or the one `TPU_NAME` names.

    Must run before anything else touches the TensorFlow runtime: the multi-worker
    and TPU strategies configure it.
    """
    import tensorflow as tf

    if name not in STRATEGIES:
        raise KblError(
            f"unknown strategy '{name}': choose one of {', '.join(STRATEGIES)}"
        )
    if name == "auto":
        if tpu is not None or _tpu_attached():
            name = "tpu"
        elif len(tf.config.list_physical_devices("GPU")) > 1:
            name = "mirrored"
        else:
            name = "default"
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        devices = tf.config.list_logical_devices(
            "GPU"
        ) or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([d.name for d in devices])
    if name == "multiworker":
        cluster = _tf_config()
        if not cluster:
            raise KblError(
                "--strategy multiworker needs TF_CONFIG on every worker: "
                '{"cluster": {"worker": ["host1:port", ...]}, "task": {"type": '
                '"worker", "index": N}} (see the README, "Several machines")'
            )
        # Ring all-reduce over gRPC: what works on any network; NCCL is picked by
        # TensorFlow itself where GPUs are present.
        return tf.distribute.MultiWorkerMirroredStrategy()
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu or "")
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, tf.errors.OpError) as e:  # no TPU there, or unreachable
        which = f"the TPU {tpu!r}" if tpu else "a TPU (none is attached or named)"
        reason = (str(e).splitlines() or [type(e).__name__])[0].rstrip(".")
        raise KblError(
            f"--strategy tpu: cannot connect to {which} ({reason}); "
            "name it with --tpu NAME (or TPU_NAME), or choose another --strategy"
        ) from None
    return tf.distribute.TPUStrategy(resolver)


def _tf_config() -> dict:
    try:
        return json.loads(os.environ.get("TF_CONFIG") or "{}")
    except json.JSONDecodeError as e:
        raise KblError(f"TF_CONFIG is not valid JSON ({e.msg})") from None


def _tpu_attached() -> bool:
    """A TPU named by the environment, or the device files of a TPU VM. Never asks
    the network: a resolver would query a cloud metadata server to find out."""
    if os.environ.get("TPU_NAME") or os.environ.get("COLAB_TPU_ADDR"):
        return True
    return bool(glob.glob("/dev/accel[0-9]*") or glob.glob("/dev/vfio/[0-9]*"))


def strategy_kind(strategy) -> str:
    """ "tpu", "multiworker", "mirrored" or "default" for a strategy object."""
    name = type(strategy).__name__
    if name.startswith("TPUStrategy"):
        return "tpu"
    if name.startswith("MultiWorkerMirroredStrategy") or name.startswith(
        "CollectiveAllReduceStrategy"
    ):
        return "multiworker"
    if name.startswith("MirroredStrategy"):
        return "mirrored"
    return "default"


@dataclasses.dataclass(frozen=True)
class Workers:
    """Where this process stands among the workers of a strategy.

    index: this worker's number (0 for a single process); count: the workers
    (input pipelines) in all; chief: whether this one writes the run directory.
    """

    index: int = 0
    count: int = 1
    chief: bool = True

    @classmethod
    def of(cls, strategy) -> Workers:
        if strategy_kind(strategy) != "multiworker":
            return cls()
        resolver = strategy.cluster_resolver
        spec = resolver.cluster_spec().as_dict()
        workers = len(spec.get("worker", [])) + len(spec.get("chief", []))
        kind, index = resolver.task_type, int(resolver.task_id or 0)
        # The chief is the "chief" task, or worker 0 when the cluster names none.
        chief = kind == "chief" or (
            kind == "worker" and index == 0 and not spec.get("chief")
        )
        # Input pipelines are numbered chief first, then workers.
        number = 0 if kind == "chief" else index + (1 if spec.get("chief") else 0)
        return cls(index=number, count=max(workers, 1), chief=chief)


def describe(strategy, workers: Workers) -> str:
    """The strategy as the training logs name it: "strategy multiworker (2
    replica(s), worker 1 of 2)"; the worker numbers count from 0, chief first."""
    where = f", worker {workers.index} of {workers.count}" if workers.count > 1 else ""
    return (
        f"strategy {strategy_kind(strategy)} "
        f"({strategy.num_replicas_in_sync} replica(s){where})"
    )


@functools.cache
def _cpu_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def resolve_precision(precision: str = "auto") -> str:
    """The Keras dtype policy to train with.

    "auto": mixed_bfloat16 on TPUs, on GPUs of compute capability 8 or more and on
    CPUs with AMX or AVX512-BF16 (where bfloat16 matmuls run several times faster);
    mixed_float16 (with loss scaling) on older GPUs; float32 otherwise (on a CPU
    without bf16 units it gains nothing: on an AVX2-only EPYC here both ran a
    2048^3 matmul at about 125 GFLOP/s). Softmax, LayerNorm and the losses stay
    float32 under either mixed policy.
    """
    if precision != "auto":
        return precision
    import tensorflow as tf

    if tf.config.list_logical_devices("TPU"):
        return "mixed_bfloat16"
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        major = (details.get("compute_capability") or (0, 0))[0]
        return "mixed_bfloat16" if major >= 8 else "mixed_float16"
    flags = _cpu_flags()
    if {"amx_bf16", "avx512_bf16"} & flags:
        return "mixed_bfloat16"
    return "float32"


# XLA compiles a step in tens of seconds for a small BERT on a CPU; below this many
# steps the compilation costs more than it saves.
XLA_MIN_STEPS = 100


def resolve_jit_compile(
    jit_compile: bool | str, precision: str, strategy=None, steps: int | None = None
) -> bool:
    """Whether to XLA-compile the train step.

    "auto" follows measurements, not habit: on GPUs and TPUs XLA wins; on this
    project's AVX2 CPU, float32 mini pretraining ran 1.77x faster with XLA (3,773 vs
    2,134 tokens/s), while on an AMX CPU bfloat16 ran about 32% slower with XLA than
    without it (XLA's CPU path did not reach the AMX kernels). On a CPU a run of
    fewer than `XLA_MIN_STEPS` steps does not repay the compilation. A step
    mirrored over several CPU devices cannot be compiled at all: XLA will not read
    a variable of one logical CPU from another.
    """
    import tensorflow as tf

    accelerated = bool(
        tf.config.list_physical_devices("GPU") or tf.config.list_logical_devices("TPU")
    )
    cpu_replicas = (
        strategy is not None
        and not accelerated
        and strategy.num_replicas_in_sync > 1
        and strategy_kind(strategy) == "mirrored"
    )
    if jit_compile != "auto":
        if jit_compile and cpu_replicas:
            raise KblError(
                "XLA cannot compile a step mirrored over several CPU devices (a "
                "variable on one cannot be read from another); use --xla off"
            )
        return bool(jit_compile)
    if accelerated:
        return True
    if cpu_replicas or (steps is not None and steps < XLA_MIN_STEPS):
        return False
    return precision == "float32"


def fit_under(model, strategy, element_spec) -> None:
    """Works around two faults of Keras 3's TensorFlow trainer with several replicas.

    1. keras-team/keras#20329: it builds its metrics from a first batch that it
       takes from the training iterator (so that batch is never trained on) and
       averages over the replicas with `strategy.reduce`, which takes one tensor,
       not the dicts of inputs, targets and weights that BERT trains on: fit fails
       before the first step. The build needs only shapes and dtypes: zeros of the
       dataset's `element_spec` serve, and no batch is lost.
    2. Under MultiWorkerMirroredStrategy it averages each step's logs with
       `strategy.reduce("MEAN", value, axis=0)`, which fails on every scalar
       (the loss and each metric). Scalars are averaged over the workers with
       `axis=None` instead; everything else goes the Keras way.
    """
    if strategy.num_replicas_in_sync == 1:
        return
    import tensorflow as tf

    if strategy_kind(strategy) == "multiworker":
        _reduce_scalars_over_workers()
    original = model._maybe_symbolic_build

    def zeros(spec):
        if not isinstance(spec, tf.TensorSpec):  # PerReplicaSpec: one replica's
            spec = spec._value_specs[0]
        shape = [1 if d is None else d for d in spec.shape.as_list()]
        return tf.zeros(shape, spec.dtype)

    batch = tf.nest.map_structure(zeros, element_spec)
    built = []

    def symbolic_build(iterator=None, data_batch=None):
        if not built:
            original(data_batch=batch)
            built.append(True)

    model._maybe_symbolic_build = symbolic_build


def _reduce_scalars_over_workers() -> None:
    """Patches Keras's step-output reduction (once per process) for fault 2."""
    import tensorflow as tf
    from keras.src.backend.tensorflow import trainer

    original = trainer.reduce_per_replica
    if getattr(original, "kbl_scalars", False):
        return

    def reduce_per_replica(values, strategy, reduction):
        if strategy_kind(strategy) != "multiworker" or reduction not in (
            "auto",
            "mean",
        ):
            return original(values, strategy, reduction)

        def reduce(value):
            local = value
            if isinstance(value, tf.distribute.DistributedValues):
                local = strategy.experimental_local_results(value)[0]
            if getattr(local, "shape", None) is not None and local.shape.rank == 0:
                return strategy.reduce("MEAN", value, axis=None)
            return original(value, strategy, reduction)

        return tf.nest.map_structure(reduce, values)

    reduce_per_replica.kbl_scalars = True
    trainer.reduce_per_replica = reduce_per_replica
