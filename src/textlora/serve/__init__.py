"""`textlora serve`: many runs over one base model, over HTTP, with micro-batching and limits.

    textlora serve runs/emotion-lora topic=runs/topic-lora --host 127.0.0.1 --port 8000

| module | holds |
|---|---|
| `options.py` | `ServeOptions`: address, limits, batching |
| `registry.py` | `Registry`: the runs, loaded once; runs on one base share it |
| `batching.py` | `MicroBatcher`: concurrent requests for one model -> one forward pass |
| `metrics.py` | Prometheus metrics (`prometheus_client`, a registry per app) |
| `app.py` | FastAPI routes and schemas (the only module importing FastAPI) |
| `header_timeout.py` | uvicorn's h11 protocol with a deadline for request headers (slow clients) |

FastAPI, uvicorn and prometheus_client come with the `serve` extra: `pip install "textlora[serve]"`.
"""

from __future__ import annotations

from collections.abc import Sequence

from textlora.serve.options import ServeOptions
from textlora.serve.registry import Registry, RunSpec

__all__ = ["Registry", "RunSpec", "ServeOptions", "serve"]


def serve(runs: Sequence[str], options: ServeOptions) -> None:
    """Load `runs` (`PATH` or `NAME=PATH`) and serve them until interrupted.

    Raises:
        ImportError: FastAPI or uvicorn is not installed.
        ConfigError, ModelError: a run name or folder is wrong.
    """
    uvicorn = _require_server_deps()
    from textlora.serve.app import build_app
    from textlora.serve.header_timeout import header_timeout_protocol

    if options.threads:
        import torch

        torch.set_num_threads(options.threads)
    registry = Registry.load([RunSpec.parse(r) for r in runs], check_base=options.check_base,
                             precision=options.precision, device=options.device, calibrate=options.calibrate,
                             runtime=options.runtime)
    app = build_app(registry, options)
    print(f"serving {registry.names} on http://{options.host}:{options.port} "
          f"(batching {'on, max wait ' + str(options.max_wait_ms) + ' ms' if options.batching else 'off'}, "
          f"{registry.device}, {registry.precision}{', onnx' if options.runtime == 'onnx' else ''})",
          flush=True)
    uvicorn.run(app, host=options.host, port=options.port, log_level="warning", access_log=False,
                http=header_timeout_protocol(options.header_timeout_s))


def _require_server_deps():
    try:
        import fastapi  # noqa: F401
        import prometheus_client  # noqa: F401
        import uvicorn
    except ImportError as e:
        raise ImportError(f"textlora serve needs the package {e.name!r}, which is not installed. "
                          'Run `pip install "textlora[serve]"`.') from None
    return uvicorn
