"""`ServeOptions`: where the server listens, its request limits and its micro-batching."""

from __future__ import annotations

from dataclasses import dataclass
from typing import get_args

from textlora.config import DEVICE_PATTERN, Precision, Runtime
from textlora.errors import ConfigError


@dataclass
class ServeOptions:
    host: str = "127.0.0.1"
    """Address to listen on; the default answers this machine only."""
    port: int = 8000
    """TCP port."""
    max_texts: int = 64
    """Most texts in one request (more: 422)."""
    max_chars: int = 2000
    """Most characters in one text (more: 422). Tokens beyond the run's max_length are truncated anyway."""
    max_body_bytes: int = 1_000_000
    """Largest request body, checked before JSON parsing (more: 413)."""
    body_timeout_s: float = 10.0
    """Longest time to receive a request's whole body once its headers are in (slower: 408, connection closed)."""
    header_timeout_s: float = 10.0
    """Longest time from a connection's first byte (or its opening) to a request's complete headers
    (slower: the connection is closed). Idle keep-alive connections close after uvicorn's 5 s."""
    max_queue: int = 4096
    """Most texts waiting for or in a forward pass, over all models (more: 503 with Retry-After)."""
    max_wait_ms: float = 5.0
    """How long a batch waits for more requests of the same model before its forward pass."""
    max_batch: int = 64
    """Most texts in one forward pass when batching requests together."""
    batching: bool = True
    """Batch concurrent requests for the same model into one forward pass; off: one pass per request."""
    threads: int | None = None
    """torch CPU threads for inference; None keeps torch's default (one per core)."""
    check_base: bool = True
    """Verify each base model's weight sha256 against the runs' manifests."""
    calibrate: bool = True
    """Scores of each run divided by the temperature its training recorded as lowering validation ECE
    (`calibration.json`); off: raw softmax scores. The chosen labels are the same either way."""
    precision: Precision = "fp32"
    """'bf16' / 'fp16' (GPU only): forward passes under autocast, faster where the hardware has it (CPUs with AMX or
    AVX512-BF16, GPUs) and slightly less exact; 'auto' the device's fastest (`textlora.model.precision`)."""
    device: str = "auto"
    """Where the models compute: auto (a CUDA GPU when there is one, else the CPU), cpu, cuda or cuda:N."""
    runtime: Runtime = "torch"
    """'torch', or 'onnx': each run's merged model exported once to ONNX (cached in its run folder) and run by ONNX
    Runtime on the CPU (no shared base: each run holds its own weights); needs the onnx extra."""

    def __post_init__(self) -> None:
        problems = [f"{name} must be a positive integer, got {getattr(self, name)}"
                    for name in ("max_texts", "max_chars", "max_body_bytes", "max_batch", "max_queue")
                    if getattr(self, name) < 1]
        problems += [f"{name} must be more than 0 seconds, got {getattr(self, name)}"
                     for name in ("body_timeout_s", "header_timeout_s") if not getattr(self, name) > 0]
        if self.max_queue < self.max_texts:
            problems.append(f"max_queue ({self.max_queue}) must be at least max_texts ({self.max_texts}), "
                            "or a request of max_texts texts could never be served")
        if self.threads is not None and self.threads < 1:
            problems.append(f"threads must be a positive integer or unset, got {self.threads}")
        if self.max_wait_ms < 0:
            problems.append(f"max_wait_ms must be 0 or more, got {self.max_wait_ms}")
        if self.precision not in get_args(Precision):
            problems.append(f"precision must be one of {list(get_args(Precision))}, got {self.precision!r}")
        if not isinstance(self.device, str) or not DEVICE_PATTERN.match(self.device):
            problems.append(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        if self.runtime not in get_args(Runtime):
            problems.append(f"runtime must be one of {list(get_args(Runtime))}, got {self.runtime!r}")
        if not 0 <= self.port < 65536:
            problems.append(f"port must be in 0..65535, got {self.port}")
        if problems:
            raise ConfigError("serve: " + "; ".join(problems) + ".")
