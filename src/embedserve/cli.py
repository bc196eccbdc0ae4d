"""The ``embedserve`` command: parses flags into one ``Settings`` and hands it to the part that runs.

``serve`` loads the model before binding the port, so a bad ``--model`` fails with one clear line, not a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from embedserve import __version__
from embedserve.errors import EmbedServeError
from embedserve.settings import DEFAULT_MODEL, Settings

logger = logging.getLogger("embedserve")

# flag -> (settings path, argparse kwargs). Defaults are None so unset flags fall back to env, then Settings.
_ENGINE_FLAGS: dict[str, dict[str, Any]] = {
    "--model": {"help": f"hub id or local directory of a sentence-transformers model (default {DEFAULT_MODEL})"},
    "--served-model-name": {"help": "the name clients send and see (default: model id, or the folder name)"},
    "--load-format": {"choices": ["auto", "safetensors", "dummy"], "help": "dummy = seeded random weights"},
    "--seed": {"type": int, "help": "seed for --load-format dummy"},
    "--backend": {
        "choices": ["auto", "torch", "onnx", "fake"],
        "help": "inference engine (default auto = torch; onnx = ONNX Runtime; fake = API tests only)",
    },
    "--dtype": {
        "choices": ["auto", "float32", "bfloat16", "float16", "int8"],
        "help": "auto (torch): bfloat16 on CPUs with native bf16, int8 on CPUs with AVX512-VNNI but no native bf16 "
        "(measured on an Ice Lake), else float32; float16 on CUDA; onnx: float32. int8 elsewhere needs AVX512-VNNI "
        "or AMX (see docs/performance.md)",
    },
    "--device": {"help": "auto, cpu, cuda, cuda:N"},
    "--threads": {"type": int, "help": "intra-op threads for inference (default: all available cores)"},
    "--max-batch-tokens": {"type": int, "help": "padded tokens per forward pass (default 2048 on CPU, 16384 on CUDA)"},
    "--max-bulk-batch-tokens": {
        "type": int,
        "help": "padded tokens per forward pass of batch-job work, so online requests wait less (default 512 on CPU, "
        "4096 on CUDA)",
    },
    "--max-padding-ratio": {
        "type": float,
        "help": "stop growing a batch when its padding would exceed this fraction of its real tokens (default 0.25)",
    },
    "--free-padding-tokens": {
        "type": int,
        "help": "a batch under this many padded tokens may pad freely (default 512 on CPU, 4096 on CUDA)",
    },
    "--max-batch-size": {"type": int},
    "--batches-in-flight": {
        "type": int,
        "help": "forward passes handed to the inference thread at once (default 1 on CPU: each batch is formed when "
        "the running one ends, so a burst of requests rides one full pass; 2 on CUDA: the next is ready in advance)",
    },
    "--cuda-graphs": {
        "action": "store_const",
        "const": True,
        "help": "torch on CUDA: capture each small batch shape (up to 4096 padded tokens) as a CUDA graph at start-up "
        "and replay it, one launch instead of hundreds (opt-in; see docs/performance.md, GPU)",
    },
    "--prepacked-weights": {
        "choices": ["auto", "on", "off"],
        "help": "torch bfloat16 on CPU: reorder most projections' weights once at load into oneDNN's layout and fuse "
        "the FFN's GELU into its matmul (default auto: on CPUs with native bf16, AMX or AVX512-BF16; measured faster "
        "on an AMX Xeon and a Zen 5; docs/internals.md)",
    },
    "--max-queued-tokens": {"type": int, "help": "queue bound; past it requests get 503 with Retry-After"},
    "--auto-truncate": {
        "action": "store_const",
        "const": True,
        "help": "truncate over-long inputs by default",
    },
    "--cache-dir": {
        "help": "where hub downloads, the ONNX export and int8's GPTQ codes are kept between starts (default: the "
        "Hugging Face cache and $XDG_CACHE_HOME/embedserve)",
    },
    "--token-ids": {
        "choices": ["auto", "wordpiece", "tiktoken", "reject"],
        "help": "what token-id arrays in input mean (default auto: arrays framed [CLS] ... [SEP] with the model's ids "
        "are WordPiece ids, other arrays are OpenAI cl100k_base ids, decoded and re-tokenised)",
    },
}
_SERVER_FLAGS: dict[str, dict[str, Any]] = {
    "--host": {},
    "--port": {"type": int},
    "--max-inputs": {"type": int, "help": "inputs per request (default 2048)"},
    "--max-body-bytes": {"type": int},
    "--body-workers": {
        "type": int,
        "help": "processes that decode and tokenise bodies over 64 KiB; at most this many are read at once (default 2)",
    },
    "--log-level": {"choices": ["debug", "info", "warning", "error"]},
    "--log-format": {"choices": ["text", "json"]},
    "--shutdown-timeout": {"type": float, "help": "seconds to finish queued work on SIGTERM"},
    "--header-timeout-seconds": {"type": float, "help": "a request's headers must arrive within this (default 10)"},
    "--body-timeout-seconds": {
        "type": float,
        "help": "its body may pause at most this long (default 60)",
    },
    "--max-connections": {"type": int, "help": "open connections past this get 503 (default: file limit - 10%%)"},
    "--metrics-port": {"type": int, "help": "serve /metrics openly on this port"},
    "--ray-address": {"help": "run API batch jobs on this Ray cluster (`local`: start one; default $RAY_ADDRESS)"},
    "--api-processes": {
        "type": int,
        "help": "N>=2: N processes serve HTTP (parsing, tokenising, encoding responses) for one engine process "
        "(default 1: one process; see docs/operations.md; with API keys it needs --redis-url)",
    },
}
_GATEWAY_FLAGS: dict[str, dict[str, Any]] = {
    "--no-auth": {"dest": "auth", "action": "store_const", "const": False, "help": "serve without API keys"},
    "--admin-key": {"help": "the operator key for /admin and /metrics (shows in ps: prefer the next two)"},
    "--admin-key-file": {"help": "read the admin key from this file (or set EMBEDSERVE_ADMIN_KEY)"},
    "--data-dir": {"help": "where the SQLite store lives (default $XDG_DATA_HOME/embedserve)"},
    "--database-url": {"help": "e.g. postgresql+asyncpg://user@host/db for several replicas"},
    "--redis-url": {"help": "shared rate-limit storage for several replicas, e.g. redis://host:6379/0"},
    "--credits-per-1k-tokens": {"type": float, "help": "price; rounded up per request (default 1)"},
}


def _add_flags(parser: argparse.ArgumentParser | argparse._ArgumentGroup, flags: dict[str, dict[str, Any]]) -> None:
    for flag, kwargs in flags.items():
        parser.add_argument(flag, default=None, **kwargs)


def add_gateway_flags(parser: argparse.ArgumentParser) -> None:
    _add_flags(parser, _GATEWAY_FLAGS)


def _dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def build_settings(args: argparse.Namespace) -> Settings:
    """Flags given on the command line override the environment, which overrides the defaults."""
    values = {k: v for k, v in vars(args).items() if v is not None}
    engine = {_dest(f): values.pop(_dest(f)) for f in _ENGINE_FLAGS if _dest(f) in values}
    top = {k: v for k, v in values.items() if k in Settings.model_fields and k != "engine"}
    kwargs: dict[str, Any] = dict(top)
    if engine:
        kwargs["engine"] = engine
    return Settings(**kwargs)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="embedserve", description="OpenAI-compatible embeddings server")
    parser.add_argument("--version", action="version", version=f"embedserve {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="load the model and serve the API")
    for group, flags in (("model", _ENGINE_FLAGS), ("server", _SERVER_FLAGS), ("gateway", _GATEWAY_FLAGS)):
        _add_flags(serve.add_argument_group(group), flags)
    serve.set_defaults(func=_serve)
    prepare = sub.add_parser(
        "prepare",
        help="download the model and build what the engine caches (int8's GPTQ codes, the ONNX export, the fused "
        "kernel), then exit: a later serve with the same model flags starts from the caches",
    )
    _add_flags(prepare.add_argument_group("model"), _ENGINE_FLAGS)
    prepare.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    prepare.add_argument("--log-format", choices=["text", "json"])
    prepare.set_defaults(func=_prepare)
    from embedserve.accounting.cli import add_subcommands
    from embedserve.batch.run_cli import add_batch_command

    add_subcommands(sub)
    add_batch_command(sub, _ENGINE_FLAGS)
    return parser


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    if settings.api_processes > 1:
        from embedserve.multiproc import run_multiprocess

        return run_multiprocess(settings)
    from embedserve.server import run_server

    return asyncio.run(run_server(settings))


def _prepare(args: argparse.Namespace, settings: Settings) -> int:
    from embedserve.engine.prepare import prepare
    from embedserve.logs import configure_logging

    configure_logging(level=settings.log_level, fmt=settings.log_format)
    done = prepare(settings.engine)
    info = done.info
    print(f"embedserve prepare: {info.name} ({info.source}), backend {info.backend} {info.dtype} on {info.device}, "
          f"ready in {done.seconds:.1f}s")  # fmt: skip
    for path in done.written:
        print(f"  cached {path}")
    if not done.written:
        print("  no cache file written: they were all there already, or this backend and dtype keep none")
    print("a serve with the same model flags and cache dir now starts from these caches")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    func = args.func
    del args.func, args.command
    if getattr(args, "admin_key", None):
        print(
            "embedserve: warning: --admin-key is visible to every user of this host (ps); "
            "prefer EMBEDSERVE_ADMIN_KEY or --admin-key-file",
            file=sys.stderr,
        )
    try:
        settings = build_settings(args)
        return int(func(args, settings))
    except EmbedServeError as exc:
        print(f"embedserve: error: {exc.message}", file=sys.stderr)
        return 2
    except ValidationError as exc:
        reasons = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in exc.errors())
        print(f"embedserve: error: invalid settings: {reasons}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
