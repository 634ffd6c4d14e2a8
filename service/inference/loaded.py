"""One loaded model version and how its signatures are called: directly on a batch (`run`, load-time
checks and benches) or one item at a time through the signature's micro-batcher (`call`, every request:
that is where the executor, the TensorFlow thread budget and the batch metrics are)."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from contract.card import ModelCard
from contract.entropy import ScaleFn, StagedScales, staged_scales
from service.inference.batcher import Arrays, BatchObserver, MicroBatcher

#: Builds the batch observer (metrics) for one (model, version, signature).
ObserverFactory = Callable[[str, int, str], BatchObserver]


#: Encoder-effort calls (latent refinement: seconds to minutes each) run on an executor of their own, one
#: at a time, never on the inference executor: a refining request cannot hold up other requests' calls,
#: and refinements queue (at most EFFORT_QUEUE, then 503) instead of piling onto the cores. The app gives
#: every version its registry's (`effort_executor`, shut down with it); this one serves a LoadedModel
#: built without one (benches, scripts).
_EFFORT_EXECUTOR = ThreadPoolExecutor(1, thread_name_prefix="effort")
EFFORT_QUEUE = 4


class LoadError(Exception):
    """A version directory that cannot be served; the message is shown in /models."""



@dataclass(eq=False)
class LoadedModel:
    """One loaded, warmed model version: its card, signatures, entropy tables and batchers."""

    card: ModelCard
    path: Path
    signatures: Mapping[str, Any]
    tables: dict[str, np.ndarray]
    max_batch_size: int = 16
    max_wait_s: float = 0.005
    max_queue: int | None = None
    max_in_flight: int = 1
    executor: Executor | None = None
    effort_executor: Executor | None = None  # one thread (see _EFFORT_EXECUTOR)
    observer_factory: ObserverFactory | None = None
    loaded_at: float = field(default_factory=time.time)
    module: Any = None  # keeps the SavedModel (and its variables) alive
    _batchers: dict[str, MicroBatcher] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.card.name

    @property
    def version(self) -> int:
        return self.card.version

    @property
    def tables_hash(self) -> bytes:
        return bytes.fromhex(self.card.tables_sha256)[:4]

    def run(self, signature: str, inputs: Mapping[str, np.ndarray]) -> Arrays:
        """Call a signature on a whole batch, synchronously (use from a worker thread)."""
        fn = self.signatures[signature]
        outputs = fn(**{name: tf.constant(value) for name, value in inputs.items()})
        return {name: value.numpy() for name, value in outputs.items()}

    async def call(self, signature: str, inputs: Mapping[str, np.ndarray]) -> Arrays:
        """Call a signature on ONE item (no batch axis) through this signature's micro-batcher."""
        batcher = self._batchers.get(signature)
        if batcher is None:
            observer = self.observer_factory(self.name, self.version, signature) if self.observer_factory else None
            effort = self.card.effort is not None and signature == self.card.effort.signature
            batcher = MicroBatcher(
                lambda batch, sig=signature: self.run(sig, batch),
                max_batch_size=1 if effort else self.max_batch_size,
                max_wait_s=0.0 if effort else self.max_wait_s,
                executor=(self.effort_executor or _EFFORT_EXECUTOR) if effort else self.executor,
                observer=observer,
                name=f"{self.name}/{self.version}/{signature}",
                max_queue=EFFORT_QUEUE if effort else self.max_queue,
                max_in_flight=1 if effort else self.max_in_flight,
            )
            self._batchers[signature] = batcher
        return await batcher.submit(inputs)

    @functools.cached_property
    def stage_inputs(self) -> dict[str, list[str]]:
        """Input names of each parameter-stage signature (read once: scale_fn runs per image)."""
        stages = {spec.scale_source for spec in self.card.latents if spec.coding == "gaussian"}
        return {stage: list(self.signatures[stage].structured_input_signature[1]) for stage in stages}

    def scale_fn(self) -> ScaleFn | None:
        """Scale indices of Gaussian latents from their parameter-stage signatures, for ONE image (a new
        one per image; None when no latent needs one)."""
        if not self.stage_inputs:
            return None
        return staged_scales(self.card.latents, self.run, self.stage_inputs)

    def stages(self) -> StagedScales | None:
        """This model's parameter stages for ONE image, for a caller that runs each stage itself
        (requests: `call_stage`, through the batcher); None when no latent needs one."""
        return StagedScales(self.card.latents, self.stage_inputs) if self.stage_inputs else None

    async def call_stage(self, stages: StagedScales, name: str, coded: Mapping[str, np.ndarray]) -> np.ndarray:
        """Scale indices of latent `name` (batch axis of 1), its parameter stage run through that
        stage's micro-batcher: concurrent requests' stage calls of one shape become one TF call."""
        stage, feed = stages.request(name, coded)
        outputs = await self.call(stage, {key: value[0] for key, value in feed.items()})
        return stages.receive(name, {key: value[None] for key, value in outputs.items()})

    async def close(self, *, shutting_down: bool = False) -> None:
        """Close every batcher. Their queued items are still computed (a version swapped out finishes
        what it took), except, when the process is `shutting_down`, queued refinements: they are refused
        (503) rather than holding the shutdown for minutes each."""
        effort = self.card.effort.signature if self.card.effort is not None else None
        for signature, batcher in list(self._batchers.items()):
            await batcher.close(drop_queued=shutting_down and signature == effort)
