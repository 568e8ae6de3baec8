"""How much a benchmark run times: the sizes of the workloads, the repetitions, PyTorch's threads."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BenchSettings:
    examples: int = 10_000  # training examples per timed epoch (the report scales to 50k)
    test_examples: int = 10_000  # images attacked per timed attack
    conv_examples: int = 512  # CIFAR-sized training examples per timed conv epoch (4 batches of 128)
    reps: int = 5  # timed repetitions per side, after warm-up: at least this many ...
    min_timed_seconds: float = 5.0  # ... and more for a short workload, until its JAX side is timed this long
    minimal_examples: int = 1_000  # images per timed DeepFool / C&W (torchattacks runs DeepFool image by image)
    ensemble: int = 12
    unit_scale: float = 1.0  # < 1 shrinks the networks (smoke runs of the suite itself)
    threads: int | None = None  # torch intra-op threads; None: torch's default
    data_parallel: bool = False  # JAX side split across all devices (fgsm_repro.sharding)

    @classmethod
    def quick(cls) -> BenchSettings:
        return cls(examples=400, test_examples=400, conv_examples=256, reps=1, min_timed_seconds=0.0, ensemble=3,
                   unit_scale=0.05, minimal_examples=40)
