import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_committed_grpc_code_matches_the_protos() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "scripts.gen_proto", "--check"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
