"""Validate FHIR R4 Bundles with an independent library: fhir.resources 6.4.0 (FHIR 4.0.1 models,
pydantic 1). Reads one Bundle (JSON) on stdin; exits 0 and prints the entry count when the
library accepts it, else exits 1 and prints what it refused (the field path and why).

Installed by `cargo xtask test` into a virtual environment of its own; the Rust tests run it.
"""

import json
import sys

import fhir.resources
from fhir.resources.bundle import Bundle


def main() -> int:
    if fhir.resources.__fhir_version__ != "4.0.1":
        print(f"fhir.resources models FHIR {fhir.resources.__fhir_version__}, not 4.0.1")
        return 2
    text = sys.stdin.read()
    try:
        bundle = Bundle.parse_raw(text)
    except Exception as e:  # pydantic.ValidationError and JSON errors alike
        print(f"refused: {e}")
        return 1
    entries = len(bundle.entry or [])
    print(f"ok: {entries} entries")
    return 0


if __name__ == "__main__":
    sys.exit(main())
