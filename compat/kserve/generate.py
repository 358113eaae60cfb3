"""Write the Python modules for ``inference.proto`` (messages, typing stubs, gRPC service).

    python compat/kserve/generate.py            # regenerate
    python compat/kserve/generate.py --check    # fail if the committed modules differ from the proto

Run from anywhere; needs ``grpcio-tools`` (a test dependency).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parents[2]
PROTO = "compat/kserve/inference.proto"
OUTPUTS = ("inference_pb2.py", "inference_pb2.pyi", "inference_pb2_grpc.py")


def generate(into: Path) -> None:
    args = ["protoc", f"-I{ROOT}", f"--python_out={into}", f"--pyi_out={into}", f"--grpc_python_out={into}",
            str(ROOT / PROTO)]
    if protoc.main(args) != 0:
        raise SystemExit(f"protoc failed on {PROTO}")


def main(argv: list[str]) -> int:
    here = ROOT / "compat" / "kserve"
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        made = Path(tmp) / "compat" / "kserve"
        if "--check" in argv:
            stale = [name for name in OUTPUTS if (made / name).read_bytes() != (here / name).read_bytes()]
            if stale:
                print(f"out of date with {PROTO}: {', '.join(stale)} (run python {PROTO[:-16]}generate.py)")
                return 1
            return 0
        for name in OUTPUTS:
            (here / name).write_bytes((made / name).read_bytes())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
