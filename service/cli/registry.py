"""``sleuth registry list | show | activate | rollback | gc | status``: manage artifact versions.

The registry is ``--registry DIR``, else ``$SLEUTH_REGISTRY``, else ``./var/registry``.
``activate`` and ``rollback`` change the registry's active pointer; with ``--target ADDR`` they ask
that running server (its Admin RPC) to do it, so it loads, verifies and swaps the version without
dropping requests, and moves the pointer of the registry it serves.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import grpc

from artifacts import ArtifactError
from artifacts.registry import Registry, VersionInfo, default_registry_path
from service.security import SecurityConfigError

USER_ERRORS: tuple[type[BaseException], ...] = (ArtifactError, SecurityConfigError)


class AdminCallError(ArtifactError):
    """The server's Admin RPC answered with an error (the message carries its status code)."""


def register(groups: Any) -> None:
    registry = groups.group("registry", "versions of indexes, KBs and models: list, activate, roll back")

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        parser = registry.add_parser(name, help=help_text, description=help_text)
        parser.add_argument(
            "--registry", type=Path, help="registry directory (default: $SLEUTH_REGISTRY or ./var/registry)"
        )
        return parser

    def add_target(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--target", help="a running server (host:port): make it switch, through its Admin RPC")
        parser.add_argument("--auth-token-file", type=Path, help="the server's bearer token, if it has one")

    listing = add("list", "the versions, newest last, with the active one marked")
    listing.add_argument("--kind", help="only this kind (search-index, reranker, kb, linker)")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(func=run_list)

    show = add("show", "one version's manifest: lineage, parameters, checksums, metrics")
    show.add_argument("version", help="kind@content-id, a content id, or a unique prefix")
    show.set_defaults(func=run_show)

    activate = add("activate", "make a version active (refused if its files fail their checksums)")
    activate.add_argument("version", help="kind@content-id, a content id, or a unique prefix")
    add_target(activate)
    activate.set_defaults(func=run_activate)

    rollback = add("rollback", "re-activate the version active before the current one")
    rollback.add_argument("--kind", default="search-index", help="default search-index")
    add_target(rollback)
    rollback.set_defaults(func=run_rollback)

    gc = add("gc", "delete old versions, keeping the newest N, the active one and the rollback target")
    gc.add_argument("--keep", type=int, required=True, help="newest versions to keep per kind")
    gc.add_argument("--kind", help="only this kind")
    gc.add_argument("--dry-run", action="store_true", help="list what would go, delete nothing")
    gc.set_defaults(func=run_gc)

    status = registry.add_parser("status", help="what a running server serves (its Admin Status RPC)")
    status.add_argument("--target", required=True, help="the server (host:port)")
    status.add_argument("--auth-token-file", type=Path, help="the server's bearer token, if it has one")
    status.set_defaults(func=run_status)


def _registry(args: argparse.Namespace) -> Registry:
    root = args.registry if args.registry is not None else default_registry_path()
    if not Path(root).is_dir():
        raise ArtifactError(f"no registry at {root} (build into it with 'sleuth index build --registry {root}')")
    return Registry(root)


def _summary(info: VersionInfo) -> str:
    stats = info.manifest.stats
    parts = []
    if "doc_count" in stats:
        parts.append(f"{stats['doc_count']} docs")
    for name, values in sorted(info.manifest.metrics.items()):
        if isinstance(values, dict):
            headline = next((f"{k}={v:.4f}" for k, v in values.items() if k.startswith("ndcg")), None)
            parts.append(f"{name}: {headline}" if headline else name)
    return ", ".join(parts)


def run_list(args: argparse.Namespace) -> int:
    registry = _registry(args)
    versions = registry.versions(args.kind)
    active = {kind: registry.pointer(kind).version for kind in registry.kinds()}
    if args.json:
        rows = [
            {
                "version": v.version,
                "kind": v.kind,
                "active": active.get(v.kind) == v.version,
                "published_at": v.published_at,
                "path": str(v.path),
                "stats": v.manifest.stats,
                "metrics": v.manifest.metrics,
            }
            for v in versions
        ]
        print(json.dumps(rows, indent=2))
        return 0
    if not versions:
        print(f"# no versions in {registry.root}")
        return 0
    print(f"# {len(versions)} version(s) in {registry.root}  (* = active)")
    for v in versions:
        mark = "*" if active.get(v.kind) == v.version else " "
        print(f"{mark} {v.version:<32} {v.published_at:<21} {_summary(v)}")
    return 0


def run_show(args: argparse.Namespace) -> int:
    registry = _registry(args)
    info = registry.get(args.version)
    data = info.manifest.to_dict()
    data["registry"] = {
        "version": info.version,
        "path": str(info.path),
        "published_at": info.published_at,
        "active": registry.pointer(info.kind).version == info.version,
    }
    print(json.dumps(data, indent=2, sort_keys=True))
    return 0


def _admin(args: argparse.Namespace) -> tuple[Any, list[tuple[str, str]]]:
    from service.generated.sleuth.v1 import admin_pb2_grpc

    metadata: list[tuple[str, str]] = []
    if args.auth_token_file is not None:
        from service.security import load_token

        metadata.append(("authorization", f"Bearer {load_token(args.auth_token_file)}"))
    channel = grpc.insecure_channel(args.target)
    return admin_pb2_grpc.AdminServiceStub(channel), metadata


def _call(args: argparse.Namespace, method: str, request: Any) -> Any:
    stub, metadata = _admin(args)
    try:
        return getattr(stub, method)(request, timeout=300, metadata=metadata)
    except grpc.RpcError as exc:
        raise AdminCallError(f"server {args.target} answered {exc.code().name}: {exc.details()}") from None


def run_activate(args: argparse.Namespace) -> int:
    if args.target:
        from service.generated.sleuth.v1 import admin_pb2

        reply = _call(args, "Activate", admin_pb2.ActivateRequest(version=args.version))
        print(
            f"{args.target} now serves {reply.version} (was {reply.previous_version}; loaded in {reply.load_ms:.0f} ms)"
        )
        return 0
    info = _registry(args).activate(args.version)
    print(f"active {info.kind}: {info.version}")
    print("  running servers on this registry follow within their poll interval (or use --target)", file=sys.stderr)
    return 0


def run_rollback(args: argparse.Namespace) -> int:
    if args.target:
        from service.generated.sleuth.v1 import admin_pb2

        reply = _call(args, "Rollback", admin_pb2.RollbackRequest(kind=args.kind))
        print(f"{args.target} rolled back to {reply.version} (from {reply.previous_version})")
        return 0
    info = _registry(args).rollback(args.kind)
    print(f"active {info.kind}: {info.version} (rolled back)")
    return 0


def run_gc(args: argparse.Namespace) -> int:
    if args.keep < 0:
        raise ArtifactError("--keep must be 0 or more")
    registry = _registry(args)
    removed = registry.gc(args.keep, args.kind, dry_run=args.dry_run)
    verb = "would delete" if args.dry_run else "deleted"
    for info in removed:
        print(f"{verb} {info.version}")
    print(f"# {verb} {len(removed)} version(s); {len(registry.versions(args.kind)) if not args.dry_run else '-'} left")
    return 0


def run_status(args: argparse.Namespace) -> int:
    from google.protobuf.json_format import MessageToDict

    from service.generated.sleuth.v1 import admin_pb2

    reply = _call(args, "Status", admin_pb2.StatusRequest())
    print(json.dumps(MessageToDict(reply, preserving_proto_field_name=True), indent=2))
    return 0


# -- hooks for the build and eval commands of other modules ----------------------------------


def add_publish_options(parser: argparse.ArgumentParser) -> None:
    """``--registry DIR`` and ``--activate`` for a build command whose ``--out`` is optional.

    Without ``--out`` the build is published as a new version of the registry (``--registry``,
    ``$SLEUTH_REGISTRY`` or ``./var/registry``).
    """
    parser.add_argument(
        "--registry",
        type=Path,
        help="without --out: publish into this registry (default $SLEUTH_REGISTRY or ./var/registry)",
    )
    parser.add_argument("--activate", action="store_true", help="registry builds: make the new version active")


def publish_build(args: argparse.Namespace, kind: str, build: Any, out: Path | None) -> tuple[Any, Path]:
    """Run ``build(out_dir)`` into ``out``, or publish it into the registry; returns (result, directory).

    The registry path is used when ``out`` is ``None``; the version is activated with ``--activate``.
    """
    if out is not None:
        return build(out), out
    registry = Registry.open(args.registry)
    published = registry.publish(kind, build)
    info = published.info
    note = "new version" if published.created else "identical to an existing version"
    print(f"registry {registry.root}: {info.version} ({note})", file=sys.stderr)
    if getattr(args, "activate", False):
        registry.activate(info.version)
        print(f"registry {registry.root}: {info.version} is now the active {kind}", file=sys.stderr)
    return published.result, info.path


def add_record_options(parser: argparse.ArgumentParser) -> None:
    """``--record [NAME]`` (attach the metrics to the evaluated version) and ``--registry``."""
    parser.add_argument(
        "--record",
        nargs="?",
        const="",
        metavar="NAME",
        help="attach the metrics to the evaluated version's manifest under NAME (default: <qrels file>/<mode>)",
    )
    parser.add_argument(
        "--registry",
        type=Path,
        help="without --index: evaluate this registry's active version (default ./var/registry)",
    )


def active_path(args: argparse.Namespace, kind: str) -> Path:
    """The directory of the registry's active ``kind`` (for commands given no artifact path)."""
    registry = Registry(args.registry if args.registry is not None else default_registry_path())
    info = registry.active(kind)
    if info is None:
        raise ArtifactError(f"no active {kind} in the registry {registry.root}: give a path, or activate a version")
    return info.path


def record_eval(directory: Path, name: str, values: dict[str, Any]) -> str:
    """Attach ``values`` to the manifest in ``directory`` (a registry version or any artifact); its version."""
    from artifacts.registry import record_metrics

    directory = Path(directory)
    registry = Registry(directory.resolve().parent.parent)
    info = registry.find(directory)
    manifest = registry.record_metrics(info.version, name, values) if info else record_metrics(directory, name, values)
    print(f"recorded metrics {name!r} in {manifest.version}", file=sys.stderr)
    return manifest.version
