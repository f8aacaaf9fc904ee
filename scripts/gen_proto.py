"""Regenerate the Python gRPC code in service/generated/ from proto/.

The generated modules are committed (so an install needs no build step), and a test checks that
they are what this script produces from the current .proto files. Run after changing a .proto:

    .venv/bin/python -m scripts.gen_proto            # write service/generated/
    .venv/bin/python -m scripts.gen_proto --check    # exit 1 if the committed code is stale
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
OUT = ROOT / "service" / "generated"


def generate(out: Path) -> list[Path]:
    """Compile every proto/**/*.proto into ``out``; imports between them are made package-relative."""
    from grpc_tools import protoc

    protos = sorted(PROTO_ROOT.rglob("*.proto"))
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *[str(p) for p in protos],
    ]
    out.mkdir(parents=True, exist_ok=True)
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    written = []
    for path in sorted(out.rglob("*.py*")):
        text = path.read_text()
        # protoc writes absolute imports ("from sleuth.v1 import search_pb2"); ours live under
        # service.generated, so rewrite them to that package.
        text = re.sub(r"^from sleuth\.v1 import", "from service.generated.sleuth.v1 import", text, flags=re.M)
        path.write_text(text)
        written.append(path)
    for package in [out, *[p for p in out.rglob("*") if p.is_dir()]]:
        init = package / "__init__.py"
        if not init.exists():
            init.write_text("")
            written.append(init)
    return written


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="compare with the committed code instead of writing")
    args = parser.parse_args()
    if not args.check:
        generate(OUT)
        print(f"generated code written to {OUT.relative_to(ROOT)}")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp)
        generate(fresh)
        stale = []
        for path in sorted(fresh.rglob("*")):
            if path.is_file():
                committed = OUT / path.relative_to(fresh)
                if not committed.is_file() or committed.read_text() != path.read_text():
                    stale.append(str(committed.relative_to(ROOT)))
        if stale:
            print("stale generated code (run make proto):", *stale, sep="\n  ")
            return 1
    print("generated code is current")
    return 0


if __name__ == "__main__":
    sys.exit(main())
