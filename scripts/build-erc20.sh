#!/usr/bin/env bash
# Compiles the Coffer test ERC-20 (watchers/testchains/TestToken.sol) with solc 0.8.x from the
# npm registry (`npx --yes solc@...`, the solc-js compiler) and writes, beside the source:
#   TestToken.bin       creation bytecode (hex, no 0x)
#   TestToken.abi.json  ABI (JSON)
#   TestToken.build.json compiler version and settings used
# Tests and the test chain read the committed outputs, so they need no compiler.
# EVM version is pinned to "paris" so the bytecode runs on any post-merge EVM (no PUSH0/MCOPY).
set -euo pipefail
SOLC_VERSION="${SOLC_VERSION:-0.8.24}"
EVM_VERSION="${EVM_VERSION:-paris}"
here="$(cd "$(dirname "$0")/.." && pwd)"
dir="$here/watchers/testchains"
src="$dir/TestToken.sol"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

python3 - "$src" "$EVM_VERSION" > "$tmp/input.json" <<'PY'
import json, sys
src, evm = sys.argv[1], sys.argv[2]
with open(src, encoding="utf-8") as f:
    content = f.read()
print(json.dumps({
    "language": "Solidity",
    "sources": {"TestToken.sol": {"content": content}},
    "settings": {
        "optimizer": {"enabled": True, "runs": 200},
        "evmVersion": evm,
        "outputSelection": {"TestToken.sol": {"TestToken": ["abi", "evm.bytecode.object"]}},
    },
}))
PY

(cd "$tmp" && npx --yes "solc@${SOLC_VERSION}" --standard-json < input.json > output.json)
(cd "$tmp" && npx --yes "solc@${SOLC_VERSION}" --version > version.txt)

python3 - "$tmp/output.json" "$tmp/version.txt" "$dir" "$EVM_VERSION" <<'PY'
import json, sys
out_path, version_path, outdir, evm = sys.argv[1:5]
with open(out_path, encoding="utf-8") as f:
    text = f.read()
# solc-js may print notices before the JSON document.
out = json.loads(text[text.index("{"):])
errors = [e for e in out.get("errors", []) if e.get("severity") == "error"]
for e in out.get("errors", []):
    print(e.get("formattedMessage", e.get("message")), file=sys.stderr)
if errors:
    sys.exit("solc reported errors")
contract = out["contracts"]["TestToken.sol"]["TestToken"]
bytecode = contract["evm"]["bytecode"]["object"]
if not bytecode:
    sys.exit("solc produced no bytecode")
with open(f"{outdir}/TestToken.bin", "w", encoding="utf-8") as f:
    f.write(bytecode + "\n")
with open(f"{outdir}/TestToken.abi.json", "w", encoding="utf-8") as f:
    json.dump(contract["abi"], f, indent=1)
    f.write("\n")
with open(version_path, encoding="utf-8") as f:
    version = f.read().strip()
with open(f"{outdir}/TestToken.build.json", "w", encoding="utf-8") as f:
    json.dump({"compiler": "solc-js (npm solc)", "version": version, "evmVersion": evm,
               "optimizer": {"enabled": True, "runs": 200}, "source": "TestToken.sol"}, f, indent=1)
    f.write("\n")
print(f"wrote TestToken.bin ({len(bytecode) // 2} bytes) and TestToken.abi.json with {version}")
PY
